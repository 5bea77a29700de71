"""Local settings of the platform worker: where the platform is, and each registered worker's settings.

Everything lives under ``$OMX_HOME`` (default ``~/.omx``)::

    config/platform.toml          the platform: url, OAuth client id and endpoints (no secrets)
    config/workers/<id>.toml      one file per worker: name, repo, isolation, workflow, ...
    auth/<platform>.json          the OAuth tokens (mode 0600; see omx.platform.auth)
    run/worker-<id>.pid|.json     a running worker's pid and state; logs/worker-<id>.log its log

Precedence, in one place (STYLE.md habit 12): an argument, then an ``OMX_PLATFORM_*`` environment
variable, then ``config/platform.toml``, then the default.

Example:
    >>> cfg = load_platform_config(url="http://127.0.0.1:8080")  # doctest: +SKIP
    >>> cfg.require_url()  # doctest: +SKIP
    'http://127.0.0.1:8080'
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from omx.engine.slots import omx_home
from omx.platform.client import RetryPolicy
from omx.platform.errors import PlatformConfigError, PlatformNotFound
from omx.platform.models import PlatformId, check_id
from omx.platform.tomlwrite import dumps
from omx.state.atomic import write_bytes

#: Environment variables read by :func:`load_platform_config` (none of them reaches the agent:
#: the agent's environment drops every ``OMX_*`` name).
ENV = {
    "url": "OMX_PLATFORM_URL",
    "name": "OMX_PLATFORM_NAME",
    "client_id": "OMX_PLATFORM_CLIENT_ID",
    "device_authorization_url": "OMX_PLATFORM_DEVICE_URL",
    "token_url": "OMX_PLATFORM_TOKEN_URL",
    "revoke_url": "OMX_PLATFORM_REVOKE_URL",
    "api_key": "OMX_PLATFORM_API_KEY",
    "timeout_s": "OMX_PLATFORM_TIMEOUT_S",
    "retry_attempts": "OMX_PLATFORM_RETRY_ATTEMPTS",
    "retry_max_s": "OMX_PLATFORM_RETRY_MAX_S",
}
DEFAULT_API_KEY_PREFIX = "omxk_"


def home() -> Path:
    """``$OMX_HOME``, else ``~/.omx``."""
    return omx_home()


def platform_config_path() -> Path:
    """``$OMX_HOME/config/platform.toml``."""
    return home() / "config" / "platform.toml"


def workers_dir() -> Path:
    """``$OMX_HOME/config/workers``: one settings file per worker."""
    return home() / "config" / "workers"


def run_dir() -> Path:
    """``$OMX_HOME/run``: pidfiles, state files, undelivered results."""
    return home() / "run"


def logs_dir() -> Path:
    """``$OMX_HOME/logs``: background workers' logs."""
    return home() / "logs"


@dataclass
class PlatformConfig:
    """Where the platform is and how to log in to it (see the module docstring for precedence).

    Attributes:
        api_key: an API key found in the settings or environment. Never sent for worker
            operations: its presence makes them fail with :class:`~omx.platform.errors.ApiKeyRefused`.
        sources: for each setting, where it came from (``argument``, the variable, the file).
    """

    name: str = "default"
    url: str | None = None
    client_id: str = "omx-cli"
    scope: str = "worker"
    device_authorization_url: str | None = None
    token_url: str | None = None
    revoke_url: str | None = None
    api_key: str | None = None
    api_key_prefix: str = DEFAULT_API_KEY_PREFIX
    timeout_s: float = 15.0
    retry_attempts: int = 6
    retry_max_s: float = 8.0
    sources: dict[str, str] = field(default_factory=dict)

    def retry_policy(self) -> RetryPolicy:
        """How patient the worker is with a failing platform (``retry_attempts``, ``retry_max_s``)."""
        return RetryPolicy(attempts=max(1, self.retry_attempts), base_s=min(0.5, self.retry_max_s),
                           cap_s=self.retry_max_s)

    def require_url(self) -> str:
        """The platform's base URL, or :class:`PlatformConfigError` saying how to set it."""
        if not self.url:
            raise PlatformConfigError(
                f"no platform URL is configured: run `omx auth login --url <url>` (it is saved in "
                f"{platform_config_path()}), or set {ENV['url']}")
        return self.url.rstrip("/")


def load_platform_config(*, url: str | None = None, name: str | None = None) -> PlatformConfig:
    """Resolve the platform settings: argument, then environment, then ``config/platform.toml``."""
    path = platform_config_path()
    data: dict[str, Any] = _read_toml(path) if path.exists() else {}
    cfg = PlatformConfig()
    args = {"url": url, "name": name}
    for attr in ("name", "url", "client_id", "scope", "device_authorization_url", "token_url", "revoke_url",
                 "api_key", "api_key_prefix", "timeout_s", "retry_attempts", "retry_max_s"):
        env_name = ENV.get(attr)
        raw: Any
        if args.get(attr):
            raw, src = args[attr], "argument"
        elif env_name and os.environ.get(env_name):
            raw, src = os.environ[env_name], env_name
        elif data.get(attr) not in (None, ""):
            raw, src = data[attr], f"{path} ({attr})"
        else:
            continue
        kind = type(getattr(cfg, attr)) if getattr(cfg, attr) is not None else str
        try:
            setattr(cfg, attr, kind(raw) if kind in (int, float) else str(raw))
        except ValueError:
            raise PlatformConfigError(f"{src}: {attr} must be a number, got {raw!r}") from None
        cfg.sources[attr] = src
    if not cfg.name or "/" in cfg.name or cfg.name.startswith("."):
        raise PlatformConfigError(f"platform name {cfg.name!r} is not usable as a file name")
    return cfg


