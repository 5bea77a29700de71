"""``omx worker ...``: the remote platform's private local worker.

Each command parses, calls one function of :mod:`omx.platform`, and prints. ``--worker <id>`` picks
the worker when several are configured here. Nothing from :mod:`omx.platform` (or httpx) is imported
until a command runs.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from omx.errors import InvalidInput
from omx.terminal import visible

app = typer.Typer(help="A private local worker for the remote planning platform: claims its queued sessions and "
                  "runs Codex on them in git worktrees.", no_args_is_help=True)
worktrees_app = typer.Typer(help="List this worker's session worktrees, or remove them.", invoke_without_command=True)
app.add_typer(worktrees_app, name="worktrees")

_WORKER = typer.Option(None, "--worker", "-w", help="the worker id (needed when several are configured)")
_JSON = typer.Option(False, "--json", help="print JSON")
_URL = typer.Option(None, "--url", help="the platform URL (default: $OMX_PLATFORM_URL or config/platform.toml)")
_POLL = typer.Option(None, "--poll-interval-ms", min=10, help="poll interval (default: WORKFLOW.md's "
                     "polling.pollIntervalMs, 30000)")
_LEASE = typer.Option(None, "--lease-ms", min=1_000, help="claim lease, renewed every third of it "
                      "(default: $OMX_PLATFORM_LEASE_MS or 60000)")
_VERBOSE = typer.Option(False, "--verbose", "-v", help="log every step to stderr")


def _settings_options(
    repo: Path | None, isolation: str | None, workflow: Path | None, max_runs: int | None, worktree_root: Path | None,
    auto_start: bool | None, instructions: str | None,
) -> dict[str, Any]:
    if isolation is not None and isolation not in ("task", "branch"):
        raise InvalidInput("--isolation must be task or branch")
    if instructions is not None and instructions.startswith("@"):
        instructions = Path(instructions[1:]).expanduser().read_text(encoding="utf-8")
    return {"repo": repo, "isolation": isolation, "workflow": workflow, "max_concurrent_runs": max_runs,
            "worktree_root": worktree_root, "auto_start": auto_start, "instructions": instructions}


_ISOLATION = typer.Option(None, "--isolation", help="task: a git worktree per session (default) | branch: a branch "
                          "per session in the repository itself")
_WORKFLOW = typer.Option(None, "--workflow", help="WORKFLOW.md to use (a starter one is written if missing)")
_MAX_RUNS = typer.Option(None, "--max-concurrent-runs", min=1, max=64, help="sessions run at once (default 1)")
_ROOT = typer.Option(None, "--worktree-root", help="where session worktrees go (default: $OMX_HOME/worktrees)")
_AUTO = typer.Option(None, "--auto-start/--no-auto-start", help="start the background worker right after saving")
_INSTR = typer.Option(None, "--instructions", help="trusted extra instructions for every session (text or @file)")


@app.command("create")
def create(
    name: str = typer.Option(..., "--name", help="the worker's name on the platform"),
    repo: Path = typer.Option(Path("."), "--repo", help="the git repository sessions change"),
    agent: str | None = typer.Option(None, "--agent", help="the platform agent it serves (default: the only one)"),
    isolation: str | None = _ISOLATION, workflow: Path | None = _WORKFLOW, max_runs: int | None = _MAX_RUNS,
    worktree_root: Path | None = _ROOT, auto_start: bool | None = _AUTO, instructions: str | None = _INSTR,
    url: str | None = _URL, as_json: bool = _JSON,
) -> None:
    """Register a new worker on the platform and write its local settings."""
    from omx.platform.config import load_platform_config
    from omx.platform.manage import create_worker

    opts = _settings_options(repo, isolation, workflow, max_runs, worktree_root, auto_start, instructions)
    opts.pop("repo")
    done = create_worker(load_platform_config(url=url), name=name, repo=repo, agent_id=agent, **opts)
    _configured(done, as_json, start=done.settings.auto_start)


@app.command("configure")
def configure(
    worker_id: str = typer.Argument(..., help="the id of a worker that exists on the platform"),
    name: str | None = typer.Option(None, "--name"), repo: Path | None = typer.Option(None, "--repo"),
    isolation: str | None = _ISOLATION, workflow: Path | None = _WORKFLOW, max_runs: int | None = _MAX_RUNS,
    worktree_root: Path | None = _ROOT, auto_start: bool | None = _AUTO, instructions: str | None = _INSTR,
    url: str | None = _URL, as_json: bool = _JSON,
) -> None:
    """Bind local settings to an existing platform worker (or change them) without registering a new one."""
    from omx.platform.config import load_platform_config
    from omx.platform.manage import configure_worker

    opts = _settings_options(repo, isolation, workflow, max_runs, worktree_root, auto_start, instructions)
    done = configure_worker(load_platform_config(url=url), worker_id, name=name, **opts)
    _configured(done, as_json, start=auto_start is True)


def _configured(done: Any, as_json: bool, *, start: bool) -> None:
    """Say what was saved; start the background worker when asked to now (``start``), never a second one.

    ``auto_start`` is acted on when the worker is created or ``--auto-start`` was just passed: editing
    another setting of an auto-start worker must not start (or fail to start) it again.
    """
    s = done.settings
    if as_json:
        typer.echo(json.dumps({"settings": s.model_dump(mode="json"), "path": str(done.path),
                               "wrote_workflow": done.wrote_workflow, "registered": done.registered}, indent=2))
    else:
        verb = "registered" if done.registered else "configured"
        _echo(f"{verb} worker {s.name} ({s.id}) for agent {done.agent} in workspace {done.workspace}")
        _echo(f"settings  {done.path}")
        _echo(f"workflow  {s.workflow}{' (starter written)' if done.wrote_workflow else ''}")
        _echo(f"repo      {s.repo} (isolation {s.isolation}, worktrees under {s.worktree_root})")
    from omx.platform import daemon

    running = daemon.status(s.id)
    if running.running:
        _echo(f"worker {s.id} is running (pid {running.pid}) {running.how()}: restart it to apply the new "
              f"settings (`omx worker stop --worker {s.id}`, then `omx worker start --worker {s.id}`)",
              err=as_json)
    elif start:
        st = daemon.start(s.id)
        _echo(f"started in the background (pid {st.pid}); logs: omx worker logs --worker {s.id}", err=as_json)
    elif not as_json:
        _echo(f"next: omx worker doctor --worker {s.id}; then omx worker watch (or start)")


@app.command("list")
def list_workers(as_json: bool = _JSON) -> None:
    """The workers configured on this machine, and whether each runs in the background."""
    from omx.platform import daemon
    from omx.platform.config import list_worker_settings

    good, bad = list_worker_settings()
    rows = [{"id": s.id, "name": s.name, "repo": s.repo, "running": daemon.status(s.id).running} for s in good]
    if as_json:
        typer.echo(json.dumps({"workers": rows, "unreadable": [str(p) for p, _ in bad]}, indent=2))
        return
    for r in rows:
        _echo(f"{r['id']}  {r['name']}  {r['repo']}  {'running' if r['running'] else 'stopped'}")
    for path, problem in bad:
        _echo(f"unreadable: {path}: {problem}")
    if not rows and not bad:
        typer.echo("no workers configured: omx worker create --name <name> --repo <folder>")


@app.command("doctor")
def doctor(worker: str | None = _WORKER, url: str | None = _URL, as_json: bool = _JSON) -> None:
    """Check auth, workspace, registration, local settings, workflow, worktree root, Codex, stale configs
    (for every configured worker unless --worker names one)."""
    from omx.platform import doctor as doc
    from omx.platform.config import list_worker_settings, pick_worker

    workers = [pick_worker(worker)] if worker else list_worker_settings()[0]
    if len(workers) > 1:
        sections = doc.run_each(workers, url=url)
    else:  # one worker, or none yet: what can be checked (platform, login, workspace)
        only = workers[0] if workers else None
        sections = [(only, doc.run(only, url=url))]
    ok = all(report.ok for _, report in sections)
    if as_json:
        typer.echo(json.dumps({"ok": ok, "checks": [c.to_dict() for _, r in sections for c in r.checks],
                               "workers": {s.id: {"ok": r.ok, "checks": [c.to_dict() for c in r.checks]}
                                           for s, r in sections if s is not None}}, indent=2))
    else:
        for settings, report in sections:
            if len(sections) > 1:
                _echo(f"{'shared' if settings is None else f'worker {settings.name} ({settings.id})'}:")
            for c in report.checks:
                mark = "ok  " if c.ok else {"error": "FAIL", "warning": "warn", "info": "info"}[c.level]
                text = f"[{mark}] {c.name}: {c.detail}"
                _echo("\n".join(f"  {line}" for line in text.splitlines()) if len(sections) > 1 else text)
    if not ok:
        raise typer.Exit(1)


@app.command("run")
def run(
    session_id: str = typer.Argument(..., help="the session to run"),
    worker: str | None = _WORKER, lease_ms: int | None = _LEASE, url: str | None = _URL, verbose: bool = _VERBOSE,
) -> None:
    """Claim one known session, run it, and finish it (exit 0 when it completed)."""
    from omx.platform.service import exclusive, run_worker

    settings = _pick(worker)
    _logging(verbose)
    say = _say()
    with exclusive(settings.id):
        out = run_worker(settings, only_session=session_id, say=say, lease_ms=_lease(lease_ms), url=url, mode="run")
    if session_id not in out.outcomes:  # how it ended was said as it ended, otherwise
        say(f"{session_id}: {out.report.reason}")
    if out.report.completed != 1:
        raise typer.Exit(1)


@app.command("watch")
def watch(
    worker: str | None = _WORKER, poll_ms: int | None = _POLL, lease_ms: int | None = _LEASE,
    max_sessions: int | None = typer.Option(None, "--max-sessions", min=1, help="stop after this many sessions"),
    url: str | None = _URL, verbose: bool = _VERBOSE,
    background: bool = typer.Option(False, "--background", hidden=True),
) -> None:
    """Poll the platform and run its sessions, with progress here; Ctrl-C releases the running session."""
    from omx.errors import OmxError
    from omx.platform.runstate import record_start_failure
    from omx.platform.service import exclusive, run_worker

    try:
        settings = _pick(worker)
        _logging(verbose or background, requests=verbose)
        say = _say(dated=background)
        with exclusive(settings.id):
            out = run_worker(settings, say=say, poll_interval_ms=poll_ms, lease_ms=_lease(lease_ms),
                             max_sessions=max_sessions, url=url, mode="background" if background else "foreground")
    except OmxError as exc:
        if background and worker:  # `omx worker start` waits for this child: tell it why, code and all
            record_start_failure(worker, exc)
        raise
    r = out.report
    say(f"stopped ({r.reason}): {r.completed} completed, {r.failed} failed, {r.released} released, {r.lost} lost")
    if out.stopped_by:
        raise typer.Exit(1)


@app.command("start")
def start(worker: str | None = _WORKER, poll_ms: int | None = _POLL, lease_ms: int | None = _LEASE) -> None:
    """Run `watch` in the background (detached; pidfile and log under $OMX_HOME)."""
    from omx.platform import daemon

    settings = _pick(worker)
    extra = [*(["--poll-interval-ms", str(poll_ms)] if poll_ms else []),
             *(["--lease-ms", str(lease_ms)] if lease_ms else [])]
    st = daemon.start(settings.id, extra_args=extra)
    _echo(f"worker {settings.name} ({settings.id}) runs in the background (pid {st.pid}); "
          f"log: {st.log}; stop it with `omx worker stop`")


@app.command("status")
def status(worker: str | None = _WORKER, as_json: bool = _JSON) -> None:
    """Whether the worker runs here (in the background, or a `watch` in a terminal), what it is doing, and when
    the platform last answered."""
    from omx.platform import daemon

    settings = _pick(worker)
    st = daemon.status(settings.id)
    if as_json:
        typer.echo(json.dumps({"worker_id": st.worker_id, "running": st.running, "pid": st.pid, "mode": st.mode,
                               "state": st.state, "log": str(st.log), "stale_pidfile": st.stale_pidfile}, indent=2))
    elif st.running:
        s = (st.state or {}) if st.mode else {}  # a state file written by this process, not an earlier one
        cur = ", ".join(s.get("current") or []) or "nothing"
        typer.echo(visible(f"{settings.name} ({settings.id}): running, pid {st.pid}, {s.get('state', 'starting')} — "
                           f"{st.how()}"))
        typer.echo(visible(f"sessions: running {cur}; {s.get('completed', 0)} completed, {s.get('failed', 0)} "
                           f"failed, {s.get('released', 0)} released; platform last answered "
                           f"{s.get('last_platform_ok_at')}"))
        if s.get("last_error"):
            typer.echo(visible(f"last error: {s['last_error']}"))
        typer.echo(f"log: {st.log}" if st.mode == "background" else "its output is in the terminal that runs it")
    else:
        s = st.state or {}
        typer.echo(visible(f"{settings.name} ({settings.id}): not running"
                           + (f" (last: {s.get('state')} at {s.get('updated_at')})" if s else "")))
        typer.echo(f"log: {st.log}")
    if not st.running:
        raise typer.Exit(1)


@app.command("logs")
def logs(
    worker: str | None = _WORKER, follow: bool = typer.Option(False, "--follow", "-f", help="keep printing"),
    lines: int = typer.Option(50, "--lines", "-n", min=0),
) -> None:
    """Print the background worker's log (-f: follow it until Ctrl-C)."""
    from omx.platform import daemon

    settings = _pick(worker)
    path = daemon.log_path(settings.id)
    if not follow:
        text = daemon.tail(path, lines)
        if text:
            typer.echo(visible(text, keep_newlines=True))  # a log written by an older omx may hold raw escapes
        return
    try:
        for line in daemon.follow(path, lines=lines):
            typer.echo(visible(line, keep_newlines=True))
    except KeyboardInterrupt:
        return


