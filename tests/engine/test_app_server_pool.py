"""The worker's long-lived ``codex app-server`` pool, against a scripted server that serves many threads.

One server for many tasks (a thread each, with each task's own cwd and settings), cancel without
losing the server, replacement after a death or a deaf turn, servers keyed by environment, spawned
from a thread that lives as long as the pool, and nothing left running after ``close()``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from worker_helpers import FakeServerLog

from omx.engine.runtimes import RunRequest, RunResult
from omx.engine.runtimes.app_server import AppServerPool
from omx.engine.runtimes.process import pid_alive
from omx.engine.settings import RuntimeSettings
from tests.fakes.recorder import EventRecorder, wait_until

FAKE = str(Path(__file__).resolve().parent / "fake_pooled_app_server.py")


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.log = tmp_path / "fake.log"
        self.server = FakeServerLog(self.log)  # what the fake servers logged
        self.env = {**os.environ, "FAKE_APP_SERVER_LOG": str(self.log)}
        self.settings = RuntimeSettings(kind="codex-app-server", command=[sys.executable, FAKE])
        self.pool = AppServerPool(tmp_path, kill_grace_s=1.0)

    def run(self, prompt: str = "[ok]", *, name: str = "w", cancel: threading.Event | None = None,
            env: dict[str, str] | None = None, events: EventRecorder | None = None, **settings: Any) -> RunResult:
        cwd = self.tmp / name
        cwd.mkdir(exist_ok=True)
        config = self.settings.model_copy(update=settings) if settings else self.settings
        request = RunRequest(prompt, cwd, env or self.env, config, developer_instructions=f"dev for {name}")
        return self.pool.run(request, events or EventRecorder(), cancel or threading.Event())



@pytest.fixture
def rig(tmp_path: Path) -> Any:
    r = Rig(tmp_path)
    yield r
    r.pool.close()
    for pid in r.server.pids():
        assert not pid_alive(pid), "close() left a server running"


def test_one_server_serves_every_task_each_on_its_own_thread(rig: Rig) -> None:
    first = rig.run(name="a", model="m-1")
    second = rig.run(name="b", approval_policy="untrusted", sandbox="read-only")

    assert (first.status, second.status) == ("completed", "completed"), (first.error, second.error)
    assert first.summary == f"done in {rig.tmp / 'a'}"
    assert second.summary == f"done in {rig.tmp / 'b'}"  # not the late words about thread-1
    assert (first.thread_id, second.thread_id) == ("thread-1", "thread-2")
    assert second.tokens == {"input": 5, "output": 2, "total": 7}
    assert len(rig.server.pids()) == 1
    assert len(rig.server.got("initialize")) == 1
    threads = [m["params"] for m in rig.server.got("thread/start")]
    assert threads == [
        {"cwd": str(rig.tmp / "a"), "approvalPolicy": "never", "sandbox": "workspace-write", "model": "m-1",
         "developerInstructions": "dev for a"},
        {"cwd": str(rig.tmp / "b"), "approvalPolicy": "untrusted", "sandbox": "read-only",
         "developerInstructions": "dev for b"},
    ]
    assert [m["params"]["cwd"] for m in rig.server.got("turn/start")] == [str(rig.tmp / "a"), str(rig.tmp / "b")]
    wait_until(lambda: len(rig.server.got("thread/unsubscribe")) == 2, what="the second thread/unsubscribe")
    unsubscribed = [m["params"] for m in rig.server.got("thread/unsubscribe")]
    assert unsubscribed == [{"threadId": "thread-1"}, {"threadId": "thread-2"}]
    assert rig.server.records()[0]["cwd"] == str(rig.tmp)  # the server's own cwd is the pool's


def test_prestart_spawns_ahead_and_the_first_task_uses_that_server(rig: Rig) -> None:
    assert rig.pool.prestart(rig.settings, rig.env)
    wait_until(lambda: len(rig.server.got("initialize")) == 1, what="the prestarted server's handshake")

    result = rig.run()

    assert result.status == "completed", result.error
    assert len(rig.server.pids()) == 1


def test_cancel_interrupts_the_turn_and_keeps_the_server(rig: Rig, cancel: threading.Event) -> None:
    events = EventRecorder()
    events.on(lambda e: e.kind == "started", lambda: threading.Timer(0.1, cancel.set).start())

    stopped = rig.run("[hang]", cancel=cancel, events=events)
    after = rig.run()

    assert stopped.status == "interrupted"
    assert rig.server.got("turn/interrupt")[0]["params"] == {"threadId": "thread-1", "turnId": "turn-1"}
    assert after.status == "completed", after.error
    assert len(rig.server.pids()) == 1


def test_a_server_that_dies_mid_turn_fails_that_task_and_is_replaced(rig: Rig) -> None:
    died = rig.run("[die]")
    after = rig.run()

    assert died.status == "failed"
    assert died.error is not None
    assert "exit status 3" in died.error
    assert "simulated crash" in died.error
    assert after.status == "completed", after.error
    first, second = rig.server.pids()
    assert not pid_alive(first)
    assert pid_alive(second)


def test_a_server_deaf_to_interrupt_is_killed_and_replaced(rig: Rig, cancel: threading.Event) -> None:
    events = EventRecorder()
    events.on(lambda e: e.kind == "started", cancel.set)
    began = time.monotonic()

    deaf = rig.run("[deaf]", cancel=cancel, events=events)

    assert deaf.status == "interrupted"
    assert time.monotonic() - began < 8
    (first,) = rig.server.pids()
    assert not pid_alive(first)
    assert rig.run().status == "completed"
    assert len(rig.server.pids()) == 2


def test_a_server_that_died_while_idle_is_replaced_without_failing_the_task(rig: Rig) -> None:
    assert rig.run().status == "completed"
    (first,) = rig.server.pids()
    os.kill(first, 9)
    wait_until(lambda: not pid_alive(first), what="the idle server to die")

    result = rig.run(name="again")

    assert result.status == "completed", result.error
    assert len(rig.server.pids()) == 2


def test_another_environment_gets_its_own_server_and_the_idle_one_is_stopped(rig: Rig) -> None:
    assert rig.run().status == "completed"
    assert rig.run(env={**rig.env, "EXTRA": "1"}).status == "completed"

    first, second = rig.server.pids()
    assert not pid_alive(first)
    assert pid_alive(second)


def test_a_relative_command_gets_a_server_per_task(rig: Rig) -> None:
    # Looked up in each task's worktree: it cannot be one shared server.
    script = f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n'
    for name in ("a", "b"):
        (rig.tmp / name / "bin").mkdir(parents=True)
        (rig.tmp / name / "bin" / "fake").write_text(script)
        (rig.tmp / name / "bin" / "fake").chmod(0o755)
    rig.settings = RuntimeSettings(kind="codex-app-server", command=["bin/fake"])

    first, second = rig.run(name="a"), rig.run(name="b")

    assert (first.status, second.status) == ("completed", "completed"), (first.error, second.error)
    assert len(rig.server.pids()) == 2
    assert not any(pid_alive(pid) for pid in rig.server.pids())  # each stopped when its task ended


def test_servers_are_spawned_by_a_thread_that_outlives_the_task_thread(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With the parent-death-signal lifeline, a child dies when the *thread* that spawned it ends: a
    # server started from a task's own thread would die with that thread.
    monkeypatch.setenv("OMX_LIFELINE", "preexec")
    results: list[RunResult] = []
    task = threading.Thread(target=lambda: results.append(rig.run()))
    task.start()
    task.join()
    time.sleep(0.3)

    assert results[0].status == "completed"
    (pid,) = rig.server.pids()
    assert pid_alive(pid)
    assert rig.run().status == "completed"
    assert rig.server.pids() == [pid]


def test_a_server_idle_for_too_long_is_stopped_and_the_next_task_starts_another(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.pool = AppServerPool(tmp_path, kill_grace_s=1.0, idle_timeout_s=0.3)
    try:
        assert rig.run().status == "completed"
        (first,) = rig.server.pids()
        wait_until(lambda: not pid_alive(first), timeout=10, what="the idle server to be stopped")
        assert rig.run(name="later").status == "completed"
        assert len(rig.server.pids()) == 2
    finally:
        rig.pool.close()
    assert not any(pid_alive(pid) for pid in rig.server.pids())


def test_close_stops_a_busy_server_and_the_run_returns(rig: Rig) -> None:
    events = EventRecorder()
    started = threading.Event()
    events.on(lambda e: e.kind == "started", started.set)
    results: list[RunResult] = []
    task = threading.Thread(target=lambda: results.append(rig.run("[hang]", events=events)))
    task.start()
    assert started.wait(10)

    rig.pool.close()
    task.join(10)

    assert not task.is_alive()
    assert results[0].status == "failed"
    assert not any(pid_alive(pid) for pid in rig.server.pids())
    after = rig.run()
    assert after.status == "failed"
    assert after.error is not None
    assert "closed" in after.error


# --- the real Codex -------------------------------------------------------------------------------


@pytest.mark.codex
def test_real_codex_runs_tasks_in_their_own_directories_on_one_server(
    tmp_path: Path, fake_model: Any, codex_env: dict[str, str]
) -> None:
    from tests.fakes.fake_model import hang, message, shell

    fake_model.script(shell("printf one > out.txt"), message("first done"), hang(),
                      shell("printf three > out.txt"), message("third done"))
    settings = RuntimeSettings(kind="codex-app-server", stallTimeoutMs=60_000)
    pids: list[int] = []
    with AppServerPool(tmp_path, kill_grace_s=5.0) as pool:
        assert pool.prestart(settings, codex_env)

        def run(name: str, cancel: threading.Event | None = None) -> RunResult:
            cwd = tmp_path / name
            cwd.mkdir()
            events = EventRecorder()
            if cancel is not None:  # cancelled while the model is being asked (its third request)
                fake_model.when_asked(3, cancel.set)
            result = pool.run(RunRequest(f"task {name}", cwd, codex_env, settings), events, cancel or threading.Event())
            pids.extend(d["pid"] for d in events.of("started"))
            return result

        first = run("one")
        second = run("two", threading.Event())
        third = run("three")

    assert first.status == "completed", first.error
    assert first.summary == "first done"
    assert (tmp_path / "one" / "out.txt").read_text() == "one"
    assert second.status == "interrupted", second.error
    assert third.status == "completed", third.error
    assert third.summary == "third done"
    assert (tmp_path / "three" / "out.txt").read_text() == "three"
    assert len(set(pids)) == 1, f"one server for every task, got pids {pids}"
    assert first.thread_id != third.thread_id
    assert not pid_alive(pids[0])
