"""The ``omx`` command.

``omx team api …`` is the hot path that scripts and Codex sessions call many times a minute, and
``omx team worker`` starts every worker, so :func:`main` routes them to :mod:`omx.cli.api` and
:mod:`omx.cli.team_worker` without importing typer or rich (~90 ms of start-up). Everything else
goes through the typer app in :mod:`omx.cli.app`.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run ``omx`` with ``argv`` (default: this process's arguments); the exit status.

    Without ``argv`` — the ``omx`` program itself — ``omx team worker`` ends the process when done.
    """
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-V"]):
        from omx import __version__

        print(f"omx {__version__}")
        return 0
    if len(args) >= 2 and args[0] == "team" and args[1] == "api":
        from omx.cli.api import run_api

        return run_api(args[2:])
    if len(args) >= 2 and args[0] == "team" and args[1] == "worker":
        from omx.cli import team_worker

        team_worker.EXITING = argv is None
        code = team_worker.main(args[2:])
        if argv is None:  # the process is the command's own (not a caller's): skip the interpreter's teardown
            team_worker.exit_now(code)
        return code
    from omx.cli.app import run_app

    return run_app(args)
