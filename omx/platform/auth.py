"""Logging in to the platform: the OAuth device flow, stored tokens, refresh, and the API-key rule.

* ``omx auth login`` runs the device flow (RFC 8628): it asks for a device code, shows the user code
  and the page to enter it on, and polls the token endpoint honouring ``interval``, ``slow_down``,
  ``expired_token`` and ``access_denied``.
* Tokens are stored as JSON in ``$OMX_HOME/auth/<platform>.json``: created with mode 0600 in a 0700
  folder, replaced atomically, and refused when the file is readable by anyone else. They are never
  printed, never put in an environment variable, and so never reach an agent.
* :class:`TokenProvider` hands out the access token, refreshing it shortly before it expires and
  after a 401; a file lock makes concurrent refreshes by several worker processes take turns (the
  platform rotates refresh tokens, so two racing refreshes would log one of them out).
* Worker operations accept OAuth user tokens only. An API key — ``api_key`` in
  ``config/platform.toml``, ``$OMX_PLATFORM_API_KEY``, or a stored token with the platform's key
  prefix (``omxk_``) — is refused before any worker operation, with a message saying so.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from omx.platform.client import QUICK, PlatformClient, api_key_message, oauth_error
from omx.platform.config import PlatformConfig, home
from omx.platform.errors import ApiKeyRefused, PlatformAuthError, PlatformError
from omx.platform.models import DeviceCode, TokenGrant
from omx.state import atomic

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: Refresh this long before expiry at most (less for short-lived tokens: half their lifetime).
REFRESH_MARGIN_S = 60.0


@dataclass
class StoredTokens:
    """What ``auth/<platform>.json`` holds. ``expires_at`` is epoch seconds (``None``: no expiry given)."""

    access_token: str
    refresh_token: str | None
    expires_at: float | None
    token_type: str = "Bearer"
    obtained_at: float = 0.0
    platform_url: str = ""
    user: dict[str, Any] | None = None

    def expiring(self, now: float) -> bool:
        """True when the access token should be refreshed now (or has expired)."""
        if self.expires_at is None:
            return False
        lifetime = max(0.0, self.expires_at - self.obtained_at)
        return now >= self.expires_at - min(REFRESH_MARGIN_S, lifetime / 2)


def auth_path(cfg: PlatformConfig) -> Path:
    """``$OMX_HOME/auth/<platform name>.json``."""
    return home() / "auth" / f"{cfg.name}.json"


def read_tokens(path: Path) -> StoredTokens | None:
    """The stored tokens, ``None`` when there are none; refuse a file others can read or that is not ours."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if st.st_mode & 0o077:
        raise PlatformAuthError(f"{path} is readable by others (mode {st.st_mode & 0o777:04o}); refusing to use it. "
                                f"Run `chmod 600 {path}` or `omx auth login` again", path=str(path))
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise PlatformAuthError(f"{path} belongs to another user; refusing to use it", path=str(path))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return StoredTokens(**{k: data.get(k) for k in StoredTokens.__dataclass_fields__ if k in data})
    except (ValueError, TypeError) as exc:
        raise PlatformAuthError(f"{path} is not a valid token file ({type(exc).__name__}); run `omx auth login`",
                                path=str(path)) from None


