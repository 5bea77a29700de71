"""Integration: the cost of merging one finished task into its team's integration branch.

200 one-file tasks are merged by 4 worker processes at once, 50 each, two ways, in the same run. As in a
team, each task starts from the branch's tip as it is when the task is claimed (its commit is made then,
not timed), and is merged once it is done:

* **omx** — ``omx.engine.integration.integrate()``: ``merge-tree --write-tree`` + ``commit-tree`` +
  one ``update-ref`` transaction (branch and exactly-once marker), no checkout touched;
* **baseline** — a checkout-based ``git merge --no-ff`` of the same branch in one shared scratch
  worktree (which also commits and moves its branch).

Both sides run under the same benchmark lock (a flock, one merge at a time, as omx's own lock does), and
the cost of one task is the time from taking that lock to its merge being on the branch: the wait for
the other workers is not counted on either side. Rounds alternate omx / baseline twice.

Goals (the integration issue): median omx cost ≤ 0.5x the baseline's, and flat: the median of tasks
160-200 within 1.3x of tasks 10-50.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PY, Report, f_ms, f_ratio, median, parse_args, pct, temp_root

WORKERS = 4
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}, "GIT_CONFIG_NOSYSTEM": "1",
       "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "bench",
       "GIT_COMMITTER_EMAIL": "b@x"}


def git(repo: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(["git", "-C", str(repo), *args], input=stdin, capture_output=True, text=True,
                         env={**ENV, **(env or {})}, check=True)
    return out.stdout.strip()


def task_file(i: int, files: int) -> str:
    """Task ``i``'s new file: in one of the project's folders, as a task's change would be."""
    return f"src/pkg{i % max(1, files // 40):03d}/task-{i:04d}.txt"


def make_repo(base: Path, files: int) -> tuple[Path, str]:
    """A repository with ``files`` files on main, in folders of 40."""
    repo = base / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=ENV)
    for i in range(files):  # a project's shape: folders of 40 files, not one flat folder
        path = repo / "src" / f"pkg{i // 40:03d}" / f"mod{i % 40:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"line {i}\n" * 20)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    return repo, git(repo, "rev-parse", "main")


def task_commit(repo: Path, parent: str, i: int, files: int, index: Path) -> str:
    """Task ``i``'s work: one new file, committed on ``parent`` (plumbing: not what is measured)."""
    env = {"GIT_INDEX_FILE": str(index)}
    git(repo, "read-tree", parent, env=env)
    blob = git(repo, "hash-object", "-w", "--stdin", stdin=f"task {i}\n")
    git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{task_file(i, files)}", env=env)
    tree = git(repo, "write-tree", env=env)
    return git(repo, "commit-tree", tree, "-p", parent, "-m", f"task {i}")


def worker(mode: str, repo: Path, target: str, scratch: Path, lock_path: Path, seq_path: Path,
           tasks: list[int], files: int, out: Path) -> None:
    """Like a team worker: each task starts from the branch's tip as it is when the task is claimed,
    is committed (not timed), then merged under the lock (timed)."""
    from omx.engine.integration import IntegrationTarget, integrate

    samples = []
    tgt = IntegrationTarget(repo, target.replace("/", "-"), target, "main")  # a team per round
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    index = out.with_suffix(".index")
    for i in tasks:
        head = task_commit(repo, git(repo, "rev-parse", target), i, files, index)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            t0 = time.perf_counter_ns()
            if mode == "omx":
                r = integrate(tgt, f"task-{i}", head, f"omx: integrate task-{i}", author="bench")
                assert r.status == "merged", r
            else:
                subprocess.run(["git", "-C", str(scratch), "merge", "--no-ff", "--no-edit", "-q", "-m",
                                f"merge task-{i}", head], check=True, env=ENV, capture_output=True)
            cost = (time.perf_counter_ns() - t0) / 1e6
            seq = int(seq_path.read_text() or 0) if seq_path.exists() else 0
            seq_path.write_text(str(seq + 1))
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        samples.append((seq, cost))
    out.write_text(json.dumps(samples))


