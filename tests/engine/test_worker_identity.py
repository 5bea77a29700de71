"""One live process per worker identity: a second ``omx team worker`` with a live name is refused and
writes nothing; once the first is gone (killed, crashed) the name can be started again."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.engine.worker_helpers import (
    bash,
    in_progress_by,
    make_rig,
    pid_gone,
    start_worker,
    wait_until,
    write_workflow,
)

GATED = 'echo $$ >> "$WL_OUT/pids"; while [ ! -e "$WL_OUT/go" ]; do sleep 0.05; done; echo done > out.txt; echo ok'


@pytest.mark.parametrize("by_env", [False, True])
def test_a_second_process_of_a_live_worker_is_refused_and_changes_nothing(tmp_path: Path, by_env: bool) -> None:
    rig = make_rig(tmp_path, workers=["worker-1"])
    try:
        write_workflow(rig, runtime={"kind": "command", "command": bash(GATED)})
        tid = rig.store.create_task(rig.team, "held").id
        first = start_worker(rig, "worker-1", "--until-empty", by_env=by_env)
        wait_until(lambda: rig.lines("pids"), what="the first worker's agent to start", proc=first)
        assert in_progress_by(rig, tid, "worker-1")
        registered = len(rig.events("worker_registered"))
        status = rig.store.read_status(rig.team, "worker-1")

        second = start_worker(rig, "worker-1", "--until-empty")
        assert second.wait() == 1, second.output()
        err = second.stderr()
        assert f"worker worker-1 of team alpha is already running (pid {first.pid})" in err
        assert "[worker_running]" in err
        # Nothing of the first worker's records was touched.
        assert rig.store.read_identity(rig.team, "worker-1").pid == first.pid
        assert rig.store.read_heartbeat(rig.team, "worker-1").pid == first.pid
        assert rig.store.read_heartbeat(rig.team, "worker-1").alive
        assert rig.store.read_status(rig.team, "worker-1").state == status.state == "working"
        assert len(rig.events("worker_registered")) == registered
        assert in_progress_by(rig, tid, "worker-1")

        (rig.out / "go").touch()
        assert first.wait() == 0, first.output()
        assert rig.task(tid).status == "completed"
    finally:
        rig.close()


def test_a_dead_workers_name_can_be_started_again(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, workers=["worker-1"])
    try:
        write_workflow(rig, runtime={"kind": "command", "command": bash(GATED)})
        tid = rig.store.create_task(rig.team, "survives its worker").id
        first = start_worker(rig, "worker-1", "--until-empty")
        wait_until(lambda: rig.lines("pids"), what="the first worker's agent to start", proc=first)
        first.signal(signal.SIGKILL)
        first.wait()
        wait_until(lambda: all(pid_gone(int(p)) for p in rig.lines("pids")), what="the orphaned agent to end")
        (rig.out / "go").touch()
        again = start_worker(rig, "worker-1", "--until-empty")
        assert again.wait() == 0, again.output()
        assert rig.task(tid).status == "completed"
        assert rig.store.read_identity(rig.team, "worker-1").pid == again.pid
    finally:
        rig.close()
