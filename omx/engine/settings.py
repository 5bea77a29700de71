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

import copy
import functools
import re
import shlex
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Self

ApprovalPolicy = Literal["untrusted", "on-request", "never"]  # what codex 0.169 app-server accepts
Sandbox = Literal["read-only", "workspace-write", "danger-full-access"]


# --- the section classes ---------------------------------------------------------------------------
#
# Not pydantic models: building six models' validators cost a worker ~150 ms at every start (import
# and first use), more than the rest of its start-up. Values of the exact type that pass the field's
# bounds are taken by hand (every real WORKFLOW.md); anything else — a number written as a string, a
# wrong type, an unknown key — goes to pydantic models generated from the same declarations, so the
# coercions and error messages (``pydantic.ValidationError``) are exactly pydantic's.
# tests/engine/test_settings_fast.py holds the two paths in agreement.


class _Field:
    """A setting's declaration: default (or factory), on-disk alias, and integer bounds."""

    def __init__(self, default: Any = None, *, alias: str | None = None, ge: int | None = None,
                 le: int | None = None, factory: Callable[[], Any] | None = None) -> None:
        self.default = default
        self.factory = factory
        self.alias = alias
        self.ge = ge
        self.le = le
        self.name = ""
        self.check: Callable[[Any], bool] = lambda value: False

    def make_default(self) -> Any:
        return self.factory() if self.factory is not None else copy.copy(self.default)


def _field(default: Any = None, *, alias: str | None = None, ge: int | None = None, le: int | None = None,
           factory: Callable[[], Any] | None = None) -> Any:
    return _Field(default, alias=alias, ge=ge, le=le, factory=factory)


def _checker(hint: Any, f: _Field) -> Callable[[Any], bool]:
    """Accept ``value`` as is (exact type, within bounds)? Anything doubtful is left to pydantic."""
    origin = typing.get_origin(hint)
    if hint is int:
        lo, hi = f.ge, f.le
        return lambda v: type(v) is int and (lo is None or v >= lo) and (hi is None or v <= hi)
    if hint is str:
        return lambda v: type(v) is str
    if hint is bool:
        return lambda v: type(v) is bool
    if origin is Literal:
        choices = frozenset(typing.get_args(hint))
        return lambda v: type(v) is str and v in choices
    if origin is list and typing.get_args(hint) == (str,):
        return lambda v: type(v) is list and all(type(x) is str for x in v)
    if origin is dict and typing.get_args(hint)[0] is str:
        return lambda v: type(v) is dict and all(type(k) is str for k in v)
    if origin in (typing.Union, types.UnionType):
        parts = [(_checker(a, f) if a is not type(None) else (lambda v: v is None)) for a in typing.get_args(hint)]
        return lambda v: any(p(v) for p in parts)
    if isinstance(hint, type) and issubclass(hint, _Section):
        return lambda v: isinstance(v, hint)
    return lambda v: False


