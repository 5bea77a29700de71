"""The records omx keeps on disk, as stdlib dataclasses.

Names follow oh-my-codex so that its users' scripts keep working. Why dataclasses and not pydantic
models: ``omx team api`` is called many times a minute by agents, and importing pydantic's
``BaseModel`` and building one model's validator costs more than the whole call may
(bench/cli_latency.py). So the hot path validates records by hand here (:meth:`Record.from_dict`),
and pydantic validates the very same dataclasses where time does not matter — ``omx doctor``, the
JSON Schema export (:mod:`omx.schema`) — with a property test holding the two in agreement.

Unknown fields are kept (``extra``) and written back: a newer omx may add fields, and an older one
must not drop them on rewrite.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

TASK_STATUSES = ("pending", "blocked", "in_progress", "completed", "failed")
TERMINAL: frozenset[str] = frozenset({"completed", "failed"})
WORKER_STATES = ("idle", "working", "blocked", "done", "failed", "draining", "unknown")
SCHEMA_VERSION = "1.0"


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_CHECKS: dict[str, Any] = {
    "str": lambda v: isinstance(v, str),
    "int": _is_int,
    "bool": lambda v: isinstance(v, bool),
    "Any": lambda v: True,
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "dict[str, Any]": lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
}


_MISSING: Any = object()
_PLAIN, _NESTED, _LIST = 0, 1, 2


class Record:
    """Hand-written validation from the dataclass's own annotations (strict: no coercion)."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}
    MINIMUM: ClassVar[dict[str, int]] = {}
    NESTED: ClassVar[dict[str, type[Record]]] = {}
    NESTED_LISTS: ClassVar[dict[str, type[Record]]] = {}
    _spec: ClassVar[list[tuple[str, str, bool, bool]]]  # name, base type, optional, required
    # Per class, built once from _spec (task files are read and written several times per claim):
    # (name, base, optional, required, check, kind, exact, choices, minimum) — kind: plain value, nested
    # record, list of records, or -1 for a plain field with choices/a minimum; ``exact``: the one type a
    # str/int/bool field's value has when it comes from JSON, accepted without calling ``check``.
    _plan: ClassVar[list[tuple[str, str, bool, bool, Any, int, Any, Any, Any]]]
    _defaults: ClassVar[dict[str, Any]]  # fields' plain defaults, and the fields made by a default_factory
    _factories: ClassVar[tuple[tuple[str, Any], ...]]
    _plain_init: ClassVar[bool]  # no __post_init__: from_dict may fill __dict__ itself
    _known: ClassVar[frozenset[str]]
    _names: ClassVar[tuple[str, ...]]
    _convert: ClassVar[tuple[str, ...]]  # fields to_dict must look into (records, lists of them, Any)
    _deep: ClassVar[tuple[str, ...]]  # fields that may hold a container (json_copy copies them), and extra

    @classmethod
    def _fields(cls) -> list[tuple[str, str, bool, bool]]:
        spec = cls.__dict__.get("_spec")
        if spec is None:
            spec = []
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                if f.name == "extra":
                    continue
                t = str(f.type)
                optional = t.endswith(" | None")
                base = t.removesuffix(" | None")
                required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                spec.append((f.name, base, optional, required))
            cls._spec = spec
        return spec

    @classmethod
    def _compiled(cls) -> list[tuple[str, str, bool, bool, Any, int, Any, Any, Any]]:
        plan = cls.__dict__.get("_plan")
        if plan is None:
            plan = []
            convert = []
            for name, base, optional, required in cls._fields():
                if name in cls.NESTED:
                    kind = _NESTED
                elif base in cls.NESTED_LISTS:
                    kind = _LIST
                elif name in cls.CHOICES or name in cls.MINIMUM:
                    kind = -1
                else:
                    kind = _PLAIN
                if kind in (_NESTED, _LIST) or base == "Any":
                    convert.append(name)
                # "Any" accepts None whatever the annotation says (as _value always did)
                exact = {"str": str, "int": int, "bool": bool}.get(base)
                choices = frozenset(cls.CHOICES[name]) if name in cls.CHOICES else None
                plan.append((name, base, optional or base == "Any", required, _CHECKS.get(base), kind, exact,
                             choices, cls.MINIMUM.get(name)))
            defaults: dict[str, Any] = {}
            factories = []
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                if f.default is not dataclasses.MISSING:
                    defaults[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    factories.append((f.name, f.default_factory))
            cls._defaults = defaults
            cls._factories = tuple(factories)
            cls._plain_init = not hasattr(cls, "__post_init__")
            cls._names = tuple(f[0] for f in cls._fields())
            cls._known = frozenset(cls._names)
            cls._convert = tuple(convert)
            cls._deep = (*(f[0] for f in cls._fields() if f[1] not in ("str", "int", "bool")), "extra")
            cls._plan = plan
        return plan

    @classmethod
    def from_dict(cls, data: object) -> Self:
        """Validate ``data`` and build the record; raise ``ValueError`` naming the first bad field."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        kwargs: dict[str, Any] = {}
        plan = cls.__dict__.get("_plan") or cls._compiled()
        for name, base, optional, required, check, kind, exact, choices, minimum in plan:
            v = data.get(name, _MISSING)
            if v is _MISSING:
                if required:
                    raise ValueError(f"{name}: field required")
                continue
            if v is None and optional:
                kwargs[name] = None
            elif (type(v) is exact and (choices is None or v in choices)
                  and (minimum is None or v >= minimum)):
                kwargs[name] = v  # what JSON gives for a str/int/bool field, within its choices/minimum
            elif kind == _PLAIN and check is not None and check(v):
                kwargs[name] = v
            else:
                kwargs[name] = cls._value(name, base, optional and base != "Any", v)
        if cls._plain_init:
            # The dataclass __init__, minus its call: defaults, fresh containers, then the values read.
            obj = object.__new__(cls)
            d = obj.__dict__
            d.update(cls._defaults)
            for name, factory in cls._factories:
                d[name] = factory()
            d.update(kwargs)
        else:
            obj = cls(**kwargs)
        if not cls._known.issuperset(data):
            obj.extra = {k: v for k, v in data.items() if k not in cls._known}  # type: ignore[attr-defined]
        return obj

    @classmethod
    def _value(cls, name: str, base: str, optional: bool, v: object) -> Any:
        nested = cls.NESTED.get(name)
        item_cls = cls.NESTED_LISTS.get(base)
        try:
            if nested is not None:
                return nested.from_dict(v)
            if item_cls is not None:
                if not isinstance(v, list):
                    raise ValueError("expected a list")
                return [item_cls.from_dict(x) for x in v]
        except ValueError as exc:
            sep = ": " if str(exc).startswith("expected a list") else "."
            raise ValueError(f"{name}{sep}{exc}") from None
        check = _CHECKS.get(base)
        if check is None or not check(v):
            raise ValueError(f"{name}: expected {base}{' or null' if optional else ''}, got {type(v).__name__}")
        if name in cls.CHOICES and v not in cls.CHOICES[name]:
            raise ValueError(f"{name}: must be one of {', '.join(cls.CHOICES[name])}, not {v!r}")
        if name in cls.MINIMUM and v < cls.MINIMUM[name]:  # type: ignore[operator]
            raise ValueError(f"{name}: must be >= {cls.MINIMUM[name]}")
        return v

    def to_dict(self, *, exclude_none: bool = False) -> dict[str, Any]:
        """The record as JSON-ready data (unknown fields from the file included)."""
        cls = type(self)
        if "_plan" not in cls.__dict__:
            cls._compiled()
        values = self.__dict__
        out: dict[str, Any] = {name: values[name] for name in cls._names}
        for name in cls._convert:
            v = out[name]
            if isinstance(v, Record):
                out[name] = v.to_dict(exclude_none=exclude_none)
            elif isinstance(v, list) and v and isinstance(v[0], Record):
                out[name] = [x.to_dict(exclude_none=exclude_none) for x in v]
        if exclude_none:
            out = {k: v for k, v in out.items() if v is not None}
        extra = values.get("extra")
        if extra:
            out.update(extra)
        return out

    def json_copy(self) -> Self | None:
        """A deep copy (no list, dict or record shared), or None if a value would not come back from JSON as is.

        The store keeps the records it parsed or wrote (:meth:`omx.state.base.StoreBase._load_task`) and
        hands out copies: cheaper than parsing the file again, and nobody can change the kept one. A
        record holding anything but JSON's own types in a list, dict or ``Any`` field (a tuple, an int
        key, an enum...) is not kept, since reading its file back would give something else. Fields
        typed ``str``/``int``/``bool`` are taken as they are: :meth:`from_dict` checks them.
        """
        cls = type(self)
        if "_plan" not in cls.__dict__:
            cls._compiled()
        new = object.__new__(cls)
        out = new.__dict__
        out.update(self.__dict__)
        for name in cls._deep:
            v = out.get(name)
            t = type(v)
            if t in _SCALARS:
                continue
            if not v and (t is list or t is dict):
                out[name] = t()  # the usual: no depends_on, no files, no extra
                continue
            v = _json_copy(v)
            if v is _MISSING:
                return None
            out[name] = v
        return new

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (unknown fields carried over; nested values shared, as dataclasses.replace)."""
        cls = type(self)
        if "_plan" not in cls.__dict__:
            cls._compiled()
        if not cls._known.issuperset(changes) and any(k != "extra" for k in changes if k not in cls._known):
            return dataclasses.replace(self, **changes)  # type: ignore[type-var]  # its TypeError names the field
        new = object.__new__(cls)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _json_copy(v: Any) -> Any:
    """``v`` copied deeply if it is exactly what JSON gives back for it (else ``_MISSING``)."""
    t = type(v)
    if t in _SCALARS:
        return v
    if not v and (t is list or t is dict):
        return t()
    if t is list:
        out = [x if type(x) in _SCALARS else _json_copy(x) for x in v]
        return _MISSING if _MISSING in out else out
    if t is dict:
        d = {}
        for k, x in v.items():
            if type(k) is not str:
                return _MISSING
            x = x if type(x) in _SCALARS else _json_copy(x)
            if x is _MISSING:
                return _MISSING
            d[k] = x
        return d
    if isinstance(v, Record):
        c = v.json_copy()
        return _MISSING if c is None else c
    return _MISSING


