"""Decomposition without a model: plan files and the heuristic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omx.team.plan import PlanError, heuristic, load_plan


def subjects(tasks: list) -> list[str]:  # type: ignore[type-arg]
    return [t.subject for t in tasks]


def test_markdown_plan_with_after_nesting_and_checkboxes(tmp_path: Path) -> None:
    f = tmp_path / "plan.md"
    f.write_text("# Plan\n\n1. Write the tokenizer\n2. Write the parser (after #1)\n   - Parser tests\n"
                 "     covering errors too\n- [x] Set up CI\n- [ ] Docs, depends on 1 and 2\n")
    tasks = load_plan(f)
    assert subjects(tasks) == ["Write the tokenizer", "Write the parser", "Parser tests", "Docs"]
    assert [t.depends_on for t in tasks] == [[], [1], [2], [1, 2]]
    assert tasks[2].description == "Parser tests\ncovering errors too"


def test_yaml_and_json_plans(tmp_path: Path) -> None:
    y = tmp_path / "plan.yaml"
    y.write_text("tasks:\n  - subject: a\n    priority: 2\n    files: [a.py]\n  - subject: b\n    depends_on: [1]\n")
    t = load_plan(y)
    assert (subjects(t), t[0].priority, t[0].files, t[1].depends_on) == (["a", "b"], 2, ["a.py"], [1])
    j = tmp_path / "plan.json"
    j.write_text(json.dumps([{"title": "x"}, "y"]))
    assert subjects(load_plan(j)) == ["x", "y"]


@pytest.mark.parametrize(("name", "text", "match"), [
    ("cycle.yaml", "- {subject: a, depends_on: [2]}\n- {subject: b, depends_on: [1]}\n", "cycle"),
    ("self.md", "- a (after #1)\n", r"self.md:1: 'a' depends on itself"),
    ("range.md", "1. a\n2. b (after #5)\n", "range.md:2: 'b' depends on item 5, but the list has 2 items"),
    ("range.json", '[{"subject": "a", "depends_on": [5]}]', "not another task"),
    ("bad.yaml", "tasks: [unclosed\n", "YAML error"),
    ("bad.json", "{", "JSON error at line 1"),
    ("empty.md", "just prose, no list\n", "no list items"),
    ("nosubject.yaml", "- {description: x}\n", "needs a 'subject'"),
])
def test_bad_plans_are_named_errors(tmp_path: Path, name: str, text: str, match: str) -> None:
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(PlanError, match=match) as exc:
        load_plan(f)
    assert exc.value.code == "plan_invalid" and str(f) in exc.value.message


@pytest.mark.parametrize(("goal", "expected"), [
    ("fix the login bug", ["fix the login bug"]),
    ("add a CLI, write tests and update docs", ["add a CLI", "write tests", "update docs"]),
    ("lint and test", ["lint", "test"]),
    ("1. parse input 2. validate it 3. store it", ["parse input", "validate it", "store it"]),
    ("migrate users; migrate orders", ["migrate users", "migrate orders"]),
    ("- one\n- two\n", ["one", "two"]),
    ("Refactor storage so that reads and writes are batched and the cache is invalidated", [
        "Refactor storage so that reads and writes are batched and the cache is invalidated"]),
])
def test_heuristic(goal: str, expected: list[str]) -> None:
    assert subjects(heuristic(goal)) == expected
