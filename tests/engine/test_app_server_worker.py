"""``omx team worker`` with an app-server runtime: one long-lived server for all its tasks, gone when it goes.

The worker processes are real (``omx team worker`` subprocesses); the server is the scripted
``fake_pooled_app_server.py`` as ``runtime.command``, which logs its pid and every line it receives.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_helpers import (
    Rig,
    fake_server_pids,
    fake_server_records,
    kill_quietly,
    make_rig,
    pid_gone,
    start_worker,
    wait_until,
    write_workflow,
)

pytestmark = pytest.mark.slow

FAKE = str(Path(__file__).resolve().parent / "fake_pooled_app_server.py")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = make_rig(tmp_path, workers=["worker-1"], extra_env={"FAKE_APP_SERVER_LOG": str(tmp_path / "fake.log")})
    write_workflow(r, runtime={"kind": "codex-app-server", "command": [sys.executable, FAKE]})
    yield r
    r.close()
    kill_quietly(fake_server_pids(r))


def turns_started(rig: Rig) -> int:
    return sum(1 for r in fake_server_records(rig) if r.get("got", {}).get("method") == "turn/start")


def test_one_server_runs_every_task_and_is_gone_with_the_worker(rig: Rig) -> None:
    ids = [rig.store.create_task(rig.team, f"[ok] task {n}").id for n in range(3)]

    proc = start_worker(rig, "worker-1", "--until-empty")
    assert proc.wait() == 0, proc.output()

    for tid in ids:
        task = rig.task(tid)
        assert task.status == "completed", task.error
        assert task.result["summary"].startswith("done in ")
        assert task.result["summary"].endswith(f"task-{tid}")  # its own worktree
    (pid,) = fake_server_pids(rig)
    assert turns_started(rig) == 3
    # The exiting worker closed the server's input rather than wait for it; it ends by itself (or
    # the lifeline keeper ends it) moments later.
    wait_until(lambda: pid_gone(pid), timeout=10, what="the server to end after the worker")


@pytest.mark.parametrize("how", ["sigterm", "shutdown"])
def test_stopping_the_worker_mid_turn_stops_its_server(rig: Rig, how: str) -> None:
    tid = rig.store.create_task(rig.team, "[hang] until interrupted").id
    proc = start_worker(rig, "worker-1", "--shutdown-policy", "interrupt")
    wait_until(lambda: turns_started(rig) == 1, what="the turn to start", proc=proc)
    (pid,) = fake_server_pids(rig)

    if how == "sigterm":
        proc.signal(signal.SIGTERM)
    else:
        rig.store.write_shutdown_request(rig.team, "worker-1", "leader-fixed", "test")
    assert proc.wait() == 0, proc.output()

    wait_until(lambda: pid_gone(pid), timeout=10, what="the server to end")
    assert rig.task(tid).status == "pending"  # released: the turn was interrupted, not failed


def test_sigkill_of_the_worker_takes_its_server_down_too(rig: Rig) -> None:
    rig.store.create_task(rig.team, "[hang] forever")
    proc = start_worker(rig, "worker-1")
    wait_until(lambda: turns_started(rig) == 1, what="the turn to start", proc=proc)
    (pid,) = fake_server_pids(rig)

    proc.signal(signal.SIGKILL)
    proc.proc.wait(timeout=10)

    wait_until(lambda: pid_gone(pid), timeout=5, what="the orphaned server to end")


def test_an_idle_worker_keeps_its_server_until_it_stops(rig: Rig) -> None:
    rig.store.create_task(rig.team, "[ok] first")
    proc = start_worker(rig, "worker-1")
    wait_until(lambda: rig.task("1").status == "completed", what="the first task", proc=proc)
    (pid,) = fake_server_pids(rig)
    assert not pid_gone(pid)

    rig.store.create_task(rig.team, "[ok] second")
    wait_until(lambda: rig.task("2").status == "completed", what="the second task", proc=proc)
    assert fake_server_pids(rig) == [pid]

    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.output()
    wait_until(lambda: pid_gone(pid), timeout=10, what="the server to end")