@app.command("stop")
def stop(
    worker: str | None = _WORKER,
    timeout: float = typer.Option(30.0, "--timeout", help="seconds to wait before killing it"),
) -> None:
    """Stop the running worker gracefully — background, or a `watch` in a terminal — releasing its session; exit 1
    if it had to be killed."""
    from omx.platform import daemon

    settings = _pick(worker)
    graceful = daemon.stop(settings.id, timeout_s=timeout, say=_echo)
    if not graceful:
        raise typer.Exit(1)
    _echo(f"stopped worker {settings.name} ({settings.id})")


@worktrees_app.callback()
def worktrees(ctx: typer.Context, worker: str | None = _WORKER, as_json: bool = _JSON) -> None:
    """The worker's session worktrees (kept after each run; `remove` deletes them)."""
    if ctx.invoked_subcommand is not None:
        return
    from omx.platform.manage import worker_worktrees
    from omx.platform.runstate import running_sessions

    settings = _pick(worker)
    found = worker_worktrees(settings)
    running = running_sessions(settings.id)
    rows = [{"session": w.key.removeprefix("session-"), "path": str(w.path), "branch": w.branch,
             "running": w.key.removeprefix("session-") in running} for w in found]
    if as_json:
        typer.echo(json.dumps({"worktrees": rows}, indent=2))
        return
    for r in rows:
        typer.echo(visible(f"{r['session']}  {r['branch'] or '-'}  {r['path']}{'  (running)' if r['running'] else ''}"))
    if not rows:
        typer.echo("no session worktrees")


