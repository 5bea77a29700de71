"""What every benchmark in ``bench/`` shares: arguments, statistics, fixtures, the CLI runner, the report.

Benchmarks are programs, not tests (STYLE.md habit 15). Each one measures omx and a baseline in the
same run — this machine is shared and noisy, so an absolute number from another run means little —
and prints a table (``--json``: one JSON object) ending in PASS/FAIL against the goal from the issue.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
if importlib.util.find_spec("omx") is None:  # not installed: use the checkout (PYTHONPATH still wins)
    sys.path.append(str(REPO))

PY = sys.executable
OMX = str(Path(PY).parent / "omx")


def parse_args(description: str, argv: Sequence[str] | None = None,
               extra: Sequence[tuple[Sequence[str], dict[str, Any]]] = ()) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="fewer samples / smaller workloads (for run_all --quick)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    for flags, kw in extra:
        ap.add_argument(*flags, **kw)
    return ap.parse_args(argv)


# --- statistics -----------------------------------------------------------------------------------


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pct(xs: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100), nearest-rank on the sorted samples."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


def ms(ns: float) -> float:
    return ns / 1e6


# --- fixtures -------------------------------------------------------------------------------------


@contextlib.contextmanager
def temp_root() -> Iterator[Path]:
    """A fresh state root on the same filesystem omx normally uses (tmp is the repo's disk here)."""
    with tempfile.TemporaryDirectory(prefix="omx-bench-") as d:
        yield Path(d)


@contextlib.contextmanager
def no_fsync() -> Iterator[None]:
    """Skip fsync while building fixtures (durability of set-up data is not what is measured).

    ``omx.state.atomic`` calls ``os.fsync``; replacing it on the ``os`` module for the duration of the
    block is enough. ``os.sync()`` at the end puts everything on disk before measuring starts.
    """
    real = os.fsync
    os.fsync = lambda fd: None
    try:
        yield
    finally:
        os.fsync = real
        os.sync()


def bulk_create_tasks(store: Any, team: str, n: int, prefix: str = "task") -> list[str]:
    """Create ``n`` pending tasks quickly, through the store's own code, without fsync.

    Uses the store's own task writer and marker indexer (``_commit``, or ``_save_task`` + ``_reindex``
    in older stores) under the team lock, and bumps ``next_task_id`` once: files, markers and config
    and lock files are what ``create_task`` writes, minus the per-task config rewrite, the
    ``task_created`` event and fsync. Falls back to ``create_task`` (fsync still skipped) if neither internal exists.
    """
    from omx.models import Task

    p = store.paths(team)
    commit = getattr(store, "_commit", None)  # write + markers, in the store's crash-safe order
    if commit is None and not (hasattr(store, "_save_task") and hasattr(store, "_reindex")):
        with no_fsync():
            return [store.create_task(team, f"{prefix} {i}").id for i in range(n)]
    from omx.state import atomic
    from omx.state.locks import locked

    ids: list[str] = []
    with no_fsync(), locked(p.team_lock):
        cfg = store._load_config(p)
        first = cfg.next_task_id
        _, at = store.now()
        for i in range(n):
            tid = str(first + i)
            task = Task(id=tid, subject=f"{prefix} {tid}", created_at=at, updated_at=at)
            if commit is not None:
                commit(p, None, task)
            else:
                store._save_task(p, task)
                store._reindex(p, None, task)
            # create_task writes a new task under its lock, so a real task has its lock file.
            os.close(os.open(p.task_lock(tid), os.O_RDWR | os.O_CREAT, 0o644))
            ids.append(tid)
        cfg.next_task_id = first + n
        atomic.write_json(p.config, cfg.to_dict())
    return ids


def code_state() -> str:
    """HEAD and whether omx/ has uncommitted changes: the code measured (others edit this checkout).

    When omx is imported from elsewhere (``PYTHONPATH`` pointing at a snapshot of the package, so that
    edits during a long run do not change the code under test), says so.
    """
    import omx

    where = Path(omx.__file__).resolve().parent.parent
    if where != REPO:
        label = (where / "SNAPSHOT").read_text().strip() if (where / "SNAPSHOT").exists() else ""
        return f"omx from {where}" + (f" ({label})" if label else "")
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "omx"], capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = [line[3:] for line in dirty if line.strip()]
    return f"{head}" + (f" + uncommitted changes in {', '.join(changed)}" if changed else "")


# --- the CLI --------------------------------------------------------------------------------------


def cli_argv(op: str, payload: dict[str, Any], root: Path) -> list[str]:
    return [OMX, "team", "api", op, "--input", json.dumps(payload), "--root", str(root)]


