"""A WORKFLOW.md body without Jinja syntax is the prompt as written, with no Jinja involved."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from omx.engine.workflow import _environment, parse_workflow

VARS = {"task": {"id": "1", "subject": "s"}, "team": "t", "worker": "w", "attempt": 1, "session": None}


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",))))
def test_plain_text_renders_exactly_as_jinja_would_render_it(body: str) -> None:
    wf = parse_workflow(body, None)
    if wf._plain:
        assert wf.render(**VARS) == body == _environment().from_string(body).render(VARS)
        assert wf.variables == frozenset()
        assert wf.warnings == []
    else:
        assert any(mark in body for mark in ("{{", "{%", "{#", "\r"))


def test_templates_still_go_through_jinja() -> None:
    wf = parse_workflow("---\n---\nDo {{ task.subject }}\r\n", None)
    assert not wf._plain
    assert wf.render(**VARS) == "Do s\n"


def test_a_plain_workflow_never_imports_jinja(tmp_path: Path) -> None:
    (tmp_path / "WORKFLOW.md").write_text("---\nagent:\n  maxRetryAttempts: 1\n---\nJust do the task.\n")
    code = (f"import sys; from pathlib import Path; from omx.engine.workflow import load_workflow; "
            f"wf = load_workflow(None, Path({str(tmp_path)!r})); print(wf.render(**{VARS!r}), end=''); "
            f"print('|', 'jinja2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "Just do the task.\n| False\n"
