"""Invariant checks over a team's state after a concurrent run, and over the workers' own logs.

Every check returns a list of violations (plain sentences) instead of asserting, so one failing run
reports everything that went wrong at once; :func:`assert_ok` turns the list into one assertion.
The state is read straight from the files (the truth), and through :class:`FileStore` where the
user-visible view matters (``list-tasks``, ``read-events``, ``get-summary``).

Worker logs are JSON lines as :mod:`tests.state.race_worker` writes them. The records used here:

* ``{"op": "claim", "task", "pid", "token_sha256", "version", "attempts", "t_call_ns", "t_ret_ns"}``
* ``{"op": "complete", "task", "pid", "token_sha256", "version", "t_call_ns", "t_ret_ns"}``
* ``{"op": "error", ...}`` — any failed call.

A worker holds a task at least from the moment its claim call returned until the moment it called
transition; two such intervals on one task must never overlap.

Reuse: ``assert_ok(check_drained_run(root, team, records, n_tasks=...))`` after any run in which every
task should end completed; the smaller checks (:func:`temp_files`, :func:`index_leftovers`,
:func:`version_matches_events`, :func:`overlaps`) stand alone.
"""

from __future__ import annotations

import itertools
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omx.state.atomic import is_temp
from omx.state.filestore import FileStore

#: Events written together with a version bump of their task (task_created writes version 1).
VERSION_EVENTS = frozenset({
    "task_created", "task_claimed", "task_renewed", "task_released", "claim_expired", "task_updated",
    "task_completed", "task_failed",
})
MAX_REPORTED = 40


# --- reading -------------------------------------------------------------------------------------