class _Section:
    """Settings of one WORKFLOW.md section: keyword construction by name or alias, validated."""

    model_fields: ClassVar[dict[str, _Field]] = {}
    _by_key: ClassVar[dict[str, _Field]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hints = typing.get_type_hints(cls)
        fields: dict[str, _Field] = {}
        for name, value in list(vars(cls).items()):
            if isinstance(value, _Field):
                value.name = name
                value.check = _checker(hints[name], value)
                fields[name] = value
                delattr(cls, name)  # instances always carry the value
        cls.model_fields = fields
        cls._by_key = {**{f.alias: f for f in fields.values() if f.alias}, **fields}

    def __init__(self, **data: Any) -> None:
        values = self._fast(data)
        if values is None:
            values = _slow(type(self), data)
        self.__dict__.update(values)

    @classmethod
    def _fast(cls, data: Mapping[str, Any]) -> dict[str, Any] | None:
        """The field values when every key is known and every value is taken as is; else ``None``."""
        values: dict[str, Any] = {}
        for key, value in data.items():
            f = cls._by_key.get(key) if isinstance(key, str) else None
            if f is None or f.name in values:
                return None
            if not f.check(value):
                sub = _section_of(f)
                if sub is None or type(value) is not dict or (nested := sub._fast(value)) is None:
                    return None
                value = sub._build(nested)
            elif type(value) is list:
                value = list(value)
            elif type(value) is dict:
                value = dict(value)
            values[f.name] = value
        for name, f in cls.model_fields.items():
            if name not in values:
                values[name] = f.make_default()
        return values

    @classmethod
    def _build(cls, values: dict[str, Any]) -> Self:
        obj = cls.__new__(cls)
        obj.__dict__.update(values)
        return obj

    @classmethod
    def model_validate(cls, data: Any) -> Self:
        """Like pydantic's: an instance is returned as is, a mapping is validated (by name or alias).

        Raises:
            pydantic.ValidationError: ``data`` is not valid (pydantic's own message).
        """
        if isinstance(data, cls):
            return data
        values = cls._fast(data) if isinstance(data, Mapping) else None
        return cls._build(values if values is not None else _slow(cls, data))

    def model_dump(self, *, by_alias: bool = False, mode: str = "python") -> dict[str, Any]:
        """The settings as a dict (nested sections too), keyed by name or, with ``by_alias``, alias."""
        out: dict[str, Any] = {}
        for name, f in self.model_fields.items():
            value = getattr(self, name)
            if isinstance(value, _Section):
                value = value.model_dump(by_alias=by_alias, mode=mode)
            else:
                value = copy.deepcopy(value)
            out[(f.alias or name) if by_alias else name] = value
        return out

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Self:
        """A shallow copy with ``update`` (by name) applied, unvalidated, as pydantic does."""
        obj = copy.copy(self)
        obj.__dict__.update(update or {})
        return obj

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.model_fields)

    __hash__ = None  # type: ignore[assignment]  # mutable, like a pydantic model

    def __repr_args(self) -> str:
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in self.model_fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__repr_args()})"

    def __str__(self) -> str:
        return " ".join(f"{n}={getattr(self, n)!r}" for n in self.model_fields)


def _section_of(f: _Field) -> type[_Section] | None:
    factory = f.factory
    return factory if isinstance(factory, type) and issubclass(factory, _Section) else None


def _slow(cls: type[_Section], data: Any) -> dict[str, Any]:
    """Validate ``data`` with pydantic (the generated twin of ``cls``); the field values."""
    def plain(value: Any) -> Any:  # our instances, as pydantic's twin takes them
        return value.model_dump() if isinstance(value, _Section) else value

    if isinstance(data, Mapping):
        data = {k: plain(v) for k, v in data.items()}
    return _from_twin(cls, _pydantic_twin(cls).model_validate(data))


