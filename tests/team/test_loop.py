"""Closing the loop through the real CLI: `omx team retry`, `omx team resume`, and `start` on a team that exists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.team.test_start import OMX, make_repo, start, summary

#: Task 1 fails on its first run only (a marker file remembers); every other run succeeds.
FLAKY = ('if [ "$OMX_TASK_ID" = 1 ] && [ ! -e "{mark}" ]; then touch "{mark}"; echo boom >&2; exit 3; fi; '
         'echo x > "t-$OMX_TASK_ID.txt"; '
         'echo "done: wrote the file for task $OMX_TASK_ID, with a summary long enough to wrap in a narrow column"')


def api(repo: Path, op: str, data: dict) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    return start(repo, "team", "api", op, "--input", json.dumps(data), "--json")


def test_retry_sends_a_failed_task_back_and_resume_finishes_the_team(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ["bash", "-c", FLAKY.format(mark=tmp_path / "failed-once")])
    plan = tmp_path / "plan.md"
    plan.write_text("- first\n- second (after #1)\n")
    r = start(repo, "team", "start", "g", "--workers", "1", "--plan", str(plan), "--team", "loop")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "0 completed, 1 failed, 1 blocked" in r.stdout
    assert "team loop: 2 tasks (plan file" in r.stdout and ", 1 worker;" in r.stdout  # not "1 workers"
    assert "omx team retry <id>… --team loop" in r.stdout
    failed = json.loads(api(repo, "read-task", {"team_name": "loop", "task_id": "1"}).stdout)["data"]["task"]
    assert failed["status"] == "failed" and failed["error"]

    # Only a failed task can be retried: a clear refusal, exit 1, nothing changed.
    r = start(repo, "team", "retry", "2", "1", "--team", "loop")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "task 2 is pending; only a failed task can be retried [invalid_transition]" in r.stderr
    assert "Traceback" not in r.stderr
    assert summary(repo, "loop")["counts"]["failed"] == 1  # all or nothing: task 1 was not retried either
    r = api(repo, "retry-task", {"team_name": "loop", "task_id": "2"})
    assert r.returncode == 1
    assert json.loads(r.stdout)["error"]["code"] == "invalid_transition"
    r = start(repo, "team", "retry", "x", "--team", "loop")
    assert r.returncode == 2 and "Traceback" not in r.stderr

    r = start(repo, "team", "retry", "1", "--team", "loop")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "task 1: failed -> pending (attempts so far: 1)" in r.stdout
    task = json.loads(api(repo, "read-task", {"team_name": "loop", "task_id": "1"}).stdout)["data"]["task"]
    assert task["status"] == "pending" and task["attempts"] == 1 and task["owner"] is None
    assert task["error"] is None and task["result"]["previous"]["error"] == failed["error"]
    s = summary(repo, "loop")
    assert s["blocked"][0]["reason"] == "task 1 is pending"  # its dependent waits on it again, no longer on a failure
    events = [json.loads(e) for e in start(repo, "team", "events", "--team", "loop", "--json").stdout.splitlines()]
    retried = [e for e in events if e["type"] == "task_retried"]
    assert len(retried) == 1 and retried[0]["task_id"] == "1" and retried[0]["reason"] == failed["error"]
    doctor = json.loads(start(repo, "doctor", "--json").stdout)
    assert not [c for c in doctor["checks"] if "index" in c["name"] and not c["ok"]]

    r = start(repo, "team", "resume", "--team", "loop")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restarting worker-1" in r.stdout
    assert "2 completed, 0 failed, 0 blocked, 0 unfinished" in r.stdout
    assert "FAILED" not in r.stdout  # progress from now on: the first run's lines are not replayed
    assert "task 1 claimed by worker-1" in r.stdout
    task = json.loads(api(repo, "read-task", {"team_name": "loop", "task_id": "1"}).stdout)["data"]["task"]
    assert task["attempts"] == 2 and task["status"] == "completed"

    # The report fits 80 columns and cuts no word (summaries wrap; the commit is whole).
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
    rep = subprocess.run([OMX, "team", "report", "--team", "loop"], cwd=repo, capture_output=True, text=True,
                         env={**env, "COLUMNS": "80"})
    assert rep.returncode == 0, rep.stderr
    lines = rep.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, rep.stdout
    assert "…" not in rep.stdout, rep.stdout
    words = " ".join(line.split("│")[-2].strip() for line in lines if line.startswith("│")).split()
    assert " ".join(words).count("with a summary long enough to wrap in a narrow column") == 2, rep.stdout
    commit = json.loads(api(repo, "read-task", {"team_name": "loop", "task_id": "2"}).stdout)["data"]["task"]
    assert commit["result"]["commit"][:8] in rep.stdout

    r = start(repo, "team", "resume", "--team", "loop")  # nothing left: says so
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to resume" in r.stdout


def test_after_ctrl_c_the_last_line_names_resume_which_finishes_the_team(tmp_path: Path) -> None:
    gate = tmp_path / "go"
    wait = f'while [ ! -e "{gate}" ]; do sleep 0.05; done; echo ok > "o-$OMX_TASK_ID"'
    repo = make_repo(tmp_path, ["bash", "-c", wait])
    plan = tmp_path / "plan.md"
    plan.write_text("- one\n- two\n- three (after #1)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
    env["OMX_HOME"] = str(tmp_path / "omx-home")
    leader = subprocess.Popen([OMX, "team", "start", "g", "--workers", "2", "--plan", str(plan), "--team", "cc"],
                              cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                              stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (repo / ".omx/state/team/cc/tasks").exists() or summary(repo, "cc")["counts"]["in_progress"] < 2:
            assert leader.poll() is None and time.monotonic() < deadline, "the team never got both tasks running"
            time.sleep(0.1)
        leader.send_signal(signal.SIGINT)
        out, err = leader.communicate(timeout=60)
    finally:
        if leader.poll() is None:
            leader.kill()
    assert leader.returncode == 1, out + err
    last = out.strip().splitlines()[-1]
    assert last == "3 tasks unfinished; resume: omx team resume --team cc", out

    # `start` on the same name points to `resume` instead of a bare "exists".
    again = start(repo, "team", "start", "g", "--team", "cc", "--plan", str(tmp_path / "no-such-plan.md"))
    assert again.returncode == 1, again.stderr  # said before any planning (the plan file is not even read)
    assert "team cc exists already" in again.stderr and "omx team resume --team cc" in again.stderr

    # worker-1 runs again by hand (started by its OMX_TEAM_WORKER): resume leaves it alone.
    manual = subprocess.Popen([OMX, "team", "worker"], cwd=repo, env={**env, "OMX_TEAM_WORKER": "cc/worker-1"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while summary(repo, "cc")["workers"][0]["state"] != "working":
            assert manual.poll() is None and time.monotonic() < deadline, "worker-1 never took a task"
            time.sleep(0.1)
        resume = subprocess.Popen([OMX, "team", "resume", "--team", "cc"], cwd=repo, env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        try:  # the gate opens once resume has started worker-2 (worker-1 cannot finish everything first)
            while summary(repo, "cc")["workers"][1]["state"] not in ("idle", "working"):
                assert resume.poll() is None and time.monotonic() < deadline, "resume never started worker-2"
                time.sleep(0.1)
            gate.touch()
            out, err = resume.communicate(timeout=60)
        finally:
            if resume.poll() is None:
                resume.kill()
        r = subprocess.CompletedProcess(resume.args, resume.returncode, out, err)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "restarting worker-2 (worker-1 running already)" in r.stdout
        assert "3 completed, 0 failed, 0 blocked, 0 unfinished" in r.stdout
        assert manual.poll() is None  # not ours to stop
    finally:
        manual.kill()
        manual.wait()


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@x"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def test_cleanup_removes_worktrees_and_merged_branches_keeps_unmerged_work_and_refuses_while_workers_run(
        tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ["bash", "-c", 'echo "$OMX_TASK_ID" > "t-$OMX_TASK_ID.txt"; echo ok'],
                     "integration:\n  verify: 'true'\n")
    plan = tmp_path / "plan.md"
    plan.write_text("- one\n- two\n")
    r = start(repo, "team", "start", "g", "--workers", "1", "--plan", str(plan), "--team", "cl")
    assert r.returncode == 0, r.stdout + r.stderr
    wt = sorted(p.name for p in (tmp_path / "wt").glob("*/cl/*"))
    assert wt == ["integration", "task-1", "task-2"]
    # A task branch with a commit nobody merged (work an agent left).
    extra = git(repo, "commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "unmerged work")
    git(repo, "update-ref", "refs/heads/omx/cl/task-9", extra)

    # A live worker of the team: cleanup refuses and changes nothing.
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
    worker = subprocess.Popen([OMX, "team", "worker", "--team", "cl", "--name", "worker-1"], cwd=repo, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while summary(repo, "cl")["workers"][0]["state"] != "idle":
            assert worker.poll() is None and time.monotonic() < deadline, "the worker never came up"
            time.sleep(0.1)
        r = start(repo, "team", "cleanup", "--team", "cl")
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"workers of team cl are running: worker-1 (pid {worker.pid})" in r.stderr
        assert "[worker_running]" in r.stderr
        assert sorted(p.name for p in (tmp_path / "wt").glob("*/cl/*")) == wt
        shut = start(repo, "team", "shutdown", "--team", "cl", "--json")
        assert shut.returncode == 0, shut.stdout + shut.stderr
        answer = json.loads(shut.stdout)
        assert answer["acknowledged"] == {"worker-1": "accept"}
        assert answer["wait_s"] == 30 and 0 <= answer["waited_s"] < 30  # what it waited, not what it allowed
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()

    r = start(repo, "team", "cleanup", "--team", "cl", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert sorted(Path(p).name for p in out["worktrees_removed"]) == wt
    assert list((tmp_path / "wt").glob("*/cl/*")) == []
    assert sorted((b["branch"], b["merged_into"]) for b in out["branches_deleted"]) == [
        ("omx/cl/task-1", "omx/cl/integration"), ("omx/cl/task-2", "omx/cl/integration")]
    assert [(b["branch"], b["commits"]) for b in out["branches_kept"]] == [("omx/cl/task-9", 1)]
    assert out["integration"]["deleted"] is False and "not landed" in out["integration"]["reason"]
    branches = git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/omx/").split()
    assert branches == ["omx/cl/integration", "omx/cl/task-9"]

    base = git(repo, "symbolic-ref", "--short", "HEAD")
    assert start(repo, "team", "land", "--team", "cl").returncode == 0
    r = start(repo, "team", "cleanup", "--team", "cl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"kept branch omx/cl/task-9: 1 commit: commits not merged into omx/cl/integration or {base}" in r.stdout
    assert f"deleted integration branch omx/cl/integration: landed in {base}" in r.stdout
    assert "`omx team api cleanup` deletes it" in r.stdout
    doctor = json.loads(start(repo, "doctor", "--json").stdout)
    assert not [c for c in doctor["checks"] if "integration" in c["name"] and not c["ok"]], doctor

    r = start(repo, "team", "cleanup", "--team", "cl", "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deleted branch omx/cl/task-9 (unmerged, --force)" in r.stdout
    assert git(repo, "for-each-ref", "refs/heads/omx/") == ""
    assert start(repo, "team", "status", "--team", "cl").returncode == 0  # the team's state is still there
