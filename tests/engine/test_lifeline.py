"""An agent or hook child dies with the worker that started it, even when the worker is SIGKILLed.

Both lifelines are checked with real processes: the keeper (the default) and the parent-death signal
armed by a ``preexec_fn`` (the fallback).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from omx.engine.runtimes import lifeline
from omx.engine.runtimes.process import ChildProcess, SpawnError
from omx.pids import pid_alive

PARENT = """
import os, sys, time, threading
from pathlib import Path
from omx.engine.runtimes import lifeline
from omx.engine.runtimes.process import ChildProcess
from omx.engine.hooks import _spawn_and_wait
if sys.argv[1] in ("child", "stubborn"):
    argv = ["sleep", "600"] if sys.argv[1] == "child" else ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"]
    c = ChildProcess(argv, cwd=Path("."), env={"PATH": "/usr/bin:/bin"})
    print(c.pid, flush=True)
else:  # a hook: _spawn_and_wait blocks, so it runs in a thread and the main thread reports its pid
    args = (["sh", "-c", "echo $$ > pid.tmp && mv pid.tmp hook-pid && exec sleep 600"], Path("."),
            {"PATH": "/usr/bin:/bin"}, sys.stderr.buffer, sys.stderr.buffer, 600_000, 1.0)
    threading.Thread(target=_spawn_and_wait, args=args, daemon=True).start()
    while not os.path.exists("hook-pid"):
        time.sleep(0.01)
    pid = int(open("hook-pid").read())
    # The keeper learns of a child right after Popen returns; wait for that (a worker killed in
    # those microseconds is the one window the keeper leaves open: see lifeline's docstring).
    while os.environ.get("OMX_LIFELINE") == "keeper" and pid not in lifeline._keeper._groups:
        time.sleep(0.01)
    print(pid, flush=True)
time.sleep(600)
"""


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        if not pid_alive(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("mode", ["keeper", "preexec"])
@pytest.mark.parametrize("kind", ["child", "hook", "stubborn"])
def test_the_child_dies_when_its_worker_is_killed(tmp_path: Path, mode: str, kind: str) -> None:
    env = {**os.environ, "OMX_LIFELINE": mode}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, kind], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child = 0
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), parent.stderr.read() if parent.stderr else line
        child = int(line)
        assert pid_alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert _wait_gone(child), f"child {child} outlived its killed parent ({mode})"
    finally:
        parent.kill()
        parent.communicate()  # reaps it and closes its pipes
        if child and pid_alive(child):
            os.kill(child, signal.SIGKILL)


def test_a_missing_program_is_a_spawn_error_on_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for mode in ("keeper", "preexec"):
        monkeypatch.setenv("OMX_LIFELINE", mode)
        with pytest.raises(SpawnError, match="No such file or directory"):
            ChildProcess(["omx-no-such-program-x"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
        with pytest.raises(SpawnError, match="No such file or directory"):
            ChildProcess(["./missing.sh"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
        script = tmp_path / "not-executable.sh"
        script.write_text("#!/bin/sh\necho hi\n")
        with pytest.raises(SpawnError, match="Permission denied"):
            ChildProcess([str(script)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})


def test_a_killed_keeper_is_replaced_and_takes_over_the_list(tmp_path: Path) -> None:
    script = """
