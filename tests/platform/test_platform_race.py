"""Eight real ``omx worker watch`` processes race for the same sessions (STYLE.md habit 9).

A start barrier makes the race real: every worker has said hello before the session exists, and the
fake platform holds every claim request until all eight have arrived, then answers them one by one.
The invariants are checked on the platform's records and on what the agents recorded.
"""

from __future__ import annotations

import signal

import pytest
from platform_helpers import Rig, state_of, wait_until

N = 8

pytestmark = pytest.mark.slow


def test_eight_workers_race_for_one_session_and_exactly_one_runs_it(rig: Rig) -> None:
    rig.login()
    workers = [rig.worker(f"w{i}", poll_ms=150) for i in range(N)]
    procs = [rig.spawn(w.name, "worker", "watch", "--worker", w.id) for w in workers]
    wait_until(lambda: all(rig.fake.workers[w.id]["last_heartbeat_at"] for w in workers), timeout=90,
               what=f"{N} workers to say hello")
    rig.fake.gate_claims(N, timeout_s=30)
    sid = rig.fake.create_session(title="the one")
    wait_until(lambda: state_of(rig.fake, sid) == "complete", timeout=90, what="the session to complete")
    rig.fake.claim_gate = None

    attempts = sorted(r.status for r in rig.fake.calls(f"/sessions/{sid}/claims"))
    assert attempts == [201] + [409] * (N - 1)  # all eight tried at once; one won, seven were told no
    [claim] = rig.fake.claims_of(sid)
    assert [line.split()[1] for line in rig.runs()] == [f"session-{sid}"]  # its agent ran exactly once
    winner = next(w for w in workers if w.id == claim["worker_id"])

    # The losers moved on: the next sessions are run, once each; a pinned one only by its worker.
    pinned_to = workers[3] if winner is not workers[3] else workers[4]
    pinned = rig.fake.create_session(title="pinned", pinned_worker_id=pinned_to.id)
    others = [rig.fake.create_session(title=f"next {i}") for i in range(3)]
    for s in (pinned, *others):
        wait_until(lambda s=s: state_of(rig.fake, s) == "complete", timeout=90, what=f"session {s} to complete")
    assert [c["worker_id"] for c in rig.fake.claims_of(pinned)] == [pinned_to.id]
    assert {r.body.get("worker_id") for r in rig.fake.calls(f"/sessions/{pinned}/claims")} == {pinned_to.id}
    ran = sorted(line.split()[1] for line in rig.runs())
    assert ran == sorted(f"session-{s}" for s in (sid, pinned, *others))  # nothing ran twice
    assert all(p.popen.poll() is None for p in procs), "a worker died"

    for p in procs:
        p.popen.send_signal(signal.SIGTERM)
    for p in procs:
        assert p.wait(60) == 0, p.output()
        assert "stopped (received SIGTERM)" in p.stdout()
    assert all(rig.fake.workers[w.id]["status"] == "offline" for w in workers)
