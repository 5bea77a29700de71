"""The hand-written record validation (hot path) agrees with pydantic's strict validation (doctor)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omx import schema
from omx.models import RECORDS, TASK_STATUSES, Claim, Record, Task

scalars = st.none() | st.booleans() | st.integers(-5, 10) | st.text(max_size=5) | st.floats(allow_nan=False)
values = st.recursive(scalars, lambda k: st.lists(k, max_size=2) | st.dictionaries(st.text(max_size=4), k, max_size=2),
                      max_leaves=4)


def good_claim() -> dict[str, Any]:
    return {"owner": "worker-1", "token_sha256": "ab" * 32, "leased_until": "t", "claimed_at": "t", "pid": 3}


def good_task() -> dict[str, Any]:
    return {"id": "1", "subject": "s", "created_at": "t", "updated_at": "t", "status": "pending", "version": 1,
            "claim": good_claim(), "depends_on": ["2"], "files": ["a.py"], "result": {"x": [1]}, "attempts": 0}


def field_types(cls: type[Record]) -> list[str]:
    return [name for name, *_ in cls._fields()]


def accepts_hand(cls: type[Record], d: Any) -> bool:
    try:
        cls.from_dict(d)
        return True
    except ValueError:
        return False


def accepts_pydantic(cls: type[Record], d: Any) -> bool:
    try:
        schema._adapter(cls).validate_json(json.dumps(d), strict=True)
        return True
    except Exception:
        return False


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_task_validators_agree_on_types(data: st.DataObject) -> None:
    d = good_task()
    # Mutate a few fields to arbitrary JSON values, or drop them.
    for name in data.draw(st.lists(st.sampled_from(field_types(Task)), max_size=3, unique=True)):
        if data.draw(st.booleans()):
            d.pop(name, None)
        else:
            d[name] = data.draw(values)
    if isinstance(d.get("status"), str) and d["status"] not in TASK_STATUSES:
        d["status"] = "pending"  # choices are checked by from_dict only (pydantic sees a str)
    if isinstance(d.get("version"), int) and not isinstance(d["version"], bool) and d["version"] < 1:
        d["version"] = 1
    if isinstance(d.get("attempts"), int) and not isinstance(d["attempts"], bool) and d["attempts"] < 0:
        d["attempts"] = 0
    assert accepts_hand(Task, d) == accepts_pydantic(Task, d), d


@pytest.mark.parametrize("cls", sorted(set(RECORDS.values()), key=lambda c: c.__name__))
@settings(max_examples=100, deadline=None)
@given(d=st.dictionaries(st.sampled_from(["id", "name", "pid", "state", "owner", "body", "x"]), values, max_size=4))
def test_all_records_agree_on_random_objects(cls: type[Record], d: dict[str, Any]) -> None:
    if cls.CHOICES or cls.MINIMUM:
        for k in list(d):
            if k in cls.CHOICES or k in cls.MINIMUM:
                del d[k]
    assert accepts_hand(cls, d) == accepts_pydantic(cls, d), d


def test_round_trip_keeps_unknown_fields() -> None:
    d = {**good_task(), "from_the_future": {"a": 1}}
    t = Task.from_dict(d)
    out = t.to_dict()
    assert out["from_the_future"] == {"a": 1}
    assert {k: out[k] for k in d if k != "claim"} == {k: v for k, v in d.items() if k != "claim"}
    assert Task.from_dict(out) == t
    assert t.replace(subject="z").to_dict()["from_the_future"] == {"a": 1}
    assert isinstance(t.claim, Claim)


def test_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"^claim\.pid: expected int"):
        Task.from_dict({**good_task(), "claim": {**good_claim(), "pid": "3"}})
    with pytest.raises(ValueError, match="status: must be one of"):
        Task.from_dict({**good_task(), "status": "done"})


def test_json_schema_export_covers_every_file() -> None:
    schemas = schema.json_schemas()
    assert set(schemas) == set(RECORDS)
    assert "token_sha256" in json.dumps(schemas["tasks/task-<id>.json"])
