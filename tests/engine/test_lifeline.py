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