@worktrees_app.command("remove")
def worktrees_remove(
    session_id: str | None = typer.Argument(None, help="the session whose worktree to remove"),
    all_: bool = typer.Option(False, "--all", help="remove every session worktree of this worker"),
    force: bool = typer.Option(False, "--force", help="even the worktree of a session running now"),
    delete_branch: bool = typer.Option(False, "--delete-branch", help="also delete the session's branch"),
    worker: str | None = _WORKER,
) -> None:
    """Remove a session's worktree (its branch, with the committed work, is kept unless --delete-branch)."""
    from omx.platform.manage import remove_worktrees

    if (session_id is None) == (not all_):
        raise InvalidInput("name a session, or pass --all")
    settings = _pick(worker)
    removed, skipped = remove_worktrees(settings, session_id, all_=all_, force=force, delete_branch=delete_branch)
    for w in removed:
        typer.echo(visible(f"removed {w.path}"))
    for line in skipped:
        typer.echo(visible(f"kept {line}"))
    if all_ and not removed and not skipped:
        typer.echo("no session worktrees")


# --- helpers ------------------------------------------------------------------------------------


def _pick(worker: str | None) -> Any:
    from omx.platform.config import pick_worker

    return pick_worker(worker)


def _echo(text: str, err: bool = False) -> None:
    """Print a line for a person: names, paths and the platform's text escaped (omx.terminal.visible)."""
    typer.echo(visible(text, keep_newlines=True), err=err)


