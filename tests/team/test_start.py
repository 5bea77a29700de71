"""`omx team start` / `omx swarm` end to end: real worker processes, real git, the `command` runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

OMX = str(Path(sys.executable).parent / "omx")


def make_repo(tmp_path: Path, command: list[str], extra: str = "") -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "WORKFLOW.md").write_text(
        "---\nruntime:\n  kind: command\n  command: " + json.dumps(command) + "\n"
        f"worktree:\n  root: {tmp_path / 'wt'}\n{extra}---\nTask {{{{ task.id }}}}: {{{{ task.subject }}}}\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True, env=env)
    return repo


WRITE = ["bash", "-c", 'cat > "task-$OMX_TASK_ID.txt"; echo wrote task $OMX_TASK_ID']


def start(repo: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
    env["OMX_HOME"] = str(repo.parent / "omx-home")
    return subprocess.run([OMX, *args], cwd=repo, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def summary(repo: Path, team: str) -> dict:  # type: ignore[type-arg]
    out = start(repo, "team", "status", "--team", team, "--json")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_start_with_a_plan_runs_to_completion(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ["bash", "-c", "echo done $OMX_PROMPT_FILE > out-$OMX_TASK_ID.txt; echo ok"])
    plan = tmp_path / "plan.md"
    plan.write_text("- write a\n- write b (after #1)\n- write c\n- write d\n")
    r = start(repo, "team", "start", "build abcd", "--workers", "2", "--plan", str(plan), "--team", "abcd")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "team abcd: 4 tasks (plan file" in r.stdout
    assert "4 completed, 0 failed" in r.stdout
    lines = [ln for ln in r.stdout.splitlines() if " task " in ln and (" claimed " in ln or " completed " in ln)]
    assert len(lines) == 8  # no TTY: one progress line per claim and completion
    s = summary(repo, "abcd")
    assert s["counts"]["completed"] == 4 and s["drained"]
    assert {w["state"] for w in s["workers"]} == {"done"}
    rep = json.loads(start(repo, "team", "report", "--team", "abcd", "--json").stdout)
    # One integration branch holds all four tasks, and it merges cleanly into the base.
    assert rep["merges"] == [{"branch": "omx/abcd/integration", "merges": "clean"}]
    assert all(t["commit"] and t["branch"].startswith("omx/abcd/task-") for t in rep["tasks"])
    assert all(t["integration"]["status"] == "merged" for t in rep["tasks"])
    assert rep["integration"]["ahead"] == 8  # four task commits and their four merges
    assert rep["integration"]["landed"] is False


def test_report_finds_conflicting_branches_without_integration(tmp_path: Path) -> None:
    # integration.enabled: false keeps one branch per task (nothing merged): the report then checks each.
    repo = make_repo(tmp_path, ["bash", "-c", "echo $OMX_TASK_ID > shared.txt; echo ok"],
                     "integration:\n  enabled: false\n")
    r = start(repo, "swarm", "2", "one, two and three", "--team", "conf", "--planner", "heuristic")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(start(repo, "team", "report", "--team", "conf", "--json").stdout)
    # Each task branch adds shared.txt with different content: each merges cleanly alone into the base.
    assert [m["merges"] for m in rep["merges"]] == ["clean", "clean", "clean"]
    subprocess.run(["git", "-C", str(repo), "merge", "-q", "--no-edit", rep["merges"][0]["branch"]], check=True,
                   env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@x"})
    rep = json.loads(start(repo, "team", "report", "--team", "conf", "--json").stdout)
    by_branch = {m["branch"]: m for m in rep["merges"]}
    assert by_branch["omx/conf/task-1"]["merges"] == "clean"  # already merged
    assert by_branch["omx/conf/task-2"]["merges"] == "conflict"
    assert by_branch["omx/conf/task-2"]["conflicts"] == ["shared.txt"]
    assert subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True
                          ).stdout.strip() == ""  # the working tree was not touched


def test_a_failed_task_exits_1_and_blocks_its_dependents(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ["bash", "-c", 'if [ "$OMX_TASK_ID" = 1 ]; then echo boom >&2; exit 3; fi; echo ok'])
    plan = tmp_path / "plan.md"
    plan.write_text("- first\n- second (after #1)\n- third\n")
    r = start(repo, "team", "start", "g", "--workers", "2", "--plan", str(plan), "--team", "fail")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 completed, 1 failed, 1 blocked" in r.stdout
    s = summary(repo, "fail")
    assert s["blocked"][0]["reason"] == "task 1 is failed"
    shut = start(repo, "team", "shutdown", "--team", "fail", "--wait", "1")
    assert shut.returncode == 2 or shut.returncode == 1
    assert "not finished" in shut.stderr or "failed" in shut.stderr


@pytest.mark.parametrize("restart", [True, False])
def test_a_crashed_worker_loses_nothing(tmp_path: Path, restart: bool) -> None:
    # The first run of task 1 kills its own worker (SIGKILL to the parent); every later run succeeds.
    crash = ('if [ "$OMX_TASK_ID" = 1 ] && [ ! -e "$HOME_MARK" ]; then touch "$HOME_MARK"; kill -9 $PPID; '
             'sleep 5; fi; echo ok')
    repo = make_repo(tmp_path, ["bash", "-c", crash.replace("$HOME_MARK", str(tmp_path / "crashed-once"))])
    args = ["team", "start", "a, b, c and d", "--workers", "2", "--team", "crash", "--planner", "heuristic"]
    r = start(repo, *args, *(["--restart"] if restart else []))
    assert (tmp_path / "crashed-once").exists()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 completed, 0 failed" in r.stdout
    if restart:
        assert "restarting" in r.stdout
    events = start(repo, "team", "events", "--team", "crash", "--json").stdout.splitlines()
    claims_of_1 = [json.loads(e) for e in events if '"task_claimed"' in e and '"task_id": "1"' in e]
    assert len(claims_of_1) == 2  # claimed, lost with its worker, claimed once more
    # Recovered exactly once: either the leader's sweep returned it to pending, or a worker took it over.
    swept = [json.loads(e) for e in events if '"claim_expired"' in e and '"task_id": "1"' in e]
    took_over = "took_over" in claims_of_1[1]["data"]
    assert len(swept) + took_over == 1, (swept, claims_of_1)


def test_tmux_workers(tmp_path: Path) -> None:
    import shutil

    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    repo = make_repo(tmp_path, WRITE)
    sock_dir = tmp_path / "tmux"  # a private tmux server: never the user's
    sock_dir.mkdir()
    env_extra = {"TMUX_TMPDIR": str(sock_dir)}
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OMX_", "TMUX"))}
        env.update(env_extra, OMX_HOME=str(tmp_path / "omx-home"))
        r = subprocess.run([OMX, "team", "start", "one, two and three", "--workers", "2", "--tmux", "--team", "tm",
                            "--planner", "heuristic"], cwd=repo, capture_output=True, text=True, timeout=180,
                           env=env, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "in tmux session omx-tm" in r.stdout
        assert "3 completed, 0 failed" in r.stdout
        logs = repo / ".omx" / "state" / "team" / "tm" / "logs"
        assert {p.name for p in logs.iterdir()} == {"worker-1.log", "worker-2.log"}
        assert any("completed" in p.read_text() for p in logs.iterdir())  # the panes' output was kept
    finally:
        subprocess.run(["tmux", "kill-server"], env={**os.environ, **env_extra}, capture_output=True)


def test_ctrl_c_stops_the_team_cleanly(tmp_path: Path) -> None:
    import signal
    import time

    repo = make_repo(tmp_path, ["bash", "-c", 'echo $$ > "$OMX_TASK_ID.pid"; exec sleep 60'])
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
    env["OMX_HOME"] = str(tmp_path / "omx-home")
    leader = subprocess.Popen([OMX, "team", "start", "one and two", "--workers", "2", "--team", "cc",
                               "--planner", "heuristic"], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "task_claimed" not in summary_text(repo):
            time.sleep(0.1)
        t0 = time.monotonic()
        leader.send_signal(signal.SIGINT)
        out, err = leader.communicate(timeout=60)
    finally:
        if leader.poll() is None:
            leader.kill()
    assert leader.returncode == 1, out + err  # interrupted: not every task completed
    assert time.monotonic() - t0 < 20, "Ctrl-C waited for the running tasks"
    s = summary(repo, "cc")
    assert s["counts"]["in_progress"] == 0 and s["counts"]["pending"] == 2  # released, not lost
    assert {w["state"] for w in s["workers"]} == {"done"}


def summary_text(repo: Path) -> str:
    r = subprocess.run([OMX, "team", "events", "--team", "cc"], cwd=repo, capture_output=True, text=True)
    return r.stdout


def test_a_team_builds_on_its_own_work_and_lands_it(tmp_path: Path) -> None:
    """The new user's scenario: task 2 looks for the file task 1 wrote, then the result lands on main."""
    script = ('if [ "$OMX_TASK_ID" = 1 ]; then echo parser > parser.txt; echo wrote the parser; '
              'elif [ -f parser.txt ]; then echo HAVE_PARSER > test.txt; echo HAVE_PARSER; '
              'else echo NO_PARSER > test.txt; echo NO_PARSER; fi')
    repo = make_repo(tmp_path, ["bash", "-c", script])
    plan = tmp_path / "plan.md"
    plan.write_text("1. write the parser\n2. test the parser (after #1)\n")
    r = start(repo, "team", "start", "parser", "--workers", "2", "--plan", str(plan), "--team", "parse")
    assert r.returncode == 0, r.stdout + r.stderr
    branch = subprocess.run(["git", "-C", str(repo), "symbolic-ref", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    assert f"integration: omx/parse/integration, from {branch} at " in r.stdout
    assert "land it: omx team land --team parse" in r.stdout
    config = json.loads((repo / ".omx/state/team/parse/config.json").read_text())
    assert config["integration"] == {"branch": "omx/parse/integration", "base": branch}
    rep = start(repo, "team", "report", "--team", "parse")
    assert "task 1: integrated at " in rep.stdout and ": parser.txt" in rep.stdout
    assert "task 2: integrated at " in rep.stdout and ": test.txt" in rep.stdout
    assert "omx/parse/integration → " in rep.stdout and ": clean" in rep.stdout
    landed = start(repo, "team", "land", "--team", "parse")
    assert landed.returncode == 0, landed.stdout + landed.stderr
    assert (repo / "test.txt").read_text() == "HAVE_PARSER\n"
    assert (repo / "parser.txt").read_text() == "parser\n"
    assert "is landed in" in start(repo, "team", "report", "--team", "parse").stdout
