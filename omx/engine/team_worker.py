"""Assemble a file-team worker: store source + workflow + runner + loop."""

from __future__ import annotations

from pathlib import Path

from omx.engine.filesource import FileTeamSource
from omx.engine.runner import Runner, RunnerConfig, check_runtime
from omx.engine.slots import MachineSlots
from omx.engine.worker import Worker, WorkerOptions, WorkerReport
from omx.engine.workflow import load_workflow
from omx.state.filestore import FileStore


def run_team_worker(
    *, store: FileStore, team: str, worker: str, repo: Path, workflow_path: Path | None = None,
    until_empty: bool = False, max_tasks: int | None = None, shutdown_policy: str = "finish", poll_ms: int = 1_000,
    install_signals: bool = True,
) -> WorkerReport:
    """Run ``team``/``worker`` until it is told to stop (or the team drains, with ``until_empty``)."""
    repo = repo.resolve()
    wf = load_workflow(workflow_path, repo)
    check_runtime(wf.settings.runtime)  # before the ACK: a worker that cannot run an agent must not claim work
    source = FileTeamSource(store, team, worker)
    runner = Runner(source, RunnerConfig(repo=repo, workflow=wf, namespace=team, worker=worker,
                                         slots=MachineSlots()))
    opts = WorkerOptions(max_concurrent=wf.settings.agent.max_concurrent_agents, until_empty=until_empty,
                         poll_ms=poll_ms, shutdown_policy=shutdown_policy, max_tasks=max_tasks,
                         install_signals=install_signals)
    return Worker(source, runner, opts).run()
