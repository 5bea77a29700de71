"""Chaos: a swarm of 200 ``command`` tasks while workers are SIGKILLed at random and restarted.

What must hold at the end: every task completed exactly once (one ``task_completed`` event, one merge
on the integration branch), every file of the state tree valid (``omx doctor``), no process left behind
by any worker that ever ran (nothing carries a dead worker's lifeline tag), and ``omx doctor`` clean.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from omx.engine.runtimes import lifeline
from tests.engine.worker_helpers import OMX, Rig, WorkerProc, bash, git, make_rig, start_worker, write_workflow

pytestmark = pytest.mark.slow

TASKS = 200
WORKERS = 4
KILLS = 14
AGENT = 'echo "$OMX_TASK_ID" > "f-$OMX_TASK_ID.txt"; sleep 0.0$((RANDOM % 5)); echo "task $OMX_TASK_ID"'


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = make_rig(tmp_path, workers=[f"worker-{i}" for i in range(1, WORKERS + 1)], lease_ms=5000)
    yield r
    r.close()


@pytest.mark.timeout(400)
def test_a_swarm_under_random_sigkills_completes_every_task_exactly_once(rig: Rig) -> None:
    rng = random.Random(20261207)
    write_workflow(rig, runtime={"kind": "command", "command": bash(AGENT)})
    ids = [rig.store.create_task(rig.team, f"file {i}").id for i in range(TASKS)]
    live: dict[str, WorkerProc] = {}
    tags: list[str] = []

    def start(name: str) -> None:
        proc = start_worker(rig, name, "--until-empty")
        live[name] = proc
        tag = lifeline.worker_tag(proc.pid)
        if tag:
            tags.append(tag)

    for i in range(1, WORKERS + 1):
        start(f"worker-{i}")
    kills = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        counts = rig.store.summary(rig.team)["counts"]
        done = counts["completed"]
        if counts["pending"] + counts["in_progress"] == 0:
            break
        time.sleep(rng.uniform(0.1, 0.5))
        if kills < KILLS and 0 < done < TASKS - 20:
            name = rng.choice(sorted(live))
            live[name].kill()  # SIGKILL, wherever it is: a claim, a git command, a merge, a report
            kills += 1
            start(name)
        for name, proc in list(live.items()):
            if proc.proc.poll() is not None and rig.store.summary(rig.team)["counts"]["completed"] < TASKS:
                start(name)  # exited early (drained while another held the last tasks): keep the swarm full
    for proc in live.values():
        assert proc.wait(120) == 0, proc.output()
    assert kills >= KILLS // 2, f"only {kills} kills happened: the swarm finished too fast to test anything"

    # Every task completed exactly once, by one report, with one merge.
    counts = rig.store.summary(rig.team)["counts"]
    left = [(t.id, t.status, t.error) for t in rig.store.list_tasks(rig.team).tasks if t.status != "completed"]
    assert counts["completed"] == TASKS, (counts, left)
    # The audit log: never two completions of one task. (A worker killed between a task's write and its
    # event's append loses that one line: the task file is the truth, and it says completed.)
    completed = Counter(e.task_id for e in rig.events("task_completed"))
    assert set(completed.values()) <= {1} and set(completed) <= set(ids)
    assert len(completed) >= TASKS - KILLS
    assert not rig.events("task_failed")
    merges = Counter(line.split(":", 2)[1].strip().removeprefix("integrate ")
                     for line in git(rig.repo, "log", "--first-parent", "--format=%s",
                                     "omx/alpha/integration").splitlines() if line.startswith("omx: integrate "))
    assert sorted(merges) == sorted(f"task-{t}" for t in ids) and set(merges.values()) == {1}
    files = set(git(rig.repo, "ls-tree", "--name-only", "omx/alpha/integration").split())
    assert {f"f-{t}.txt" for t in ids} <= files

    # Nothing left running: no process carries the tag of any worker that ever ran.
    def leftovers() -> list[int]:
        return [pid for tag in tags for pid in lifeline.processes_tagged(tag)]

    until = time.monotonic() + lifeline.KEEPER_GRACE_S + 10
    while leftovers() and time.monotonic() < until:
        time.sleep(0.1)
    assert leftovers() == []

    # Every state file valid, and the doctor content. A worker killed between a temp file's creation and
    # its rename leaves the temp file (the old file stays whole): doctor names it, --fix deletes it.
    def doctor(*args: str) -> dict[str, object]:
        out = subprocess.run([OMX, "doctor", "--root", str(rig.root), "--json", *args], capture_output=True,
                             text=True, env=rig.env, cwd=rig.repo, timeout=120)
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    first = doctor()
    assert [c for c in first["checks"] if not c["ok"] and c["level"] == "error"] == []  # type: ignore[index,union-attr]
    doctor("--fix")
    report = doctor()
    team = [c for c in report["checks"] if c["name"].startswith("team alpha")]  # type: ignore[union-attr]
    bad = [c for c in team if not c["ok"] and c["level"] in ("error", "warning")]
    assert report["ok"] and not bad, bad
