"""Resolved worker settings: the typed form of WORKFLOW.md's front matter.

Keys are camelCase on disk (aliases); attributes are snake_case in code, and both spellings are
accepted. OpenAI Symphony's keys are mapped onto ours by :func:`resolve_settings` (see
:data:`SYMPHONY_KEYS`), so a Symphony WORKFLOW.md works; what omx cannot use becomes a warning, never
an error. Defaults are the ones in ARCHITECTURE.md.

Example:
    >>> s, warnings, problems = resolve_settings({"polling": {"interval_ms": 5000}, "tracker": {}}, str)
    >>> s.polling.poll_interval_ms if s else None, len(warnings), problems
    (5000, 1, [])
"""

from __future__ import annotations

import functools
import re
import shlex
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

ApprovalPolicy = Literal["untrusted", "on-request", "never"]  # what codex 0.169 app-server accepts
Sandbox = Literal["read-only", "workspace-write", "danger-full-access"]


class _Section(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", defer_build=True)


class AgentSettings(_Section):
    max_concurrent_agents: int = Field(1, alias="maxConcurrentAgents", ge=1, le=64)
    max_retry_attempts: int = Field(0, alias="maxRetryAttempts", ge=0, le=100)
    max_retry_backoff_ms: int = Field(300_000, alias="maxRetryBackoffMs", ge=0)
    retry_base_ms: int = Field(1_000, alias="retryBaseMs", ge=0)


class PollingSettings(_Section):
    poll_interval_ms: int = Field(30_000, alias="pollIntervalMs", ge=10)


class WorktreeSettings(_Section):
    mode: Literal["task", "branch", "repository"] = "task"
    root: str = "~/.omx/worktrees"
    base_ref: str | None = Field(None, alias="baseRef")


class RuntimeSettings(_Section):
    kind: Literal["codex-app-server", "codex-exec", "command"] = "codex-app-server"
    command: list[str] | None = None
    approval_policy: ApprovalPolicy | dict[str, Any] = Field("never", alias="approvalPolicy")
    sandbox: Sandbox = "workspace-write"
    model: str | None = None
    turn_timeout_ms: int = Field(3_600_000, alias="turnTimeoutMs", ge=1)
    stall_timeout_ms: int = Field(300_000, alias="stallTimeoutMs", ge=0)  # 0 disables
    read_timeout_ms: int = Field(10_000, alias="readTimeoutMs", ge=1)


class HookSettings(_Section):
    after_create: str | None = Field(None, alias="afterCreate")
    before_run: str | None = Field(None, alias="beforeRun")
    after_run: str | None = Field(None, alias="afterRun")
    before_remove: str | None = Field(None, alias="beforeRemove")
    timeout_ms: int = Field(60_000, alias="timeoutMs", ge=1)


class Settings(_Section):
    """Everything WORKFLOW.md's front matter can set."""

    agent: AgentSettings = Field(default_factory=AgentSettings)
    polling: PollingSettings = Field(default_factory=PollingSettings)
    worktree: WorktreeSettings = Field(default_factory=WorktreeSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    hooks: HookSettings = Field(default_factory=HookSettings)


# --- front matter -> Settings ----------------------------------------------------------------------

_SECTIONS: dict[str, type[BaseModel]] = {
    "agent": AgentSettings,
    "polling": PollingSettings,
    "worktree": WorktreeSettings,
    "runtime": RuntimeSettings,
    "hooks": HookSettings,
}
#: Symphony key -> our key (camelCase), or ``None`` when omx has no such setting (a warning).
#: Symphony keys that are also our snake_case attribute names (``agent.max_concurrent_agents``,
#: ``hooks.after_create``, ...) need no entry.
SYMPHONY_KEYS: dict[str, str | None] = {
    "polling.interval_ms": "polling.pollIntervalMs",
    "workspace.root": "worktree.root",
    "codex.command": "runtime.command",
    "codex.approval_policy": "runtime.approvalPolicy",
    "codex.thread_sandbox": "runtime.sandbox",
    "codex.model": "runtime.model",
    "codex.turn_timeout_ms": "runtime.turnTimeoutMs",
    "codex.read_timeout_ms": "runtime.readTimeoutMs",
    "codex.stall_timeout_ms": "runtime.stallTimeoutMs",
    "agent.max_turns": None,
    "agent.max_concurrent_agents_by_state": None,
}
_SYMPHONY_SECTIONS = frozenset({"workspace", "codex"})
_IGNORED_SECTIONS = {
    "tracker": "omx takes work from its team's task files or the remote platform, not from a tracker",
    "worker": "omx workers are configured with `omx worker`",
    "observability": "omx has no dashboard settings",
    "server": "omx has no HTTP server settings",
}
_SHELL_SYNTAX = re.compile(r"[$`|;&<>]")

#: Turns a dotted key as written (``"codex.command"``) into a location prefix (``"WORKFLOW.md:27"``).
Where = Callable[[str], str]


def resolve_settings(data: dict[Any, Any], where: Where) -> tuple[Settings | None, list[str], list[str]]:
    """Resolve a parsed front matter map into :class:`Settings`.

    Returns ``(settings, warnings, problems)``: ``settings`` is ``None`` exactly when there are
    problems (values of the wrong type or shape), each a line naming its key as written.
    """
    warnings: list[str] = []
    problems: list[str] = []
    normalized, sources = _normalize(data, warnings, problems, where)
    if problems:
        return None, warnings, problems
    try:
        return Settings.model_validate(normalized), warnings, problems
    except ValidationError as exc:
        msgs: dict[str, list[str]] = {}
        got: dict[str, Any] = {}
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"][:2])
            src = sources.get(key, key)
            msgs.setdefault(src, []).append(err["msg"])
            got.setdefault(src, err.get("input"))
        for src, found in msgs.items():
            problems.append(f"{where(src)}: {src}: {' or '.join(dict.fromkeys(found))} (got {got[src]!r})")
        return None, warnings, problems


def kind_of(value: object) -> str:
    """``"a list"``, ``"a string"``, ...: how messages name a value's type."""
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), type(value).__name__)