def _from_twin(cls: type[_Section], validated: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, f in cls.model_fields.items():
        value = getattr(validated, name)
        sub = _section_of(f)
        if sub is not None:
            value = sub._build(_from_twin(sub, value))
        values[name] = value
    return values


_TWINS: dict[str, Any] = {}


def _pydantic_twin(cls: type[_Section]) -> Any:
    """A pydantic model with ``cls``'s fields, aliases, bounds and defaults (built on first need)."""
    if cls.__name__ in _TWINS:
        return _TWINS[cls.__name__]
    from typing import Annotated

    from pydantic import ConfigDict, Field, create_model

    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for name, f in cls.model_fields.items():
        sub = _section_of(f)
        if sub is not None:
            twin = _pydantic_twin(sub)
            fields[name] = (twin, Field(default_factory=twin, alias=f.alias))
            continue
        fields[name] = (Annotated[hints[name], Field(alias=f.alias, ge=f.ge, le=f.le)], f.default)
    config = ConfigDict(populate_by_name=True, extra="forbid")
    _TWINS[cls.__name__] = twin = create_model(cls.__name__, __config__=config, **fields)
    return twin


class AgentSettings(_Section):
    max_concurrent_agents: int = _field(1, alias="maxConcurrentAgents", ge=1, le=64)
    max_retry_attempts: int = _field(0, alias="maxRetryAttempts", ge=0, le=100)
    max_retry_backoff_ms: int = _field(300_000, alias="maxRetryBackoffMs", ge=0)
    retry_base_ms: int = _field(1_000, alias="retryBaseMs", ge=0)


class PollingSettings(_Section):
    poll_interval_ms: int = _field(30_000, alias="pollIntervalMs", ge=10)


class WorktreeSettings(_Section):
    mode: Literal["task", "branch", "repository"] = _field("task")
    root: str = _field("~/.omx/worktrees")
    base_ref: str | None = _field(None, alias="baseRef")


class RuntimeSettings(_Section):
    kind: Literal["codex-app-server", "codex-exec", "command"] = _field("codex-app-server")
    command: list[str] | None = _field(None)
    approval_policy: ApprovalPolicy | dict[str, Any] = _field("never", alias="approvalPolicy")
    sandbox: Sandbox = _field("workspace-write")
    model: str | None = _field(None)
    turn_timeout_ms: int = _field(3_600_000, alias="turnTimeoutMs", ge=1)
    stall_timeout_ms: int = _field(300_000, alias="stallTimeoutMs", ge=0)  # 0 disables
    read_timeout_ms: int = _field(10_000, alias="readTimeoutMs", ge=1)
    pass_env: list[str] = _field([], alias="passEnv")  # credential-like names the agent gets all the same


class HookSettings(_Section):
    after_create: str | None = _field(None, alias="afterCreate")
    before_run: str | None = _field(None, alias="beforeRun")
    after_run: str | None = _field(None, alias="afterRun")
    before_remove: str | None = _field(None, alias="beforeRemove")
    timeout_ms: int = _field(60_000, alias="timeoutMs", ge=1)
    pass_env: list[str] = _field([], alias="passEnv")  # credential-like names the hooks get all the same


class IntegrationSettings(_Section):
    """How a team's finished tasks come together on one branch (see :mod:`omx.engine.integration`)."""

    enabled: bool = _field(True)
    branch: str | None = _field(None)  # default: omx/<team>/integration
    verify: str | None = _field(None)  # a shell command (trusted: WORKFLOW.md), run on the merged tree
    verify_timeout_ms: int | None = _field(None, alias="verifyTimeoutMs", ge=1)  # default: hooks.timeoutMs
    max_attempts: int = _field(2, alias="maxAttempts", ge=1, le=100)


class Settings(_Section):
    """Everything WORKFLOW.md's front matter can set."""

    agent: AgentSettings = _field(factory=AgentSettings)
    polling: PollingSettings = _field(factory=PollingSettings)
    worktree: WorktreeSettings = _field(factory=WorktreeSettings)
    runtime: RuntimeSettings = _field(factory=RuntimeSettings)
    hooks: HookSettings = _field(factory=HookSettings)
    integration: IntegrationSettings = _field(factory=IntegrationSettings)


# --- front matter -> Settings ----------------------------------------------------------------------

_SECTIONS: dict[str, type[_Section]] = {
    "agent": AgentSettings,
    "polling": PollingSettings,
    "worktree": WorktreeSettings,
    "runtime": RuntimeSettings,
    "hooks": HookSettings,
    "integration": IntegrationSettings,
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
    except ValueError as exc:  # pydantic's ValidationError, from the slow path
        if not hasattr(exc, "errors"):
            raise
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
    _normalize_pass_env(out, sources, warnings, problems, where)
    return dict(out), sources


def _normalize_pass_env(out: dict[str, dict[str, Any]], sources: dict[str, str], warnings: list[str],
                        problems: list[str], where: Where) -> None:
    for section in ("runtime", "hooks"):
        if "passEnv" in out[section]:
            key = sources[f"{section}.passEnv"]
            names, problem = _env_names(out[section]["passEnv"])
            out[section]["passEnv"] = names
            if problem:
                problems.append(f"{where(key)}: {key}: {problem}")
            elif any(n.upper().startswith("OMX_") for n in names or []):
                warnings.append(f"{where(key)}: {key}: omx's own OMX_* variables never reach an agent; ignored")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _env_names(value: Any) -> tuple[list[str] | None, str | None]:
    """``passEnv``: a list of variable names (a string of names split by spaces or commas is taken too)."""
    if isinstance(value, str):
        value = [v for v in re.split(r"[\s,]+", value) if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None, f"expected a list of variable names, got {value!r}"
    bad = [v for v in value if not _ENV_NAME.fullmatch(v)]
    if bad:
        return None, f"not a variable name: {', '.join(repr(v) for v in bad)}"
    return value, None


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
