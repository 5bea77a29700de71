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
FLAKY = 'if [ "$OMX_TASK_ID" = 1 ] && [ ! -e "{mark}" ]; then touch "{mark}"; echo boom >&2; exit 3; fi; echo ok'


def api(repo: Path, op: str, data: dict) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    return start(repo, "team", "api", op, "--input", json.dumps(data), "--json")


def test_retry_sends_a_failed_task_back_and_resume_finishes_the_team(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ["bash", "-c", FLAKY.format(mark=tmp_path / "failed-once")])
    plan = tmp_path / "plan.md"
    plan.write_text("- first\n- second (after #1)\n")
    r = start(repo, "team", "start", "g", "--workers", "1", "--plan", str(plan), "--team", "loop")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "0 completed, 1 failed, 1 blocked" in r.stdout
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
    task = json.loads(api(repo, "read-task", {"team_name": "loop", "task_id": "1"}).stdout)["data"]["task"]
    assert task["attempts"] == 2 and task["status"] == "completed"

    r = start(repo, "team", "resume", "--team", "loop")  # nothing left: says so
    assert r.returncode == 0, r.stdout + r.stderr
    assert "nothing to resume" in r.stdout


def test_after_ctrl_c_the_last_line_names_resume_which_finishes_the_team(tmp_path: Path) -> None:
    gate = tmp_path / "go"
    repo = make_repo(tmp_path, ["bash", "-c", f'while [ ! -e "{gate}" ]; do sleep 0.05; done; echo ok > "o-$OMX_TASK_ID"'])
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
    again = start(repo, "team", "start", "g", "--team", "cc", "--planner", "heuristic")
    assert again.returncode == 1
    assert "team cc exists already" in again.stderr and "omx team resume --team cc" in again.stderr

    gate.touch()
    r = start(repo, "team", "resume", "--team", "cc")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restarting worker-1, worker-2" in r.stdout
    assert "3 completed, 0 failed, 0 blocked, 0 unfinished" in r.stdout