def run_round(base: Path, repo: Path, main: str, tasks: int, mode: str, n: int, files: int) -> list[float]:
    """Costs in merge order (the n-th merge onto the branch first)."""
    target = f"bench/{mode}-{n}"
    git(repo, "branch", target, main)
    scratch = base / f"scratch-{mode}-{n}"
    if mode == "baseline":
        git(repo, "worktree", "add", "-q", str(scratch), target)
    lock, seq = base / f"lock-{mode}-{n}", base / f"seq-{mode}-{n}"
    procs = []
    for w in range(WORKERS):
        out = base / f"out-{mode}-{n}-{w}.json"
        args = [PY, __file__, "--worker", mode, str(repo), target, str(scratch), str(lock), str(seq),
                json.dumps(list(range(w, tasks, WORKERS))), str(files), str(out)]
        procs.append((subprocess.Popen(args), out))
    samples: list[tuple[int, float]] = []
    for p, out in procs:
        if p.wait(timeout=1800) != 0:
            raise SystemExit(f"a {mode} worker failed")
        samples += [tuple(x) for x in json.loads(out.read_text())]  # type: ignore[misc]
    have = set(git(repo, "ls-tree", "-r", "--name-only", target).split())
    missing = [i for i in range(tasks) if task_file(i, files) not in have]
    if missing:
        raise SystemExit(f"{mode} round {n}: {len(missing)} merges lost")
    return [cost for _, cost in sorted(samples)]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _, _, mode, repo, target, scratch, lock, seq, tasks_json, files_s, out = sys.argv
        worker(mode, Path(repo), target, Path(scratch), Path(lock), Path(seq), json.loads(tasks_json), int(files_s),
               Path(out))
        return 0
    a = parse_args(__doc__.splitlines()[0], extra=[(["--files"], {"type": int, "default": None,
                                                                  "help": "files in the repository (default 1000)"})])
    tasks = 80 if a.quick else 200
    files = a.files or 1000
    rep = Report("integration", f"Integration: {tasks} one-file tasks from {WORKERS} workers, repo of {files} files",
                 a.quick)
    costs: dict[str, list[list[float]]] = {"omx": [], "baseline": []}
    with temp_root() as base:
        repo, main_sha = make_repo(base, files)
        for n in range(2):
            for mode in ("omx", "baseline"):
                costs[mode].append(run_round(base, repo, main_sha, tasks, mode, n, files))
    omx_all = [c for r in costs["omx"] for c in r]
    base_all = [c for r in costs["baseline"] for c in r]
    m_omx, m_base = median(omx_all), median(base_all)
    ratio = m_omx / m_base
    rep.goal("median cost per task (lock held → merge on the branch)", f_ms(m_omx), "≤ 0.5x", ratio <= 0.5,
             baseline=f"{f_ms(m_base)} (checkout-based git merge)", ratio=f_ratio(ratio))
    rep.info("p90 cost per task", f_ms(pct(omx_all, 90)), f_ms(pct(base_all, 90)), f_ratio(pct(omx_all, 90) /
                                                                                            pct(base_all, 90)))
    lo, hi = (10, 50) if not a.quick else (5, 20)
    early = median([c for r in costs["omx"] for c in r[lo - 1:hi]])
    late = median([c for r in costs["omx"] for c in r[tasks - (hi - lo) - 1:]])
    rep.goal(f"flat: median of the last {hi - lo + 1} tasks vs tasks {lo}-{hi}", f"{f_ms(late)} vs {f_ms(early)}",
             "≤ 1.3x", late / early <= 1.3, ratio=f_ratio(late / early))
    b_early = median([c for r in costs["baseline"] for c in r[lo - 1:hi]])
    b_late = median([c for r in costs["baseline"] for c in r[tasks - (hi - lo) - 1:]])
    rep.info("baseline: last vs early tasks", f"{f_ms(b_late)} vs {f_ms(b_early)}", ratio=f_ratio(b_late / b_early))
    for mode in ("omx", "baseline"):
        rep.info(f"{mode}: round medians", ", ".join(f_ms(median(r)) for r in costs[mode]))
    rep.notes.append(f"{tasks} tasks x 2 rounds per side, {WORKERS} worker processes per round, interleaved "
                     "omx / baseline; every round checked to hold all tasks' files")
    rep.data = {"omx_ms": costs["omx"], "baseline_ms": costs["baseline"]}
    return rep.emit(a.json)


if __name__ == "__main__":
    raise SystemExit(main())
