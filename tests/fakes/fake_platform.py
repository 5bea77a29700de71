"""A fake of the remote planning platform: a real HTTP server on 127.0.0.1 serving docs/platform-protocol.md.

It enforces what the real one must: OAuth (device flow, refresh with rotation, revocation), API keys
refused for worker operations, workers private to their owner, sessions visible to their owner only,
pinning, claims with leases (a second claimer gets 409), lease expiry making a session ``stale``, and
idempotent POSTs (``Idempotency-Key``). It records every request and every activity, and it can
misbehave on purpose: answer 500, stall past the client's timeout, or drop the connection before or
after doing the work (:meth:`FakePlatform.fault`).

Example::

    with FakePlatform() as fake:
        tokens = fake.issue_tokens("u1")
        sid = fake.create_session("u1", title="Fix the parser", prompt="...")
        fake.fault("status", path="/renew", times=3)          # the next 3 renewals answer 500
        ...                                                   # run a worker against fake.url
        assert fake.session(sid)["state"] == "complete"
        assert [a["kind"] for a in fake.activities(sid)][-1] == "completion"

Tests drive it in-process (these methods) and the worker over HTTP; every test stops it.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["API_KEY_PREFIX", "ROUTES", "FakePlatform", "Fault", "Recorded"]

API_KEY_PREFIX = "omxk_"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Recorded:
    """One request as the fake saw it."""

    method: str
    path: str
    query: dict[str, str]
    body: dict[str, Any]
    auth: str  # none | oauth | api_key | invalid
    user: str | None
    status: int = 0
    fault: str | None = None
    idempotency_key: str = ""
    at: float = field(default_factory=time.time)


@dataclass
class Fault:
    """Misbehaviour for the next ``times`` matching requests.

    kind: ``status`` (answer ``status``, do nothing), ``delay`` (sleep ``delay_s`` first, then answer),
    ``drop`` (close the connection without doing anything), ``drop_after`` (do the work, then close
    without answering), ``garbage`` (answer 200 with JSON that does not follow the protocol).
    """

    kind: str
    times: int = 1
    path: str | None = None  # substring of the path
    method: str | None = None
    status: int = 500
    delay_s: float = 0.0
    hits: int = 0


class FakePlatform:
    """The fake server. ``with FakePlatform() as fake:`` (or start/stop)."""

    def __init__(self, *, device_interval: float = 0.05, token_ttl_s: float = 3600.0,
                 worker_stale_s: float = 300.0, max_lease_ms: int = 600_000) -> None:
        self.lock = threading.RLock()
        self.device_interval = device_interval
        self.token_ttl_s = token_ttl_s
        self.worker_stale_s = worker_stale_s
        self.max_lease_ms = max_lease_ms
        self.ids = itertools.count(1)
        self.users: dict[str, dict[str, Any]] = {
            "u1": {"id": "u1", "name": "Ada Lovelace", "email": "ada@example.invalid", "workspace_id": "ws1"},
            "u2": {"id": "u2", "name": "Grace Hopper", "email": "grace@example.invalid", "workspace_id": "ws1"},
            "u3": {"id": "u3", "name": "Other Org", "email": "o@example.invalid", "workspace_id": "ws2"},
        }
        self.workspaces = {"ws1": "Acme", "ws2": "Elsewhere"}
        self.agents: list[dict[str, Any]] = [
            {"id": "agt_codex", "name": "Codex (local worker)", "workspace_id": "ws1"},
            {"id": "agt_other", "name": "Codex", "workspace_id": "ws2"},
        ]
        self.access: dict[str, tuple[str, float]] = {}  # token -> (user, expires_at)
        self.refresh: dict[str, str] = {}  # refresh token -> user
        self.api_keys: dict[str, str] = {}
        self.devices: dict[str, dict[str, Any]] = {}  # device_code -> state
        self.device_script: list[str] = []  # OAuth errors the next device polls answer, in order
        self.auto_approve: str | None = None  # approve every device login on first poll, as this user
        self.workers: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.claims: dict[str, dict[str, Any]] = {}
        self.activity_log: list[dict[str, Any]] = []
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.idempotent: dict[tuple[str, str, str], Answer] = {}
        self.claim_gate: tuple[int, float] | None = None  # (claimers to wait for, timeout)
        self._gate_arrived = 0
        self._gate = threading.Condition(self.lock)
        self.routes = Routes(self)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> FakePlatform:
        handler = type("_Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-platform", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._gate:
            self.claim_gate = None
            self._gate.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakePlatform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # --- test side: identities ------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.ids)}{secrets.token_hex(3)}"

    def issue_tokens(self, user: str = "u1", *, ttl_s: float | None = None) -> dict[str, Any]:
        """An OAuth grant for ``user`` (what the token endpoint would answer)."""
        with self.lock:
            ttl = self.token_ttl_s if ttl_s is None else ttl_s
            access, refresh = f"oat_{secrets.token_hex(16)}", f"ort_{secrets.token_hex(16)}"
            self.access[access] = (user, time.time() + ttl)
            self.refresh[refresh] = user
            return {"access_token": access, "refresh_token": refresh, "token_type": "Bearer", "expires_in": ttl}

    def api_key(self, user: str = "u1") -> str:
        with self.lock:
            key = f"{API_KEY_PREFIX}{secrets.token_hex(16)}"
            self.api_keys[key] = user
            return key

    def approve(self, user_code: str, user: str = "u1") -> None:
        with self.lock:
            for d in self.devices.values():
                if d["user_code"] == user_code:
                    d["approved_by"] = user

    def register_worker(self, user: str = "u1", name: str = "w", agent_id: str = "agt_codex") -> str:
        with self.lock:
            wid = self.new_id("wrk")
            self.workers[wid] = {"id": wid, "name": name, "agent_id": agent_id, "owner_id": user,
                                 "workspace_id": self.users[user]["workspace_id"], "status": "offline",
                                 "last_heartbeat_at": None, "_last_beat": None, "created_at": iso(time.time())}
            return wid

    # --- test side: sessions --------------------------------------------------------------------

    def create_session(self, owner: str = "u1", *, title: str = "A session", prompt: str = "Do the thing.",
                       context: str = "", instructions: str = "", pinned_worker_id: str | None = None,
                       agent_id: str = "agt_codex", target: dict[str, Any] | None = None,
                       plan: list[dict[str, Any]] | None = None, state: str = "queued") -> str:
        with self.lock:
            sid = self.new_id("ses")
            now = time.time()
            self.sessions[sid] = {
                "id": sid, "state": state, "agent_id": agent_id, "workspace_id": self.users[owner]["workspace_id"],
                "owner_id": owner, "title": title, "prompt": prompt, "instructions": instructions, "context": context,
                "target": target or {"kind": "bug", "id": "BUG-1", "title": title, "url": ""},
                "pinned_worker_id": pinned_worker_id, "plan": plan or [], "external_url": None,
                "url": f"{self.url}/sessions/{sid}", "error": None, "attempt": 1, "claimed_by_worker_id": None,
                "created_at": iso(now), "updated_at": iso(now), "summary": None, "result": None,
                "_queued_at": now, "_claim_id": None,
            }
            return sid

    def session(self, sid: str) -> dict[str, Any]:
        with self.lock:
            self.sweep()
            return json.loads(json.dumps(self.sessions[sid]))

    def activities(self, sid: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(a) for a in self.activity_log if a["session_id"] == sid]

    def claims_of(self, sid: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(c) for c in self.claims.values() if c["session_id"] == sid]

    def retry(self, sid: str) -> None:
        """What the platform's "retry" does to a stale session: queue it again."""
        with self.lock:
            s = self.sessions[sid]
            assert s["state"] in ("stale", "error"), s["state"]
            s.update(state="queued", attempt=s["attempt"] + 1, claimed_by_worker_id=None, updated_at=iso(time.time()))

    def cancel(self, sid: str) -> None:
        with self.lock:
            self.sessions[sid].update(state="cancelled", updated_at=iso(time.time()))

    def fault(self, kind: str, *, times: int = 1, path: str | None = None, method: str | None = None,
              status: int = 500, delay_s: float = 0.0) -> Fault:
        f = Fault(kind, times, path, method, status, delay_s)
        with self.lock:
            self.faults.append(f)
        return f

    def gate_claims(self, claimers: int, timeout_s: float = 20.0) -> None:
        """Hold every claim request until ``claimers`` have arrived (a start barrier for the race test)."""
        with self._gate:
            self.claim_gate = (claimers, time.monotonic() + timeout_s)
            self._gate_arrived = 0

    def calls(self, fragment: str, method: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if fragment in r.path and (method is None or r.method == method)]

    # --- the platform's own clock work ----------------------------------------------------------

    def sweep(self) -> None:
        """Expire leases (session -> stale) and sessions of workers whose heartbeat stopped."""
        now = time.time()
        with self.lock:
            for c in self.claims.values():
                if c["_ended"]:
                    continue
                w = self.workers.get(c["worker_id"], {})
                silent = w.get("_last_beat") is not None and now - w["_last_beat"] > self.worker_stale_s
                if c["_expires"] < now or silent:
                    c["_ended"] = "expired"
                    s = self.sessions[c["session_id"]]
                    if s["state"] == "active" and s["_claim_id"] == c["id"]:
                        s.update(state="stale", updated_at=iso(now))

    def wait_gate(self) -> None:
        with self._gate:
            if self.claim_gate is None:
                return
            self._gate_arrived += 1
            self._gate.notify_all()
            while self.claim_gate is not None:
                need, deadline = self.claim_gate
                if self._gate_arrived >= need or time.monotonic() >= deadline:
                    break
                self._gate.wait(0.05)

    def pick_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for f in self.faults:
                if f.hits < f.times and (f.path is None or f.path in path) and (f.method in (None, method)):
                    f.hits += 1
                    return f
        return None