@dataclass
class WorkerInfo(Record):
    name: str
    index: int = 0
    role: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class TeamConfig(Record):
    """``config.json``: the team's identity and settings."""

    name: str
    created_at: str
    schema_version: str = SCHEMA_VERSION
    goal: str = ""
    workers: list[WorkerInfo] = field(default_factory=list)
    lease_ms: int = 60_000
    next_task_id: int = 1
    shared_group: bool = False  # files 0660 and folders 0770 (else 0600/0700): a team shared by one group's accounts
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    MINIMUM: ClassVar[dict[str, int]] = {"lease_ms": 1, "next_task_id": 1}
    NESTED_LISTS: ClassVar[dict[str, type[Record]]] = {"list[WorkerInfo]": WorkerInfo}

    def worker_names(self) -> list[str]:
        return [w.name for w in self.workers]


@dataclass
class Claim(Record):
    """The claim inside a task file. Holds the token's sha256 only, never the token."""

    owner: str
    token_sha256: str
    leased_until: str
    claimed_at: str
    pid: int | None = None
    host: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class Task(Record):
    """``tasks/task-<id>.json``: one task, the source of truth for its status and claim."""

    id: str
    subject: str
    created_at: str
    updated_at: str
    description: str = ""
    status: str = "pending"
    version: int = 1
    owner: str | None = None
    claim: Claim | None = None
    depends_on: list[str] = field(default_factory=list)
    priority: int = 0
    role: str | None = None
    files: list[str] = field(default_factory=list)
    result: Any = None
    error: str | None = None
    attempts: int = 0
    completed_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"status": TASK_STATUSES}
    MINIMUM: ClassVar[dict[str, int]] = {"version": 1, "attempts": 0}
    NESTED: ClassVar[dict[str, type[Record]]] = {"claim": Claim}


