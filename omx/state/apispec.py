"""Declarative input fields for ``omx team api`` operations: validation, defaults, aliases and help.

A pydantic model per operation would cost the CLI more start-up time than the whole call may take
(see omx/models.py), so inputs are checked here: strictly typed, unknown fields refused by name.

Every field is bounded (issue 10): a string by its length, a list by its number of items (and each
item's length), a free-form JSON value by the length of its JSON text, an integer by a range (at
most :data:`MAX_SAFE_INT` either way, JSON's safe integers). The bounds are declared here, checked
before any handler runs, and printed by ``omx team api <op> --help``; a test holds every field of
the registry to having one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omx.errors import InvalidInput


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _natural(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _strs(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


KINDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "int": (_int, "an integer"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "any": (lambda v: True, "any JSON value"),
    "object": (lambda v: isinstance(v, dict), "a JSON object"),
    "task_id": (lambda v: isinstance(v, str) or _natural(v), 'a task id ("7" or 7)'),
    "task_ids": (lambda v: isinstance(v, list) and all(isinstance(x, str) or _natural(x) for x in v),
                 "a list of task ids"),
    "strs": (_strs, "a list of strings"),
    "str_or_strs": (lambda v: isinstance(v, str) or _strs(v), "a string or a list of strings"),
    "count_or_strs": (lambda v: _int(v) or _strs(v), "a count or a list of names"),
}


#: Integers outside +-(2**53 - 1) are refused: no JSON reader loses precision on them, and no field needs more.
MAX_SAFE_INT = 2**53 - 1
#: Length of a task id as written (``"task-"`` and 12 digits).
TASK_ID_LEN = 17
#: Which kinds hold a list (``max_len`` counts items, ``item_len`` bounds each) and which a free JSON value.
LIST_KINDS = frozenset({"task_ids", "strs"})
JSON_KINDS = frozenset({"any", "object"})


@dataclass(frozen=True)
class F:
    """One input field.

    ``max_len``: longest string (characters), most list items, or longest JSON text of a free value;
    ``item_len``: longest string in a list. ``passthrough``: handed to the handler in ``extra`` when
    given (``null`` included) instead of in the values, for operations that change only what is named.
    """

    name: str
    kind: str = "str"
    required: bool = False
    default: Any = None
    aliases: tuple[str, ...] = ()
    nullable: bool = True
    lo: int | None = None
    hi: int | None = None
    help: str = ""
    max_len: int | None = None
    item_len: int | None = None
    passthrough: bool = False

    def bound(self) -> str:
        """The field's bound in words, as ``--help`` prints it."""
        if self.kind == "int":
            lo = -MAX_SAFE_INT if self.lo is None else self.lo
            hi = MAX_SAFE_INT if self.hi is None else self.hi
            return f"{lo}..{hi}"
        if self.kind == "task_id":
            return ""  # the type says it all: digits, optionally "task-"
        if self.kind == "task_ids":
            return f"at most {self.max_len} task ids"
        if self.kind in LIST_KINDS or self.kind in ("str_or_strs", "count_or_strs"):
            return f"at most {self.max_len} items of at most {self.item_len} characters"
        if self.kind in JSON_KINDS:
            return f"at most {self.max_len} characters as JSON"
        if self.kind == "str":
            return f"at most {self.max_len} characters"
        return ""


#: Names: a team is at most 30 characters, a worker 64 (omx.state.names); a message id 80.
NAME_LEN = 64
TEAM = F("team_name", required=True, aliases=("team",), help="the team's name", max_len=30)
TASK = F("task_id", "task_id", required=True, help='"7", 7 or "task-7"')
WORKER = F("worker", required=True, help="a worker of the team", max_len=NAME_LEN)
TOKEN = F("claim_token", required=True, help="the token claim-task or claim-next returned", max_len=128)


