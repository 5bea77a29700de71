"""The platform's REST API: the only module that knows its paths and payloads.

The paths are not published by the platform; they are written down in ``docs/platform-protocol.md``
and ``docs/platform-openapi.yaml``, and :data:`ROUTES` here is that contract in code (a test checks
the three agree, and the fake platform in ``tests/fakes`` serves exactly these routes).

Reliability, in one place:

* every call has a timeout (connect 5 s, read/write ``timeout_s``);
* 5xx, 429, timeouts and dropped connections are retried with capped exponential backoff and
  jitter, a bounded number of times (:class:`RetryPolicy`), then raise
  :class:`~omx.platform.errors.PlatformUnavailable`; other 4xx are never retried;
* every POST carries an ``Idempotency-Key`` that stays the same across its retries, so a claim
  whose answer was lost on the way back is answered again instead of being claimed twice;
* a 401 refreshes the OAuth token once and repeats the call;
* worker operations are refused *before sending* when the token is an API key;
* each retry is logged at INFO (``-v``); a call that gives up starts an *outage*, and the first answer
  after it ends the outage with one call of ``on_recovery`` — so a person sees one line when the
  platform stops answering and one when it is back, not one per attempt;
* errors name the request as sent (``POST /api/v1/sessions/ses_1/claims``), never a route template.

httpx is imported when a client is built, never when omx's commands are loaded.

Example:
    >>> client = PlatformClient("http://127.0.0.1:8080", tokens=provider)  # doctest: +SKIP
    >>> [s.id for s in client.list_queued_sessions("wrk_1")]  # doctest: +SKIP
    ['ses_7']
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from omx.errors import InvalidInput
from omx.platform import errors as E
from omx.platform.models import (
    Agent,
    Claim,
    ClaimGrant,
    DeviceCode,
    Heartbeat,
    Session,
    User,
    Worker,
    check_id,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("omx.platform")
M = TypeVar("M", bound=BaseModel)

API = "/api/v1"
#: Every route the worker uses: name -> (method, path template). Worker operations are marked ``*``
#: in the protocol document: they refuse API keys.
ROUTES: dict[str, tuple[str, str]] = {
    "device_authorization": ("POST", "/oauth/device/code"),
    "token": ("POST", "/oauth/token"),
    "revoke": ("POST", "/oauth/revoke"),
    "me": ("GET", f"{API}/me"),
    "list_agents": ("GET", f"{API}/agents"),
    "list_workers": ("GET", f"{API}/workers"),
    "register_worker": ("POST", f"{API}/workers"),
    "get_worker": ("GET", f"{API}/workers/{{worker_id}}"),
    "heartbeat": ("POST", f"{API}/workers/{{worker_id}}/heartbeat"),
    "list_sessions": ("GET", f"{API}/sessions"),
    "get_session": ("GET", f"{API}/sessions/{{session_id}}"),
    "claim_session": ("POST", f"{API}/sessions/{{session_id}}/claims"),
    "renew_claim": ("POST", f"{API}/claims/{{claim_id}}/renew"),
    "post_activity": ("POST", f"{API}/claims/{{claim_id}}/activities"),
    "complete_claim": ("POST", f"{API}/claims/{{claim_id}}/complete"),
    "fail_claim": ("POST", f"{API}/claims/{{claim_id}}/fail"),
    "release_claim": ("POST", f"{API}/claims/{{claim_id}}/release"),
}
#: Routes an API key may use; every other ``/api`` route is a worker operation (OAuth user tokens only).
API_KEY_ALLOWED = frozenset({"me", "list_agents"})
_CLAIM_GONE = frozenset({"claim_expired", "claim_not_found", "claim_released", "session_cancelled"})


class TokenSource(Protocol):
    """Where the client gets its bearer token (``omx.platform.auth.TokenProvider``)."""

    def access_token(self) -> str:
        """A current access token (refreshed first when it is about to expire)."""
        ...

    def refresh(self, rejected: str) -> str:
        """A new access token after the platform rejected ``rejected``; raise PlatformAuthError if none."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries: ``attempts`` tries in all, sleeping ``min(cap, base·2ⁿ)`` (half of it jittered)."""

    attempts: int = 5
    base_s: float = 0.25
    cap_s: float = 8.0
    budget_s: float | None = None  # give up once this much time has passed, whatever ``attempts`` says

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        d = min(self.cap_s, self.base_s * 2.0 ** (attempt - 1))
        return d / 2 + random.uniform(0, d / 2)