def _lease(lease_ms: int | None) -> int:
    if lease_ms is not None:
        return lease_ms
    env = os.environ.get("OMX_PLATFORM_LEASE_MS", "")
    return max(1_000, int(env)) if env.isdigit() else 60_000


def _logging(verbose: bool, *, requests: bool = True) -> None:
    from omx.terminal import install_visible_logging

    install_visible_logging(logging.INFO if verbose else logging.WARNING)  # log lines carry the platform's text
    if not requests:  # a background worker's log: not a line per poll and heartbeat
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if not verbose:
        for handler in logging.getLogger().handlers:
            handler.addFilter(_outage_detail)


def _outage_detail(record: logging.LogRecord) -> bool:
    """Drop the engine's per-attempt warnings about an unreachable platform (a failed heartbeat or renewal).

    Without -v an outage is one line when it starts and one when it ends (the source says both);
    each failed call is a detail for -v.
    """
    from omx.platform.errors import PlatformUnavailable

    args = record.args if isinstance(record.args, tuple) else ()
    return not any(isinstance(a, PlatformUnavailable) for a in args)


def _say(*, dated: bool = False) -> Callable[[str], None]:
    """Progress lines for a person: timestamped, with the platform's text made safe for a terminal."""
    from omx.platform.client import clean

    fmt = "%Y-%m-%d %H:%M:%S" if dated else "%H:%M:%S"

    def say(line: str) -> None:
        text = "\n    ".join(clean(part, 2000) for part in line.splitlines() or [""])
        typer.echo(f"{time.strftime(fmt)} {text}")

    return say
