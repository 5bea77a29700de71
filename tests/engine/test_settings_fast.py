"""The settings' hand-written fast path agrees with pydantic (which judges everything else).

:mod:`omx.engine.settings` takes values of the exact type within bounds by hand and passes anything
else to pydantic models generated from the same declarations. Here every field is fed a spread of
values, and the settings built either way must be equal — or both refused with the same errors.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from omx.engine import settings as st

SECTIONS = [st.AgentSettings, st.PollingSettings, st.WorktreeSettings, st.RuntimeSettings, st.HookSettings]
VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 10, 64, 65, 100, 101, 10**12, 1.0, 2.5, "3", " 4 ", "x", "",
    "task", "branch", "never", "untrusted", "read-only", "codex-exec", "command",
    [], ["a"], ["a", 1], [1], {}, {"granular": {}}, {1: "a"}, ("a",),
]


def pydantic_way(cls: type[st._Section], data: dict[str, Any]) -> Any:
    try:
        return cls._build(st._slow(cls, data))
    except ValidationError as exc:
        return [(e["loc"], e["type"]) for e in exc.errors()]


def fast_way(cls: type[st._Section], data: dict[str, Any]) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        return [(e["loc"], e["type"]) for e in exc.errors()]


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_every_field_and_value_agrees_with_pydantic(cls: type[st._Section]) -> None:
    checked = 0
    for name, field in cls.model_fields.items():
        for key in {name, field.alias or name}:
            for value in VALUES:
                data = {key: value}
                assert fast_way(cls, data) == pydantic_way(cls, data), (cls.__name__, key, value)
                checked += 1
    assert checked >= 2 * len(VALUES)


def test_unknown_and_duplicate_keys_and_whole_documents_agree() -> None:
    docs: list[dict[str, Any]] = [
        {},
        {"agent": {"maxConcurrentAgents": 2}, "runtime": {"kind": "command", "command": ["x"]}},
        {"agent": {"maxConcurrentAgents": 2, "max_concurrent_agents": 3}},
        {"agent": {"bogus": 1}},
        {"bogus": {}},
        {"runtime": {"approvalPolicy": {"granular": {"sandbox_approval": True}}, "stallTimeoutMs": 0}},
        {"worktree": {"mode": "branch", "root": "/tmp/x", "baseRef": "main"}, "hooks": {"timeoutMs": 5}},
        {"runtime": "codex"},
        {"agent": st.AgentSettings(maxConcurrentAgents=4)},
    ]
    for doc in docs:
        assert fast_way(st.Settings, doc) == pydantic_way(st.Settings, doc), doc


def test_sections_behave_like_the_models_they_replaced() -> None:
    s = st.RuntimeSettings(kind="codex-exec", stallTimeoutMs=5)
    assert s.stall_timeout_ms == 5
    assert st.RuntimeSettings(stall_timeout_ms=5) == st.RuntimeSettings(stallTimeoutMs=5)
    assert s != st.RuntimeSettings()
    copy = s.model_copy(update={"model": "m"})
    assert (copy.model, s.model, copy.kind) == ("m", None, "codex-exec")
    assert st.Settings().model_dump(by_alias=True)["runtime"]["stallTimeoutMs"] == 300_000
    assert st.Settings().model_dump()["runtime"]["stall_timeout_ms"] == 300_000
    assert st.Settings.model_validate(st.Settings()) == st.Settings()
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        st.AgentSettings(maxConcurrentAgents=0)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        st.WorktreeSettings(bogus=1)
    assert repr(st.PollingSettings()) == "PollingSettings(poll_interval_ms=30000)"
    a, b = st.Settings(), st.Settings()
    a.runtime.command = ["x"]
    assert b.runtime.command is None  # defaults are not shared between instances


def test_a_valid_workflow_never_builds_a_pydantic_model() -> None:
    st._TWINS.clear()
    settings, _warnings, problems = st.resolve_settings(
        {"agent": {"maxConcurrentAgents": 2}, "codex": {"command": "codex app-server", "turn_timeout_ms": 60_000},
         "worktree": {"root": "/tmp/w"}, "hooks": {"after_create": "make"}}, str)
    assert problems == []
    assert settings is not None
    assert settings.runtime.command == ["codex", "app-server"]
    assert settings.hooks.after_create == "make"
    assert st._TWINS == {}
