"""The leader: turn a goal into a team, start its workers, watch them, and end it cleanly.

``start_team`` writes the team, the tasks, worker identities and inboxes; starts N ``omx team worker``
processes (or tmux panes); then monitors until every task is terminal — reclaiming expired claims,
restarting crashed workers with ``restart``, moving a dead worker's queued tasks to the shared queue —
while a :class:`Progress` view shows it. Ctrl-C (or SIGTERM) asks every worker to stop and waits.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omx.engine.patience import describe, is_weather
from omx.errors import InvalidInput, OmxError, TeamExists
from omx.state import modes, names
from omx.state.filestore import FileStore
from omx.team.plan import PlannedTask
from omx.terminal import plural, visible


@dataclass
class StartOptions:
    goal: str
    workers: int = 3
    team: str | None = None
    plan: Path | None = None
    planner: str = "auto"  # auto | codex | heuristic
    workflow: Path | None = None
    tmux: bool = False
    restart: bool = False
    swarm: bool = False  # pull-only: no pre-assignment
    lease_ms: int = 60_000
    planner_timeout_s: float | None = None  # default: WORKFLOW.md's planner.timeoutMs
    agents: str = "omx"  # omx: omx's worker loop | codex: Codex sessions following $worker
    repo: Path = field(default_factory=Path.cwd)
    shutdown_wait_s: float = 30.0
    created_team: str | None = None  # set once run_team has written the team: what `resume` would take


@dataclass
class WorkerProc:
    name: str
    proc: subprocess.Popen[bytes] | None
    log: Path
    restarts: int = 0
    pane: str | None = None
    log_offset: int = 0  # how far Leader.worker_warnings has read the log


def slug(goal: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", goal.lower()).strip("-")[:24].strip("-")
    return s or "team"


def repo_root(path: Path) -> Path:
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if out.returncode != 0:
        raise InvalidInput(f"{path} is not inside a git repository (omx works in a repo: git init first)")
    return Path(out.stdout.strip())


def plan_tasks(opts: StartOptions, warn: Callable[[str], None],
               say: Callable[[str], None] = lambda text: None) -> tuple[list[PlannedTask], str]:
    """Tasks from, in order of preference: the plan file, the Codex planner, the heuristic.

    ``say`` hears what the Codex planner is doing while the user waits.
    """
    from omx.team import plan

    if opts.plan is not None:
        notes: list[str] = []
        tasks = plan.load_plan(opts.plan, notes)
        for note in notes:
            warn(note)
        return tasks, f"plan file {opts.plan}"
    if opts.planner in ("auto", "codex"):
        from omx.engine.runtimes.codex_common import find_codex

        if opts.planner == "codex" or find_codex(dict(os.environ)) is not None:
            from omx.engine.workflow import load_workflow
            from omx.team.planner import codex_plan

            try:
                wf = load_workflow(opts.workflow, opts.repo)
                limit = opts.planner_timeout_s or wf.settings.planner.timeout_ms / 1000
                say(f"planning with Codex (up to {limit:g} s; --plan FILE or --planner heuristic skip it)…")
                return codex_plan(opts.goal, opts.repo, opts.workers, runtime_settings=wf.settings.runtime,
                                  timeout_s=limit, progress=say), "codex planner"
            except OmxError as exc:
                warn(f"{exc.message}; using the heuristic")
    return plan.heuristic(opts.goal), "heuristic"


def integration_plan(opts: StartOptions) -> Callable[[str], dict[str, Any] | None]:
    """For a team name, the integration settings to record in its config (``None``: none, as in
    repository mode). Reads WORKFLOW.md now, so a broken one stops the start before anything is written."""
    from omx.engine.team_worker import integration_target
    from omx.engine.workflow import load_workflow

    settings = load_workflow(opts.workflow, opts.repo, compile=False).settings

    def plan(team: str) -> dict[str, Any] | None:
        from omx.engine.workspaces import _current_branch, _rev

        target = integration_target(opts.repo, team, settings)
        if target is None:
            return None
        base = settings.worktree.base_ref or _current_branch(opts.repo) or "HEAD"
        _rev(opts.repo, base)  # a repository without a commit, or a baseRef that names none: say so now
        return {"branch": target.branch, "base": base}

    return plan


def refuse_existing(store: FileStore, opts: StartOptions) -> None:
    """An explicit ``--team`` that exists already: say so, and point to ``omx team resume``."""
    if opts.team and names.team_name(opts.team) in store.list_teams():
        raise _exists(store, names.team_name(opts.team))


def _exists(store: FileStore, team: str) -> TeamExists:
    return TeamExists(f"team {team} exists already under {store.root}: resume it with "
                      f"`omx team resume --team {team}`, or pick another --team", team=team)


def create_team(store: FileStore, opts: StartOptions, tasks: list[PlannedTask],
                integration: Callable[[str], dict[str, Any] | None] | None = None) -> str:
    """Write the team, its tasks (pre-assigned round-robin unless swarm), identities and inboxes.

    ``integration``: the settings to record for a team name (see :func:`integration_plan`).
    """
    base = names.team_name(opts.team) if opts.team else slug(opts.goal)
    team = base
    for n in range(2, 1000):
        try:
            workers = [f"worker-{i}" for i in range(1, opts.workers + 1)]
            found = integration(team) if integration is not None else None
            store.create_team(team, goal=opts.goal, workers=workers, lease_ms=opts.lease_ms,
                              extra={"integration": found} if found else None)
            break
        except TeamExists:
            if opts.team:
                raise _exists(store, team) from None
            team = f"{base[:26]}-{n}"
    ids: dict[int, str] = {}
    for pos, t in enumerate(tasks, start=1):
        owner = None if opts.swarm else f"worker-{(pos - 1) % opts.workers + 1}"
        created = store.create_task(team, t.subject, t.description, depends_on=[ids[d] for d in t.depends_on],
                                    priority=t.priority, role=t.role, files=t.files, owner=owner)
        ids[pos] = created.id
    for i in range(1, opts.workers + 1):
        w = f"worker-{i}"
        store.write_identity(team, w, index=i, role="executor")
        store.render_inbox(team, w)
    return team


class Leader:
    """Starts, watches and stops the workers of one team."""

    def __init__(self, store: FileStore, team: str, opts: StartOptions, on_line: Callable[[str], None]) -> None:
        self.store = store
        self.team = team
        self.opts = opts
        self.say = on_line
        self.procs: dict[str, WorkerProc] = {}
        self.told: set[int] = set()  # pids of exited workers whose exit was reported
        self.stop_reason: str | None = None
        self.log_dir = store.paths(team).dir / "logs"
        self.file_mode = store.file_mode(team)  # logs hold prompts and output: private like the state
        modes.make_dirs(self.log_dir, modes.dir_for(self.file_mode))

    def worker_argv(self, name: str) -> list[str]:
        if self.opts.agents == "codex":
            return self.codex_argv(name)
        argv = [sys.executable, "-m", "omx", "team", "worker", "--team", self.team, "--name", name,
                "--root", str(self.store.root), "--repo", str(self.opts.repo), "--until-empty", "-v",
                # The leader asks for a shutdown only when all is done or the user pressed Ctrl-C: in
                # both cases a running task should be interrupted and released, not run to its end.
                "--shutdown-policy", "interrupt"]
        if self.opts.workflow:
            argv += ["--workflow", str(self.opts.workflow)]
        return argv

    def codex_argv(self, name: str) -> list[str]:
        """A Codex session that follows ``$worker`` as ``<team>/<name>`` (``--agents codex``)."""
        from omx.engine.runtimes.codex_common import find_codex
        from omx.engine.workflow import load_workflow

        rt = load_workflow(self.opts.workflow, self.opts.repo, compile=False).settings.runtime
        codex = find_codex(dict(os.environ)) or "codex"
        argv = [codex, "exec", "--json", "--skip-git-repo-check", "--cd", str(self.opts.repo), "--sandbox", rt.sandbox,
                # A login shell would reset PATH (Debian's /etc/profile) and lose `omx`.
                "-c", "allow_login_shell=false"]
        if isinstance(rt.approval_policy, str):
            argv += ["-c", f'approval_policy="{rt.approval_policy}"']
        if rt.model:
            argv += ["-m", rt.model]
        return [*argv, f"$worker\nYou are {self.team}/{name} (OMX_TEAM_WORKER). Follow the $worker skill: take "
                       "the team's tasks one at a time until the team is drained or the leader asks you to stop, "
                       "then stop."]

    def start_worker(self, name: str) -> None:
        log = self.log_dir / f"{name}.log"
        env = {**os.environ, "OMX_TEAM_WORKER": f"{self.team}/{name}"}
        if self.opts.agents == "codex":  # the session runs `omx team api`: this omx, this state
            env["OMX_TEAM_STATE_ROOT"] = str(self.store.root)
            env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if self.opts.tmux:
            os.close(modes.create_file(log, os.O_WRONLY | os.O_APPEND, self.file_mode))  # made private before tee
            import shlex

            cmd = " ".join(shlex.quote(a) for a in self.worker_argv(name)) + f" 2>&1 | tee -a {shlex.quote(str(log))}"
            session = f"omx-{self.team}"
            have = subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode == 0
            verb = ["split-window", "-t", session] if have else ["new-session", "-d", "-s", session]
            out = subprocess.run(["tmux", *verb, "-P", "-F", "#{pane_id}", cmd], capture_output=True, text=True,
                                 env=env, check=True)
            subprocess.run(["tmux", "select-layout", "-t", session, "tiled"], capture_output=True)
            self.procs[name] = WorkerProc(name, None, log, pane=out.stdout.strip())
            return
        fd = modes.create_file(log, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0), self.file_mode)
        try:
            start = os.fstat(fd).st_size
            proc = subprocess.Popen(self.worker_argv(name), stdout=fd, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        finally:
            os.close(fd)
        old = self.procs.get(name)
        self.procs[name] = WorkerProc(name, proc, log, restarts=old.restarts + 1 if old else 0, log_offset=start)

    def start(self, only: list[str] | None = None) -> None:
        """Start worker-1..worker-N, or only the workers named in ``only`` (a resume)."""
        for name in only if only is not None else [f"worker-{i}" for i in range(1, self.opts.workers + 1)]:
            self.start_worker(name)

    def worker_warnings(self) -> list[tuple[str, str]]:
        """New lines in the workers' logs that say they are waiting out a full disk or an I/O error."""
        out = []
        for name, wp in self.procs.items():
            try:
                with open(wp.log, "rb") as f:
                    f.seek(wp.log_offset)
                    chunk = f.read(1 << 16)
            except OSError:
                continue
            whole = chunk[:chunk.rfind(b"\n") + 1]
            wp.log_offset += len(whole)
            for raw in whole.splitlines():
                if WEATHER_MARK in raw:
                    out.append((name, raw.decode("utf-8", "replace").partition(" WARNING ")[2] or raw.decode(
                        "utf-8", "replace")))
        return out

    def alive(self, wp: WorkerProc) -> bool:
        if wp.proc is not None:
            return wp.proc.poll() is None
        if wp.pane:
            out = subprocess.run(["tmux", "list-panes", "-a", "-F", "#{pane_id} #{pane_dead}"], capture_output=True,
                                 text=True)
            return f"{wp.pane} 0" in out.stdout
        return False

    def tick(self) -> dict[str, Any]:
        """One monitoring pass: reclaim, restart or unassign, and return the summary."""
        for r in self.store.reclaim_expired(self.team):
            self.say(f"reclaimed task {r['task_id']} from {r['previous_owner']} ({r['reason']})")
        summary = self.store.summary(self.team)
        for name, wp in list(self.procs.items()):
            if self.alive(wp):
                continue
            code = wp.proc.returncode if wp.proc else None
            if code == 0 or summary["drained"]:
                continue
            if wp.proc is not None and wp.proc.pid not in self.told:
                self.told.add(wp.proc.pid)  # once per process: this runs every tick
                tail = log_tail(wp.log)
                self.say(f"{name} exited ({code}); the end of its log {wp.log}:\n{tail}" if tail else
                         f"{name} exited ({code}) with an empty log {wp.log}")
            if self.opts.restart and wp.restarts < 5:
                self.say(f"{name} exited ({code}); restarting")
                self.start_worker(name)
                continue
            moved = [t.id for t in self.store.list_tasks(self.team, status="pending", owner=name).tasks]
            for tid in moved:
                self.store.assign_task(self.team, tid, None)
            if moved:
                self.say(f"{name} exited ({code}); its queued tasks {', '.join(moved)} go to the shared queue")
        return summary

    def finished(self, summary: dict[str, Any]) -> bool:
        c = summary["counts"]
        if c["pending"] + c["in_progress"] == 0:
            return True  # blocked tasks whose dependencies failed can never run
        if not any(self.alive(wp) for wp in self.procs.values()):
            return c["in_progress"] == 0 and not self.opts.restart
        return False

    def shutdown(self, reason: str) -> list[str]:
        """Ask every live worker to stop; wait for ACKs (bounded); kill what did not answer. Returns laggards."""
        from omx.clock import iso

        asked_at = iso(self.store.clock.now_ms() - 1)
        live = [n for n, wp in self.procs.items() if self.alive(wp)]
        for n in live:
            self.store.write_shutdown_request(self.team, n, names.LEADER, reason)
        deadline = time.monotonic() + self.opts.shutdown_wait_s
        pending = set(live)
        while pending and time.monotonic() < deadline:
            for n in list(pending):
                wp = self.procs[n]
                if not self.alive(wp) or self.store.read_shutdown_ack(self.team, n, asked_at):
                    pending.discard(n)
            time.sleep(0.1)
        for n in live:
            wp = self.procs[n]
            if wp.proc is not None:
                try:
                    wp.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.killpg(wp.proc.pid, signal.SIGTERM)
                    try:
                        wp.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        os.killpg(wp.proc.pid, signal.SIGKILL)
                        wp.proc.wait()
        return sorted(pending)