def save_platform_config(updates: dict[str, Any]) -> Path:
    """Merge ``updates`` into ``config/platform.toml`` (``None`` removes a key); return its path."""
    path = platform_config_path()
    data = _read_toml(path) if path.exists() else {}
    for k, v in updates.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, dumps(data, comment="omx platform settings (written by `omx auth login`)").encode())
    os.chmod(path, 0o600)
    return path


# --- worker settings --------------------------------------------------------------------------


class WorkerSettings(BaseModel):
    """One local worker: ``$OMX_HOME/config/workers/<id>.toml``.

    ``isolation``, ``worktree_root`` and ``max_concurrent_runs`` override WORKFLOW.md's
    ``worktree.mode``, ``worktree.root`` and ``agent.maxConcurrentAgents``; everything else
    (polling, runtime, hooks, the prompt) comes from the workflow file.
    """

    model_config = ConfigDict(extra="forbid")

    id: PlatformId
    name: str = Field(min_length=1, max_length=100)
    repo: str
    isolation: Literal["task", "branch"] = "task"
    workflow: str | None = None
    max_concurrent_runs: int = Field(1, ge=1, le=64)
    worktree_root: str = "~/.omx/worktrees"
    auto_start: bool = False
    instructions: str = ""
    agent_id: str = ""
    workspace_id: str = ""
    platform_url: str = ""
    created_at: str = ""

    @property
    def path(self) -> Path:
        """Where these settings are saved."""
        return settings_path(self.id)


def settings_path(worker_id: str) -> Path:
    """``config/workers/<id>.toml``; :class:`PlatformConfigError` for an id that is not one."""
    try:
        check_id(worker_id, "worker id")
    except ValueError as exc:
        raise PlatformConfigError(str(exc)) from None
    return workers_dir() / f"{worker_id}.toml"


def save_worker_settings(settings: WorkerSettings) -> Path:
    """Write the settings file atomically (readable by the user only)."""
    path = settings.path
    path.parent.mkdir(parents=True, exist_ok=True)
    data = settings.model_dump(mode="json")
    if not data.get("workflow"):
        data.pop("workflow", None)
    comment = (f"omx platform worker {settings.name!r} — edit with `omx worker configure {settings.id}`\n"
               "isolation = task (a git worktree per session) | branch (a branch per session in the repo)")
    write_bytes(path, dumps(data, comment=comment).encode())
    os.chmod(path, 0o600)
    return path


def load_worker_settings(worker_id: str) -> WorkerSettings:
    """Read one worker's settings; :class:`PlatformNotFound` when there is no such file."""
    path = settings_path(worker_id)
    if not path.exists():
        raise PlatformNotFound(f"no local settings for worker {worker_id} ({path}); "
                               f"run `omx worker configure {worker_id} --repo <folder>`")
    return _parse_settings(path)


def _parse_settings(path: Path) -> WorkerSettings:
    data = _read_toml(path)
    try:
        settings = WorkerSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise PlatformConfigError(f"{path}: {problems}", path=str(path)) from None
    if settings.id != path.stem:
        raise PlatformConfigError(f"{path}: id {settings.id!r} does not match the file name", path=str(path))
    return settings


def list_worker_settings() -> tuple[list[WorkerSettings], list[tuple[Path, str]]]:
    """Every readable worker settings file, and (path, problem) for each unreadable one."""
    good: list[WorkerSettings] = []
    bad: list[tuple[Path, str]] = []
    directory = workers_dir()
    for path in sorted(directory.glob("*.toml")) if directory.is_dir() else []:
        try:
            good.append(_parse_settings(path))
        except PlatformConfigError as exc:
            bad.append((path, exc.message))
    return good, bad


def pick_worker(worker_id: str | None) -> WorkerSettings:
    """``--worker``'s settings, or the only configured worker's; a clear error when it is ambiguous."""
    if worker_id:
        return load_worker_settings(worker_id)
    good, _ = list_worker_settings()
    if len(good) == 1:
        return good[0]
    if not good:
        raise PlatformConfigError("no platform worker is configured here: run `omx worker create --name <name> "
                                  "--repo <folder>` (or `omx worker configure <id>` for an existing one)")
    listing = ", ".join(f"{s.id} ({s.name})" for s in good)
    raise PlatformConfigError(f"several workers are configured ({listing}): pass --worker <id>")


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise PlatformConfigError(f"{path}: not valid TOML: {exc}", path=str(path)) from None
    except OSError as exc:
        raise PlatformConfigError(f"{path}: cannot read: {exc}", path=str(path)) from None
