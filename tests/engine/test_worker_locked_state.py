"""A worker whose claim meets a lock held past its timeout (a holder stopped inside a critical section:
SIGSTOP, a debugger, a frozen VM) says so and polls again; it neither exits nor loses its place."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import pytest

from omx.engine import worker as worker_mod
from omx.engine.runner import Outcome
from omx.engine.source import Claimed
from omx.engine.worker import Worker, WorkerOptions
from omx.errors import LockTimeout

LOCK = "/state/team/t/locks/task-1.lock"


class LockedSource:
    """A work source whose first ``locked`` claims time out on a task lock, then has one task, then none."""

    name = "locked"

    def __init__(self, locked: int) -> None:
        self.locked = locked
        self.acquires = 0
        self.completed: list[str] = []
        self.stopped: str | None = None
        self.first_timeout = threading.Event()

    def start(self) -> None:
        pass

    def heartbeat(self, state: str, current: str | None = None, turns: int = 0) -> None:
        pass

    def acquire(self, wait_ms: int) -> Claimed | None:
        self.acquires += 1
        if self.acquires <= self.locked:
            self.first_timeout.set()
            raise LockTimeout(f"could not lock {LOCK} within 30s", path=LOCK)
        if self.acquires == self.locked + 1:
            return Claimed(key="task-1", title="after the lock", variables={})
        return None

    def complete(self, claimed: Claimed, result: dict[str, Any]) -> None:
        self.completed.append(claimed.key)

    def shutdown_requested(self) -> str | None:
        return None

    def drained(self) -> bool:
        return self.acquires > self.locked + 1

    def release(self, claimed: Claimed, reason: str) -> None:
        raise AssertionError(f"released {claimed.key}: {reason}")

    def stop(self, reason: str) -> None:
        self.stopped = reason


class Runner:
    turns = 0

    def __init__(self, source: LockedSource) -> None:
        self.source = source

    def run(self, claimed: Claimed, cancel: threading.Event) -> Outcome:
        self.source.complete(claimed, {})
        return Outcome("completed")


@pytest.fixture(autouse=True)
def quick_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_mod, "LOCKED_RETRY_S", 0.05, raising=False)


def test_a_claim_that_meets_a_held_lock_is_tried_again_and_the_work_gets_done(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = LockedSource(locked=2)
    worker = Worker(source, Runner(source), WorkerOptions(until_empty=True, install_signals=False))  # type: ignore[arg-type]

    with caplog.at_level(logging.WARNING, logger="omx.worker"):
        report = worker.run()

    assert report.reason == "the team is drained"
    assert (report.completed, report.failed) == (1, 0)
    assert source.completed == ["task-1"]
    assert source.stopped == "the team is drained"
    warnings = [r.getMessage() for r in caplog.records if "stayed locked" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert LOCK in warnings[0]


def test_a_worker_waiting_out_a_held_lock_still_stops_on_a_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    source = LockedSource(locked=10**9)  # locked for good
    worker = Worker(source, Runner(source), WorkerOptions(until_empty=True, install_signals=False))  # type: ignore[arg-type]
    monkeypatch.setattr(worker_mod, "LOCKED_RETRY_S", 60.0, raising=False)  # the signal must cut the pause short

    def stop_when_locked() -> None:
        source.first_timeout.wait(30)
        worker._on_signal(signal.SIGTERM, None)

    threading.Thread(target=stop_when_locked, daemon=True).start()
    began = time.monotonic()
    report = worker.run()

    assert report.reason == "received SIGTERM"
    assert time.monotonic() - began < 30  # not the 60 s pause
    assert source.completed == []