def check_before_start(opts: StartOptions, line: Callable[[str], None]) -> None:
    """The options, then :func:`omx.team.preflight.preflight`: refuse a team that cannot work, before
    anything is planned or written; the auto planner without an account becomes the heuristic."""
    from omx.team.preflight import preflight

    if opts.workers < 1 or opts.workers > 64:
        raise InvalidInput("--workers must be between 1 and 64")
    if opts.agents not in ("omx", "codex"):
        raise InvalidInput(f"--agents must be omx or codex, not {opts.agents!r}")
    wants_codex_plan = opts.plan is None and opts.planner in ("auto", "codex")
    checked = preflight(opts.repo, opts.workflow, codex_planner=wants_codex_plan, codex_agents=opts.agents == "codex")
    if opts.planner == "codex" and opts.plan is None and not checked.codex_planner and not checked.problems:
        checked.problems.append("--planner codex needs Codex with a model account (see above), or pass "
                                "--planner heuristic or --plan FILE")
    checked.raise_if_failed()
    for note in checked.notes:
        line(f"note: {note}")
    if wants_codex_plan and opts.planner == "auto" and not checked.codex_planner:
        opts.planner = "heuristic"


def run_team(store: FileStore, opts: StartOptions, *, live: bool, on_line: Callable[[str], None]) -> dict[str, Any]:
    """``omx team start``: plan, create, start, monitor until every task is terminal, then stop the workers.

    Returns the final summary plus ``team``, ``planned_by`` and ``laggards`` (workers that did not ACK).
    """
    def line(text: str) -> None:  # every progress line may carry task data: escaped for the terminal
        on_line(visible(text, keep_newlines=True))

    opts.repo = repo_root(opts.repo)
    refuse_existing(store, opts)  # before planning, which can take minutes
    check_before_start(opts, line)
    integration = integration_plan(opts)
    tasks, planned_by = plan_tasks(opts, lambda m: line(f"warning: {m}"), line)
    team = create_team(store, opts, tasks, integration)
    line(f"team {team}: {plural(len(tasks), 'task')} ({planned_by}), {plural(opts.workers, 'worker')}"
         f"{' in tmux session omx-' + team if opts.tmux else ''}; state under {store.paths(team).dir}")
    opts.created_team = team
    line(start_integration(store, team, opts.repo))
    leader = Leader(store, team, opts, line)
    summary = watch(store, leader, live=live, line=line, start=leader.start)
    summary["planned_by"] = planned_by
    return summary


