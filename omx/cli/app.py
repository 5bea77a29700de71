"""The typer application: every ``omx`` command except the ``team api`` fast path.

Each command module under ``omx/cli/`` defines its own ``typer.Typer`` and is registered here.
Commands parse, call one library function, and print; library errors become exit codes in
:func:`run_app` only.
"""

from __future__ import annotations

import os
import sys

import typer

from omx.errors import EXIT_INTERNAL, OmxError

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
    app.command("setup")(team.setup)
    app.command("swarm")(team.swarm)

    @app.command("demo", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def demo(ctx: typer.Context) -> None:
        """Run a real team of Codex workers on a generated sample repo (offline demo model without an account)."""
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
    try:
        rv = app(args=args, prog_name="omx", standalone_mode=False)
    except OmxError as exc:
        print(f"omx: error: {exc.message} [{exc.code}]", file=sys.stderr)
        return exc.exit_status
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        print("omx: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # typer vendors click; its usage errors carry show() and exit_code.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code)
        if type(exc).__name__ == "Abort":
            print("Aborted.", file=sys.stderr)
            return 130
        if os.environ.get("OMX_DEBUG"):
            raise
        print(f"omx: internal error: {type(exc).__name__}: {exc} (set OMX_DEBUG=1 for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0
