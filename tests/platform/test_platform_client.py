"""The client against the fake platform: retries and their bounds, error mapping, timeouts, idempotency."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from platform_helpers import Rig

from omx.errors import InvalidInput
from omx.platform.auth import worker_client
from omx.platform.client import PlatformClient, RetryPolicy
from omx.platform.config import load_platform_config
from omx.platform.errors import (
    ApiKeyRefused,
    ClaimLost,
    PlatformBadRequest,
    PlatformError,
    PlatformNotFound,
    PlatformUnavailable,
    SessionClaimConflict,
)

FAST = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05)


@pytest.fixture
def client(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> Iterator[PlatformClient]:
    monkeypatch.setenv("OMX_PLATFORM_TIMEOUT_S", "0.4")
    rig.login()
    with worker_client(load_platform_config(), retry=FAST) as c:
        yield c


def test_5xx_timeouts_and_dropped_connections_are_retried(rig: Rig, client: PlatformClient) -> None:
    rig.fake.fault("status", path="/me", status=503)
    rig.fake.fault("drop", path="/me")
    rig.fake.fault("delay", path="/me", delay_s=1.0)  # longer than the 0.4 s timeout
    t0 = time.monotonic()
    assert client.me().name == "Ada Lovelace"
    assert [r.fault for r in rig.fake.calls("/api/v1/me")] == ["status", "drop", "delay", None]
    assert time.monotonic() - t0 < 5


def test_retries_are_bounded_and_the_failure_names_the_call(rig: Rig, client: PlatformClient) -> None:
    rig.fake.fault("status", path="/me", times=100)
    with pytest.raises(PlatformUnavailable) as info:
        client.me()
    assert info.value.code == "platform_unavailable" and info.value.exit_status == 4
    assert "GET /api/v1/me after 4 attempt(s)" in info.value.message and "HTTP 500" in info.value.message
    assert len(rig.fake.calls("/api/v1/me")) == 4


def test_4xx_answers_are_not_retried_and_map_to_stable_codes(rig: Rig, client: PlatformClient) -> None:
    wid = rig.fake.register_worker("u1", "mine")
    theirs = rig.fake.register_worker("u2", "theirs")
    sid = rig.fake.create_session()
    with pytest.raises(PlatformNotFound):
        client.get_worker(theirs)  # private: another user's worker does not exist for us
    grant = client.claim_session(sid, wid, lease_ms=5_000)
    with pytest.raises(SessionClaimConflict) as conflict:
        client.claim_session(sid, wid, lease_ms=5_000)
    assert conflict.value.code == "claim_conflict" and "active" in conflict.value.message
    client.release_claim(grant.claim.id, "test")
    with pytest.raises(ClaimLost):
        client.renew_claim(grant.claim.id, lease_ms=5_000)
    with pytest.raises(PlatformBadRequest):
        client.post_activity(client.claim_session(sid, wid, lease_ms=5_000).claim.id, "gossip", "x")
    assert all(r.fault is None for r in rig.fake.requests)
    assert len(rig.fake.calls(f"/workers/{theirs}")) == 1  # asked once, not retried


def test_a_claim_whose_answer_was_lost_is_answered_again_not_claimed_twice(rig: Rig, client: PlatformClient) -> None:
    wid = rig.fake.register_worker("u1", "mine")
    sid = rig.fake.create_session()
    rig.fake.fault("drop_after", path=f"/sessions/{sid}/claims")
    grant = client.claim_session(sid, wid, lease_ms=5_000)
    calls = rig.fake.calls(f"/sessions/{sid}/claims")
    assert len(calls) == 2 and calls[0].idempotency_key == calls[1].idempotency_key != ""
    assert [c["id"] for c in rig.fake.claims_of(sid)] == [grant.claim.id]
    other = rig.fake.register_worker("u1", "other")
    with pytest.raises(SessionClaimConflict):  # a different request (new key) is a real second claim: refused
        client.claim_session(sid, other, lease_ms=5_000)


def test_ids_are_checked_before_they_reach_a_url(rig: Rig, client: PlatformClient) -> None:
    for bad in ("../admin", "a/b", "", "x" * 200, "ses 1", "ses?x=1", "ses_1\n"):
        with pytest.raises(InvalidInput):
            client.get_session(bad)
    assert not rig.fake.calls("/api/v1/sessions")


def test_a_stored_api_key_is_never_sent_to_a_worker_operation(rig: Rig) -> None:
    import json

    rig.login()
    path = rig.home / "auth" / "default.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "access_token": rig.fake.api_key()}))
    with pytest.raises(ApiKeyRefused, match="is an API key"):
        worker_client(load_platform_config()).list_workers()
    assert not rig.fake.requests


def test_an_answer_that_does_not_follow_the_protocol_is_a_platform_error(rig: Rig, client: PlatformClient) -> None:
    wid = rig.fake.register_worker("u1", "mine")
    rig.fake.fault("garbage", path="/me")
    rig.fake.fault("garbage", path="/api/v1/sessions")
    with pytest.raises(PlatformError, match=r"does not match the protocol \(User\)") as info:
        client.me()
    assert info.value.code == "platform_error"
    with pytest.raises(PlatformError, match="does not match the protocol"):  # an id that is a path: refused
        client.list_queued_sessions(wid)


def test_failures_name_the_request_as_sent(rig: Rig, client: PlatformClient) -> None:
    wid = rig.fake.register_worker("u1", "mine")
    rig.fake.fault("status", path=f"/workers/{wid}/heartbeat", times=100)
    with pytest.raises(PlatformUnavailable) as down:
        client.heartbeat(wid, "idle", [])
    assert f"the platform did not answer POST /api/v1/workers/{wid}/heartbeat after 4 attempt(s)" \
        in down.value.message
    with pytest.raises(PlatformNotFound) as missing:
        client.get_session("ses_gone")
    assert missing.value.message == "GET /api/v1/sessions/ses_gone: not found: no session ses_gone"
    assert "{" not in down.value.message + missing.value.message