def parse_input(op: str, fields: tuple[F, ...], data: dict[str, Any], *, allow_extra: bool = False
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(values, extra)``: canonical field values with defaults, and unknown fields (if allowed)."""
    by_name: dict[str, F] = {}
    for fld in fields:
        by_name[fld.name] = fld
        for a in fld.aliases:
            by_name[a] = fld
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    given: set[str] = set()
    for key, v in data.items():
        found = by_name.get(key)
        if found is None:
            if allow_extra:
                extra[key] = v
                continue
            names = ", ".join(x.name for x in fields)
            raise InvalidInput(f"{op}: unknown field {key!r} (fields: {names})", field=key)
        f = found
        if f.name in given:
            raise InvalidInput(f"{op}: {f.name!r} given twice (through an alias)", field=f.name)
        given.add(f.name)
        if v is None and f.nullable and not f.required:
            if f.passthrough:
                extra[f.name] = None
            continue  # null means "not given": the default below applies
        check, what = KINDS[f.kind]
        if not check(v):
            raise InvalidInput(f"{op}: {key} must be {what}, got {type(v).__name__}", field=key)
        _check_bound(op, key, f, v)
        if f.passthrough:
            extra[f.name] = v
        else:
            values[f.name] = v
    _fill_defaults(op, fields, values)
    return values, extra


def _fill_defaults(op: str, fields: tuple[F, ...], values: dict[str, Any]) -> None:
    for f in fields:
        if f.passthrough or f.name in values:
            continue
        if f.required:
            raise InvalidInput(f"{op}: missing required field {f.name!r}", field=f.name)
        values[f.name] = f.default() if callable(f.default) else f.default


def _check_bound(op: str, key: str, f: F, v: object) -> None:
    """Refuse a value beyond the field's bound (the type is already checked)."""
    if f.kind in JSON_KINDS:
        if f.max_len is not None and len(json.dumps(v, ensure_ascii=False)) > f.max_len:
            raise InvalidInput(f"{op}: {key} is longer than {f.max_len} characters as JSON", field=key)
        return
    if isinstance(v, bool):
        return
    if isinstance(v, int):
        lo = -MAX_SAFE_INT if f.lo is None else f.lo
        hi = MAX_SAFE_INT if f.hi is None else f.hi
        if not lo <= v <= hi:
            raise InvalidInput(f"{op}: {key} must be between {lo} and {hi}", field=key)
        return
    if f.kind == "task_id" or f.kind == "task_ids":
        items = v if isinstance(v, list) else [v]
        if f.max_len is not None and isinstance(v, list) and len(v) > f.max_len:
            raise InvalidInput(f"{op}: {key} has more than {f.max_len} task ids", field=key)
        if any(isinstance(x, str) and len(x) > TASK_ID_LEN for x in items):
            raise InvalidInput(f"{op}: {key}: a task id is at most {TASK_ID_LEN} characters", field=key)
        return
    if isinstance(v, str):
        limit = f.max_len if f.kind == "str" else f.item_len
        if limit is not None and len(v) > limit:
            raise InvalidInput(f"{op}: {key} is longer than {limit} characters", field=key)
        return
    if isinstance(v, list):
        if f.max_len is not None and len(v) > f.max_len:
            raise InvalidInput(f"{op}: {key} has more than {f.max_len} items", field=key)
        if f.item_len is not None and any(len(x) > f.item_len for x in v):
            raise InvalidInput(f"{op}: {key}: an item is longer than {f.item_len} characters", field=key)


def describe(fields: tuple[F, ...]) -> list[dict[str, Any]]:
    return [
        {"name": f.name, "type": KINDS[f.kind][1], "required": f.required,
         **({} if f.required else {"default": f.default() if callable(f.default) else f.default}),
         **({"bound": f.bound()} if f.bound() else {}),
         **({"aliases": list(f.aliases)} if f.aliases else {}), **({"help": f.help} if f.help else {})}
        for f in fields
    ]
