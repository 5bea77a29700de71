"""``omx team worker``: the command's body, and its fast path that bypasses typer.

A worker's start-up is on the critical path of every task a leader hands out, and importing typer (with
click, rich and the app's other commands) costs ~150 ms before the worker does anything. :func:`main` parses
the worker's options by hand and runs :func:`run_worker` directly. It parses only what is plainly
valid — known options, values that need no conversion beyond ``int``/``Path`` — and hands everything
else (``--help``, an unknown or repeated-in-doubt option, a bad number, a missing value) to the typer
command in :mod:`omx.cli.team`, so help, usage errors and their exit codes are typer's own.
``tests/test_cli_team_worker.py`` checks that both parse the same arguments into the same call.
"""

from __future__ import annotations

import os
import sys

# Neither typing nor pathlib nor re before the head start: ~20 ms of imports that would delay Codex's spawn.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from omx.engine.early import EarlyServer
    from omx.state.filestore import FileStore

#: option -> (parameter, kind, minimum). Kinds: str, path, int, flag. Keep in step with omx.cli.team.worker.
OPTIONS: dict[str, tuple[str, str, int | None]] = {
    "--team": ("team", "str", None),
    "--name": ("name", "str", None),
    "--root": ("root", "path", None),
    "--repo": ("repo", "path", None),
    "--workflow": ("workflow", "path", None),
    "--until-empty": ("until_empty", "flag", None),
    "--max-tasks": ("max_tasks", "int", 1),
    "--shutdown-policy": ("shutdown_policy", "str", None),
    "--poll-ms": ("poll_ms", "int", 10),
    "--verbose": ("verbose", "flag", None),
    "-v": ("verbose", "flag", None),
}
#: The defaults, with paths as text (see :func:`scan`).
DEFAULTS: dict[str, Any] = {
    "team": None, "name": None, "root": None, "repo": ".", "workflow": None, "until_empty": False,
    "max_tasks": None, "shutdown_policy": "finish", "poll_ms": 1_000, "verbose": False,
}
PATHS = ("root", "repo", "workflow")
#: Set by :func:`omx.cli.main` when the process ends with the command (the ``omx`` program itself).
EXITING = False


def parse_args(args: list[str]) -> dict[str, Any] | None:
    """The keyword arguments of :func:`run_worker` for ``args``, or ``None``: let typer parse them."""
    raw = scan(args)
    return None if raw is None else with_paths(raw)


def with_paths(raw: dict[str, Any]) -> dict[str, Any]:
    """:func:`scan`'s answer with its paths as :class:`~pathlib.Path` objects, as :func:`run_worker` takes them."""
    from pathlib import Path

    return {k: Path(v) if k in PATHS and v is not None else v for k, v in raw.items()}


def _plain_int(value: str) -> bool:
    """Digits only, no sign, no leading zero, at most 18 of them: what needs no conversion to agree with click."""
    return value.isascii() and value.isdigit() and len(value) <= 18 and (value == "0" or value[0] != "0")


def scan(args: list[str]) -> dict[str, Any] | None:
    """As :func:`parse_args`, with paths left as text (pathlib is not imported before the head start)."""
    out = dict(DEFAULTS)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        spec = OPTIONS.get(name)
        if spec is None:
            return None  # --help, an unknown option, a stray argument, "--": typer's business
        param, kind, minimum = spec
        if kind == "flag":
            if eq:
                return None
            out[param] = True
            i += 1
            continue
        if eq:
            value = inline
        elif i + 1 < len(args):
            value = args[i + 1]
            i += 1
        else:
            return None
        i += 1
        if not value or value.startswith("-"):
            return None
        if kind == "int":
            if not _plain_int(value) or (minimum is not None and int(value) < minimum):
                return None
            out[param] = int(value)
        else:
            out[param] = value
    return out


