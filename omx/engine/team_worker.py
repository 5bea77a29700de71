"""Assemble a file-team worker: store source + workflow + runner + loop.

Start-up order matters for the first task's latency: the settings are read first (no Jinja yet), then
the ``codex app-server`` is started, and everything else — the template, the rest of the engine's
imports, the startup ACK, the claim, the worktree — happens while Codex starts up beside it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

from omx.engine.workflow import load_workflow, runs_codex_app_server

if TYPE_CHECKING:
    from omx.engine.early import EarlyServer
    from omx.engine.integration import IntegrationTarget
    from omx.engine.runtimes.app_server import AppServerPool
    from omx.engine.settings import RuntimeSettings, Settings
    from omx.engine.worker import WorkerReport
    from omx.state.filestore import FileStore


def run_team_worker(
    *, store: FileStore | Callable[[], FileStore], team: str, worker: str, repo: Path,
    workflow_path: Path | None = None,
    until_empty: bool = False, max_tasks: int | None = None, shutdown_policy: str = "finish", poll_ms: int = 1_000,
    install_signals: bool = True, after_spawn: Callable[[], object] | None = None, exiting: bool = False,
    early: EarlyServer | None = None,
) -> WorkerReport:
    """Run ``team``/``worker`` until it is told to stop (or the team drains, with ``until_empty``).

    ``after_spawn`` is called once the agent server is starting (or would have been): the place for
    set-up the server need not wait for, such as the CLI's logging configuration. ``store`` may be a
    function that opens it, called at that point too (the CLI: the store's imports come after the spawn).
    ``exiting``: the process ends right after (the ``omx`` program): idle Codex servers are left to
    exit on their own (see :meth:`AppServerPool.close`) instead of being waited for. ``early``: a
    server the caller started ahead of everything (:func:`omx.engine.early.start`), adopted here.
    """
    repo = repo.resolve()
    # Codex first when WORKFLOW.md plainly runs it (read without YAML): its start-up is the longest
    # wait of the first task. The parsed settings decide: a wrong guess only started a server for nothing.
    if early is not None:
        pool: AppServerPool | None = _adopting_pool(early, repo)
    else:
        pool = start_app_servers(None, repo) if runs_codex_app_server(workflow_path, repo) else None
    try:
        wf = load_workflow(workflow_path, repo, compile=False)
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    runtime = wf.settings.runtime
    if pool is not None and (runtime.kind != "codex-app-server" or runtime.command or runtime.pass_env):
        pool.close()  # guessed wrong (passEnv: the agent's environment differs from the default's)
        pool = None
    if pool is None:
        pool = start_app_servers(runtime, repo)
    try:
        if after_spawn is not None:
            after_spawn()
        if callable(store):
            store = store()
        wf.compile()
        from omx.engine.filesource import FileTeamSource
        from omx.engine.patience import PatientSource
        from omx.engine.runner import Runner, RunnerConfig, check_runtime
        from omx.engine.slots import MachineSlots
        from omx.engine.worker import Worker, WorkerOptions

        check_runtime(wf.settings.runtime)  # before the ACK: a worker that cannot run an agent must not claim work
        # Its reports wait out a full disk rather than drop a finished task (omx.engine.patience); the
        # worker's interrupt (a signal) ends such a wait.
        interrupt = threading.Event()
        source = cast("FileTeamSource", PatientSource(FileTeamSource(store, team, worker), interrupt))
        target = integration_target(repo, team, wf.settings, source.integration())
        runner = Runner(source, RunnerConfig(repo=repo, workflow=wf, namespace=team, worker=worker,
                                             slots=MachineSlots(), runtime=pool, integration=target))
        opts = WorkerOptions(max_concurrent=wf.settings.agent.max_concurrent_agents, until_empty=until_empty,
                             poll_ms=poll_ms, shutdown_policy=shutdown_policy, max_tasks=max_tasks,
                             install_signals=install_signals)
        return Worker(source, runner, opts, interrupt=interrupt).run()
    finally:
        if pool is not None:
            pool.close(wait=not exiting)


def integration_target(repo: Path, team: str, settings: Settings,
                       recorded: dict[str, object] | None = None) -> IntegrationTarget | None:
    """The team's integration branch, or None when there is nothing to integrate.

    ``recorded``: what the leader wrote into the team's config at its start (``branch``, ``base``);
    it wins over WORKFLOW.md, so every worker of a team merges into the same branch.
    Repository mode shares one checkout (nothing to bring together), and ``integration.enabled: false``
    keeps one branch per task.
    """
    from omx.engine.integration import IntegrationTarget, check_branch_name, default_branch

    if settings.worktree.mode == "repository" or not settings.integration.enabled:
        return None
    recorded = recorded or {}
    branch = recorded.get("branch") or settings.integration.branch or default_branch(team)
    base = recorded.get("base") or settings.worktree.base_ref or "HEAD"
    return IntegrationTarget(repo, team, check_branch_name(repo, str(branch)), str(base))


def _adopting_pool(early: EarlyServer, repo: Path) -> AppServerPool:
    # Should this fail, ``early`` is still the caller's to discard (see omx.cli.team_worker.run_worker).
    from omx.engine.runtimes.app_server import AppServerPool

    pool = AppServerPool(repo)
    pool.adopt(early)
    return pool


def start_app_servers(settings: RuntimeSettings | None, repo: Path, *, prestart: bool = True) -> AppServerPool | None:
    """For an app-server workflow, the worker's server pool with its first server already starting
    (``prestart``; else the first task starts it).

    ``settings`` ``None``: the default runtime settings (before WORKFLOW.md is parsed).
    """
    if settings is not None and settings.kind != "codex-app-server":
        return None
    from omx.engine.runtimes.app_server import AppServerPool
    from omx.engine.runtimes.base import agent_env
    from omx.engine.settings import RuntimeSettings

    pool = AppServerPool(repo)
    if prestart:
        runtime = settings or RuntimeSettings()
        pool.prestart(runtime, agent_env(runtime=runtime))
    return pool
