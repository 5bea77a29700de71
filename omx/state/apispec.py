"""Declarative input fields for ``omx team api`` operations: validation, defaults, aliases and help.

A pydantic model per operation would cost the CLI more start-up time than the whole call may take
(see omx/models.py), so inputs are checked here: strictly typed, unknown fields refused by name.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class F:
    """One input field."""

    name: str
    kind: str = "str"
    required: bool = False
    default: Any = None
    aliases: tuple[str, ...] = ()
    nullable: bool = True
    lo: int | None = None
    hi: int | None = None
    help: str = ""


TEAM = F("team_name", required=True, aliases=("team",), help="the team's name")
TASK = F("task_id", "task_id", required=True, help='"7", 7 or "task-7"')
WORKER = F("worker", required=True, help="a worker of the team")
TOKEN = F("claim_token", required=True, help="the token claim-task or claim-next returned")


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
    for key, v in data.items():
        found = by_name.get(key)
        if found is None:
            if allow_extra:
                extra[key] = v
                continue
            names = ", ".join(x.name for x in fields)
            raise InvalidInput(f"{op}: unknown field {key!r} (fields: {names})", field=key)
        f = found
        if f.name in values:
            raise InvalidInput(f"{op}: {f.name!r} given twice (through an alias)", field=f.name)
        if v is None and f.nullable and not f.required:
            continue  # null means "not given": the default below applies
        check, what = KINDS[f.kind]
        if not check(v):
            raise InvalidInput(f"{op}: {key} must be {what}, got {type(v).__name__}", field=key)
        if isinstance(v, int) and ((f.lo is not None and v < f.lo) or (f.hi is not None and v > f.hi)):
            raise InvalidInput(f"{op}: {key} must be between {f.lo} and {f.hi}", field=key)
        values[f.name] = v
    for f in fields:
        if f.name not in values:
            if f.required:
                raise InvalidInput(f"{op}: missing required field {f.name!r}", field=f.name)
            values[f.name] = f.default() if callable(f.default) else f.default
    return values, extra


def describe(fields: tuple[F, ...]) -> list[dict[str, Any]]:
    return [
        {"name": f.name, "type": KINDS[f.kind][1], "required": f.required,
         **({} if f.required else {"default": f.default() if callable(f.default) else f.default}),
         **({"aliases": list(f.aliases)} if f.aliases else {}), **({"help": f.help} if f.help else {})}
        for f in fields
    ]
