"""The ``omx`` command.

``omx team api …`` is the hot path that scripts and Codex sessions call many times a minute, so
:func:`main` routes it to :mod:`omx.cli.api` without importing typer or rich (~90 ms of start-up).
Everything else goes through the typer app in :mod:`omx.cli.app`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) >= 2 and args[0] == "team" and args[1] == "api":
        from omx.cli.api import run_api

        return run_api(args[2:])
    from omx.cli.app import run_app

    return run_app(args)
