"""``omx team report`` and ``omx team shutdown``: what the team did, what merges, and a clean end."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from omx.errors import NotEmpty, Refused
from omx.state import names
from omx.state.filestore import FileStore


def merge_check(repo: Path, base: str, branch: str) -> dict[str, Any]:
    """Would ``branch`` merge cleanly into ``base``? Uses ``git merge-tree --write-tree``: no checkout touched."""
    out = subprocess.run(["git", "-C", str(repo), "merge-tree", "--write-tree", "--name-only", "--no-messages",
                          base, branch], capture_output=True, text=True)
    if out.returncode == 0:
        return {"branch": branch, "merges": "clean"}
    if out.returncode == 1:
        files = [ln for ln in out.stdout.splitlines()[1:] if ln.strip()]
        return {"branch": branch, "merges": "conflict", "conflicts": files}
    return {"branch": branch, "merges": "error", "error": out.stderr.strip()[:500]}


def base_branch(repo: Path) -> str:
    out = subprocess.run(["git", "-C", str(repo), "symbolic-ref", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "HEAD"


def team_report(store: FileStore, team: str, repo: Path | None, base: str | None = None) -> dict[str, Any]:
    """Per task: status, owner, summary, branch, commit, tokens, time; then the merge report."""
    listing = store.list_tasks(team)
    rows = []
    branches = []
    for t in listing.tasks:
        r = t.result if isinstance(t.result, dict) else {}
        tokens = r.get("tokens") if isinstance(r.get("tokens"), dict) else {}
        row = {
            "id": t.id, "subject": t.subject, "status": "blocked" if t.id in listing.blocked_by else t.status,
            "owner": t.owner, "attempts": t.attempts, "summary": r.get("summary"), "branch": r.get("branch"),
            "commit": r.get("commit"), "tokens": (tokens or {}).get("total", 0), "duration_ms": r.get("duration_ms"),
            "error": t.error, "blocked_by": listing.blocked_by.get(t.id),
        }
        rows.append(row)
        if t.status == "completed" and row["branch"] and row["commit"]:
            branches.append(row["branch"])
    merges: list[dict[str, Any]] = []
    if repo is not None and branches:
        base = base or base_branch(repo)
        merges = [merge_check(repo, base, b) for b in branches]
    summary = store.summary(team)
    return {"team": team, "goal": summary["goal"], "counts": summary["counts"], "tasks": rows,
            "base": base, "merges": merges, "corrupt": listing.corrupt}


def shutdown_team(store: FileStore, team: str, *, force: bool = False, confirm_issues: bool = False,
                  wait_s: float = 30.0) -> dict[str, Any]:
    """Ask every worker to stop and wait (bounded) for their ACKs.

    Refuses while tasks are pending or running unless ``force``; failed tasks need ``confirm_issues``.
    """
    summary = store.summary(team)
    c = summary["counts"]
    unfinished = c["pending"] + c["in_progress"] + c["blocked"]
    if unfinished and not force:
        raise NotEmpty(f"{unfinished} tasks are not finished (pending {c['pending']}, in progress "
                       f"{c['in_progress']}, blocked {c['blocked']}); pass --force to stop anyway")
    if c["failed"] and not confirm_issues:
        raise Refused(f"{c['failed']} tasks failed; read `omx team report` and pass --confirm-issues to end the team")
    from omx.clock import iso

    asked_at = iso(store.clock.now_ms() - 1)
    workers = [w["name"] for w in summary["workers"]]
    for w in workers:
        store.write_shutdown_request(team, w, names.LEADER, "team shutdown")
    deadline = time.monotonic() + wait_s
    acked: dict[str, str] = {}
    while time.monotonic() < deadline and len(acked) < len(workers):
        for w in workers:
            if w in acked:
                continue
            ack = store.read_shutdown_ack(team, w, asked_at)
            if ack is not None:
                acked[w] = ack.status
            elif store.read_status(team, w).state in ("done", "failed", "unknown"):
                acked[w] = "not running"
        time.sleep(0.1)
    silent = []
    for w in workers:
        if w in acked:
            continue
        hb = store.read_heartbeat(team, w)
        silent.append({"worker": w, "last_heartbeat": hb.last_beat_at if hb else None,
                       "state": store.read_status(team, w).state})
    return {"team": team, "acknowledged": acked, "no_answer": silent, "waited_s": wait_s}
