"""Engine no-op: how fast one worker turns over tasks whose agent does nothing, and what an idle worker costs.

Throughput. ``omx team worker --until-empty`` runs N tasks (default 200) whose runtime is ``command:
["true"]``, in the default worktree mode (a ``git worktree`` per task) and in ``repository`` mode (no
worktree: the loop and the store alone). The baseline, in the same run, is a hand-written loop in this
process doing the same essential work per task with the same library calls — ``claim_next``,
``prepare_workspace``, run ``true``, ``commit_changes``, ``transition_task`` — and nothing else (no
threads, no lease renewal, no status, heartbeat, events or shutdown checks). The worker's rate is
taken from the tasks' own ``completed_at`` stamps after a warm-up of 10 tasks, so process start does
not count; the wall time of the whole process is shown too.

Idle. A worker on an empty team (default ``--poll-ms``, 60 s lease) is left alone for ``--idle-s``
seconds (default 10); its CPU time (``/proc/<pid>/stat`` utime+stime, children included) over that
span, and its resident memory (``/proc/<pid>/status`` VmRSS, VmHWM), against a ``python`` that has
imported the same modules and sleeps.

Goals: idle CPU < 1 % (issue); throughput >= 0.7x the hand-written loop (ours: the loop's own
book-keeping may cost at most 30 % on a no-op agent, where it is all there is).

    .venv/bin/python bench/engine_noop.py [--quick] [--json] [--tasks N] [--idle-s S]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import OMX, PY, Report, f_ratio, median, parse_args

IDLE_CPU_GOAL = 1.0  # percent of one CPU
THROUGHPUT_GOAL = 0.7  # x the hand-written loop
WARMUP_TASKS = 10
IMPORTS = "import omx.cli.app, omx.engine.team_worker, omx.engine.runtimes.command, jinja2.sandbox, yaml, portalocker"


def base_env(tmp: Path) -> dict[str, str]:
    gitconfig = tmp / "gitconfig"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMX_", "GIT_"))}
    env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", OMX_HOME=str(tmp / "omx-home"))
    return env


def fixture(d: Path, env: dict[str, str], tasks: int, mode: str = "task") -> tuple[Path, Any]:
    """A repository with a no-op WORKFLOW.md and a team ``bench`` with ``tasks`` pending tasks."""
    from _common import bulk_create_tasks

    from omx.state.filestore import FileStore

    repo = d / "repo"
    repo.mkdir(parents=True)
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "b"], ["config", "user.email", "b@b"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, env=env)
    front = {"runtime": {"kind": "command", "command": ["true"]},
             "worktree": {"mode": mode, "root": str(d / "worktrees")}}
    (repo / "WORKFLOW.md").write_text(f"---\n{json.dumps(front)}\n---\nTask {{{{ task.id }}}}\n")
    (repo / ".gitignore").write_text(".omx/\n")
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "first"], check=True, env=env)
    store = FileStore(d / "state")
    store.create_team("bench", workers=["worker-1"])
    if tasks:
        bulk_create_tasks(store, "bench", tasks, "noop")
    return repo, store


def worker_argv(repo: Path, store: Any, *extra: str) -> list[str]:
    return [OMX, "team", "worker", "--team", "bench", "--name", "worker-1", "--root", str(store.root),
            "--repo", str(repo), *extra]


def rate(stamps_s: list[float]) -> float:
    return (len(stamps_s) - 1) / max(1e-9, stamps_s[-1] - stamps_s[0])


def completion_rates(store: Any, n: int) -> tuple[float, float, float]:
    """Tasks per second from the tasks' own completion stamps, after the warm-up: all, first and last quarter."""
    from omx.clock import parse_iso

    stamps = sorted(parse_iso(store.read_task("bench", i).completed_at) / 1000 for i in range(1, n + 1))
    steady = stamps[WARMUP_TASKS:]
    q = max(2, len(steady) // 4)
    return rate(steady), rate(steady[:q]), rate(steady[-q:])


def run_worker(d: Path, env: dict[str, str], n: int, mode: str) -> tuple[tuple[float, float, float], float]:
    """((steady, first-quarter, last-quarter tasks/s), wall seconds of the process) for ``n`` no-op tasks."""
    repo, store = fixture(d, env, n, mode)
    t0 = time.perf_counter()
    proc = subprocess.run(worker_argv(repo, store, "--until-empty"), capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    counts = store.summary("bench")["counts"]
    if proc.returncode != 0 or counts["completed"] != n:
        raise RuntimeError(f"worker ({mode}): exit {proc.returncode}, {counts}: {proc.stderr[-1500:]}")
    return completion_rates(store, n), wall


def run_loop(d: Path, env: dict[str, str], n: int) -> float:
    """The hand-written floor: the same essential calls per task, in a plain loop; tasks/s after warm-up."""
    from omx.engine.settings import WorktreeSettings
    from omx.engine.workspaces import commit_changes, prepare_workspace

    repo, store = fixture(d, env, n)
    settings = WorktreeSettings.model_validate({"mode": "task", "root": str(d / "worktrees")})
    saved = dict(os.environ)
    os.environ.update(env)  # the same git configuration as the worker's
    try:
        stamps = []
        for _ in range(n):
            claim = store.claim_next("bench", "worker-1", pid=os.getpid())
            ws = prepare_workspace(repo, settings, "bench", f"task-{claim.task.id}")
            subprocess.run(["true"], cwd=ws.path, env=env, check=True)
            commit = commit_changes(ws, "omx: noop", "worker-1", "worker-1@omx.invalid")
            store.transition_task("bench", claim.task.id, "worker-1", claim.token, "completed",
                                  result={"commit": commit})
            stamps.append(time.perf_counter())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    steady = stamps[WARMUP_TASKS:]
    return (len(steady) - 1) / (steady[-1] - steady[0])


def cpu_and_memory(pid: int) -> tuple[float, int, int]:
    """(CPU seconds incl. reaped children, VmRSS kB, VmHWM kB) of ``pid`` from /proc."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    status = Path(f"/proc/{pid}/status").read_text()
    mem = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines() if line.startswith("Vm")}
    return ticks / os.sysconf("SC_CLK_TCK"), mem.get("VmRSS", 0), mem.get("VmHWM", 0)


def measure_idle(argv: list[str], env: dict[str, str], seconds: float, ready: Any) -> dict[str, float]:
    """Start ``argv``, wait until ``ready()``, then measure CPU% and memory over ``seconds``; stop it."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[:3]} did not get ready (exit {proc.poll()})")
            time.sleep(0.05)
        time.sleep(1.0)  # let start-up work (imports, first writes) finish before the window opens
        cpu0, _, _ = cpu_and_memory(proc.pid)
        t0 = time.monotonic()
        rss_samples = []
        while time.monotonic() - t0 < seconds:
            time.sleep(0.5)
            rss_samples.append(cpu_and_memory(proc.pid)[1])
        cpu1, rss, hwm = cpu_and_memory(proc.pid)
        wall = time.monotonic() - t0
        threads = int(next(line.split()[1] for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                           if line.startswith("Threads:")))
        return {"cpu_pct": 100 * (cpu1 - cpu0) / wall, "rss_kb": median(rss_samples), "rss_last_kb": rss,
                "hwm_kb": hwm, "threads": threads, "window_s": wall}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], extra=[
        (("--tasks",), {"type": int, "default": None, "help": "no-op tasks per throughput run (default 200)"}),
        (("--idle-s",), {"type": float, "default": None, "help": "idle measurement window (default 10 s)"}),
    ])
    n = args.tasks or (60 if args.quick else 200)
    idle_s = args.idle_s or (5.0 if args.quick else 10.0)
    rep = Report("engine_noop", f"Engine no-op: one worker's turnover of {n} no-op tasks, and an idle worker",
                 args.quick)
    tmp = Path(tempfile.mkdtemp(prefix="omx-bench-noop-"))
    try:
        env = base_env(tmp)
        loop_rate = run_loop(tmp / "loop", env, n)
        (task_rate, task_first, task_last), task_wall = run_worker(tmp / "task-mode", env, n, "task")
        (repo_rate, repo_first, repo_last), repo_wall = run_worker(tmp / "repo-mode", env, n, "repository")
        loop_rate_2 = run_loop(tmp / "loop-2", env, n)  # again, after: drift on a shared machine shows here
        floor = median([loop_rate, loop_rate_2])

        repo, store = fixture(tmp / "idle", env, 0)
        mailbox = store.paths("bench").mailbox("leader-fixed")
        idle = measure_idle(worker_argv(repo, store), env, idle_s, lambda: any(mailbox.iterdir()))
        sleeper = measure_idle([PY, "-c", f"{IMPORTS}; import time; time.sleep(600)"], env, min(idle_s, 5.0),
                               lambda: True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    rep.goal(f"worker, worktree per task: tasks/s (steady, after {WARMUP_TASKS})", f"{task_rate:.1f}/s",
             f">= {THROUGHPUT_GOAL}x loop", task_rate / floor >= THROUGHPUT_GOAL, f"{floor:.1f}/s",
             f_ratio(task_rate / floor))
    rep.info("  the same, whole process (start to exit)", f"{n / task_wall:.1f}/s ({task_wall:.1f} s)")
    rep.info("  first quarter / last quarter (worktrees accumulate)", f"{task_first:.1f}/s / {task_last:.1f}/s")
    rep.info("worker, repository mode (no worktree): tasks/s", f"{repo_rate:.1f}/s", f"{floor:.1f}/s",
             f_ratio(repo_rate / floor))
    rep.info("  the same, whole process (start to exit)", f"{n / repo_wall:.1f}/s ({repo_wall:.1f} s)")
    rep.info("  first quarter / last quarter", f"{repo_first:.1f}/s / {repo_last:.1f}/s")
    rep.info("hand-written loop, before / after the workers", f"{loop_rate:.1f}/s / {loop_rate_2:.1f}/s")
    rep.goal(f"idle worker CPU over {idle['window_s']:.0f} s", f"{idle['cpu_pct']:.2f} %",
             f"< {IDLE_CPU_GOAL} %", idle["cpu_pct"] < IDLE_CPU_GOAL, f"{sleeper['cpu_pct']:.2f} %")
    rep.info("idle worker RSS (median; peak)", f"{idle['rss_kb'] / 1024:.1f} MB; {idle['hwm_kb'] / 1024:.1f} MB",
             f"{sleeper['rss_kb'] / 1024:.1f} MB", f_ratio(idle["rss_kb"] / sleeper["rss_kb"]))
    rep.info("idle worker threads", str(idle["threads"]), str(sleeper["threads"]))
    rep.notes.append("baselines: the hand-written loop (median of a run before and one after the workers); for "
                     "idle, a python that imported the same modules and sleeps")
    rep.notes.append("idle worker: empty team, default --poll-ms (1000) and lease (60 s); CPU includes reaped "
                     "children; the window opens 1 s after the startup ACK")
    rep.data = {
        "n": n, "loop_rates": [loop_rate, loop_rate_2],
        "task_mode": {"rate": task_rate, "first": task_first, "last": task_last, "wall": task_wall},
        "repository_mode": {"rate": repo_rate, "first": repo_first, "last": repo_last, "wall": repo_wall},
        "idle": idle, "sleeper": sleeper,
    }
    return rep.emit(args.json)


if __name__ == "__main__":
    sys.exit(main())