#: For calls the caller repeats anyway (a renewal every lease/3): fail fast, try again next tick.
QUICK = RetryPolicy(attempts=2, base_s=0.2, cap_s=1.0)


def clean(text: object, limit: int = 300) -> str:
    """Text from the platform made safe to print: control characters escaped (:func:`omx.terminal.visible`),
    length bounded."""
    from omx.terminal import visible

    return visible(text, limit=limit)


class PlatformClient:
    """A typed client for the platform API; thread-safe (one httpx connection pool).

    Args:
        base_url: the platform's URL (``http://127.0.0.1:8080``); the paths of :data:`ROUTES` go after it.
        tokens: the bearer tokens; ``None`` for a client that only talks OAuth.
        api_key_prefix: a token starting with this is an API key, refused for worker operations.
        timeout_s: read/write timeout of each attempt.
        retry: the default :class:`RetryPolicy`.
        sleep: how backoff waits (``(seconds, cancel) -> None``); injected by tests.
    """

    def __init__(self, base_url: str, *, tokens: TokenSource | None = None, api_key_prefix: str = "omxk_",
                 timeout_s: float = 15.0, retry: RetryPolicy | None = None,
                 oauth_urls: dict[str, str | None] | None = None) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        self.tokens = tokens
        self.api_key_prefix = api_key_prefix
        self.retry = retry or RetryPolicy()
        self.oauth_urls = {k: v for k, v in (oauth_urls or {}).items() if v}
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
                                  headers={"User-Agent": "omx-worker/0.1", "Accept": "application/json"})
        #: Called (with the outage's length in seconds) by the first answer after a call gave up.
        self.on_recovery: Callable[[float], None] | None = None
        self._down_since: float | None = None
        self._health = threading.Lock()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- identity -------------------------------------------------------------------------------

    def me(self) -> User:
        """Who the token belongs to, and their workspace."""
        return _parse(User, self._call("me"))

    def list_agents(self) -> list[Agent]:
        """The agents of the caller's workspace."""
        return _parse_list(Agent, self._call("list_agents"), "agents")

    # --- workers (worker operations) ------------------------------------------------------------

    def list_workers(self) -> list[Worker]:
        """This user's workers (never anyone else's)."""
        return _parse_list(Worker, self._call("list_workers"), "workers")

    def register_worker(self, name: str, agent_id: str, *, host: str, max_concurrent_runs: int) -> Worker:
        """Register a new worker owned by the caller."""
        body = {"name": name, "agent_id": agent_id, "host": host, "max_concurrent_runs": max_concurrent_runs,
                "client": "omx"}
        return _parse(Worker, self._call("register_worker", json=body), "worker")

    def get_worker(self, worker_id: str) -> Worker:
        """One of the caller's workers; :class:`PlatformNotFound` for anyone else's."""
        return _parse(Worker, self._call("get_worker", worker_id=worker_id), "worker")

    def heartbeat(self, worker_id: str, status: str, sessions: list[str], *,
                  retry: RetryPolicy | None = None) -> Heartbeat:
        """Say the worker is alive, and what it is running."""
        body = {"status": status, "current_session_ids": sessions}
        return _parse(Heartbeat, self._call("heartbeat", worker_id=worker_id, json=body, retry=retry))

    # --- sessions and claims (worker operations) ------------------------------------------------

    def list_queued_sessions(self, worker_id: str, *, limit: int = 20, cancel: threading.Event | None = None,
                             retry: RetryPolicy | None = None) -> list[Session]:
        """Queued sessions this worker may claim: unpinned, or pinned to it; oldest first."""
        params = {"state": "queued", "worker_id": _id(worker_id, "worker id"), "limit": str(limit)}
        data = self._call("list_sessions", params=params, cancel=cancel, retry=retry)
        return _parse_list(Session, data, "sessions")

    def get_session(self, session_id: str) -> Session:
        """One session visible to the caller."""
        return _parse(Session, self._call("get_session", session_id=session_id), "session")

    def claim_session(self, session_id: str, worker_id: str, *, lease_ms: int,
                      retry: RetryPolicy | None = None) -> ClaimGrant:
        """Claim a session; :class:`SessionClaimConflict` / :class:`SessionPinned` when it is not ours."""
        body = {"worker_id": _id(worker_id, "worker id"), "lease_ms": lease_ms}
        return _parse(ClaimGrant, self._call("claim_session", session_id=session_id, json=body, retry=retry))

    def renew_claim(self, claim_id: str, *, lease_ms: int, retry: RetryPolicy | None = None) -> Claim:
        """Extend the lease; :class:`ClaimLost` when it expired, was released or was cancelled."""
        data = self._call("renew_claim", claim_id=claim_id, json={"lease_ms": lease_ms}, retry=retry)
        return _parse(Claim, data, "claim")

    def post_activity(self, claim_id: str, kind: str, body: str, data: dict[str, Any] | None = None, *,
                      retry: RetryPolicy | None = None) -> None:
        """Record progress on a claim (``kind`` is one of the six activity kinds)."""
        payload = {"kind": kind, "body": body, "data": data or {}}
        self._call("post_activity", claim_id=claim_id, json=payload, retry=retry)

    def complete_claim(self, claim_id: str, summary: str, result: dict[str, Any], *,
                       retry: RetryPolicy | None = None) -> Session:
        """End the claim: the session is ``complete``."""
        data = self._call("complete_claim", claim_id=claim_id, json={"summary": summary, "result": result},
                          retry=retry)
        return _parse(Session, data, "session")

    def fail_claim(self, claim_id: str, error: str, result: dict[str, Any], *,
                   retry: RetryPolicy | None = None) -> Session:
        """End the claim: the session is ``error`` with ``error``."""
        data = self._call("fail_claim", claim_id=claim_id, json={"error": error, "result": result}, retry=retry)
        return _parse(Session, data, "session")

    def release_claim(self, claim_id: str, reason: str, *, retry: RetryPolicy | None = None) -> Session:
        """End the claim unfinished: the session is ``queued`` again."""
        data = self._call("release_claim", claim_id=claim_id, json={"reason": reason}, retry=retry)
        return _parse(Session, data, "session")

    # --- OAuth (RFC 8628 device flow, RFC 6749 refresh, RFC 7009 revocation) --------------------

    def device_authorization(self, client_id: str, scope: str) -> DeviceCode:
        """Start a device login: a user code and the page where the user enters it."""
        status, body = self._oauth("device_authorization", {"client_id": client_id, "scope": scope})
        if status != 200:
            raise _oauth_error(status, body, "device authorization")
        return _parse(DeviceCode, body)

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """POST the token endpoint; return (status, JSON body) — the caller reads OAuth's error codes."""
        return self._oauth("token", form)

    def revoke(self, token: str, hint: str) -> bool:
        """Ask the platform to forget ``token`` (best effort); True when it answered 200."""
        try:
            status, _ = self._oauth("revoke", {"token": token, "token_type_hint": hint}, retry=QUICK)
        except E.PlatformError:
            return False
        return status == 200

    def oauth_url(self, name: str) -> str:
        """The configured URL of an OAuth endpoint, else the default path under the base URL."""
        return self.oauth_urls.get(name) or self.base_url + ROUTES[name][1]

    # --- transport ------------------------------------------------------------------------------

    def _oauth(self, name: str, form: dict[str, str], retry: RetryPolicy | None = None) -> tuple[int, dict[str, Any]]:
        url = self.oauth_url(name)

        def send(headers: dict[str, str]) -> httpx.Response:
            return self._http.post(url, data=form, headers=headers)

        resp = self._send(f"POST {url}", send, retry or self.retry, None)
        return resp.status_code, _json(resp)

    def _call(self, name: str, *, json: dict[str, Any] | None = None, params: dict[str, str] | None = None,
              retry: RetryPolicy | None = None, cancel: threading.Event | None = None, **ids: str) -> dict[str, Any]:
        method, template = ROUTES[name]
        try:
            path = template.format(**{k: quote(check_id(v, k.replace("_", " ")), safe="") for k, v in ids.items()})
        except ValueError as exc:
            raise InvalidInput(str(exc)) from None
        url = self.base_url + path
        what = f"{method} {path}"
        if self.tokens is None:
            raise E.PlatformAuthError("not logged in: run `omx auth login`")
        token = self.tokens.access_token()
        if name not in API_KEY_ALLOWED and token.startswith(self.api_key_prefix):
            raise E.ApiKeyRefused(api_key_message("the stored token"))
        idem = uuid.uuid4().hex if method == "POST" else None
        refreshed = False
        while True:
            def send(headers: dict[str, str], token: str = token) -> httpx.Response:
                headers = {**headers, "Authorization": f"Bearer {token}"}
                if idem:
                    headers["Idempotency-Key"] = idem
                return self._http.request(method, url, json=json, params=params, headers=headers)

            resp = self._send(what, send, retry or self.retry, cancel)
            if resp.status_code == 401 and not refreshed:
                token, refreshed = self.tokens.refresh(token), True
                continue
            if resp.status_code >= 400:
                raise map_error(resp.status_code, _json(resp), what)
            return _json(resp)

    def _send(self, what: str, send: Any, policy: RetryPolicy, cancel: threading.Event | None) -> httpx.Response:
        """One logical request (``what``: ``METHOD /path``) with retries; the first response that is not retryable."""
        import httpx

        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                resp: httpx.Response = send({})
            except httpx.TransportError as exc:  # timeouts, refused/dropped connections, protocol errors
                failure = f"{type(exc).__name__}: {clean(exc, 120) or 'no detail'}"
                retry_after = None
            else:
                if resp.status_code < 500 and resp.status_code != 429:
                    self._answered()
                    return resp
                failure = f"HTTP {resp.status_code}: {clean(_message(_json(resp)), 120)}"
                retry_after = _retry_after(resp)
            out_of_time = policy.budget_s is not None and time.monotonic() - started >= policy.budget_s
            if attempt >= policy.attempts or out_of_time:
                with self._health:
                    self._down_since = self._down_since or time.monotonic()
                raise E.PlatformUnavailable(
                    f"the platform did not answer {what} after {attempt} attempt(s) "
                    f"in {time.monotonic() - started:.1f}s (last: {failure})", request=what, attempts=attempt)
            delay = policy.delay(attempt) if retry_after is None else min(policy.cap_s, retry_after)
            log.info("platform: %s failed (%s); retry %d/%d %s", what, failure, attempt + 1, policy.attempts,
                     after(delay))
            if cancel is not None and cancel.wait(delay):
                raise E.PlatformUnavailable(f"{what}: stopped while waiting to retry (last: {failure})", request=what)
            if cancel is None:
                time.sleep(delay)


    def _answered(self) -> None:
        """The platform answered: end an outage (once, whichever thread sees the answer first)."""
        if self._down_since is None:
            return
        with self._health:
            since, self._down_since = self._down_since, None
        if since is not None and self.on_recovery is not None:
            self.on_recovery(time.monotonic() - since)


