"""A worker that meets a full disk (or an I/O error) warns, backs off and keeps going; it neither exits nor
drops a finished task (issue 10: during 20 s of a full disk both workers exited with code 4 and the team
stalled for good)."""

from __future__ import annotations

import errno
import logging
import signal
import threading
import time
from typing import Any

import pytest

from omx.engine import patience
from omx.engine.patience import PatientSource
from omx.engine.runner import Outcome
from omx.engine.source import Claimed
from omx.engine.worker import Worker, WorkerOptions
from omx.errors import DiskFull

TASK = "/state/team/t/tasks/task-1.json"


class FullDiskSource:
    """A work source whose claims and reports fail on a full disk a given number of times, then work."""

    name = "full"

    def __init__(self, claims_failing: int, completes_failing: int = 0, starts_failing: int = 0,
                 error: Exception | None = None) -> None:
        self.claims_failing = claims_failing
        self.completes_failing = completes_failing
        self.starts_failing = starts_failing
        self.error = error or DiskFull(f"{TASK}: no room to write (ENOSPC)", path=TASK)
        self.acquires = 0
        self.completed: list[str] = []
        self.stopped: str | None = None
        self.first_failure = threading.Event()

    def start(self) -> None:
        if self.starts_failing:
            self.starts_failing -= 1
            raise self.error

    def heartbeat(self, state: str, current: str | None = None, turns: int = 0) -> None:
        pass

    def acquire(self, wait_ms: int) -> Claimed | None:
        self.acquires += 1
        if self.acquires <= self.claims_failing:
            self.first_failure.set()
            raise self.error
        if self.acquires == self.claims_failing + 1:
            return Claimed(key="task-1", title="after the disk filled", variables={})
        return None

    def complete(self, claimed: Claimed, result: dict[str, Any]) -> None:
        if self.completes_failing:
            self.completes_failing -= 1
            raise self.error
        self.completed.append(claimed.key)

    def fail(self, claimed: Claimed, error: str, result: dict[str, Any]) -> None:
        raise AssertionError(f"failed {claimed.key}: {error}")

    def shutdown_requested(self) -> str | None:
        return None

    def drained(self) -> bool:
        return self.acquires > self.claims_failing + 1

    def release(self, claimed: Claimed, reason: str) -> None:
        raise AssertionError(f"released {claimed.key}: {reason}")

    def stop(self, reason: str) -> None:
        self.stopped = reason


class Runner:
    turns = 0

    def __init__(self, source: Any) -> None:
        self.source = source

    def run(self, claimed: Claimed, cancel: threading.Event) -> Outcome:
        self.source.complete(claimed, {})  # as Runner._report does
        return Outcome("completed")


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patience, "FIRST_BACKOFF_S", 0.02)
    monkeypatch.setattr(patience, "MAX_BACKOFF_S", 0.05)


@pytest.mark.parametrize("error", [DiskFull(f"{TASK}: no room to write (ENOSPC)", path=TASK),
                                   OSError(errno.EIO, "Input/output error", TASK),
                                   OSError(errno.ENOSPC, "No space left on device", TASK)],
                         ids=["disk_full", "EIO", "raw ENOSPC"])
def test_claims_on_a_full_disk_are_tried_again_and_the_work_gets_done(
    caplog: pytest.LogCaptureFixture, error: Exception,
) -> None:
    source = FullDiskSource(claims_failing=3, completes_failing=2, starts_failing=1, error=error)
    stop = threading.Event()
    patient = PatientSource(source, stop)
    worker = Worker(patient, Runner(patient), WorkerOptions(until_empty=True, install_signals=False),  # type: ignore[arg-type]
                    interrupt=stop)

    with caplog.at_level(logging.WARNING, logger="omx.worker"):
        report = worker.run()

    assert report.reason == "the team is drained"
    assert (report.completed, report.failed, report.lost) == (1, 0, 0)
    assert source.completed == ["task-1"], "the report waited for room instead of being dropped"
    warnings = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(warnings) == 1 + 3 + 2, warnings  # the start, three claims, two reports
    assert all(TASK in w for w in warnings)


def test_a_worker_waiting_out_a_full_disk_still_stops_on_a_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patience, "FIRST_BACKOFF_S", 60.0)  # the signal must cut the pause short
    source = FullDiskSource(claims_failing=10**9)
    worker = Worker(source, Runner(source), WorkerOptions(until_empty=True, install_signals=False))  # type: ignore[arg-type]

    def stop_when_full() -> None:
        source.first_failure.wait(30)
        worker._on_signal(signal.SIGTERM, None)

    threading.Thread(target=stop_when_full, daemon=True).start()
    began = time.monotonic()
    report = worker.run()
    assert report.reason == "received SIGTERM"
    assert time.monotonic() - began < 30
    assert source.completed == []


def test_other_errors_still_end_the_worker() -> None:
    source = FullDiskSource(claims_failing=1, error=OSError(errno.EACCES, "Permission denied", TASK))
    worker = Worker(source, Runner(source), WorkerOptions(until_empty=True, install_signals=False))  # type: ignore[arg-type]
    with pytest.raises(PermissionError):
        worker.run()


def test_a_workspace_that_git_cannot_write_for_lack_of_space_gives_the_task_back(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """git's own "No space left on device" (a worktree that cannot be made) is the disk's fault, not the
    task's: the task is released for later, not failed."""
    from pathlib import Path

    from omx.engine import runner as runner_mod
    from omx.engine.runner import Runner, RunnerConfig
    from omx.engine.workflow import load_workflow
    from omx.engine.workspaces import WorkspaceError

    class Recorder:
        name = "rec"

        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def renew(self, claimed: Claimed) -> None:
            pass

        def emit(self, claimed: Claimed, activity: Any) -> None:
            pass

        def complete(self, claimed: Claimed, result: dict[str, Any]) -> None:
            self.calls.append(("complete", ""))

        def fail(self, claimed: Claimed, error: str, result: dict[str, Any]) -> None:
            self.calls.append(("fail", error))

        def release(self, claimed: Claimed, reason: str, note: dict[str, Any] | None = None) -> None:
            self.calls.append(("release", reason))

    def no_room(*args: Any, **kwargs: Any) -> Any:
        raise WorkspaceError("git worktree add failed in /repo: fatal: could not write index: "
                             "No space left on device")

    monkeypatch.setattr(runner_mod, "prepare_workspace", no_room)
    wf = load_workflow(None, Path(tmp_path))
    source = Recorder()
    r = Runner(source, RunnerConfig(repo=Path(tmp_path), workflow=wf, namespace="t", worker="worker-1"))  # type: ignore[arg-type]
    outcome = r.run(Claimed(key="task-1", title="one", variables={}), threading.Event())
    assert outcome.status == "released"
    assert source.calls and source.calls[0][0] == "release" and "No space left on device" in source.calls[0][1]
    monkeypatch.setattr(runner_mod, "prepare_workspace", lambda *a, **k: (_ for _ in ()).throw(
        WorkspaceError("/repo: 'HEAD' is not a commit")))
    source.calls.clear()
    assert r.run(Claimed(key="task-2", title="two", variables={}), threading.Event()).status == "failed"
