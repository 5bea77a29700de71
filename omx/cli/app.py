"""The typer application: every ``omx`` command except the ``team api`` fast path.

Each command module under ``omx/cli/`` defines its own ``typer.Typer`` and is registered here.
Commands parse, call one library function, and print; library errors become exit codes in
:func:`run_app` only.
"""

from __future__ import annotations

import sys

import typer

from omx.errors import OmxError

app = typer.Typer(
    name="omx",
    help="A team of coding agents working one repository through plain files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from omx.cli import team

    app.add_typer(team.app, name="team")
    app.command("doctor")(team.doctor)
    # Engine / leader / platform command groups register here as they land.
    for modname, group in (("omx.cli.workflow", "workflow"), ("omx.cli.worker", "worker")):
        try:
            mod = __import__(modname, fromlist=["app"])
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue
        app.add_typer(mod.app, name=group)


_register()


def run_app(args: list[str]) -> int:
    try:
        app(args=args, prog_name="omx", standalone_mode=False)
    except OmxError as exc:
        print(f"omx: error: {exc.message} [{exc.code}]", file=sys.stderr)
        return exc.exit_status
    except SystemExit as exc:  # typer/click exits for --help and usage errors
        return int(exc.code or 0) if isinstance(exc.code, int) else 1
    except Exception as exc:  # click's own usage errors in non-standalone mode
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return 2
        if isinstance(exc, click.exceptions.Abort):
            print("Aborted.", file=sys.stderr)
            return 130
        raise
    return 0