def watch(store: FileStore, leader: Leader, *, live: bool, line: Callable[[str], None],
          start: Callable[[], None], since: int = 0) -> dict[str, Any]:
    """Start workers with ``start``, monitor until every task is terminal (or Ctrl-C / SIGTERM), then stop them.

    The part ``omx team start`` and ``omx team resume`` share. Returns the final summary plus ``team``,
    ``laggards`` (workers that did not ACK), ``interrupted`` and ``integration``. ``since``: the event
    cursor to show progress from (a resume does not replay the earlier run's lines).
    """
    team = leader.team
    stop: list[str] = []

    def on_signal(signum: int, frame: Any) -> None:
        stop.append(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    view = Progress(store, team, live=live, on_line=line)
    weather = DiskWatch(line)
    view.cursor = since
    watched = False
    try:
        start()
        while True:
            try:
                summary = leader.tick()
                view.update(summary)
            except Exception as exc:
                if not is_weather(exc):
                    raise
                # The state's disk is full (or failing): the workers wait it out, and so does the leader.
                weather.trouble(f"the team's state cannot be written: {describe(exc)}; "
                                "workers wait and retry until there is room", key="leader")
                if stop:
                    break
                time.sleep(0.5)
                continue
            low = free_space_warning(store.root)
            if low is not None:
                weather.trouble(low, key="space")
            else:
                weather.clear()
            for name, said in leader.worker_warnings():
                weather.say(f"{name}: {said}", key=name)
            if stop or leader.finished(summary):
                break
            store.await_event(team, cursor=view.cursor, timeout_ms=500)
        watched = True
    finally:
        try:
            laggards = leader.shutdown("interrupted by the user" if stop else "all tasks are done")
            for sig, h in old.items():
                signal.signal(sig, h)
            if watched:
                # A task's event is appended just after its file is written: the summary that ended the
                # loop can be a moment ahead of the log. With the workers gone, the log is complete.
                view.update(store.summary(team))
        finally:
            view.close()
    summary = store.summary(team)
    summary.update({"team": team, "laggards": laggards, "interrupted": bool(stop),
                    "integration": integration_state(store, team, leader.opts.repo)})
    for n in laggards:
        line(f"{n} did not acknowledge the shutdown within {leader.opts.shutdown_wait_s:g}s and was stopped")
    return summary


def resume_team(store: FileStore, team: str, opts: StartOptions, *, live: bool,
                on_line: Callable[[str], None]) -> dict[str, Any]:
    """``omx team resume``: start the team's workers that no live process runs, then monitor as ``start`` does.

    A worker counts as running when :meth:`~omx.state.workers.WorkerOps.live_worker` finds its process
    (an ``omx team worker`` on this host, or a fresh heartbeat from another). Returns the summary as
    :func:`run_team` does, plus ``restarted`` (the workers started) and ``running`` (those left alone).
    """
    def line(text: str) -> None:
        on_line(visible(text))

    opts.repo = repo_root(opts.repo)
    cfg = store.read_config(team)
    workers = cfg.worker_names()
    opts.team, opts.workers, opts.lease_ms = team, len(workers), cfg.lease_ms
    running = {w: r for w in workers if (r := store.live_worker(team, w, lease_ms=cfg.lease_ms)) is not None}
    missing = [w for w in workers if w not in running]
    before = store.summary(team)
    extra = {"restarted": missing, "running": sorted(running)}
    c = before["counts"]
    if c["pending"] + c["in_progress"] == 0:
        line(f"team {team}: no task left to run ({c['completed']} completed, {c['failed']} failed, "
             f"{c['blocked']} blocked): nothing to resume"
             + ("; send failed tasks back with `omx team retry <id>`" if c["failed"] else ""))
        return {**before, "team": team, "laggards": [], "interrupted": False,
                "integration": integration_state(store, team, opts.repo), **extra, "restarted": []}
    if not missing:
        line(f"team {team}: every worker is running already ("
             + ", ".join(f"{w} pid {r['pid']}" for w, r in sorted(running.items()))
             + "); nothing to restart — watch it with `omx team status --watch`")
        return {**before, "team": team, "laggards": [], "interrupted": False,
                "integration": integration_state(store, team, opts.repo), **extra}
    line(f"team {team}: {c['pending'] + c['in_progress']} of {plural(before['total'], 'task')} unfinished; restarting "
         f"{', '.join(missing)}" + (f" ({', '.join(sorted(running))} running already)" if running else ""))
    line(start_integration(store, team, opts.repo))
    leader = Leader(store, team, opts, line)
    try:  # the log's end: a byte offset at a line's end (events are appended whole, one write a line)
        since = store.paths(team).events.stat().st_size
    except FileNotFoundError:
        since = 0
    summary = watch(store, leader, live=live, line=line, start=lambda: leader.start(missing), since=since)
    summary.update(extra)
    return summary


def start_integration(store: FileStore, team: str, repo: Path) -> str:
    """Create the team's integration branch (from its base) now; one line that says what it is."""
    from omx.engine.integration import IntegrationTarget, ensure_branch, read_refs

    recorded = store.read_config(team).extra.get("integration")
    if not isinstance(recorded, dict):
        return "integration: none (repository mode: every worker shares one checkout)"
    target = IntegrationTarget(repo, team, recorded["branch"], recorded["base"])
    existed = read_refs(repo, target.ref).get(target.ref)
    tip = ensure_branch(target)
    if existed:
        return f"integration: {target.branch} exists already (at {tip[:10]}); the team builds on it"
    return f"integration: {target.branch}, from {target.base} at {tip[:10]}"


def integration_state(store: FileStore, team: str, repo: Path) -> dict[str, Any] | None:
    """The integration branch, its tip, its base, how many commits it is ahead, whether it is landed."""
    from omx.team.report import integration_view

    recorded = store.read_config(team).extra.get("integration")
    if not isinstance(recorded, dict):
        return None
    return integration_view(repo, str(recorded.get("branch")), str(recorded.get("base")))


def log_tail(path: Path, lines: int = 6) -> str:
    """The last ``lines`` lines of a worker's log, indented (escaped when shown: they carry task data)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(f"    {ln}" for ln in text.rstrip().splitlines()[-lines:])


WEATHER_MARK = b"the team's state cannot be written"  # what omx.engine.patience and the worker loop log
LOW_SPACE_BYTES = 64 * 1024  # below this the state's disk is as good as full: workers' writes start to fail


def free_space_warning(root: Path) -> str | None:
    """A warning when the state's file system is (nearly) full, else None.

    On a full disk the workers cannot write their logs either, so the leader does not wait to hear
    from them: one ``statvfs`` a tick (quotas and file size limits it cannot see: those show up as
    errors, its own or in the workers' logs).
    """
    try:
        st = os.statvfs(root)
    except OSError:
        return None
    free = st.f_bavail * st.f_frsize
    if free >= LOW_SPACE_BYTES:
        return None
    return (f"the team's state cannot be written: {root} has {free // 1024} KB free; "
            "workers wait and retry until there is room")


class DiskWatch:
    """Says each source's full-disk warning (``key``) at most every :attr:`every_s`; says when the trouble ends."""

    every_s = 10.0

    def __init__(self, on_line: Callable[[str], None]) -> None:
        self.on_line = on_line
        self.said: dict[str, float] = {}
        self.in_trouble = False

    def trouble(self, message: str, key: str) -> None:
        """The leader's own evidence (its writes fail, or the disk has no room): said, and its end said too."""
        self.say(message, key)
        self.in_trouble = True

    def say(self, message: str, key: str) -> None:
        """A warning to pass on (a worker's, from its log), at most every :attr:`every_s` per ``key``."""
        now = time.monotonic()
        if now - self.said.get(key, -1e9) >= self.every_s:
            self.said[key] = now
            self.on_line(f"warning: {visible(message)}")

    def clear(self) -> None:
        if self.in_trouble:
            self.in_trouble = False
            self.said.clear()
            self.on_line("the team's state can be written again")


class Progress:
    """A live rich table on a terminal; otherwise one line per claim, completion or failure."""

    def __init__(self, store: FileStore, team: str, *, live: bool, on_line: Callable[[str], None]) -> None:
        self.store, self.team, self.on_line = store, team, on_line
        self.cursor = 0
        self.t0 = time.monotonic()
        self.notes: dict[str, str] = {}  # worker -> "no output from codex for 45 s", until it is heard again
        self.live = None
        if live:
            from rich.live import Live

            self.live = Live(refresh_per_second=4, transient=False)
            self.live.start()

    def update(self, summary: dict[str, Any]) -> None:
        page = self.store.read_events(self.team, cursor=self.cursor,
                                      types=["task_claimed", "task_completed", "task_failed", "claim_expired",
                                             "task_released", "worker_activity"])
        self.cursor = page.cursor
        lines = []
        for ev in page.events:
            if ev.type == "worker_activity":
                if ev.data.get("kind") == "silent":
                    self.notes[ev.worker or ""] = f"task {ev.task_id}: {ev.data.get('text')}"
                    lines.append(f"task {ev.task_id}: {ev.data.get('text')} ({ev.worker})")
                else:
                    self.notes.pop(ev.worker or "", None)  # heard from again
                continue
            self.notes.pop(ev.worker or "", None)
            what = {"task_claimed": "claimed", "task_completed": "completed", "task_failed": "FAILED",
                    "claim_expired": "lost (reclaimed)", "task_released": "sent back"}[ev.type]
            extra = f": {ev.reason}" if ev.reason else ""
            lines.append(f"task {ev.task_id} {what} by {ev.worker}{extra}")
        if self.live is not None:
            self.live.update(self._table(summary))
            return
        for text in lines:
            self.on_line(f"{time.monotonic() - self.t0:7.1f}s  {text}")

    def _table(self, summary: dict[str, Any]) -> Any:
        from rich.console import Group
        from rich.table import Table

        c = summary["counts"]
        head = "  ".join(f"{k} {v}" for k, v in c.items())
        from rich.text import Text

        def cell(value: object) -> Text:  # plain text, escaped: neither rich markup nor escapes from the data
            return Text(visible(value))

        wt = Table("worker", "state", "task", "heartbeat", "turns", "tokens", "note",
                   title=cell(f"team {self.team} — {head} — {summary.get('tokens', 0)} tokens"), title_justify="left")
        for w in summary["workers"]:
            age = "—" if w["heartbeat_age_ms"] is None else f"{w['heartbeat_age_ms'] / 1000:.1f}s"  # live: seconds
            wt.add_row(cell(w["name"]), cell(f"{w['state']}{' (stale)' if w['stale'] else ''}"),
                       cell(w["current_task_id"] or "—"), age, cell(w["turn_count"]), cell(w.get("tokens", 0)),
                       cell(self.notes.get(w["name"], "")))
        return Group(wt)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
