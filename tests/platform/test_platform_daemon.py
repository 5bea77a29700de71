"""Signals and the background worker: SIGTERM mid-run, ``omx worker start|status|logs|stop``.

SIGTERM during a run interrupts the agent, releases the claim (the session is queued again) and keeps
the worktree. The background worker is a real detached process; every test kills what it started. A
``watch`` in a terminal (even without ``--worker``) is the same running worker to ``status``, ``stop``
and ``start``: they find it by its lock, not by its command line.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from platform_helpers import GATED_SCRIPT, Rig, state_of, wait_until

from omx.platform.runstate import pid_alive

pytestmark = pytest.mark.slow

#: Ignores SIGTERM, so only the runtime's SIGKILL (after its grace period) ends it.
STUBBORN_SCRIPT = r"""trap '' TERM; d="$WL_OUT/$(basename "$PWD")"; mkdir -p "$d"
echo $$ > "$d/pid.tmp"; mv "$d/pid.tmp" "$d/pid"
while true; do sleep 0.05; done"""


@pytest.fixture
def daemons(rig: Rig) -> Iterator[list[int]]:
    """Pids of background workers this test started; killed at the end whatever happened."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def _agent_pid(rig: Rig, sid: str) -> int:
    # The scripts write the pid file whole (a temp file renamed): once it is there, it holds the pid.
    path = wait_until(lambda: (rig.seen(sid) / "pid").exists() and rig.seen(sid) / "pid", what="the agent to start")
    return int(path.read_text().strip())


def test_sigterm_during_a_run_releases_the_claim_and_keeps_the_worktree(rig: Rig) -> None:
    rig.login()
    rig.worker(script=GATED_SCRIPT)
    sid = rig.fake.create_session(title="long job")
    proc = rig.spawn("watch", "worker", "watch")
    agent = _agent_pid(rig, sid)
    assert state_of(rig.fake, sid) == "active"
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, proc.output()
    s = rig.fake.session(sid)
    assert s["state"] == "queued" and s["release_reason"] == "interrupted" and s["claimed_by_worker_id"] is None
    assert [c["_ended"] for c in rig.fake.claims_of(sid)] == ["released"]
    assert not pid_alive(agent)
    [worktree] = [p for p in rig.worktrees.rglob(f"session-{sid}") if p.is_dir()]
    assert (worktree / ".git").exists()
    out = proc.stdout()
    assert f"{sid}: released (interrupted); the worktree is kept" in out and "stopped (received SIGTERM)" in out


