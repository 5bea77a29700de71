"""The typer application: every ``omx`` command except the ``team api`` fast path.

Each command module under ``omx/cli/`` defines its own ``typer.Typer`` and is registered here.
Commands parse, call one library function, and print; library errors become exit codes in
:func:`run_app` only.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="omx",
    help="A team of coding agents working one repository through plain files.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (typer's; the variable is _OMX_COMPLETE)
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from omx import __version__

        typer.echo(f"omx {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", help="Print omx's version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """A team of coding agents working one repository through plain files."""
    # `omx --version` alone takes the fast path in omx.cli.main; this makes it listed in --help (and work
    # with other arguments).


def _register() -> None:
    from omx.cli import team

    app.add_typer(team.app, name="team")
    app.command("doctor")(team.doctor)
    app.command("setup")(team.setup)
    from omx.team.plan import PLAN_SYNTAX

    app.command("swarm", epilog=PLAN_SYNTAX.replace("\n", " ").replace("[", "\\["))(team.swarm)

    # The demo parses its own options (argparse): typer's --help is off here so that `omx demo --help`
    # reaches it and lists them.
    @app.command("demo", add_help_option=False,
                 context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def demo(ctx: typer.Context) -> None:
        """Run a real team of Codex workers on a generated sample repo (offline demo model without an account).

        Options: --workers N, --keep, --offline, --json (see `omx demo --help`).
        """
        from omx.demo.main import main

        raise typer.Exit(main(list(ctx.args)))
    # Engine / leader / platform command groups register here as they land.
    for modname, group in (("omx.cli.workflow", "workflow"), ("omx.cli.worker", "worker"), ("omx.cli.auth", "auth")):
        try:
            mod = __import__(modname, fromlist=["app"])
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue
        app.add_typer(mod.app, name=group)


_register()


def run_app(args: list[str]) -> int:
    from omx.cli.exits import guarded

    return guarded(lambda: app(args=args, prog_name="omx", standalone_mode=False), _click_error)


def _click_error(exc: Exception) -> int | None:
    # typer vendors click; its usage errors carry show() and exit_code.
    if hasattr(exc, "show") and hasattr(exc, "exit_code"):
        exc.show()
        return int(exc.exit_code)
    if type(exc).__name__ == "Abort":
        print("Aborted.", file=sys.stderr)
        return 130
    return None
