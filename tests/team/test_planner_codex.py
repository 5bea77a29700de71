"""The Codex planner with the real binary against a fake model: a good plan, nonsense, a failed turn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omx.team.planner import PlannerFailed, codex_plan
from tests.fakes.fake_model import FakeModel, fail, message


def test_plan_from_codex(workdir: Path, fake_model: FakeModel, codex_env: dict[str, str]) -> None:
    plan = {"tasks": [
        {"subject": "Write the parser", "description": "parse {{ x }} $(rm -rf /)", "depends_on": [],
         "priority": 1, "files": ["parser.py"]},
        {"subject": "Test the parser", "description": "cover errors", "depends_on": [1], "priority": 0,
         "files": []},
    ]}
    fake_model.script(message(json.dumps(plan)))
    tasks = codex_plan("build a parser", workdir, 2, env=codex_env)
    assert [(t.subject, t.depends_on) for t in tasks] == [("Write the parser", []), ("Test the parser", [1])]
    assert tasks[0].description == "parse {{ x }} $(rm -rf /)"  # data, verbatim
    req = fake_model.requests[0]
    assert "build a parser" in req.user_texts()[-1]
    text = req.body.get("text") or {}
    assert "tasks" in json.dumps(text)  # the output schema reached the model


@pytest.mark.parametrize("answer", [
    "not json at all",
    json.dumps({"tasks": []}),
    json.dumps({"tasks": [{"subject": "a", "description": "", "depends_on": [1], "priority": 0, "files": []}]}),
    json.dumps({"tasks": [{"subject": "a"}]}),
])
def test_nonsense_is_refused(workdir: Path, fake_model: FakeModel, codex_env: dict[str, str], answer: str) -> None:
    fake_model.script(message(answer))
    with pytest.raises(PlannerFailed) as exc:
        codex_plan("goal", workdir, 2, env=codex_env)
    assert exc.value.code == "planner_failed"


def test_failed_turn(workdir: Path, fake_model: FakeModel, codex_env: dict[str, str]) -> None:
    fake_model.script(fail("model overloaded"))
    with pytest.raises(PlannerFailed, match="model overloaded"):
        codex_plan("goal", workdir, 2, env=codex_env)


def test_a_planner_that_waits_says_so_and_gives_up_in_time(workdir: Path, fake_model: FakeModel,
                                                           codex_env: dict[str, str]) -> None:
    import time

    from tests.fakes.fake_model import hang

    fake_model.script(hang())
    said: list[str] = []
    t0 = time.monotonic()
    with pytest.raises(PlannerFailed, match=r"no plan from Codex after 3 s"):
        codex_plan("goal", workdir, 2, env=codex_env, timeout_s=3, progress=said.append, every_s=0.5)
    took = time.monotonic() - t0
    assert 3 <= took < 30, took  # bounded: the turn was interrupted, not waited out
    assert said and all(s.startswith("planning with Codex… ") and s.endswith(" s") for s in said)
    assert len(said) >= 3  # a line every half second while it waited
