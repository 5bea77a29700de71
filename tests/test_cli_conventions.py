"""What a command-line user expects of `omx`: help that lists the options, --version, shell completion,
--json where a script wants it, a doctor whose levels agree with ok, words and plurals that read right,
and a "codex not found" that says how to install it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.conftest import OMX, CliResult

INSTALL = "npm install -g @openai/codex@0.169.0"


def test_help_lists_version_and_completion(omx: Callable[..., CliResult]) -> None:
    r = omx("--help", env={"COLUMNS": "100"})
    assert r.code == 0
    for option in ("--version", "--install-completion", "--show-completion"):
        assert option in r.out, r.out
    assert omx("--version").out.startswith("omx ")


def test_shell_completion_completes_commands(omx: Callable[..., CliResult]) -> None:
    script = omx("--show-completion", "bash")
    assert script.code == 0 and "_OMX_COMPLETE" in script.out and "complete " in script.out
    done = omx(env={"_OMX_COMPLETE": "complete_bash", "COMP_WORDS": "omx te", "COMP_CWORD": "1"})
    assert done.code == 0 and done.out.split() == ["team"], done.out + done.err
    done = omx(env={"_OMX_COMPLETE": "complete_bash", "COMP_WORDS": "omx team re", "COMP_CWORD": "2"})
    assert {"report", "resume", "retry"} <= set(done.out.split()), done.out


def test_demo_help_shows_its_options(omx: Callable[..., CliResult]) -> None:
    r = omx("demo", "--help")
    assert r.code == 0, r.err
    for option in ("--workers", "--keep", "--offline", "--json"):
        assert option in r.out, r.out
    assert r.out.startswith("usage: omx demo")


def test_setup_json(omx: Callable[..., CliResult], tmp_path: Path) -> None:
    first = omx("setup", "--codex-home", str(tmp_path / "ch"), "--json")
    assert first.code == 0, first.err
    doc = first.json
    assert doc["target"] == str(tmp_path / "ch" / "skills") and "worker" in doc["installed"]
    again = omx("setup", "--codex-home", str(tmp_path / "ch"), "--json").json
    assert again["installed"] == [] and sorted(again["unchanged"]) == sorted(doc["installed"])


def test_workflow_init_json(omx: Callable[..., CliResult], tmp_path: Path) -> None:
    r = omx("workflow", "init", "--repo", str(tmp_path), "--json")
    assert r.code == 0, r.err
    assert r.json["ok"] is True and r.json["data"]["path"] == str(tmp_path / "WORKFLOW.md")
    assert (tmp_path / "WORKFLOW.md").exists()
    again = omx("workflow", "init", "--repo", str(tmp_path), "--json")
    assert again.code != 0 and json.loads(again.out)["ok"] is False and "Traceback" not in again.err


def test_doctor_levels_agree_with_ok_and_codex_missing_says_how_to_install(
        omx: Callable[..., CliResult], tmp_path: Path) -> None:
    r = omx("doctor", "--root", str(tmp_path / "state"), "--json",
            env={"PATH": "/usr/bin:/bin", "CODEX_HOME": str(tmp_path / "ch")})
    doc = json.loads(r.out)
    assert all((c["level"] == "ok") == c["ok"] for c in doc["checks"]), doc["checks"]
    assert doc["ok"] is not any(c["level"] == "error" for c in doc["checks"])
    codex = next(c for c in doc["checks"] if c["name"] == "codex")
    assert not codex["ok"] and codex["level"] == "warning" and INSTALL in codex["detail"]


def test_a_worker_without_codex_names_the_npm_package(omx: Callable[..., CliResult], tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    root = tmp_path / "state"
    assert omx("team", "create", "nocodex", "--workers", "1", "--root", str(root)).out.startswith(
        "created team nocodex with 1 worker (lease")  # "1 worker", not "1 workers"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMX_", "CODEX_"))}
    env.update(PATH="/usr/bin:/bin", OMX_HOME=str(tmp_path / "home"))
    proc = subprocess.run([OMX, "team", "worker", "--team", "nocodex", "--name", "worker-1", "--root", str(root),
                           "--repo", str(repo), "--until-empty"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "codex is not on the agent's PATH" in proc.stderr and INSTALL in proc.stderr


def test_doctor_fix_removes_temp_files_a_crash_left(omx: Callable[..., CliResult], tmp_path: Path) -> None:
    from omx.state.filestore import FileStore

    root = tmp_path / "state"
    store = FileStore(root)
    store.create_team("crashy", workers=["worker-1"])
    old = store.paths("crashy").tasks / ".task-1.json.0badc0de.tmp"
    old.write_text('{"half": ')
    os.utime(old, (1, 1))
    found = json.loads(omx("doctor", "--root", str(root), "--json").out)
    temps = next(c for c in found["checks"] if c["name"] == "team crashy: temp files")
    assert (temps["ok"], temps["level"]) == (False, "warning") and str(old) in temps["detail"]
    fixed = json.loads(omx("doctor", "--root", str(root), "--json", "--fix").out)
    temps = next(c for c in fixed["checks"] if c["name"] == "team crashy: temp files")
    assert (temps["ok"], temps["level"]) == (True, "ok")
    assert temps["detail"] == f"deleted 1 left by a crash mid-write: {old}"
    assert not old.exists()