def write_tokens(path: Path, tokens: StoredTokens) -> None:
    """Write the tokens atomically: a 0600 temp file in a 0700 folder, fsync'd, renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    atomic.write_bytes(path, (json.dumps(asdict(tokens), indent=2) + "\n").encode(), mode=0o600)


def require_user_token(cfg: PlatformConfig) -> None:
    """Raise :class:`ApiKeyRefused` when an API key is configured; call it before any worker operation."""
    if cfg.api_key:
        where = cfg.sources.get("api_key", "the configuration")
        raise ApiKeyRefused(api_key_message(f"the configured key ({where})"), source=where)


def oauth_client(cfg: PlatformConfig) -> PlatformClient:
    """A client for the OAuth endpoints only (it holds no token)."""
    urls = {"device_authorization": cfg.device_authorization_url, "token": cfg.token_url, "revoke": cfg.revoke_url}
    return PlatformClient(cfg.require_url(), timeout_s=cfg.timeout_s, api_key_prefix=cfg.api_key_prefix,
                          oauth_urls=urls, retry=cfg.retry_policy())


def worker_client(cfg: PlatformConfig, **options: Any) -> PlatformClient:
    """A client for worker operations, logged in; refuses an API key before it sends anything.

    Raises:
        PlatformConfigError: no platform URL is configured (checked first: the login is per platform).
        ApiKeyRefused, PlatformAuthError: see :class:`TokenProvider`.
    """
    url = cfg.require_url()
    provider = TokenProvider(cfg)
    options.setdefault("retry", cfg.retry_policy())
    return PlatformClient(url, tokens=provider, timeout_s=cfg.timeout_s, api_key_prefix=cfg.api_key_prefix,
                          **options)


class TokenProvider:
    """The access token for a :class:`PlatformClient`, refreshed when due; see the module docstring.

    Raises (from the constructor): :class:`ApiKeyRefused` for an API key, :class:`PlatformAuthError`
    when nobody is logged in.
    """

    def __init__(self, cfg: PlatformConfig, *, clock: Callable[[], float] = time.time) -> None:
        require_user_token(cfg)
        self.cfg = cfg
        self.path = auth_path(cfg)
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: StoredTokens | None = None
        self._stamp: int | None = None
        self._load()

    def access_token(self) -> str:
        """The current access token, refreshed first when it is about to expire."""
        with self._lock:
            tokens = self._load()
            if tokens.expiring(self.clock()) and tokens.refresh_token:
                return self._refresh_locked(tokens.access_token)
            return tokens.access_token

    def refresh(self, rejected: str) -> str:
        """A fresh access token after the platform rejected ``rejected`` (once per rejection)."""
        with self._lock:
            return self._refresh_locked(rejected)

    def _load(self) -> StoredTokens:
        try:
            stamp = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            raise PlatformAuthError(f"not logged in to {self.cfg.url}: run `omx auth login`") from None
        if self._cached is None or stamp != self._stamp:
            tokens = read_tokens(self.path)
            if tokens is None:
                raise PlatformAuthError(f"not logged in to {self.cfg.url}: run `omx auth login`")
            if tokens.access_token.startswith(self.cfg.api_key_prefix):
                raise ApiKeyRefused(api_key_message(f"the token stored in {self.path}"))
            self._cached, self._stamp = tokens, stamp
        return self._cached

    def _refresh_locked(self, rejected: str) -> str:
        from filelock import FileLock

        with FileLock(str(self.path) + ".lock", timeout=60):
            self._cached = None
            current = self._load()
            if current.access_token != rejected and not current.expiring(self.clock()):
                return current.access_token  # another process refreshed while we waited
            if not current.refresh_token:
                raise PlatformAuthError("the login expired and cannot be refreshed: run `omx auth login`")
            with oauth_client(self.cfg) as client:
                status, body = client.token({"grant_type": "refresh_token", "refresh_token": current.refresh_token,
                                             "client_id": self.cfg.client_id})
            if status != 200:
                code, _ = oauth_error(status, body)
                raise PlatformAuthError(f"the login could not be refreshed ({code}): run `omx auth login`",
                                        platform_code=code)
            fresh = _stored(TokenGrant.model_validate(body), self.cfg, self.clock(), current)
            write_tokens(self.path, fresh)
            self._cached, self._stamp = fresh, os.stat(self.path).st_mtime_ns
            return fresh.access_token


def device_login(cfg: PlatformConfig, *, show: Callable[[DeviceCode], None],
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> StoredTokens:
    """Run the device flow to the end and store the tokens; return them (for the caller to describe).

    Raises:
        PlatformAuthError: the user denied access, the code expired, or the platform refused.
        ApiKeyRefused: an API key is configured (log in with OAuth instead), or the platform issued one.
    """
    require_user_token(cfg)
    with oauth_client(cfg) as client:
        code = client.device_authorization(cfg.client_id, cfg.scope)
        show(code)
        interval = max(0.0, code.interval)
        deadline = clock() + code.expires_in
        while True:
            sleep(interval)
            if clock() > deadline:
                raise PlatformAuthError("the code expired before it was approved: run `omx auth login` again")
            status, body = client.token({"grant_type": DEVICE_GRANT, "device_code": code.device_code,
                                         "client_id": cfg.client_id})
            if status == 200:
                break
            error, desc = oauth_error(status, body)
            if error == "authorization_pending":
                continue
            if error == "slow_down":  # RFC 8628 §3.5: add 5 seconds to the interval from now on
                interval += 5.0
                continue
            if error == "expired_token":
                raise PlatformAuthError("the code expired before it was approved: run `omx auth login` again")
            if error == "access_denied":
                raise PlatformAuthError("the login was denied on the platform")
            raise PlatformAuthError(f"the login failed: {error}{': ' + desc if desc else ''}", platform_code=error)
    tokens = _stored(TokenGrant.model_validate(body), cfg, clock(), None)
    if tokens.access_token.startswith(cfg.api_key_prefix):
        raise ApiKeyRefused(api_key_message("the token the platform issued"))
    path = auth_path(cfg)
    write_tokens(path, tokens)
    try:
        with worker_client(cfg) as api:
            me = api.me()
        tokens.user = {"id": me.id, "name": me.name, "email": me.email, "workspace": me.workspace.name}
        write_tokens(path, tokens)
    except PlatformError:
        pass  # logged in all the same; `omx auth status` will say who when the platform answers
    return tokens


def logout(cfg: PlatformConfig) -> tuple[bool, bool]:
    """Forget the stored tokens (revoking them on the platform when it answers): (was logged in, revoked)."""
    path = auth_path(cfg)
    try:
        tokens = read_tokens(path)
    except PlatformAuthError:
        tokens = None  # an unusable file is removed all the same
    revoked = False
    if tokens is not None and cfg.url:
        with oauth_client(cfg) as client:
            if tokens.refresh_token:
                revoked = client.revoke(tokens.refresh_token, "refresh_token")
            revoked = client.revoke(tokens.access_token, "access_token") or revoked
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed, revoked


def auth_status(cfg: PlatformConfig, *, verify: bool = True) -> dict[str, Any]:
    """Who is logged in and until when — never the token itself."""
    path = auth_path(cfg)
    out: dict[str, Any] = {"platform": cfg.url, "file": str(path), "logged_in": False,
                           "api_key_configured": cfg.sources.get("api_key") if cfg.api_key else None}
    tokens = read_tokens(path)
    if tokens is None:
        return out
    now = time.time()
    out.update(logged_in=True, mode=f"{os.stat(path).st_mode & 0o777:04o}", token_type=tokens.token_type,
               expires_at=tokens.expires_at, expires_in_s=None if tokens.expires_at is None
               else round(tokens.expires_at - now), refreshable=bool(tokens.refresh_token), user=tokens.user)
    if verify and not cfg.api_key:
        try:
            with worker_client(cfg, retry=QUICK) as api:
                me = api.me()
            current = read_tokens(path)  # it may have been refreshed on the way
            if current is not None and current.expires_at is not None:
                out.update(expires_at=current.expires_at, expires_in_s=round(current.expires_at - time.time()))
            out["user"] = {"id": me.id, "name": me.name, "email": me.email, "workspace": me.workspace.name}
            out["verified"] = True
        except PlatformError as exc:
            out["verified"] = False
            out["error"] = {"code": exc.code, "message": exc.message}
    return out


def _stored(grant: TokenGrant, cfg: PlatformConfig, now: float, previous: StoredTokens | None) -> StoredTokens:
    return StoredTokens(
        access_token=grant.access_token,
        refresh_token=grant.refresh_token or (previous.refresh_token if previous else None),
        expires_at=now + grant.expires_in if grant.expires_in else None,
        token_type=grant.token_type,
        obtained_at=now,
        platform_url=cfg.url or "",
        user=previous.user if previous else None,
    )