def read_logs(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """All records of the given JSON-lines logs (a missing log reads as empty)."""
    out: list[dict[str, Any]] = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def team_dir(root: Path, team: str) -> Path:
    return Path(root) / "team" / team


def task_files(root: Path, team: str) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``{id: raw task JSON}`` from ``tasks/``, and violations for files that are not whole JSON."""
    tasks: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    tdir = team_dir(root, team) / "tasks"
    for name in sorted(os.listdir(tdir)):
        if is_temp(name):
            continue  # reported by temp_files()
        path = tdir / name
        try:
            data = json.loads(path.read_bytes())
        except ValueError as exc:
            bad.append(f"{path}: not valid JSON ({exc})")
            continue
        if not (name.startswith("task-") and name.endswith(".json")) or data.get("id") != name[5:-5]:
            bad.append(f"{path}: unexpected file or id {data.get('id')!r}")
            continue
        tasks[data["id"]] = data
    return tasks, bad


def event_lines(root: Path, team: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Every event in file order, and violations for torn or interleaved lines."""
    raw = (team_dir(root, team) / "events" / "events.ndjson").read_bytes()
    events: list[dict[str, Any]] = []
    bad: list[str] = []
    if raw and not raw.endswith(b"\n"):
        bad.append("events.ndjson does not end with a newline (a torn append)")
    for n, line in enumerate(raw.splitlines(), start=1):
        try:
            ev = json.loads(line)
        except ValueError:
            bad.append(f"events.ndjson line {n} is not JSON (interleaved appends?): {line[:120]!r}")
            continue
        events.append(ev)
    return events, bad


# --- single checks -------------------------------------------------------------------------------


def temp_files(root: Path) -> list[str]:
    """Temp files (``.*.tmp``) anywhere under the state root: a writer that did not finish or clean up."""
    found = []
    for dirpath, _dirs, files in os.walk(root):
        found += [f"temp file left behind: {Path(dirpath) / f}" for f in files if is_temp(f)]
    return found


def index_leftovers(root: Path, team: str) -> list[str]:
    """Markers left in ``index/{ready,waiting,claimed}`` (none may remain once every task is finished)."""
    out = []
    for sub in ("ready", "waiting", "claimed"):
        # ready/ holds bucket folders (omx.state.base.ready_bucket): count the marker files in them.
        left = sorted(str(f.relative_to(team_dir(root, team) / "index" / sub))
                      for f in (team_dir(root, team) / "index" / sub).rglob("*") if f.is_file())
        if left:
            out.append(f"index/{sub} is not empty: {left[:10]}{' …' if len(left) > 10 else ''}")
    return out


def version_matches_events(tasks: dict[str, dict[str, Any]], events: list[dict[str, Any]]) -> list[str]:
    """Every write bumps ``version`` and writes one event, so version == number of such events."""
    writes = Counter(ev.get("task_id") for ev in events if ev.get("type") in VERSION_EVENTS)
    return [
        f"task {tid}: version {t['version']} but {writes[tid]} writing events"
        for tid, t in tasks.items() if t.get("version") != writes[tid]
    ]


@dataclass(frozen=True)
class Hold:
    """One worker's hold of one task, as its own log saw it (``end_ns`` None: never let go)."""

    task: str
    pid: int
    token_sha256: str
    start_ns: int
    end_ns: int | None


def holds(records: list[dict[str, Any]]) -> list[Hold]:
    """Pair each claim with the same process's finish of that task under the same token."""
    finish: dict[tuple[int, str, str], int] = {}
    for r in records:
        if r.get("op") == "complete":
            finish[(r["pid"], r["task"], r["token_sha256"])] = r["t_call_ns"]
    return [
        Hold(r["task"], r["pid"], r["token_sha256"], r["t_ret_ns"],
             finish.get((r["pid"], r["task"], r["token_sha256"])))
        for r in records
        if r.get("op") == "claim" and "token_sha256" in r
    ]


def overlaps(all_holds: list[Hold]) -> list[str]:
    """Two holds of one task that overlap in time: two live holders at once."""
    by_task: dict[str, list[Hold]] = defaultdict(list)
    for h in all_holds:
        by_task[h.task].append(h)
    out = []
    for tid, hs in by_task.items():
        hs.sort(key=lambda h: h.start_ns)
        for a, b in itertools.pairwise(hs):
            if a.end_ns is None or a.end_ns > b.start_ns:
                out.append(f"task {tid}: pid {a.pid} held it [{a.start_ns}, {a.end_ns}] while pid {b.pid} "
                           f"claimed it at {b.start_ns}")
    return out


# --- a whole run ---------------------------------------------------------------------------------


def check_drained_run(
    root: Path, team: str, records: list[dict[str, Any]], *, n_tasks: int, single_claim: bool = True
) -> list[str]:
    """Everything that must hold after workers drained a team of tasks ``1..n_tasks`` by claim → complete.

    ``single_claim``: nothing expired or was released, so each task was claimed exactly once
    (version 3 = create, claim, complete; attempts 1; one hold).
    """
    v: list[str] = []
    ids = [str(i) for i in range(1, n_tasks + 1)]

    tasks, bad = task_files(root, team)
    v += bad
    if sorted(tasks, key=int) != ids:
        v.append(f"task files are {sorted(tasks, key=int)[:10]}…, expected 1..{n_tasks}")

    v += [f"worker error: {r}" for r in records if r.get("op") == "error"]
    claims = [r for r in records if r.get("op") == "claim"]
    completes = [r for r in records if r.get("op") == "complete"]
    claims_of = Counter(r["task"] for r in claims)
    completes_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in completes:
        completes_of[r["task"]].append(r)

    events, bad = event_lines(root, team)
    v += bad
    per_task: dict[str, list[str]] = defaultdict(list)
    for ev in events:
        if ev.get("task_id") is not None:
            per_task[ev["task_id"]].append(ev["type"])

    for tid in ids:
        t = tasks.get(tid)
        if t is None:
            continue
        done = completes_of.get(tid, [])
        if len(done) != 1:
            v.append(f"task {tid}: completed {len(done)} times by the workers' own account")
        if t.get("status") != "completed":
            v.append(f"task {tid}: status {t.get('status')!r}, expected completed")
        if t.get("claim") is not None:
            v.append(f"task {tid}: a finished task still carries a claim")
        if len(done) == 1:
            # The completion on disk is the one the logging worker made (nobody overwrote it).
            want = {"worker": done[0]["worker"], "pid": done[0]["pid"]}
            if t.get("result") != want or t.get("owner") != done[0]["worker"]:
                v.append(f"task {tid}: owner {t.get('owner')!r} result {t.get('result')}, "
                         f"but the completing worker logged {want}")
            if done[0]["version"] != t.get("version"):
                v.append(f"task {tid}: transition returned version {done[0]['version']}, file has {t.get('version')}")
        types = per_task.get(tid, [])
        kinds = Counter(types)
        if kinds["task_created"] != 1 or kinds["task_completed"] != 1:
            v.append(f"task {tid}: events {types}, expected one task_created and one task_completed")
        if kinds["task_claimed"] != claims_of[tid]:
            v.append(f"task {tid}: {kinds['task_claimed']} task_claimed events for {claims_of[tid]} logged claims")
        if types and (types[0] != "task_created" or types[-1] != "task_completed"):
            v.append(f"task {tid}: events out of order: {types}")
        if single_claim:
            if claims_of[tid] != 1:
                v.append(f"task {tid}: claimed {claims_of[tid]} times, expected once")
            if t.get("version") != 3 or t.get("attempts") != 1:
                v.append(f"task {tid}: version {t.get('version')} attempts {t.get('attempts')}, expected 3 and 1")
            extra = set(kinds) - {"task_created", "task_claimed", "task_completed"}
            if extra:
                v.append(f"task {tid}: unexpected events {sorted(extra)}")
    for r in claims:
        if single_claim and (r["version"] != 2 or r["attempts"] != 1):
            v.append(f"task {r['task']}: claim by pid {r['pid']} returned version {r['version']} "
                     f"attempts {r['attempts']}, expected 2 and 1")
    v += version_matches_events(tasks, events)

    all_holds = holds(records)
    v += overlaps(all_holds)
    v += [f"task {h.task}: pid {h.pid} claimed it and never finished" for h in all_holds if h.end_ns is None]
    if single_claim:
        held = Counter(h.task for h in all_holds)
        v += [f"task {tid}: {held[tid]} holds, expected exactly 1" for tid in ids if held[tid] != 1]

    v += temp_files(root)
    v += index_leftovers(root, team)

    store = FileStore(root)
    cfg = store.read_config(team)
    if cfg.next_task_id != n_tasks + 1:
        v.append(f"config next_task_id is {cfg.next_task_id}, expected {n_tasks + 1}")
    listing = store.list_tasks(team)
    if listing.corrupt:
        v.append(f"list-tasks reports corrupt files: {listing.corrupt}")
    if len(listing.tasks) != n_tasks or any(t.status != "completed" for t in listing.tasks):
        v.append(f"list-tasks shows {len(listing.tasks)} tasks, not all completed")
    summary = store.summary(team)
    if summary["counts"]["completed"] != n_tasks or not summary["drained"]:
        v.append(f"get-summary: counts {summary['counts']}, drained {summary['drained']}")
    if not store.is_drained(team):
        v.append("is_drained() is False after every task completed")
    page_total, cursor = 0, 0
    while True:
        page = store.read_events(team, cursor=cursor, limit=1000)
        if not page.events:
            break
        page_total, cursor = page_total + len(page.events), page.cursor
    if page_total != len(events):
        v.append(f"read-events pages through {page_total} events, the file holds {len(events)}")
    return v


def assert_ok(violations: list[str]) -> None:
    """Fail with every violation listed (the first :data:`MAX_REPORTED` of them)."""
    if violations:
        shown = "\n  ".join(violations[:MAX_REPORTED])
        more = f"\n  … and {len(violations) - MAX_REPORTED} more" if len(violations) > MAX_REPORTED else ""
        raise AssertionError(f"{len(violations)} invariant violations:\n  {shown}{more}")
