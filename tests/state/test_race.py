"""Races between real processes on one state root, checked by an invariant checker over the final state.

Every test starts its workers behind a barrier (each writes a ready-file, then waits for a go-file),
so they really do hit the store at the same time, and every worker logs what it saw to its own file.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from omx.state.filestore import FileStore
from tests.state.invariants import (
    assert_ok,
    check_drained_run,
    event_lines,
    index_leftovers,
    read_logs,
    task_files,
    temp_files,
)
from tests.state.race_worker import OMX_BIN

if TYPE_CHECKING:
    from tests.state.conftest import Children

N_PROCS = 8
N_LIB_TASKS = 300
# The 300 tasks through the CLI too: ~600 `omx team api` processes (about 0.15 s of CPU each),
# so about a minute on two quiet cores; the timeout leaves room for a loaded machine.
N_CLI_TASKS = 300
WORKERS = [f"worker-{i}" for i in range(1, N_PROCS + 1)]


def _team_with_tasks(root: Path, n: int) -> FileStore:
    store = FileStore(root)
    # A lease far longer than the run: nothing may expire, so each task must be claimed exactly once.
    store.create_team("race", goal="race", workers=WORKERS, lease_ms=3_600_000)
    for i in range(n):
        store.create_task("race", f"task {i + 1}")
    return store


def _max_in_flight(records: list[dict[str, Any]]) -> int:
    """The most store calls (claim or complete) in progress at one instant, across all processes."""
    edges = []
    for r in records:
        if r["op"] in ("claim", "complete"):
            edges += [(r["t_call_ns"], 1), (r["t_ret_ns"], -1)]
    edges.sort(key=lambda e: (e[0], e[1]))
    best = cur = 0
    for _, d in edges:
        cur += d
        best = max(best, cur)
    return best


def _race(root: Path, children: Children, via: str, n_tasks: int, timeout: float) -> list[dict[str, Any]]:
    _team_with_tasks(root, n_tasks)
    run = children.dir
    go = run / "go"
    ready, logs, procs = [], [], []
    for i, worker in enumerate(WORKERS):
        ready.append(run / f"ready-{i}")
        logs.append(run / f"log-{i}.jsonl")
        procs.append(children.spawn("loop", {
            "root": str(root), "team": "race", "worker": worker, "via": via, "omx": OMX_BIN,
            "ready": str(ready[-1]), "go": str(go), "log": str(logs[-1]),
        }))
    children.gate(ready, go)
    t0 = time.monotonic()
    children.wait_all(procs, timeout)
    elapsed = time.monotonic() - t0
    records = read_logs(logs)
    assert_ok(check_drained_run(root, "race", records, n_tasks=n_tasks))

    # The run must really have been a race, or the invariants above prove nothing.
    pids = {r["pid"] for r in records if r["op"] == "complete"}
    in_flight = _max_in_flight(records)
    calls = sorted((r["t_ret_ns"] - r["t_call_ns"]) / 1e6 for r in records if r["op"] in ("claim", "complete"))
    print(f"\n{via} race: {n_tasks} tasks, {N_PROCS} processes, {elapsed:.1f}s; "
          f"{len(pids)} processes completed tasks; up to {in_flight} calls in flight at once; "
          f"call latency median {calls[len(calls) // 2]:.0f} ms, p95 {calls[len(calls) * 95 // 100]:.0f} ms")
    assert len(pids) >= 2, f"only {pids} completed tasks: the workers never ran side by side"
    assert in_flight >= 2, "no two calls ever ran at the same moment: the run was not concurrent"
    return records


@pytest.mark.timeout(180)
def test_library_race_every_task_completed_exactly_once(tmp_path: Path, children: Children) -> None:
    """8 processes run claim-next → complete through the library over 300 tasks: no double claims."""
    _race(tmp_path / "state", children, "lib", N_LIB_TASKS, timeout=150)


@pytest.mark.timeout(600)
def test_cli_race_every_task_completed_exactly_once(tmp_path: Path, children: Children) -> None:
    """The same race through the installed ``omx team api`` (one process per call)."""
    _race(tmp_path / "state", children, "cli", N_CLI_TASKS, timeout=560)


def test_concurrent_creators_get_unique_contiguous_ids(
    tmp_path: Path, children: Children, omx_api: Callable[..., tuple[int, dict[str, Any]]]
) -> None:
    """8 processes create tasks at once (6 through the library, 2 through the CLI): ids 1..N, none reused."""
    root = tmp_path / "state"
    FileStore(root).create_team("mint", workers=["worker-1"], lease_ms=60_000)
    plan = [("lib", 30)] * 6 + [("cli", 10)] * 2
    n = sum(count for _, count in plan)
    run = children.dir
    go = run / "go"
    ready, logs, procs = [], [], []
    for i, (via, count) in enumerate(plan):
        ready.append(run / f"ready-{i}")
        logs.append(run / f"log-{i}.jsonl")
        procs.append(children.spawn("create", {
            "root": str(root), "team": "mint", "tag": f"creator{i}", "count": count, "via": via, "omx": OMX_BIN,
            "ready": str(ready[-1]), "go": str(go), "log": str(logs[-1]),
        }))
    children.gate(ready, go)
    children.wait_all(procs, timeout=90)

    per_log = [read_logs([log]) for log in logs]
    records = [r for recs in per_log for r in recs]
    assert [r for r in records if r["op"] != "create"] == []
    ids = [int(r["task"]) for r in records]
    assert len(ids) == n
    assert sorted(ids) == list(range(1, n + 1)), "ids must be unique and contiguous"
    for i, recs in enumerate(per_log):
        own = [int(r["task"]) for r in recs]
        assert own == sorted(own), f"creator {i} saw ids go backwards: {own}"
        assert len(own) == plan[i][1]

    # Each id's file holds what the process that was given that id wrote: no allocation was shared.
    tasks, bad = task_files(root, "mint")
    assert bad == []
    assert {tid: t["subject"] for tid, t in tasks.items()} == {r["task"]: r["subject"] for r in records}
    assert all(t["version"] == 1 and t["status"] == "pending" for t in tasks.values())
    events, bad = event_lines(root, "mint")
    assert bad == []
    created = sorted(int(e["task_id"]) for e in events if e["type"] == "task_created")
    assert created == list(range(1, n + 1))
    assert temp_files(root) == []
    ready_markers = [f for f in (root / "team" / "mint" / "index" / "ready").rglob("*") if f.is_file()]
    assert len(ready_markers) == n

    code, env = omx_api(root, "read-config", team_name="mint")
    assert code == 0
    assert env["data"]["config"]["next_task_id"] == n + 1
    code, env = omx_api(root, "create-task", team_name="mint", subject="one more")
    assert (code, env["data"]["task"]["id"]) == (0, str(n + 1)), "the next id follows on, never reusing one"


@pytest.mark.timeout(60)
def test_renewing_worker_keeps_its_task_while_others_hammer(tmp_path: Path, children: Children) -> None:
    """A worker renewing every lease/3 keeps its task for 3 leases against 4 processes trying to take it."""
    root = tmp_path / "state"
    # A 3 s lease: a renewal (a durable write) may be held up by a few hundred ms on a loaded machine,
    # and only a missed lease — not this test's machine — should fail it (600 ms flaked under load; with
    # 1.2 s, gaps of 0.9 s between renewals were seen with two busy loops on two cores).
    lease_ms, periods = 3_000, 3
    store = FileStore(root)
    store.create_team("keep", workers=["holder", *(f"hammer-{i}" for i in range(4))], lease_ms=lease_ms)
    store.create_task("keep", "long job")
    run = children.dir
    go, stop = run / "go", run / "stop"
    ready, logs, hammers = [], [], []
    for i in range(4):
        ready.append(run / f"ready-{i}")
        logs.append(run / f"hammer-{i}.jsonl")
        hammers.append(children.spawn("hammer", {
            "root": str(root), "team": "keep", "worker": f"hammer-{i}", "task": "1",
            "ready": str(ready[-1]), "go": str(go), "stop": str(stop), "log": str(logs[-1]),
        }))
    children.gate(ready, None)  # hammers imported and waiting: the renewer's claim lets them loose
    holder_log = run / "holder.jsonl"
    holder = children.spawn("renew", {
        "root": str(root), "team": "keep", "worker": "holder", "task": "1", "renew_ms": lease_ms // 3,
        "hold_ms": periods * lease_ms, "go": str(go), "stop": str(stop), "log": str(holder_log),
    })
    children.wait_all([holder, *hammers], timeout=45)

    mine = read_logs([holder_log])
    assert [r for r in mine if r["op"] == "error"] == [], f"the live holder lost its task: {mine}"
    claim, renews, done = mine[0], [r for r in mine if r["op"] == "renew"], mine[-1]
    assert claim["op"] == "claim"
    assert done["op"] == "complete"
    assert done["status"] == "completed"
    held_ms = (done["t_call_ns"] - claim["t_ret_ns"]) / 1e6
    assert held_ms >= periods * lease_ms, f"held only {held_ms:.0f} ms"
    assert len(renews) >= periods * 3 - 1
    untils = [r["leased_until"] for r in renews]
    assert untils == sorted(untils), "each renewal pushes the lease further out"
    gaps = [(b["t_ret_ns"] - a["t_ret_ns"]) / 1e6 for a, b in itertools.pairwise(renews)]

    theirs = read_logs(logs)
    stolen = [r for r in theirs if r["op"] == "claim"]
    assert stolen == [], f"another worker took the task from its live holder: {stolen}"
    assert [r for r in theirs if r["op"] == "error"] == []
    attempts = sum(r["attempts"] for r in theirs if r["op"] == "summary")
    conflicts = sum(r["conflicts"] for r in theirs if r["op"] == "summary")
    print(f"\nrenewer held {held_ms:.0f} ms ({held_ms / lease_ms:.1f} leases), {len(renews)} renewals, "
          f"max gap {max(gaps):.0f} ms; hammers made {attempts} attempts ({conflicts} refused claim-task)")
    assert attempts >= 40, f"the hammers barely ran ({attempts} attempts): nothing was tested"

    task = store.read_task("keep", "1")
    assert (task.status, task.owner, task.attempts) == ("completed", "holder", 1)
    assert task.version == 1 + 1 + len(renews) + 1  # create, claim, each renewal, complete
    events, bad = event_lines(root, "keep")
    assert bad == []
    kinds = [e["type"] for e in events if e.get("task_id") == "1"]
    assert kinds == ["task_created", "task_claimed", *["task_renewed"] * len(renews), "task_completed"]
    assert temp_files(root) == []
    assert index_leftovers(root, "keep") == []