def run_worker(*, team: str | None, name: str | None, root: Path | None, repo: Path, workflow: Path | None,
               until_empty: bool, max_tasks: int | None, shutdown_policy: str, poll_ms: int, verbose: bool,
               early: EarlyServer | None = None) -> None:
    """Run a worker: ACK the leader, then claim, run and report tasks until stopped or drained.

    ``early``: a Codex server :func:`head_start` started; adopted by the worker (discarded if it
    never gets that far).
    """
    try:
        _run_worker(team=team, name=name, root=root, repo=repo, workflow=workflow, until_empty=until_empty,
                    max_tasks=max_tasks, shutdown_policy=shutdown_policy, poll_ms=poll_ms, verbose=verbose,
                    early=early)
    except BaseException:
        if early is not None:
            early.discard()  # a no-op once the pool has adopted it (and stopped it on the way out)
        raise


def _run_worker(*, team: str | None, name: str | None, root: Path | None, repo: Path, workflow: Path | None,
                until_empty: bool, max_tasks: int | None, shutdown_policy: str, poll_ms: int, verbose: bool,
                early: EarlyServer | None) -> None:
    from omx.errors import InvalidInput
    from omx.state import names

    if shutdown_policy not in ("finish", "interrupt"):
        raise InvalidInput("--shutdown-policy must be finish or interrupt")
    if team is None or name is None:
        env = os.environ.get("OMX_TEAM_WORKER")
        if not env:
            raise InvalidInput("name the worker: --team and --name, or OMX_TEAM_WORKER=<team>/<worker>")
        env_team, env_name = names.parse_worker_env(env)
        team, name = team or env_team, name or env_name

    def configure_logging() -> None:  # after the app-server spawn: logging's imports need not delay it
        import logging

        from omx.terminal import install_visible_logging

        install_visible_logging(logging.INFO if verbose else logging.WARNING)  # log lines carry task data

    from omx.engine.team_worker import run_team_worker
    from omx.state.paths import default_root

    state_root = root.expanduser() if root else default_root()

    def open_store() -> FileStore:  # after the app-server spawn: the store's imports need not delay it
        from omx.state.filestore import FileStore

        return FileStore(state_root)

    report = run_team_worker(store=open_store, team=team, worker=name, repo=repo, workflow_path=workflow,
                             until_empty=until_empty, max_tasks=max_tasks, shutdown_policy=shutdown_policy,
                             poll_ms=poll_ms, after_spawn=configure_logging, exiting=EXITING, early=early)
    from omx.terminal import visible

    sys.stdout.write(visible(f"{team}/{name}: {report.completed} completed, {report.failed} failed, "
                             f"{report.released} released — {report.reason}") + "\n")
    sys.stdout.flush()


def main(args: list[str]) -> int:
    """``omx team worker <args>``: the fast path when the arguments are plain, else the typer command."""
    raw = scan(args)
    if raw is None:
        from omx.cli.app import run_app

        return run_app(["team", "worker", *args])
    early = head_start(raw)
    kwargs = with_paths(raw)
    from omx.cli.exits import guarded

    return guarded(lambda: run_worker(**kwargs, early=early))


def head_start(kwargs: dict[str, Any]) -> EarlyServer | None:
    """Spawn the worker's Codex server now, before the engine is imported (see :mod:`omx.engine.early`),
    when the arguments look like a worker that will run: a head start, never a failure of its own."""
    if kwargs["shutdown_policy"] not in ("finish", "interrupt"):
        return None
    if not (kwargs["team"] and kwargs["name"]) and not os.environ.get("OMX_TEAM_WORKER"):
        return None
    try:
        from omx import __version__
        from omx.engine import early

        return early.start(kwargs["repo"], kwargs["workflow"], __version__)
    except Exception:  # whatever went wrong, the engine starts its own server and reports it
        return None


def exit_now(code: int) -> None:
    """End the process with ``code`` at once, skipping the interpreter's teardown of its modules.

    A worker has loaded most of omx, Jinja, YAML and the rest: tearing all that down takes the
    interpreter ~30-90 ms after the work is done and reported, for nothing — every record is on disk,
    every child reaped (``AppServerPool.close``). What the normal exit would still do is done here:
    output flushed, logging shut down.
    """
    import contextlib

    with contextlib.suppress(Exception):
        sys.stdout.flush()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    if "logging" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["logging"].shutdown()
    # The lifeline keeper is not waited for: it sees this process go and ends what is left (a Codex
    # server that was told to exit and is on its way).
    os._exit(code)
