"""``omx workflow check|init``: in-process through typer, and end to end through the installed ``omx``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from omx.cli.workflow import app
from omx.engine.data.default_workflow import DEFAULT_WORKFLOW_MD
from omx.engine.workflow import WorkflowError, WorkflowExists

OMX = Path(sys.executable).with_name("omx")
GOOD = """---
agent:
  maxConcurrentAgents: 2
  max_turns: 9
codex:
  command: codex app-server
hooks:
  afterCreate: |
    uv sync
    make setup
---
Work on {{ task.subject }} as {{ worker }}.
"""
BAD_YAML = "---\nagent:\n  maxConcurrentAgents: [1\n---\nx\n"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_check_prints_a_listing_with_warnings(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "WORKFLOW.md"
    path.write_text(GOOD)
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"workflow  {path}" in out
    assert any(line.split() == ["agent.maxConcurrentAgents", "2"] for line in out.splitlines())
    assert any(line.split() == ["runtime.command", "codex", "app-server"] for line in out.splitlines())
    assert "uv sync  (+1 more lines)" in out
    assert "Symphony setting 'agent.max_turns' is not supported by omx; ignored" in out
    assert "variables: task, worker" in out


def test_check_json(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "WORKFLOW.md"
    path.write_text(GOOD)
    result = runner.invoke(app, ["check", str(path), "--json", "--prompt"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["ok"] is True
    assert doc["command"] == "omx workflow check"
    data = doc["data"]
    assert data["path"] == str(path)
    assert data["settings"]["agent"]["maxConcurrentAgents"] == 2
    assert data["settings"]["runtime"]["command"] == ["codex", "app-server"]
    assert data["settings"]["hooks"]["afterCreate"] == "uv sync\nmake setup\n"
    assert len(data["warnings"]) == 1
    assert data["prompt"] == "Work on Example task as worker-1.\n"


def test_check_without_a_file_uses_the_built_in_default(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["check", "--repo", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["data"]["path"] is None


def test_check_errors_propagate_as_named_errors(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "WORKFLOW.md"
    path.write_text(BAD_YAML)
    result = runner.invoke(app, ["check", str(path), "--json"])
    assert isinstance(result.exception, WorkflowError)
    assert result.exception.code == "workflow_yaml_error"
    assert result.exception.exit_status == 2
    doc = json.loads(result.output)
    assert doc["ok"] is False
    assert doc["error"]["code"] == "workflow_yaml_error"


def test_sample_render_failure_is_a_warning(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "WORKFLOW.md"
    path.write_text("{{ task.estimate }}\n")
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 0, result.output
    assert "rendering a sample task failed" in result.output
    assert "'estimate'" in result.output


def test_init(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["init", "--repo", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "WORKFLOW.md").read_text() == DEFAULT_WORKFLOW_MD
    again = runner.invoke(app, ["init", "--repo", str(tmp_path)])
    assert isinstance(again.exception, WorkflowExists)
    forced = runner.invoke(app, ["init", str(tmp_path / "WORKFLOW.md"), "--force"])
    assert forced.exit_code == 0, forced.output


# --- end to end: the installed `omx` -----------------------------------------------------------------

needs_cli = pytest.mark.skipif(
    importlib.util.find_spec("omx.cli.team") is None,
    reason="omx/cli/app.py imports omx.cli.team, which is not written yet; runs as soon as it is",
)


def omx(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(OMX), *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@needs_cli
def test_omx_workflow_check_end_to_end(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()  # a repository root for the default file lookup
    ok = omx(tmp_path, "workflow", "check")
    assert ok.returncode == 0, ok.stderr
    assert "built-in default" in ok.stdout
    (tmp_path / "WORKFLOW.md").write_text(GOOD)
    found = omx(tmp_path, "workflow", "check", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["data"]["settings"]["agent"]["maxConcurrentAgents"] == 2
    (tmp_path / "WORKFLOW.md").write_text(BAD_YAML)
    bad = omx(tmp_path, "workflow", "check")
    assert bad.returncode == 2
    assert bad.stderr.startswith(f"omx: error: {tmp_path / 'WORKFLOW.md'}:4: invalid YAML")
    assert "while parsing a flow sequence at line 3" in bad.stderr
    assert bad.stderr.rstrip().endswith("[workflow_yaml_error]")
    missing = omx(tmp_path, "workflow", "check", "nope.md")
    assert missing.returncode == 2
    assert "[workflow_not_found]" in missing.stderr


@needs_cli
def test_omx_workflow_init_end_to_end(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    first = omx(tmp_path, "workflow", "init")
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "WORKFLOW.md").read_text() == DEFAULT_WORKFLOW_MD
    second = omx(tmp_path, "workflow", "init")
    assert second.returncode == 1
    assert "[workflow_exists]" in second.stderr
    forced = omx(tmp_path, "workflow", "init", "--force")
    assert forced.returncode == 0, forced.stderr
