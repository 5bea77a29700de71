"""The main job at this stage: a team of 3 on a generated sample repo, driven only through `omx team api`.

The leader creates the team and tasks (with dependencies and priorities); three worker processes —
each just a loop of `omx team api` calls, as a Codex session following the $worker skill would make —
ACK the leader, claim tasks, do the work (write a file in the sample repo), renew, and complete.
The leader follows the event log until the team drains, then prints the status table.

Run: .venv/bin/python scripts/api_demo.py [--workers N] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OMX = str(Path(sys.executable).parent / "omx")

TASKS = [
    ("Write the tokenizer", [], 5),
    ("Write the parser", [1], 4),
    ("Write the evaluator", [2], 3),
    ("Add a README section", [], 0),
    ("Add tests for the tokenizer", [1], 2),
    ("Add tests for the parser", [2], 2),
    ("Add a CLI entry point", [3], 1),
    ("Write the changelog", [], -1),
]


def api(root: Path, op: str, **payload: object) -> dict:
    out = subprocess.run([OMX, "team", "api", op, "--root", str(root), "--input", json.dumps(payload), "--json"],
                         capture_output=True, text=True, check=False)
    env = json.loads(out.stdout)
    if not env["ok"]:
        raise SystemExit(f"{op} failed: {env['error']}")
    return env["data"]


def worker(root: Path, team: str, name: str, repo: Path) -> int:
    api(root, "send-message", team_name=team, from_worker=name, to_worker="leader-fixed", body=f"ACK: {name} ready")
    api(root, "write-worker-status", team_name=team, worker=name, state="idle")
    for msg in api(root, "mailbox-list", team_name=team, worker=name)["messages"]:
        api(root, "mailbox-mark-delivered", team_name=team, worker=name, message_id=msg["message_id"])
    while True:
        got = api(root, "claim-next", team_name=team, worker=name, pid=os.getpid(), wait_ms=1500)
        if got["task"] is None:
            if got["drained"]:
                api(root, "write-worker-status", team_name=team, worker=name, state="done")
                return 0
            continue
        task, token = got["task"], got["claimToken"]
        api(root, "write-worker-status", team_name=team, worker=name, state="working", current_task_id=task["id"])
        out = repo / "work" / f"task-{task['id']}.md"  # the path comes from the id we own, never from task text
        out.parent.mkdir(exist_ok=True)
        out.write_text(f"# {task['subject']}\n\ndone by {name}\n")
        api(root, "renew-claim", team_name=team, task_id=task["id"], worker=name, claim_token=token)
        api(root, "transition-task-status", team_name=team, task_id=task["id"], worker=name, claim_token=token,
            to="completed", result={"summary": f"wrote {out.relative_to(repo)}", "files": [str(out.relative_to(repo))]})
        api(root, "write-worker-status", team_name=team, worker=name, state="idle")


def leader(workers: int, keep: bool) -> int:
    base = Path(tempfile.mkdtemp(prefix="omx-demo-"))
    repo = base / "sample-repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "README.md").write_text("# calc\nA tiny calculator, built by a team of agents.\n")
    root = repo / ".omx" / "state"
    team = "demo"
    print(f"sample repo: {repo}\nstate root:  {root}\n")
    names = [f"worker-{i}" for i in range(1, workers + 1)]
    api(root, "create-team", team_name=team, goal="Build a tiny calculator", workers=names, lease_ms=15_000)
    for subject, deps, prio in TASKS:
        api(root, "create-task", team_name=team, subject=subject, description=f"{subject}.", depends_on=deps,
            priority=prio)
    api(root, "broadcast", team_name=team, from_worker="leader-fixed", body="Claim with claim-next; ACK first.")
    t0 = time.monotonic()
    procs = [subprocess.Popen([sys.executable, __file__, "--as-worker", n, "--root", str(root), "--repo", str(repo)])
             for n in names]
    cursor = 0
    drained = False
    while not drained:
        page = api(root, "await-event", team_name=team, cursor=cursor, timeout_ms=2000,
                   types=["task_claimed", "task_completed", "task_failed", "message_sent"])
        cursor = page["cursor"]
        for ev in page["events"]:
            who = ev.get("worker", "")
            what = {"task_claimed": "claimed", "task_completed": "completed", "task_failed": "FAILED",
                    "message_sent": "sent a message"}[ev["type"]]
            task = f" task {ev['task_id']}" if ev.get("task_id") else ""
            print(f"{time.monotonic() - t0:6.2f}s  {who:<13} {what}{task}")
        drained = api(root, "get-summary", team_name=team)["drained"]
    codes = [p.wait(timeout=60) for p in procs]
    print()
    subprocess.run([OMX, "team", "status", "--team", team, "--root", str(root)], check=False)
    summary = api(root, "get-summary", team_name=team)
    ok = summary["counts"]["completed"] == len(TASKS) and not any(codes)
    print(f"\n{summary['counts']['completed']}/{len(TASKS)} tasks completed in {time.monotonic() - t0:.1f}s "
          f"by {workers} workers; files written: {len(list((repo / 'work').glob('*.md')))}")
    if not keep:
        shutil.rmtree(base)
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the sample repo and its state")
    ap.add_argument("--as-worker")
    ap.add_argument("--root", type=Path)
    ap.add_argument("--repo", type=Path)
    a = ap.parse_args()
    if a.as_worker:
        return worker(a.root, "demo", a.as_worker, a.repo)
    return leader(a.workers, a.keep)


if __name__ == "__main__":
    sys.exit(main())