import os, signal, sys, time
from pathlib import Path
from omx.engine.runtimes import lifeline
from omx.engine.runtimes.process import ChildProcess
first = ChildProcess(["sleep", "600"], cwd=Path("."), env={"PATH": "/usr/bin:/bin"})
os.kill(lifeline._keeper._proc.pid, signal.SIGKILL)  # someone kills the keeper
lifeline._keeper._proc.wait()
second = ChildProcess(["sleep", "600"], cwd=Path("."), env={"PATH": "/usr/bin:/bin"})  # a new keeper
print(first.pid, second.pid, flush=True)
time.sleep(600)
"""
    env = {**os.environ, "OMX_LIFELINE": "keeper"}
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE)
    pids: list[int] = []
    try:
        assert parent.stdout is not None
        pids = [int(x) for x in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        parent.kill()
        parent.wait(timeout=10)
        assert all(_wait_gone(p) for p in pids), "the new keeper did not take over the first child"
    finally:
        parent.kill()
        parent.communicate()
        for p in pids:
            if pid_alive(p):
                os.kill(p, signal.SIGKILL)


def test_a_reaped_child_is_forgotten_and_the_keeper_leaves_with_the_worker(tmp_path: Path) -> None:
    c = ChildProcess(["true"], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    c.stop()
    keeper = lifeline._keeper._proc
    if os.environ.get("OMX_LIFELINE") == "preexec" or keeper is None:
        pytest.skip("the keeper is off here")
    assert c.pid not in lifeline._keeper._groups
    lifeline.close()
    assert keeper.poll() is not None  # end of its pipe: it exits


#: A worker that dies inside the window: it spawns tagged children but never tells its keeper (as if
#: it were SIGKILLed between ``Popen`` and ``track``), including a grandchild in a group of its own.
UNTRACKED = """
import os, subprocess, sys
from omx.engine.runtimes import lifeline
env = lifeline.tagged({"PATH": "/usr/bin:/bin"})
child = subprocess.Popen(["sleep", "600"], env=env, start_new_session=True)
nested = subprocess.Popen(["sh", "-c", "setsid sleep 600 & echo $!; wait"], env=env, start_new_session=True,
                          stdout=subprocess.PIPE, text=True)
print(child.pid, nested.pid, nested.stdout.readline().strip(), flush=True)
import time
time.sleep(600)
"""


def _busy(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_children_killed_before_the_keeper_heard_of_them_die_with_the_worker(tmp_path: Path) -> None:
    """The lifeline's old window: spawned, not yet tracked. Twenty times, on a loaded machine."""
    load = _busy(3)
    try:
        for _ in range(20):
            worker = subprocess.Popen([sys.executable, "-c", UNTRACKED], stdout=subprocess.PIPE, text=True,
                                      cwd=tmp_path, env={**os.environ, "OMX_LIFELINE": "keeper"})
            assert worker.stdout is not None
            pids = [int(p) for p in worker.stdout.readline().split()]
            assert len(pids) == 3 and all(pid_alive(p) for p in pids)
            tag = lifeline.worker_tag(worker.pid)
            assert sorted(lifeline.processes_tagged(tag)) == sorted(pids)
            worker.kill()
            worker.wait()
            worker.stdout.close()
            assert all(_wait_gone(p) for p in pids), [p for p in pids if pid_alive(p)]
            assert lifeline.processes_tagged(tag) == []
    finally:
        for p in load:
            p.kill()
            p.wait()


def test_end_tagged_ends_a_stopped_workers_children_and_spares_the_worker(tmp_path: Path) -> None:
    worker = subprocess.Popen([sys.executable, "-c", UNTRACKED], stdout=subprocess.PIPE, text=True, cwd=tmp_path,
                              env={**os.environ, "OMX_LIFELINE": "keeper"})
    try:
        assert worker.stdout is not None
        pids = [int(p) for p in worker.stdout.readline().split()]
        worker.send_signal(signal.SIGSTOP)  # a worker past its lease: alive, frozen
        found = lifeline.end_tagged(worker.pid, grace_s=1.0)
        assert sorted(found) == sorted(pids)
        assert all(_wait_gone(p) or _zombie(p) for p in pids)
        assert worker.poll() is None  # the worker itself is left alone
        assert lifeline.end_tagged(os.getpid()) == []  # never this process's own children
        assert lifeline.end_tagged(worker.pid) == []  # nothing left
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()


def test_a_tag_does_not_match_a_reused_pid() -> None:
    me = lifeline.worker_tag()
    pid, _, start = me.partition(".")
    assert pid == str(os.getpid()) and start.isdigit()
    assert lifeline.worker_tag(os.getpid()) == me
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    assert lifeline.worker_tag(int(gone)) == ""  # a dead worker has no tag: nothing to match


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