def duration(seconds: float) -> str:
    """``seconds`` for a person: ``50 ms``, ``2.5 s``, ``40 s``, ``3 min``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def after(seconds: float) -> str:
    """When a wait of ``seconds`` ends, for a person: ``at once``, ``in 50 ms``, ``in 2.5 s``."""
    return "at once" if seconds < 0.001 else f"in {duration(seconds)}"


def _id(value: str, what: str) -> str:
    try:
        return check_id(value, what)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def api_key_message(where: str) -> str:
    """The one message every API-key refusal uses."""
    return (f"worker operations need an OAuth user token, and {where} is an API key: API keys are refused. "
            "Remove the key and run `omx auth login`.")


def map_error(status: int, body: dict[str, Any], what: str) -> E.PlatformError:
    """The :mod:`omx.platform.errors` class for a 4xx answer to ``what`` (``METHOD /path`` as sent), by the
    platform's error code first."""
    raw = body.get("error")
    err: dict[str, Any] = raw if isinstance(raw, dict) else {}
    code = str(err.get("code") or "")
    msg = clean(err.get("message") or f"HTTP {status}")
    if code == "api_key_not_allowed":
        return E.ApiKeyRefused(api_key_message("the token sent"), platform_code=code)
    if code in _CLAIM_GONE or status == 410:
        return E.ClaimLost(f"the claim is gone ({code or status}): {msg}", platform_code=code)
    if code == "pinned_to_other_worker":
        return E.SessionPinned(f"the session is pinned to another worker: {msg}", platform_code=code)
    if status == 409:
        return E.SessionClaimConflict(f"{msg} ({code or 'conflict'})", platform_code=code)
    if status == 401:
        return E.PlatformAuthError(f"the platform refused the login ({msg}); run `omx auth login`", platform_code=code)
    if status == 403:
        return E.PlatformForbidden(f"{what}: forbidden: {msg}", platform_code=code)
    if status == 404:
        return E.PlatformNotFound(f"{what}: not found: {msg}", platform_code=code)
    if status in (400, 422):
        return E.PlatformBadRequest(f"{what}: rejected: {msg}", platform_code=code)
    return E.PlatformError(f"{what}: HTTP {status}: {msg}", platform_code=code)