@dataclass
class Message(Record):
    """``mailbox/<worker>/<message_id>.json``: one message, written once by temp file + rename."""

    message_id: str
    from_worker: str
    to_worker: str
    body: str
    created_at: str
    delivered_at: str | None = None
    notified_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class WorkerIdentity(Record):
    name: str
    team: str
    index: int = 0
    role: str | None = None
    pid: int | None = None
    host: str | None = None
    worktree: str | None = None
    started_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class WorkerStatus(Record):
    state: str = "unknown"
    current_task_id: str | None = None
    reason: str | None = None
    updated_at: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"state": WORKER_STATES}


@dataclass
class Heartbeat(Record):
    pid: int | None = None
    last_beat_at: str | None = None
    turn_count: int = 0
    alive: bool = True
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class ShutdownRequest(Record):
    requested_by: str
    requested_at: str
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass
class ShutdownAck(Record):
    worker: str
    updated_at: str
    status: str = "accept"
    reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"status": ("accept", "reject")}


@dataclass
class Event(Record):
    """One line of ``events/events.ndjson``."""

    event_id: str
    type: str
    team: str
    created_at: str
    worker: str | None = None
    task_id: str | None = None
    message_id: str | None = None
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


#: Every on-disk record, by the file it lives in (doctor and the schema export walk this).
RECORDS: dict[str, type[Record]] = {
    "config.json": TeamConfig,
    "tasks/task-<id>.json": Task,
    "mailbox/<worker>/<message_id>.json": Message,
    "workers/<worker>/identity.json": WorkerIdentity,
    "workers/<worker>/status.json": WorkerStatus,
    "workers/<worker>/heartbeat.json": Heartbeat,
    "workers/<worker>/shutdown-request.json": ShutdownRequest,
    "workers/<worker>/shutdown-ack.json": ShutdownAck,
    "events/events.ndjson (one per line)": Event,
}
