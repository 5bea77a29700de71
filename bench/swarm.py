"""Swarm: 8 `omx team worker` processes x 1000 tasks with a no-op `command` runtime, tasks per second.

Compared, in the same run, with the store's own claim + complete throughput (8 library processes
looping claim-next → transition, from bench/claim_throughput.py): the swarm's figure is what a real
worker adds on top of the store per task (spawn the no-op agent, check the checkout for changes,
heartbeat and status writes, events). Workers run in `repository` mode: the no-op agent changes
nothing, so there is no worktree to make. Goal (issue 4): swarm ≥ 0.5 x the store's throughput.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OMX, Report, bulk_create_tasks, f_ratio, noop_repo, parse_args, temp_root
from claim_throughput import library_run

TEAM = "swarm"


def swarm_run(base: Path, workers: int, per_worker: int) -> dict[str, float]:
    from omx.state.filestore import FileStore

    repo = noop_repo(base)
    root = base / "state"
    store = FileStore(root)
    names = [f"worker-{i}" for i in range(1, workers + 1)]
    store.create_team(TEAM, workers=names, lease_ms=60_000)
    bulk_create_tasks(store, TEAM, workers * per_worker)
    wenv = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
    wenv["OMX_HOME"] = str(base / "home")
    wenv["OMX_MACHINE_MAX_AGENTS"] = str(workers)
    t0 = time.monotonic()
    c0 = os.times()
    procs = [subprocess.Popen([OMX, "team", "worker", "--team", TEAM, "--name", w, "--root", str(root),
                               "--repo", str(repo), "--until-empty"], env=wenv,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for w in names]
    codes = [p.wait(timeout=3600) for p in procs]
    seconds = time.monotonic() - t0
    c1 = os.times()  # the workers and everything they ran (agents, git), once reaped
    cpu_s = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    s = store.summary(TEAM)
    if any(codes) or s["counts"]["completed"] != workers * per_worker:
        raise SystemExit(f"swarm did not complete every task: exits {codes}, counts {s['counts']}")
    return {"tasks": workers * per_worker, "seconds": seconds, "cpu_s": cpu_s}


def main() -> int:
    a = parse_args(__doc__.splitlines()[0])
    workers, per = (8, 100) if a.quick else (8, 1000)
    rep = Report("swarm", f"Swarm: {workers} workers x {per} tasks, no-op command runtime", a.quick)
    with temp_root() as base:
        store_run = library_run(base / "store", workers, per)
        sw = swarm_run(base / "swarm", workers, per)
    store_tps = store_run["tasks"] / store_run["seconds"]
    swarm_tps = sw["tasks"] / sw["seconds"]
    ratio = swarm_tps / store_tps
    rep.info("store: claim-next + complete, 8 library processes (baseline)", f"{store_tps:.0f} tasks/s")
    rep.info("swarm: 8 `omx team worker` processes (incl. their start-up)", f"{swarm_tps:.0f} tasks/s")
    store_cpu = (store_run.get("user_s", 0.0) + store_run.get("sys_s", 0.0)) / store_run["tasks"] * 1000
    swarm_cpu = sw["cpu_s"] / sw["tasks"] * 1000
    rep.info("CPU per task: store loop / swarm (workers + agents + git, start-up included)",
             f"{store_cpu:.1f} / {swarm_cpu:.1f} ms")
    rep.goal("swarm / store throughput", f_ratio(ratio), "≥ 0.50", ratio >= 0.5,
             baseline=f"{store_tps:.0f} tasks/s")
    rep.data = {"store": store_run, "swarm": sw}
    return rep.emit(a.json)


if __name__ == "__main__":
    sys.exit(main())