def oauth_error(status: int, body: dict[str, Any]) -> tuple[str, str]:
    """(code, description) of an OAuth error answer, as text.

    RFC 6749 says ``{"error": "<code>", "error_description": ...}``; an endpoint that is not OAuth's
    (a wrong URL, a proxy) may answer the API's ``{"error": {"code", "message"}}`` or nothing at all.
    """
    raw = body.get("error")
    if isinstance(raw, dict):
        code, desc = raw.get("code"), raw.get("message")
    else:
        code, desc = raw, body.get("error_description")
    return clean(code or f"HTTP {status}", 60), clean(desc or "")


def _oauth_error(status: int, body: dict[str, Any], what: str) -> E.PlatformError:
    code, desc = oauth_error(status, body)
    return E.PlatformAuthError(f"{what} failed: {code}{': ' + desc if desc else ''}", platform_code=code)


def _parse(cls: type[M], data: dict[str, Any], key: str | None = None) -> M:
    """``data`` (or ``data[key]``) as a ``cls``; an answer that does not fit the protocol is a PlatformError."""
    try:
        return cls.model_validate(data[key] if key else data)
    except (ValidationError, KeyError, TypeError) as exc:
        raise E.PlatformError(f"the platform's answer does not match the protocol ({cls.__name__}): "
                              f"{clean(exc, 200)}") from None


def _parse_list(cls: type[M], data: dict[str, Any], key: str) -> list[M]:
    items = data.get(key)
    if not isinstance(items, list):
        raise E.PlatformError(f"the platform's answer has no list {key!r}")
    return [_parse(cls, {"item": item}, "item") for item in items]


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json() if resp.content else {}
    except ValueError:
        return {"_text": resp.text[:300]}
    return data if isinstance(data, dict) else {"_value": data}


def _message(body: dict[str, Any]) -> str:
    err = body.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err.get("code") or "")
    return str(err or body.get("_text") or "")


def _retry_after(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None
