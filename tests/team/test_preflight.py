"""`omx team start` fails fast, before it plans or writes anything, and says why with the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.conftest import find_codex_binary
from tests.team.test_start import make_repo

OMX = str(Path(sys.executable).parent / "omx")


def run(repo: Path, *args: str, path: str | None = None, codex_home: Path | None = None,
        extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMX_", "OPENAI_", "CODEX_"))}
    env["OMX_HOME"] = str(repo.parent / "omx-home")
    env["PATH"] = path or f"{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"
    env["CODEX_HOME"] = str(codex_home or repo.parent / "codex-home-empty")
    env.update(extra or {})
    return subprocess.run([OMX, *args], cwd=repo, capture_output=True, text=True, timeout=120, env=env,
                          stdin=subprocess.DEVNULL)


def no_team_written(repo: Path) -> bool:
    return not (repo / ".omx" / "state" / "team").exists()


def test_a_typo_in_workflow_md_stops_the_start_with_a_suggestion(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ["bash", "-c", "echo ok"])
    text = (repo / "WORKFLOW.md").read_text().replace("  command:", "  comand:")
    (repo / "WORKFLOW.md").write_text(text)
    r = run(repo, "team", "start", "do it", "--workers", "1", "--planner", "heuristic")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "the team cannot start" in r.stderr
    assert "unknown key 'runtime.comand' (did you mean 'command'?)" in r.stderr
    assert "[preflight_failed]" in r.stderr and "Traceback" not in r.stderr
    assert no_team_written(repo)


def test_a_missing_agent_program_stops_the_start(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ["no-such-agent-program", "--go"])
    r = run(repo, "swarm", "1", "do it", "--planner", "heuristic")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "'no-such-agent-program' is not an executable" in r.stderr and "fix runtime.command" in r.stderr
    assert no_team_written(repo)


def test_no_codex_names_the_package_and_version_to_install(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ["bash", "-c", "echo ok"])
    (repo / "WORKFLOW.md").write_text(f"---\nworktree:\n  root: {tmp_path / 'wt'}\n---\nTask {{{{ task.id }}}}\n")
    r = run(repo, "team", "start", "do it", "--workers", "1", "--planner", "heuristic")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "codex is not on the agent's PATH" in r.stderr
    assert "npm install -g @openai/codex@0.169.0" in r.stderr
    assert no_team_written(repo)


@pytest.mark.codex
def test_codex_without_a_model_account_stops_the_start_instead_of_hanging(tmp_path: Path) -> None:
    codex = find_codex_binary()
    if codex is None:
        pytest.skip("no Codex binary (run ./scripts/setup)")
    repo = make_repo(tmp_path, ["bash", "-c", "echo ok"])
    (repo / "WORKFLOW.md").write_text(f"---\nworktree:\n  root: {tmp_path / 'wt'}\n---\nTask {{{{ task.id }}}}\n")
    path = f"{codex.parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"
    r = run(repo, "team", "start", "fix add and implement mul", "--workers", "2", path=path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no model account for Codex: run `codex login`, or export OPENAI_API_KEY" in r.stderr
    assert "omx demo" in r.stderr
    assert no_team_written(repo)
    # A provider whose key variable is named but not set says which variable.
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "config.toml").write_text('model_provider = "gw"\n[model_providers.gw]\nname = "gateway"\n'
                                      'base_url = "http://127.0.0.1:9/v1"\nenv_key = "MY_GATEWAY_KEY"\n')
    r = run(repo, "team", "start", "x", "--workers", "1", "--planner", "heuristic", path=path, codex_home=home)
    assert r.returncode == 2
    assert "model provider 'gw' (http://127.0.0.1:9/v1) reads its key from $MY_GATEWAY_KEY, which is not set" \
        in r.stderr


@pytest.mark.codex
def test_a_command_team_without_an_account_plans_with_the_heuristic_and_says_so(tmp_path: Path) -> None:
    codex = find_codex_binary()
    if codex is None:
        pytest.skip("no Codex binary (run ./scripts/setup)")
    repo = make_repo(tmp_path, ["bash", "-c", 'echo "$OMX_TASK_ID" > "t-$OMX_TASK_ID.txt"; echo ok'])
    path = f"{codex.parent}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"
    r = run(repo, "team", "start", "write a; write b", "--workers", "1", "--json", path=path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "note: no model account for Codex" in r.stderr and "the heuristic planner splits the goal" in r.stderr
    assert json.loads(r.stdout)["planned_by"] == "heuristic"


def test_a_plan_file_says_what_it_ignores_by_line(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ["bash", "-c", 'echo "$OMX_TASK_ID" > "t-$OMX_TASK_ID.txt"; echo ok'])
    plan = tmp_path / "plan.md"
    plan.write_text("- A: the parser\n- the tests (after A)\n- the docs (depends on task 1)\n")
    r = run(repo, "team", "start", "p", "--workers", "1", "--plan", str(plan), "--team", "p")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"warning: {plan}:2: '(after A)' names no item number, so no dependency was recorded" in r.stdout
    tasks = json.loads(run(repo, "team", "api", "list-tasks", "--input", '{"team_name": "p"}', "--json").stdout)
    deps = {t["subject"]: t["depends_on"] for t in tasks["data"]["tasks"]}
    assert deps["the docs"] == ["1"]  # "depends on task 1" is understood
    bad = tmp_path / "bad.md"
    bad.write_text("1. write the parser\n2. test the parser (after #5)\n")
    r = run(repo, "team", "start", "p", "--workers", "1", "--plan", str(bad), "--team", "q")
    assert r.returncode == 2
    assert f"{bad}:2: 'test the parser' depends on item 5, but the list has 2 items" in r.stderr


def test_the_plan_syntax_is_in_the_help() -> None:
    out = subprocess.run([OMX, "team", "start", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"}).stdout
    out = " ".join(out.split())
    assert "after #1" in out and "depends on task 3" in out and "[x]" in out


def test_a_silent_agent_is_named_in_the_progress_lines(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ["bash", "-c", "sleep 3.5; echo late > late.txt; echo done"])
    r = run(repo, "team", "start", "wait", "--workers", "1", "--planner", "heuristic", "--team", "quiet",
            extra={"OMX_SILENT_AFTER_S": "1"})
    assert r.returncode == 0, r.stdout + r.stderr
    silent = [ln for ln in r.stdout.splitlines() if "no output from bash for" in ln]
    assert silent and silent[0].strip().split("  ", 1)[1].startswith("task 1: no output from bash for "), r.stdout
    assert silent[0].endswith("(worker-1)")
    assert len(silent) >= 2  # said again while it stays quiet


def test_a_worker_that_dies_shows_the_end_of_its_log(tmp_path: Path) -> None:
    import signal
    import time

    repo = make_repo(tmp_path, ["bash", "-c", 'echo "$$" > "$WL_PIDS/agent-$OMX_TASK_ID"; sleep 3; echo ok'])
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMX_", "OPENAI_", "CODEX_"))}
    env.update(OMX_HOME=str(tmp_path / "omx-home"), WL_PIDS=str(pids))
    leader = subprocess.Popen([OMX, "team", "start", "one task", "--workers", "2", "--planner", "heuristic",
                               "--team", "dies"], cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(pids.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    state = json.loads((repo / ".omx/state/team/dies/tasks/task-1.json").read_text())
    owner = state["owner"]
    identity = json.loads((repo / f".omx/state/team/dies/workers/{owner}/identity.json").read_text())
    os.kill(identity["pid"], signal.SIGKILL)
    out, err = leader.communicate(timeout=120)
    log = repo / ".omx/state/team/dies/logs" / f"{owner}.log"
    assert f"{owner} exited (-9); the end of its log {log}:" in out, out + err
    assert "    " in out.split(f"the end of its log {log}:", 1)[1].splitlines()[1]  # its last lines, indented


def test_doctor_checks_the_model_account_and_the_endpoint(tmp_path: Path) -> None:
    import socket

    repo = make_repo(tmp_path, ["bash", "-c", "echo ok"])

    def checks(home: Path, **extra: str) -> dict[str, dict[str, object]]:
        r = run(repo, "doctor", "--json", codex_home=home, extra=extra)
        return {c["name"]: c for c in json.loads(r.stdout)["checks"]}

    empty = tmp_path / "empty-home"
    empty.mkdir()
    got = checks(empty)
    assert got["model account"]["ok"] is False and "codex login" in str(got["model account"]["detail"])
    assert checks(empty, OPENAI_API_KEY="sk-test")["model account"]["ok"] is True
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        home = tmp_path / "gw-home"
        home.mkdir()
        (home / "config.toml").write_text(f'model_provider = "gw"\n[model_providers.gw]\nname = "gw"\n'
                                          f'base_url = "http://127.0.0.1:{port}/v1"\nenv_key = "GW_KEY"\n')
        got = checks(home, GW_KEY="k")
        assert got["model account"]["ok"] is True and "GW_KEY is set" in str(got["model account"]["detail"])
        assert got["model endpoint"]["ok"] is True
    got = checks(home, GW_KEY="k")  # the listener is gone
    assert got["model endpoint"]["ok"] is False and "cannot connect" in str(got["model endpoint"]["detail"])
