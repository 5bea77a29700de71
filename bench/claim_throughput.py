"""Claim throughput: 8 processes draining a team with claim-next → complete, through the library and the CLI.

Goal (issue): library throughput ≥ 50 % of the bare limit measured in the same run. The bare limit is
8 processes each writing a 1 KB file durably in a loop (temp file, write, fsync, ``os.replace`` — what
``omx.state.atomic.write_bytes`` does), in writes/s, divided by the durable writes one task needs:

* claim (``ClaimOps._claim_locked``): ``_commit`` → ``_save_task`` → ``atomic.write_json`` →
  ``write_bytes`` (temp file, fsync, ``os.replace``): 1 fsync'd write;
* complete (``ClaimOps.transition_task``): ``_commit`` → ``_save_task``: 1 fsync'd write.

Markers (``_link``/``_touch``/``_unlink``), the event log append and the lock files are not fsync'd
(nor is the directory after ``os.replace``, in omx and in the baseline alike), so a task needs 2
durable writes.
The benchmark also counts ``os.fsync`` calls over a small in-process run and prints the number.

The disk's rate drifts with other people's work on a shared machine, so the bare limit is the median
of four bursts, two just before the library run and two just after.

Each library process loops ``claim_next(pid=os.getpid())`` → ``transition_task(..., "completed")`` until
``claim_next`` returns None; all start on a barrier. Afterwards every task must be completed, claimed
exactly once. The CLI run does the same with ``omx team api claim-next`` / ``transition-task-status``
as fresh processes (8 loops), against 8 loops of the interpreter-import floor
(``python -c "import pydantic, filelock"``, 2 per task).

    .venv/bin/python bench/claim_throughput.py [--quick] [--json] [--procs 8] [--tasks-per-proc 1000]
                                               [--cli-tasks-per-proc 500] [--bare-seconds 3]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import resource
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import PY, Report, bulk_create_tasks, cli, f_ratio, median, parse_args, temp_root

GOAL_FRACTION = 0.5
DURABLE_WRITES_PER_TASK = 2
TEAM = "bench"


# --- the bare limit -----------------------------------------------------------------------------


def _bare_writer(d: str, i: int, seconds: float, barrier: Any, out: Any) -> None:
    target = os.path.join(d, f"w{i}.json")
    data = os.urandom(512).hex().encode()  # 1 KB
    barrier.wait()
    t0 = time.perf_counter()
    deadline = t0 + seconds
    n = 0
    while True:
        tmp = os.path.join(d, f".w{i}.json.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        n += 1
        if time.perf_counter() >= deadline:
            break
    out.put((n, t0, time.perf_counter()))


def bare_limit(root: Path, procs: int, seconds: float) -> float:
    """Durable 1 KB replace-writes per second, summed over ``procs`` processes."""
    ctx = mp.get_context("fork")
    d = root / f"bare-{secrets.token_hex(3)}"
    d.mkdir()
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=_bare_writer, args=(str(d), i, seconds, barrier, out)) for i in range(procs)]
    for p in ps:
        p.start()
    res = [out.get() for _ in ps]
    for p in ps:
        p.join()
    n = sum(r[0] for r in res)
    span = max(r[2] for r in res) - min(r[1] for r in res)
    return n / span


# --- the library --------------------------------------------------------------------------------


def _lib_worker(root: str, worker: str, barrier: Any, out: Any) -> None:
    from omx.state.filestore import FileStore

    store = FileStore(root)
    pid = os.getpid()
    done: list[str] = []
    barrier.wait()
    t0 = time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    while True:
        r = store.claim_next(TEAM, worker, pid=pid)
        if r is None:
            break
        store.transition_task(TEAM, r.task.id, worker, r.token, "completed")
        done.append(r.task.id)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime)
    out.put((worker, done, t0, time.perf_counter(), cpu))


def library_run(root: Path, procs: int, per_proc: int) -> dict[str, Any]:
    from omx.state.filestore import FileStore

    store = FileStore(root)
    workers = [f"worker-{i}" for i in range(1, procs + 1)]
    store.create_team(TEAM, workers=workers, lease_ms=3_600_000)
    ids = bulk_create_tasks(store, TEAM, procs * per_proc)
    _make_lock_files(store, ids)
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=_lib_worker, args=(str(root), w, barrier, out)) for w in workers]
    for p in ps:
        p.start()
    res = [out.get() for _ in ps]
    for p in ps:
        p.join()
    span = max(r[3] for r in res) - min(r[2] for r in res)
    claimed = [tid for r in res for tid in r[1]]
    _check_drained(store, ids, claimed)
    return {"tasks": len(ids), "seconds": span, "per_worker": {r[0]: len(r[1]) for r in res},
            "user_s": sum(r[4][0] for r in res), "sys_s": sum(r[4][1] for r in res)}


def _make_lock_files(store: Any, ids: list[str]) -> None:
    """Give each task its lock file, as ``create_task`` does (it writes a new task under that lock).

    ``bulk_create_tasks`` writes tasks without taking their locks, so without this every first claim
    would also create a file that a task made by ``create_task`` already has: an inode allocation,
    which on this machine's ext4 (no journal) costs about as much CPU as a durable write.
    """
    p = store.paths(TEAM)
    for tid in ids:
        os.close(os.open(p.task_lock(tid), os.O_RDWR | os.O_CREAT, 0o644))
    os.sync()


def _check_drained(store: Any, ids: list[str], claimed: list[str]) -> None:
    """The invariant: every task completed, each claimed (and completed) by exactly one worker."""
    if sorted(claimed, key=int) != sorted(ids, key=int):
        dup = len(claimed) - len(set(claimed))
        raise AssertionError(f"claimed {len(claimed)} tasks ({dup} twice) for {len(ids)} created")
    listing = store.list_tasks(TEAM)
    bad = [t.id for t in listing.tasks if t.status != "completed" or t.attempts != 1]
    if bad or listing.corrupt or len(listing.tasks) != len(ids):
        raise AssertionError(f"not drained cleanly: {bad[:10]} {listing.corrupt[:3]}")


def count_fsyncs_per_task(root: Path, n: int = 20) -> float:
    """Run ``n`` claim-next + complete cycles in-process and count ``os.fsync`` calls."""
    from omx.state.filestore import FileStore

    store = FileStore(root / "fsync-count")
    store.create_team(TEAM, workers=["worker-1"], lease_ms=3_600_000)
    bulk_create_tasks(store, TEAM, n)
    real, calls = os.fsync, [0]

    def counting(fd: int) -> None:
        calls[0] += 1
        real(fd)

    os.fsync = counting
    try:
        done = 0
        while (r := store.claim_next(TEAM, "worker-1", pid=os.getpid())) is not None:
            store.transition_task(TEAM, r.task.id, "worker-1", r.token, "completed")
            done += 1
    finally:
        os.fsync = real
    assert done == n
    return calls[0] / n


# --- the CLI ------------------------------------------------------------------------------------


def _cli_loop(root: Path, worker: str) -> list[str]:
    done = []
    while True:
        env, _ = cli("claim-next", {"team_name": TEAM, "worker": worker}, root)
        task = env["data"]["task"]
        if task is None:
            return done
        cli("transition-task-status", {"team_name": TEAM, "task_id": task["id"], "worker": worker,
                                       "claim_token": env["data"]["claimToken"], "to": "completed"}, root)
        done.append(task["id"])


def cli_run(root: Path, procs: int, per_proc: int) -> dict[str, Any]:
    from omx.state.filestore import FileStore

    store = FileStore(root)
    workers = [f"worker-{i}" for i in range(1, procs + 1)]
    cli("create-team", {"team_name": TEAM, "workers": workers, "lease_ms": 3_600_000}, root)
    ids = bulk_create_tasks(store, TEAM, procs * per_proc)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(procs) as ex:  # each thread drives a loop of fresh omx processes
        res = list(ex.map(lambda w: _cli_loop(root, w), workers))
    span = time.perf_counter() - t0
    _check_drained(store, ids, [t for r in res for t in r])
    return {"tasks": len(ids), "seconds": span}


def floor_processes_per_s(procs: int, per_loop: int) -> float:
    """``python -c "import pydantic, filelock"`` started back to back by ``procs`` loops: processes/s."""
    argv = [PY, "-c", "import pydantic, filelock"]

    def loop(_: int) -> None:
        for _ in range(per_loop):
            subprocess.run(argv, check=True)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(procs) as ex:
        list(ex.map(loop, range(procs)))
    return procs * per_loop / (time.perf_counter() - t0)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], extra=[
        (("--procs",), {"type": int, "default": 8}),
        (("--tasks-per-proc",), {"type": int, "default": None, "help": "library run (default 1000, quick 75)"}),
        (("--cli-tasks-per-proc",), {"type": int, "default": None, "help": "CLI run (default 500, quick 5)"}),
        (("--bare-seconds",), {"type": float, "default": None,
                                "help": "bare-limit time before and after the run (default 3, quick 1)"}),
    ])
    procs = args.procs
    per_proc = args.tasks_per_proc or (75 if args.quick else 1000)
    cli_per_proc = args.cli_tasks_per_proc if args.cli_tasks_per_proc is not None else (5 if args.quick else 500)
    bare_s = args.bare_seconds or (1.0 if args.quick else 3.0)
    rep = Report("claim_throughput", f"Claim throughput: {procs} processes, claim-next → complete", args.quick)
    with temp_root() as root:
        fsyncs = count_fsyncs_per_task(root)
        # the disk's rate drifts with other people's work: two bursts just before, two just after
        bare_runs = [bare_limit(root, procs, bare_s / 2) for _ in range(2)]
        lib = library_run(root / "lib", procs, per_proc)
        bare_runs += [bare_limit(root, procs, bare_s / 2) for _ in range(2)]
        cli_res = floor = None
        if cli_per_proc:
            # the floor's loops start as many processes as the CLI run, half just before it, half just after
            floor_runs = min(cli_per_proc, 25)
            floor_before = floor_processes_per_s(procs, floor_runs)
            cli_res = cli_run(root / "cli", procs, cli_per_proc)
            floor_after = floor_processes_per_s(procs, floor_runs)
            floor = (floor_before + floor_after) / 2
    bare = median(bare_runs)
    limit = bare / DURABLE_WRITES_PER_TASK
    lib_rate = lib["tasks"] / lib["seconds"]
    rep.info(f"bare durable 1 KB writes, {procs} processes (2 bursts before, 2 after)",
             " / ".join(f"{x:.0f}" for x in bare_runs) + " writes/s")
    rep.info("durable writes per task (counted in code / measured fsyncs)",
             f"{DURABLE_WRITES_PER_TASK} / {fsyncs:.2f}")
    rep.info("bare limit = median writes/s ÷ 2", f"{limit:.0f} tasks/s")
    rep.goal(f"library: {procs}x{per_proc} tasks, claim-next + complete", f"{lib_rate:.0f} tasks/s "
             f"({lib['tasks']} in {lib['seconds']:.1f} s)", f"≥ {GOAL_FRACTION:.0%} of bare limit",
             lib_rate >= GOAL_FRACTION * limit, f"{limit:.0f} tasks/s", f"{lib_rate / limit:.0%}")
    user_ms, sys_ms = (lib[k] * 1000 / lib["tasks"] for k in ("user_s", "sys_s"))
    cores = os.cpu_count() or 1
    rep.info("library CPU per task, all workers (user + sys)", f"{user_ms:.2f} + {sys_ms:.2f} ms")
    rep.info(f"library CPU ceiling on {cores} cores (if nothing else ran)",
             f"{cores * 1000 / (user_ms + sys_ms):.0f} tasks/s", f"{limit:.0f} tasks/s",
             f"{cores * 1000 / (user_ms + sys_ms) / limit:.0%}")
    rep.data = {"bare_writes_per_s": bare_runs, "fsyncs_per_task": fsyncs, "library": lib}
    if cli_res is not None and floor is not None:
        cli_rate = cli_res["tasks"] / cli_res["seconds"]
        floor_tasks = floor / 2
        rep.info(f"CLI: {procs}x{cli_per_proc} tasks, claim-next + transition-task-status (fresh processes)",
                 f"{cli_rate:.1f} tasks/s ({cli_res['tasks']} in {cli_res['seconds']:.1f} s)",
                 f"{floor_tasks:.1f} tasks/s", f_ratio(cli_rate / floor_tasks))
        rep.notes.append(f"CLI baseline: {procs} loops x {floor_runs} runs of `python -c 'import pydantic, filelock'`"
                         f" just before and just after: {floor_before:.1f} / {floor_after:.1f} processes/s; "
                         f"mean ÷ 2 processes per task")
        rep.data["cli"] = {**cli_res, "floor_processes_per_s": floor}
    rep.notes.append("tasks created with the store's own writer and indexer, fsync skipped, and each given its "
                     "lock file as create_task does (set-up, not measured)")
    rep.notes.append(f"per-worker counts: {lib['per_worker']}")
    return rep.emit(args.json)


if __name__ == "__main__":
    sys.exit(main())