def cli(op: str, payload: dict[str, Any], root: Path, *, check: bool = True) -> tuple[dict[str, Any], float]:
    """Run ``omx team api op`` as a fresh process; return (envelope, wall seconds)."""
    argv = cli_argv(op, payload, root)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    try:
        env = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(f"{op}: no JSON envelope (exit {proc.returncode}): {proc.stderr[-2000:]}") from None
    if check and not env.get("ok"):
        raise RuntimeError(f"{op} failed: {env.get('error')}")
    return env, dt


def timed_run(argv: Sequence[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one fresh process (stdout/stderr captured, exit status checked)."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), capture_output=True, env=env)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:4]} exited {proc.returncode}: {proc.stdout[-500:]!r} {proc.stderr[-500:]!r}")
    return dt


def bytecode_cache_env(prefix: Path) -> dict[str, str]:
    """The environment with a writable bytecode cache under ``prefix`` (``PYTHONPYCACHEPREFIX``).

    Sandboxes here set ``PYTHONDONTWRITEBYTECODE=1`` and omx is an editable install, so every fresh
    ``omx`` process compiles omx's modules from source, while site-packages ship their ``.pyc``.
    A cache prefix gives both the same, ordinary treatment without writing into the source tree.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(prefix)
    return env


def omx_bytecode_cached() -> bool:
    """True when omx's own modules have a bytecode cache a fresh process would use."""
    import importlib.util

    import omx.state.api as mod

    return Path(importlib.util.cache_from_source(mod.__file__)).exists()


# --- the report -----------------------------------------------------------------------------------


@dataclass
class Line:
    """One line of a report. ``passed`` None: an informational number, not a goal."""

    metric: str
    measured: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    passed: bool | None = None


@dataclass
class Report:
    benchmark: str
    title: str
    quick: bool
    lines: list[Line] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    def info(self, metric: str, measured: str, baseline: str = "", ratio: str = "") -> None:
        self.lines.append(Line(metric, measured, baseline, ratio))

    def goal(self, metric: str, measured: str, target: str, passed: bool, baseline: str = "", ratio: str = "") -> None:
        self.lines.append(Line(metric, measured, baseline, ratio, target, passed))

    @property
    def passed(self) -> bool:
        return all(line.passed is not False for line in self.lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark, "title": self.title, "quick": self.quick, "passed": self.passed,
            "seconds": round(time.time() - self.started, 1), "loadavg": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(), "python": sys.version.split()[0], "code": code_state(),
            "lines": [asdict(x) for x in self.lines], "notes": self.notes, "data": self.data,
        }

    def emit(self, as_json: bool) -> int:
        if as_json:
            print(json.dumps(self.to_dict(), indent=2))
        else:
            print(f"\n{self.title}{'  (--quick)' if self.quick else ''}\n")
            print(table(self.lines))
            for n in self.notes:
                print(f"  - {n}")
            d = self.to_dict()
            print(f"\n{'PASS' if self.passed else 'FAIL'}  ({d['seconds']} s, load average {d['loadavg']}, "
                  f"{d['cpus']} CPUs; code: {d['code']})")
        return 0 if self.passed else 1


def verdict(passed: bool | None) -> str:
    return "" if passed is None else ("PASS" if passed else "FAIL")


def table(lines: Sequence[Line], *, prefix: Sequence[str] = ()) -> str:
    """A markdown table of report lines (``prefix``: a leading column value per line, e.g. the benchmark)."""
    head = (["benchmark"] if prefix else []) + ["metric", "measured", "baseline (same run)", "ratio", "goal", "result"]
    rows = [([prefix[i]] if prefix else []) + [x.metric, x.measured, x.baseline, x.ratio, x.target, verdict(x.passed)]
            for i, x in enumerate(lines)]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(out)


def f_ms(x: float) -> str:
    return f"{x:.1f} ms" if x < 100 else f"{x:.0f} ms"


def f_ratio(x: float) -> str:
    return f"{x:.2f}x"


def noop_repo(base: Path) -> Path:
    """A git repo whose WORKFLOW.md runs a no-op ``command`` agent in repository mode (no worktrees)."""
    repo = base / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "WORKFLOW.md").write_text("---\nruntime:\n  kind: command\n  command: [\"true\"]\nworktree:\n"
                                      "  mode: repository\n---\n{{ task.subject }}\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x", "GIT_COMMITTER_NAME": "b",
           "GIT_COMMITTER_EMAIL": "b@x"}
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True, env=env)
    return repo