def _normalize(
    data: dict[Any, Any], warnings: list[str], problems: list[str], where: Where
) -> tuple[dict[str, Any], dict[str, str]]:
    """Map every key onto ``section.camelCase``; return the map and {our key: the key as written}."""
    out: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    sources: dict[str, str] = {}
    symphony: list[tuple[str, Any]] = []  # applied after ours, which win on conflict
    for raw_section, body in data.items():
        section = str(raw_section)
        if section in _IGNORED_SECTIONS:
            warnings.append(f"{where(section)}: {section!r} section ignored: {_IGNORED_SECTIONS[section]}")
        elif section not in _SECTIONS and section not in _SYMPHONY_SECTIONS:
            warnings.append(f"{where(section)}: unknown key {section!r} ignored")
        elif body is not None and not isinstance(body, dict):
            problems.append(f"{where(section)}: {section}: expected a map of settings, got {kind_of(body)}")
        else:
            for raw_key, value in (body or {}).items():
                dotted = f"{section}.{raw_key}"
                alias = _aliases(section).get(str(raw_key))
                if alias is not None:
                    _put(out, sources, f"{section}.{alias}", dotted, value, warnings, where)
                elif dotted in SYMPHONY_KEYS:
                    symphony.append((dotted, value))
                elif section in _SYMPHONY_SECTIONS:
                    warnings.append(f"{where(dotted)}: Symphony setting {dotted!r} is not supported by omx; ignored")
                else:
                    warnings.append(f"{where(dotted)}: unknown key {dotted!r} ignored")
    for dotted, value in symphony:
        target = SYMPHONY_KEYS[dotted]
        if target is None:
            warnings.append(f"{where(dotted)}: Symphony setting {dotted!r} is not supported by omx; ignored")
            continue
        if dotted == "codex.command" and isinstance(value, str) and _SHELL_SYNTAX.search(value):
            warnings.append(
                f"{where(dotted)}: {dotted} uses shell syntax; omx runs commands without a shell, "
                "so it is split into words and passed literally"
            )
        _put(out, sources, target, dotted, value, warnings, where)
    if "command" in out["runtime"]:
        key = sources["runtime.command"]
        argv, problem = _split_command(out["runtime"]["command"])
        out["runtime"]["command"] = argv
        if problem:
            problems.append(f"{where(key)}: {key}: {problem}")
    return dict(out), sources


def _put(
    out: dict[str, dict[str, Any]],
    sources: dict[str, str],
    target: str,
    source: str,
    value: Any,
    warnings: list[str],
    where: Where,
) -> None:
    if value is None:  # an empty YAML value means "the default", as in Symphony
        return
    if target in sources:
        warnings.append(f"{where(source)}: {source!r} ignored: {sources[target]!r} sets the same setting")
        return
    section, _, key = target.partition(".")
    out[section][key] = value
    sources[target] = source


@functools.cache
def _aliases(section: str) -> dict[str, str]:
    """Every accepted spelling of a section's keys (camelCase alias and snake_case name) -> alias."""
    out: dict[str, str] = {}
    for name, info in _SECTIONS[section].model_fields.items() if section in _SECTIONS else ():
        alias = info.alias or name
        out[name] = out[alias] = alias
    return out


def _split_command(value: Any) -> tuple[list[str] | None, str | None]:
    """A command: a list of strings, or a string split into words like a shell (no expansion)."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value, None
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            return None, f"cannot split {value!r} into words: {exc}"
        if argv:
            return argv, None
    return None, f"expected a command string or a list of strings, got {value!r}"
