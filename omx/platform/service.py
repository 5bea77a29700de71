"""Assemble a platform worker — client + source + workflow + runner + loop — the way ``team_worker`` does.

:func:`run_worker` serves both ``omx worker watch`` (the loop, until a signal or a fatal platform
error) and ``omx worker run <session-id>`` (claim that one session, run it, finish). Signals are the
engine's: SIGTERM or SIGINT interrupts the running session, releases its claim and keeps its
worktree; idle waits end at once because the source waits on the worker's interrupt event.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omx.engine.runner import Runner, RunnerConfig, check_runtime
from omx.engine.slots import MachineSlots
from omx.engine.team_worker import start_app_servers
from omx.engine.worker import Worker, WorkerOptions, WorkerReport
from omx.engine.workflow import Workflow, WorkflowInvalid, load_workflow, parse_workflow
from omx.errors import Refused
from omx.platform.auth import worker_client
from omx.platform.config import PlatformConfig, WorkerSettings, load_platform_config
from omx.platform.errors import PlatformConfigError
from omx.platform.runstate import StateFile, lock_holder, lock_path, pid_path, read_pid
from omx.platform.source import PlatformSource
from omx.platform.template import PLATFORM_WORKFLOW_MD
from omx.state import atomic

DEFAULT_LEASE_MS = 60_000


@dataclass
class RunSummary:
    """How a ``watch`` or ``run`` ended: the engine's counts plus a line per session."""

    report: WorkerReport
    outcomes: dict[str, str] = field(default_factory=dict)
    stopped_by: str | None = None  # a fatal platform problem (login revoked, worker deleted)


def platform_for(settings: WorkerSettings, *, url: str | None = None) -> PlatformConfig:
    """The platform config for a worker; refuse when it was registered on a different platform URL."""
    cfg = load_platform_config(url=url)
    if cfg.url is None and settings.platform_url:
        cfg.url, cfg.sources["url"] = settings.platform_url, str(settings.path)
    want, have = settings.platform_url.rstrip("/"), cfg.require_url().rstrip("/")
    if want and want != have:
        raise PlatformConfigError(f"worker {settings.id} was registered on {want}, but the platform is now {have} "
                                  f"({cfg.sources.get('url')}); set OMX_PLATFORM_URL={want} or configure it again")
    return cfg


def load_worker_workflow(settings: WorkerSettings) -> Workflow:
    """The worker's WORKFLOW.md with the local settings applied (isolation, worktree root, concurrency).

    Raises:
        WorkflowError: the file is missing or invalid, or its template never uses ``session``.
    """
    repo = Path(settings.repo)
    if settings.workflow:
        wf = load_workflow(Path(settings.workflow).expanduser(), repo)
    else:
        wf = parse_workflow(PLATFORM_WORKFLOW_MD, None)
    if "session" not in wf.variables:
        raise WorkflowInvalid(f"{wf.label}: the prompt template never uses `session`, so the agent would not see "
                              "the platform's session; start from the starter file (`omx worker create` writes one)",
                              path=wf.label)
    s = wf.settings
    wf.settings = s.model_copy(update={
        "worktree": s.worktree.model_copy(update={"mode": settings.isolation, "root": settings.worktree_root}),
        "agent": s.agent.model_copy(update={"max_concurrent_agents": settings.max_concurrent_runs}),
    })
    return wf


def run_worker(settings: WorkerSettings, *, only_session: str | None = None, say: Callable[[str], None],
               poll_interval_ms: int | None = None, lease_ms: int = DEFAULT_LEASE_MS, max_sessions: int | None = None,
               install_signals: bool = True, url: str | None = None, mode: str = "foreground") -> RunSummary:
    """Run the worker until stopped (``watch``) or for the one session ``only_session`` (``run``).

    ``mode`` (foreground | background | run) is recorded for ``omx worker status``.

    Everything that can be checked is checked before the first claim: an API key or a missing
    login (refused before any worker operation), the workflow, the agent program.
    """
    cfg = platform_for(settings, url=url)
    client = worker_client(cfg)
    try:
        wf = load_worker_workflow(settings)
        check_runtime(wf.settings.runtime)
    except BaseException:
        client.close()
        raise
    rt = wf.settings.runtime
    policy: dict[str, Any] = {"runtime": rt.kind, "sandbox": rt.sandbox, "approval_policy": str(rt.approval_policy),
                              "isolation": settings.isolation, "max_concurrent_runs": settings.max_concurrent_runs}
    source = PlatformSource(client, settings, poll_interval_ms=poll_interval_ms or wf.settings.polling.poll_interval_ms,
                            lease_ms=lease_ms, only_session=only_session, say=say, runtime_policy=policy,
                            state=StateFile(settings.id, mode=mode))
    # The same Codex server pool as a team worker: back-to-back sessions share one server. Started
    # ahead for a known session (`run`); a watching worker starts one when a session arrives (an idle
    # server would hold ~130 MB while nothing is queued), and the pool stops it after 300 s unused.
    pool = start_app_servers(rt, Path(settings.repo), prestart=only_session is not None)
    try:
        runner = Runner(source, RunnerConfig(repo=Path(settings.repo), workflow=wf, namespace=settings.id,
                                             worker=settings.name, slots=MachineSlots(), runtime=pool))
        opts = WorkerOptions(max_concurrent=settings.max_concurrent_runs, poll_ms=1_000,
                             until_empty=only_session is not None, max_tasks=1 if only_session else max_sessions,
                             install_signals=install_signals)
        worker = Worker(source, runner, opts)
        source.interrupt = worker.interrupt  # a signal ends an idle wait at once
        report = worker.run()
    finally:
        if pool is not None:
            pool.close()
    return RunSummary(report, dict(source.outcomes), source.shutdown_requested())


@contextlib.contextmanager
def exclusive(worker_id: str) -> Iterator[None]:
    """Hold ``run/worker-<id>.lock`` and write the pidfile: one ``watch`` per worker on this machine.

    Raises:
        Refused: another process runs this worker (its pid is named).
    """
    from filelock import FileLock, Timeout

    path = lock_path(worker_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        other = lock_holder(worker_id)
        raise Refused(f"worker {worker_id} is already running here" + (f" (pid {other})" if other else "")
                      + f"; `omx worker stop --worker {worker_id}` stops it", worker=worker_id) from None
    try:
        atomic.write_bytes(pid_path(worker_id), f"{os.getpid()}\n".encode(), durable=False, mode=0o644)
        yield
    finally:
        if read_pid(worker_id) == os.getpid():
            pid_path(worker_id).unlink(missing_ok=True)
        lock.release()
