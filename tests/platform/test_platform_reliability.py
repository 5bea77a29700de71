"""A platform that answers 500, stalls past the timeout, or drops the connection — before, during and after a run.

The worker must back off and retry, keep its claim renewed, never run a session twice, and say
clearly when it gives up. Faults are injected into the fake platform (``fake.fault``); the client's
timeout is 0.5 s and its patience 3 attempts here (``OMX_PLATFORM_*`` in the rig's environment).
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from platform_helpers import GATED_SCRIPT, Rig, state_of, wait_until

from omx.platform.service import run_worker

LEASE_MS = 9_000  # renewed every 3 s, each renewal retrying for up to 2.25 s: an outage of ~5 s is survived


@pytest.fixture
def short_timeout(monkeypatch: pytest.MonkeyPatch, rig: Rig) -> None:
    monkeypatch.setenv("OMX_PLATFORM_TIMEOUT_S", "0.5")
    rig.env["OMX_PLATFORM_TIMEOUT_S"] = "0.5"


def _watch_in_thread(settings: Any, said: list[str], **options: Any) -> tuple[threading.Thread, dict[str, Any]]:
    box: dict[str, Any] = {}

    def body() -> None:
        box["out"] = run_worker(settings, say=said.append, install_signals=False, **options)

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, box


@pytest.mark.usefixtures("short_timeout")
def test_a_flaky_platform_before_during_and_after_the_run_costs_nothing(rig: Rig) -> None:
    rig.login()
    settings = rig.worker(script=GATED_SCRIPT, poll_ms=100)
    sid = rig.fake.create_session(title="flaky")
    f = rig.fake.fault
    before = [f("status", path="/api/v1/sessions", method="GET", times=2), f("drop", path="/api/v1/sessions"),
              f("delay", path="/api/v1/sessions", delay_s=1.0),
              # the claim is made but its answer is lost: the retry must get the same claim back
              f("drop_after", path=f"/sessions/{sid}/claims")]
    said: list[str] = []
    t, box = _watch_in_thread(settings, said, max_sessions=1, lease_ms=LEASE_MS)
    wait_until(lambda: (rig.seen(sid) / "pid").exists(), what="the agent to start")
    during = [f("status", path="/renew", times=2), f("drop", path="/renew"), f("delay", path="/renew", delay_s=1.0),
              f("status", path="/heartbeat", times=2), f("status", path="/activities")]
    wait_until(lambda: all(x.hits == x.times for x in during[:4]), timeout=45, what="the renewal faults to be hit")
    wait_until(lambda: [r for r in rig.fake.calls("/renew") if r.status == 200 and r.at > _last_hit(rig, "/renew")],
               timeout=30, what="a renewal to get through after the faults")
    assert state_of(rig.fake, sid) == "active"  # the lease never ran out
    after = [f("drop_after", path="/complete")]  # completed, answer lost: the retry is answered, not refused
    (rig.out / "go").touch()
    t.join(timeout=60)
    assert not t.is_alive()
    out = box["out"]
    assert out.report.completed == 1, (out, said)
    assert all(x.hits == x.times for x in before + after)
    assert state_of(rig.fake, sid) == "complete"
    assert len(rig.fake.claims_of(sid)) == 1  # the lost claim answer did not make a second claim
    assert [line.split()[1] for line in rig.runs()] == [f"session-{sid}"]  # run exactly once
    completes = rig.fake.calls("/complete")
    assert len(completes) == 2 and completes[0].idempotency_key == completes[1].idempotency_key
    assert any("polling failed" in line for line in said) and any("answers again" in line for line in said)


def _last_hit(rig: Rig, path: str) -> float:
    return max((r.at for r in rig.fake.calls(path) if r.fault), default=0.0)


def test_giving_up_on_the_completion_report_is_said_and_reported_as_a_failure(rig: Rig) -> None:
    rig.login()
    rig.worker()
    sid = rig.fake.create_session()
    rig.fake.fault("status", path="/complete", times=1_000)
    r = rig.omx("worker", "run", sid, "--lease-ms", "3000")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{sid}: completed, but the platform could not be told" in r.stdout
    assert "after 3 attempt(s)" in r.stdout and "gave up: reported a failure instead" in r.stdout
    s = rig.fake.session(sid)
    assert s["state"] == "error" and "the run completed but its completion could not be reported" in s["error"]
    assert s["result"]["commit"]  # the work is on its branch, and the platform knows which commit
    assert len(rig.fake.calls("/complete")) == 3 and len(rig.runs()) == 1


def test_when_the_platform_is_gone_the_result_is_kept_and_the_session_goes_stale(rig: Rig) -> None:
    rig.login()
    rig.worker()
    sid = rig.fake.create_session()
    for path in ("/complete", "/fail", "/activities", "/renew", "/release", "/heartbeat"):
        rig.fake.fault("status", path=path, times=1_000)
    r = rig.omx("worker", "run", sid, "--lease-ms", "2000")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the platform could not be told" in r.stdout and "the result is kept in" in r.stdout
    [undelivered] = (rig.home / "run").glob("worker-*-undelivered.jsonl")
    record = json.loads(undelivered.read_text().splitlines()[-1])
    assert record["session_id"] == sid and record["outcome"] == "completed" and len(record["result"]["commit"]) == 40
    assert undelivered.stat().st_mode & 0o777 == 0o600, "a kept result is private, like the state"
    assert wait_until(lambda: state_of(rig.fake, sid) == "stale", timeout=20, what="the lease to run out")
    rig.fake.retry(sid)  # the platform's retry queues it again, for any worker
    assert state_of(rig.fake, sid) == "queued" and rig.fake.session(sid)["attempt"] == 2


@pytest.mark.usefixtures("short_timeout")
def test_an_outage_while_idle_never_stops_the_watch(rig: Rig) -> None:
    rig.login()
    settings = rig.worker(poll_ms=50)
    outage = rig.fake.fault("status", path="/api/v1/sessions", method="GET", times=6)
    rig.fake.fault("garbage", path="/api/v1/sessions", times=2)  # then answers that make no sense
    said: list[str] = []
    t, box = _watch_in_thread(settings, said, max_sessions=2)
    wait_until(lambda: outage.hits == 6, what="the outage")
    first, second = rig.fake.create_session(title="one"), rig.fake.create_session(title="two")
    t.join(timeout=60)
    assert not t.is_alive()
    assert box["out"].report.completed == 2, said
    assert [state_of(rig.fake, s) for s in (first, second)] == ["complete", "complete"]
    assert any(line.startswith("polling failed (the platform did not answer GET /api/v1/sessions") for line in said)
    assert any("the platform answers again" in line for line in said)


def test_an_outage_is_one_line_when_it_starts_and_one_when_it_ends(rig: Rig) -> None:
    rig.login()
    rig.worker(poll_ms=50)
    watch = rig.spawn("watch", "worker", "watch", "--max-sessions", "1")  # no -v
    wait_until(lambda: len(rig.fake.calls("/heartbeat")) >= 2 and rig.fake.calls("/api/v1/sessions"),
               what="the worker to start polling", proc=watch)
    outage = rig.fake.fault("status", path="/api/v1/sessions", method="GET", times=6)  # 3 polls of 2 attempts
    wait_until(lambda: outage.hits == 6, what="the outage", proc=watch)
    ended = _last_hit(rig, "/api/v1/sessions")
    wait_until(lambda: [r for r in rig.fake.calls("/api/v1/sessions", "GET") if r.status == 200 and r.at > ended],
               what="a poll after the outage", proc=watch)
    rig.fake.create_session()
    assert watch.wait() == 0, watch.output()
    lines = watch.stdout().splitlines()
    down = [line for line in lines if "polling failed" in line or "not answering" in line]
    up = [line for line in lines if "answers again" in line]
    assert len(down) == 1 and len(up) == 1, watch.output()
    assert down[0].endswith("trying again in 50 ms"), down  # not "in 0s"
    assert "the platform did not answer GET /api/v1/sessions after 2 attempt(s)" in down[0]
    err = watch.err.read_text()
    assert "WARNING" not in err and "retry" not in err, err  # each retry is a detail for -v

    sid = rig.fake.create_session()
    rig.fake.fault("status", path=f"/sessions/{sid}/claims")
    verbose = rig.omx("worker", "run", sid, "-v")
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    assert f"POST /api/v1/sessions/{sid}/claims failed (HTTP 500: injected failure); retry 2/3 in " in verbose.stderr