@dataclass
class Answer:
    status: int
    body: dict[str, Any]


class PlatformError(Exception):
    """An error answer: ``{"error": {"code": code, "message": message}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


#: The protocol, route by route: (method, path template, handler, who may call: None | any | oauth).
#: ``oauth`` routes are worker operations: an API key gets 403 ``api_key_not_allowed``.
ROUTES: list[tuple[str, str, str, str | None]] = [
    ("POST", "/oauth/device/code", "device_code", None),
    ("POST", "/oauth/token", "token", None),
    ("POST", "/oauth/revoke", "revoke", None),
    ("GET", "/api/v1/me", "me", "any"),
    ("GET", "/api/v1/agents", "agents", "any"),
    ("GET", "/api/v1/workers", "list_workers", "oauth"),
    ("POST", "/api/v1/workers", "register_worker", "oauth"),
    ("GET", "/api/v1/workers/{worker_id}", "get_worker", "oauth"),
    ("POST", "/api/v1/workers/{worker_id}/heartbeat", "heartbeat", "oauth"),
    ("GET", "/api/v1/sessions", "list_sessions", "oauth"),
    ("GET", "/api/v1/sessions/{session_id}", "get_session", "oauth"),
    ("POST", "/api/v1/sessions/{session_id}/claims", "claim", "oauth"),
    ("POST", "/api/v1/claims/{claim_id}/renew", "renew", "oauth"),
    ("POST", "/api/v1/claims/{claim_id}/activities", "activity", "oauth"),
    ("POST", "/api/v1/claims/{claim_id}/complete", "complete", "oauth"),
    ("POST", "/api/v1/claims/{claim_id}/fail", "fail", "oauth"),
    ("POST", "/api/v1/claims/{claim_id}/release", "release", "oauth"),
]
ACTIVITY_KINDS = ("progress", "plan", "external_url", "completion", "failure", "policy")
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


class Routes:
    """One method per route; each runs under the fake's lock and returns an :class:`Answer` or raises."""

    def __init__(self, fake: FakePlatform) -> None:
        self.fake = fake
        self.table = [(m, re.compile(re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(t))), name, who)
                      for m, t, name, who in ROUTES]

    def dispatch(self, method: str, path: str, query: dict[str, str], body: dict[str, Any],
                 headers: dict[str, str], rec: Recorded) -> Answer:
        fake = self.fake
        fake.sweep()
        known_path = False
        for m, regex, name, who in self.table:
            match = regex.fullmatch(path)
            if match is None:
                continue
            known_path = True
            if m != method:
                continue
            user = self._auth(headers, rec, who) if who else None
            key = _header(headers, "Idempotency-Key")
            cache_key = (user or "", key, path) if key and method == "POST" else None
            with fake.lock:
                if cache_key is not None and cache_key in fake.idempotent:
                    return fake.idempotent[cache_key]
                try:
                    answer: Answer = getattr(self, name)(user=user, body=body, query=query, rec=rec,
                                                         **match.groupdict())
                except PlatformError as exc:
                    answer = Answer(exc.status, {"error": {"code": exc.code, "message": exc.message}})
                if cache_key is not None and answer.status < 500:
                    fake.idempotent[cache_key] = answer
                return answer
        if known_path:
            raise PlatformError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        raise PlatformError(404, "not_found", f"no route {path}")

    def _auth(self, headers: dict[str, str], rec: Recorded, who: str) -> str:
        fake = self.fake
        value = _header(headers, "Authorization")
        if not value.startswith("Bearer "):
            raise PlatformError(401, "unauthorized", "a bearer token is required")
        token = value[len("Bearer "):]
        with fake.lock:
            if token in fake.api_keys:
                rec.auth, rec.user = "api_key", fake.api_keys[token]
                if who == "oauth":
                    raise PlatformError(403, "api_key_not_allowed", "worker operations need an OAuth user token; "
                                        "API keys are refused")
                return rec.user
            if token in fake.access:
                user, expires = fake.access[token]
                if expires < time.time():
                    rec.auth = "expired"
                    raise PlatformError(401, "token_expired", "the access token expired")
                rec.auth, rec.user = "oauth", user
                return user
        rec.auth = "invalid"
        raise PlatformError(401, "invalid_token", "unknown token")

    # --- OAuth ----------------------------------------------------------------------------------

    def device_code(self, body: dict[str, Any], **_: Any) -> Answer:
        fake = self.fake
        if not body.get("client_id"):
            return Answer(400, {"error": "invalid_client"})
        device, user_code = secrets.token_hex(16), f"{secrets.token_hex(2).upper()}-{secrets.token_hex(2).upper()}"
        fake.devices[device] = {"user_code": user_code, "expires": time.time() + 600, "approved_by": None,
                                "denied": False, "polls": 0}
        return Answer(200, {"device_code": device, "user_code": user_code, "verification_uri": f"{fake.url}/device",
                            "verification_uri_complete": f"{fake.url}/device?user_code={user_code}",
                            "expires_in": 600, "interval": fake.device_interval})

    def token(self, body: dict[str, Any], **_: Any) -> Answer:
        fake = self.fake
        grant = body.get("grant_type")
        if grant == DEVICE_GRANT:
            d = fake.devices.get(str(body.get("device_code")))
            if d is None:
                return Answer(400, {"error": "invalid_grant"})
            d["polls"] += 1
            if fake.device_script:
                return Answer(400, {"error": fake.device_script.pop(0)})
            if d["expires"] < time.time():
                return Answer(400, {"error": "expired_token"})
            if d["denied"]:
                return Answer(400, {"error": "access_denied"})
            if d["approved_by"] is None and fake.auto_approve:
                d["approved_by"] = fake.auto_approve
            if d["approved_by"] is None:
                return Answer(400, {"error": "authorization_pending"})
            del fake.devices[str(body["device_code"])]
            return Answer(200, fake.issue_tokens(d["approved_by"]))
        if grant == "refresh_token":
            user = fake.refresh.pop(str(body.get("refresh_token")), None)  # rotation: each works once
            if user is None:
                return Answer(400, {"error": "invalid_grant", "error_description": "unknown or used refresh token"})
            return Answer(200, fake.issue_tokens(user))
        return Answer(400, {"error": "unsupported_grant_type"})

    def revoke(self, body: dict[str, Any], **_: Any) -> Answer:
        token = str(body.get("token"))
        self.fake.access.pop(token, None)
        self.fake.refresh.pop(token, None)
        return Answer(200, {})

    # --- identity -------------------------------------------------------------------------------

    def me(self, user: str, rec: Recorded, **_: Any) -> Answer:
        u = self.fake.users[user]
        ws = u["workspace_id"]
        return Answer(200, {"id": u["id"], "name": u["name"], "email": u["email"], "token_kind": rec.auth,
                            "workspace": {"id": ws, "name": self.fake.workspaces[ws]}})

    def agents(self, user: str, **_: Any) -> Answer:
        ws = self.fake.users[user]["workspace_id"]
        return Answer(200, {"agents": [a for a in self.fake.agents if a["workspace_id"] == ws]})

    # --- workers --------------------------------------------------------------------------------

    def _worker(self, user: str, worker_id: str) -> dict[str, Any]:
        w = self.fake.workers.get(worker_id)
        if w is None or w["owner_id"] != user:  # private: someone else's worker does not exist for you
            raise PlatformError(404, "worker_not_found", f"no worker {worker_id}")
        return w

    def list_workers(self, user: str, **_: Any) -> Answer:
        return Answer(200, {"workers": [_public(w) for w in self.fake.workers.values() if w["owner_id"] == user]})

    def register_worker(self, user: str, body: dict[str, Any], **_: Any) -> Answer:
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > 100:
            raise PlatformError(422, "invalid_request", "name must be 1-100 characters")
        ws = self.fake.users[user]["workspace_id"]
        if not any(a["id"] == body.get("agent_id") and a["workspace_id"] == ws for a in self.fake.agents):
            raise PlatformError(422, "unknown_agent", f"no agent {body.get('agent_id')!r} in this workspace")
        wid = self.fake.register_worker(user, name, str(body["agent_id"]))
        return Answer(201, {"worker": _public(self.fake.workers[wid])})

    def get_worker(self, user: str, worker_id: str, **_: Any) -> Answer:
        return Answer(200, {"worker": _public(self._worker(user, worker_id))})

    def heartbeat(self, user: str, worker_id: str, body: dict[str, Any], **_: Any) -> Answer:
        w = self._worker(user, worker_id)
        status = body.get("status")
        if status not in ("idle", "working", "offline"):
            raise PlatformError(422, "invalid_request", "status must be idle, working or offline")
        now = time.time()
        w.update(status=status, last_heartbeat_at=iso(now), _last_beat=None if status == "offline" else now,
                 current_session_ids=list(body.get("current_session_ids") or []))
        return Answer(200, {"worker": _public(w), "server_time": iso(now)})

    # --- sessions and claims --------------------------------------------------------------------

    def _session(self, user: str, session_id: str) -> dict[str, Any]:
        s = self.fake.sessions.get(session_id)
        if s is None or s["owner_id"] != user:
            raise PlatformError(404, "session_not_found", f"no session {session_id}")
        return s

    def list_sessions(self, user: str, query: dict[str, str], **_: Any) -> Answer:
        if "worker_id" not in query:
            raise PlatformError(422, "invalid_request", "worker_id is required")
        w = self._worker(user, query["worker_id"])
        state, limit = query.get("state", "queued"), min(100, int(query.get("limit", "20")))
        found = sorted((s for s in self.fake.sessions.values()
                        if s["owner_id"] == user and s["agent_id"] == w["agent_id"] and s["state"] == state
                        and s["pinned_worker_id"] in (None, w["id"])), key=lambda s: s["_queued_at"])
        return Answer(200, {"sessions": [_public(s) for s in found[:limit]]})

    def get_session(self, user: str, session_id: str, **_: Any) -> Answer:
        return Answer(200, {"session": _public(self._session(user, session_id))})

    def claim(self, user: str, session_id: str, body: dict[str, Any], **_: Any) -> Answer:
        fake = self.fake
        w = self._worker(user, str(body.get("worker_id")))
        s = self._session(user, session_id)
        fake.wait_gate()  # a Condition on the fake's lock: waiting releases it
        if s["agent_id"] != w["agent_id"]:
            raise PlatformError(403, "agent_mismatch", "the session is for another agent")
        if s["pinned_worker_id"] not in (None, w["id"]):
            raise PlatformError(403, "pinned_to_other_worker", "the session is pinned to another worker")
        if s["state"] != "queued":
            who = " by another worker" if s["state"] == "active" else ""
            raise PlatformError(409, "claim_conflict", f"the session is {s['state']}{who}")
        lease = max(1_000, min(int(body.get("lease_ms") or 60_000), fake.max_lease_ms))
        now = time.time()
        cid = fake.new_id("clm")
        fake.claims[cid] = {"id": cid, "session_id": s["id"], "worker_id": w["id"], "agent_id": w["agent_id"],
                            "workspace_id": s["workspace_id"], "lease_ms": lease,
                            "lease_expires_at": iso(now + lease / 1000), "created_at": iso(now),
                            "_owner": user, "_expires": now + lease / 1000, "_ended": None}
        s.update(state="active", claimed_by_worker_id=w["id"], _claim_id=cid, updated_at=iso(now))
        return Answer(201, {"claim": _public(fake.claims[cid]), "session": _public(s)})

    def _claim(self, user: str, claim_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        c = self.fake.claims.get(claim_id)
        if c is None or c["_owner"] != user:
            raise PlatformError(404, "claim_not_found", f"no claim {claim_id}")
        s = self.fake.sessions[c["session_id"]]
        if s["state"] == "cancelled":
            raise PlatformError(409, "session_cancelled", "the session was cancelled on the platform")
        if c["_ended"] == "expired":
            raise PlatformError(409, "claim_expired", "the claim's lease expired; the session is stale")
        if c["_ended"]:
            raise PlatformError(409, "claim_released", f"the claim already ended ({c['_ended']})")
        return c, s

    def renew(self, user: str, claim_id: str, body: dict[str, Any], **_: Any) -> Answer:
        c, _s = self._claim(user, claim_id)
        lease = max(1_000, min(int(body.get("lease_ms") or c["lease_ms"]), self.fake.max_lease_ms))
        now = time.time()
        c.update(lease_ms=lease, _expires=now + lease / 1000, lease_expires_at=iso(now + lease / 1000))
        return Answer(200, {"claim": _public(c)})

    def activity(self, user: str, claim_id: str, body: dict[str, Any], **_: Any) -> Answer:
        c, s = self._claim(user, claim_id)
        if body.get("kind") not in ACTIVITY_KINDS:
            raise PlatformError(422, "invalid_request", f"kind must be one of {', '.join(ACTIVITY_KINDS)}")
        entry = {"id": self.fake.new_id("act"), "session_id": s["id"], "claim_id": c["id"],
                 "worker_id": c["worker_id"], "kind": body["kind"], "body": str(body.get("body") or ""),
                 "data": body.get("data") or {}, "created_at": iso(time.time())}
        self.fake.activity_log.append(entry)
        return Answer(201, {"activity": entry})

    def _end(self, user: str, claim_id: str, how: str, **changes: Any) -> Answer:
        c, s = self._claim(user, claim_id)
        c["_ended"] = how
        s.update(updated_at=iso(time.time()), **changes)
        return Answer(200, {"session": _public(s)})

    def complete(self, user: str, claim_id: str, body: dict[str, Any], **_: Any) -> Answer:
        return self._end(user, claim_id, "completed", state="complete", summary=body.get("summary"),
                         result=body.get("result"))

    def fail(self, user: str, claim_id: str, body: dict[str, Any], **_: Any) -> Answer:
        return self._end(user, claim_id, "failed", state="error", error=str(body.get("error") or "failed"),
                         result=body.get("result"))

    def release(self, user: str, claim_id: str, body: dict[str, Any], **_: Any) -> Answer:
        return self._end(user, claim_id, "released", state="queued", claimed_by_worker_id=None, _claim_id=None,
                         release_reason=str(body.get("reason") or ""))


def _header(headers: dict[str, str], name: str) -> str:
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return ""

class _Handler(BaseHTTPRequestHandler):
    fake: FakePlatform
    server_version = "FakePlatform/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        body = self._body()
        rec = Recorded(method, path, query, body, "none", None,
                       idempotency_key=_header(dict(self.headers.items()), "Idempotency-Key"))
        with fake.lock:
            fake.requests.append(rec)
        fault = fake.pick_fault(method, path)
        if fault is not None:
            rec.fault = fault.kind
            if fault.kind == "status":
                rec.status = fault.status
                self._send(Answer(fault.status, {"error": {"code": "internal", "message": "injected failure"}}))
                return
            if fault.kind == "drop":
                self._drop()
                return
            if fault.kind == "garbage":  # a 200 that does not follow the protocol
                rec.status = 200
                self._send(Answer(200, {"unexpected": True, "sessions": [{"id": "../x"}]}))
                return
            if fault.kind == "delay":
                time.sleep(fault.delay_s)
        try:
            answer = fake.routes.dispatch(method, path, query, body, dict(self.headers.items()), rec)
        except PlatformError as exc:
            answer = Answer(exc.status, {"error": {"code": exc.code, "message": exc.message}})
        rec.status = answer.status
        if fault is not None and fault.kind == "drop_after":
            self._drop()
            return
        try:
            self._send(answer)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a delay fault): the work is done all the same

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return {}
        if "application/x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            return {k: v[-1] for k, v in parse_qs(raw.decode()).items()}
        try:
            data = json.loads(raw)
        except ValueError:
            return {"_invalid": raw.decode(errors="replace")}
        return data if isinstance(data, dict) else {"_invalid": data}

    def _send(self, answer: Answer) -> None:
        data = json.dumps(answer.body).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