def test_background_worker_start_status_logs_stop(rig: Rig, daemons: list[int]) -> None:
    rig.login()
    settings = rig.worker(script=GATED_SCRIPT)
    started = rig.omx("worker", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int(re.search(r"\(pid (\d+)\)", started.stdout).group(1))  # type: ignore[union-attr]
    daemons.append(pid)
    assert pid_alive(pid) and os.getsid(pid) == pid  # detached: its own session, no terminal
    [log] = (rig.home / "logs").glob("worker-*.log")
    assert log.stat().st_mode & 0o777 == 0o600, "the log holds prompts and output: private"
    again = rig.omx("worker", "start")
    assert again.returncode == 1 and f"already running (pid {pid})" in again.stderr
    st = rig.omx("worker", "status")
    assert st.returncode == 0 and f"running, pid {pid}, idle" in st.stdout, st.stdout

    follower = rig.spawn("logs", "worker", "logs", "-f")
    sid = rig.fake.create_session(title="background job")
    agent = _agent_pid(rig, sid)
    st = rig.omx("worker", "status")
    assert f"running {sid}" in st.stdout, st.stdout
    assert f"claimed {sid} 'background job'" in rig.omx("worker", "logs").stdout
    wait_until(lambda: f"claimed {sid}" in follower.stdout(), what="logs -f to show the claim", proc=follower)
    follower.popen.send_signal(signal.SIGINT)
    assert follower.wait(30) == 0

    stop = rig.omx("worker", "stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"sent SIGTERM to {pid}; releasing {sid}" in stop.stdout and "stopped worker" in stop.stdout
    assert not pid_alive(pid) and not pid_alive(agent)
    assert state_of(rig.fake, sid) == "queued"
    assert not (rig.home / "run" / f"worker-{settings.id}.pid").exists()
    st = rig.omx("worker", "status")
    assert st.returncode == 1 and "not running (last: stopped" in st.stdout
    log = Path(rig.omx("worker", "status", "--json").stdout.split('"log": "')[1].split('"')[0])
    assert f"{sid}: released (interrupted); the worktree is kept" in log.read_text()


def test_stop_says_so_when_it_has_to_kill(rig: Rig, daemons: list[int]) -> None:
    rig.login()
    rig.worker(script=STUBBORN_SCRIPT)
    started = rig.omx("worker", "start")
    pid = int(re.search(r"\(pid (\d+)\)", started.stdout).group(1))  # type: ignore[union-attr]
    daemons.append(pid)
    sid = rig.fake.create_session(title="stubborn")
    agent = _agent_pid(rig, sid)
    stop = rig.omx("worker", "stop", "--timeout", "0.5")
    assert stop.returncode == 1
    assert "did not stop within 0.5s: killed it" in stop.stdout and "stale when the lease runs out" in stop.stdout
    assert not pid_alive(pid)
    if pid_alive(agent):  # the worker was killed before its runtime could stop the agent
        os.kill(agent, signal.SIGKILL)
    assert state_of(rig.fake, sid) == "active"  # not released: the lease will run out


def _pidfile(rig: Rig, wid: str) -> Path:
    return rig.home / "run" / f"worker-{wid}.pid"


def test_a_foreground_watch_without_worker_is_seen_by_status_stop_and_start(rig: Rig) -> None:
    rig.login()
    settings = rig.worker(script=GATED_SCRIPT)
    watch = rig.spawn("watch", "worker", "watch")  # no --worker: the only configured worker
    pid = watch.popen.pid
    sid = rig.fake.create_session(title="foreground job")
    _agent_pid(rig, sid)
    st = wait_until(lambda: (r := rig.omx("worker", "status")).returncode == 0 and f"running {sid}" in r.stdout and r,
                    what="status to see the foreground watch", proc=watch)
    assert f"running, pid {pid}, working — in the foreground (omx worker watch)" in st.stdout, st.stdout
    started = rig.omx("worker", "start")
    assert started.returncode == 1, started.stdout + started.stderr
    assert f"already running (pid {pid}) in the foreground (omx worker watch)" in started.stderr
    assert f"`omx worker stop --worker {settings.id}` stops it" in started.stderr
    assert "internal_error" not in started.stderr and "pid ?" not in started.stderr
    assert _pidfile(rig, settings.id).read_text().strip() == str(pid)  # never removed while it runs

    stop = rig.omx("worker", "stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"sent SIGTERM to {pid}; releasing {sid}" in stop.stdout and "stopped worker" in stop.stdout
    assert "stale pidfile" not in stop.stdout + stop.stderr
    assert watch.wait(30) == 0, watch.output()
    assert f"{sid}: released (interrupted); the worktree is kept" in watch.stdout()
    assert state_of(rig.fake, sid) == "queued" and [c["_ended"] for c in rig.fake.claims_of(sid)] == ["released"]
    assert not _pidfile(rig, settings.id).exists()
    after = rig.omx("worker", "status")
    assert after.returncode == 1 and "not running (last: stopped" in after.stdout


def test_start_reports_the_workers_own_error_and_exit_status(rig: Rig) -> None:
    rig.login()
    settings = rig.worker()
    key = rig.fake.api_key()
    r = rig.omx("worker", "start", env={"OMX_PLATFORM_API_KEY": key})
    assert r.returncode == 1, r.stdout + r.stderr  # refused, not an internal error (4)
    assert "API keys are refused" in r.stderr and r.stderr.rstrip().endswith("[platform_api_key]"), r.stderr
    assert "internal_error" not in r.stderr and key not in r.stdout + r.stderr
    assert not list((rig.home / "run").glob("*.failed.json"))  # read and removed by `start`
    assert rig.omx("worker", "status").returncode == 1
    assert not _pidfile(rig, settings.id).exists()


def test_configure_starts_an_auto_start_worker_only_when_asked(rig: Rig, daemons: list[int]) -> None:
    rig.login()
    settings = rig.worker()
    first = rig.omx("worker", "configure", settings.id, "--auto-start")
    assert first.returncode == 0, first.stdout + first.stderr
    pid = int(re.search(r"started in the background \(pid (\d+)\)", first.stdout).group(1))  # type: ignore[union-attr]
    daemons.append(pid)
    again = rig.omx("worker", "configure", settings.id, "--max-concurrent-runs", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"worker {settings.id} is running (pid {pid}) in the background: restart it to apply the new settings" \
        in again.stdout
    assert "started in the background" not in again.stdout
    st = rig.omx("worker", "status")
    assert st.returncode == 0 and f"running, pid {pid}," in st.stdout
    assert rig.omx("worker", "stop").returncode == 0 and not pid_alive(pid)
    edited = rig.omx("worker", "configure", settings.id, "--instructions", "be brief")
    assert edited.returncode == 0, edited.stdout + edited.stderr
    assert "started" not in edited.stdout and "next: omx worker doctor" in edited.stdout
    assert rig.omx("worker", "status").returncode == 1  # auto_start is still true, but nobody asked to start now
