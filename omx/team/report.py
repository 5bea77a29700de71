"""``omx team report`` and ``omx team shutdown``: what the team did, what merges, and a clean end."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path
from typing import Any

from omx.errors import InvalidInput, NotEmpty, Refused
from omx.state import names
from omx.state.filestore import FileStore
from omx.terminal import plural


def merge_check(repo: Path, base: str, branch: str) -> dict[str, Any]:
    """Would ``branch`` merge cleanly into ``base``? Uses ``git merge-tree --write-tree``: no checkout touched.

    Both names come from state files that anyone who can write them controls: one that git could take
    for an option (or that is no plain ref name) is not handed to git at all.
    """
    if not all(_PLAIN_REF.fullmatch(name) for name in (base, branch)):
        return {"branch": branch, "merges": "error", "error": "not a plain branch name; not checked"}
    out = subprocess.run(["git", "-C", str(repo), "merge-tree", "--write-tree", "--name-only", "--no-messages",
                          base, branch], capture_output=True, text=True)
    if out.returncode == 0:
        return {"branch": branch, "merges": "clean"}
    if out.returncode == 1:
        files = [ln for ln in out.stdout.splitlines()[1:] if ln.strip()]
        return {"branch": branch, "merges": "conflict", "conflicts": files}
    return {"branch": branch, "merges": "error", "error": out.stderr.strip()[:500]}


_PLAIN_REF = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._/@+-]{0,250}")


def base_branch(repo: Path) -> str:
    out = subprocess.run(["git", "-C", str(repo), "symbolic-ref", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() or "HEAD"


def team_report(store: FileStore, team: str, repo: Path | None, base: str | None = None) -> dict[str, Any]:
    """Per task: status, owner, summary, branch, commit, tokens, time, what it added to the integration
    branch; then the integration branch (tip, base, waiting tasks, whether it lands cleanly).

    ``merges``: for an integrated team, whether its integration branch merges cleanly into ``base``;
    for a team without one (integration disabled), whether each task branch does.
    """
    listing = store.list_tasks(team)
    rows = []
    branches = []
    waiting = []
    for t in listing.tasks:
        r = t.result if isinstance(t.result, dict) else {}
        tokens = r.get("tokens") if isinstance(r.get("tokens"), dict) else {}
        integ = r.get("integration") if isinstance(r.get("integration"), dict) else None
        row = {
            "id": t.id, "subject": t.subject, "status": "blocked" if t.id in listing.blocked_by else t.status,
            "owner": t.owner, "attempts": t.attempts, "summary": r.get("summary"), "branch": r.get("branch"),
            "commit": r.get("commit"), "tokens": (tokens or {}).get("total", 0), "duration_ms": r.get("duration_ms"),
            "error": t.error, "blocked_by": listing.blocked_by.get(t.id), "integration": integ,
        }
        rows.append(row)
        if integ and integ.get("status") in ("conflict", "verify_failed") and t.status not in ("completed",):
            waiting.append({"id": t.id, "status": t.status, "problem": integ.get("status"),
                            "paths": integ.get("paths", []), "failures": integ.get("failures"),
                            "max_attempts": integ.get("max_attempts")})
        if t.status == "completed" and row["branch"] and row["commit"]:
            branches.append(row["branch"])
    recorded = _integration_of(store, team, repo)
    merges: list[dict[str, Any]] = []
    integration: dict[str, Any] | None = None
    if repo is not None:
        base = base or (recorded or {}).get("base") or base_branch(repo)
        if recorded is not None and "branch" in recorded:
            integration = integration_view(repo, recorded["branch"], base)
            integration["waiting"] = waiting
            if integration["tip"]:
                merges = [merge_check(repo, base, recorded["branch"])]
        else:
            integration = recorded
            merges = [merge_check(repo, base, b) for b in branches]
    summary = store.summary(team)
    return {"team": team, "goal": summary["goal"], "counts": summary["counts"], "tasks": rows,
            "base": base, "integration": integration, "merges": merges, "corrupt": listing.corrupt}


def _integration_of(store: FileStore, team: str, repo: Path | None) -> dict[str, Any] | None:
    """The team's integration branch as recorded at its start; else the default one if it exists; else
    why there is none (``{"none": reason}``)."""
    recorded = store.read_config(team).extra.get("integration")
    if isinstance(recorded, dict) and isinstance(recorded.get("branch"), str):
        return dict(recorded)
    if repo is None:
        return None
    from omx.engine.integration import default_branch, read_refs
    from omx.engine.workflow import load_workflow

    branch = default_branch(team)
    if read_refs(repo, f"refs/heads/{branch}"):
        return {"branch": branch}
    try:
        settings = load_workflow(None, repo, compile=False).settings
    except Exception:  # a broken WORKFLOW.md is not the report's business
        return {"none": "no integration branch"}
    if settings.worktree.mode == "repository":
        return {"none": "repository mode: every worker shares one checkout, so there is nothing to integrate"}
    if not settings.integration.enabled:
        return {"none": "integration.enabled is false: one branch per task"}
    return {"none": "no integration branch yet"}


def integration_view(repo: Path, branch: str, base: str) -> dict[str, Any]:
    from omx.engine.integration import is_ancestor, read_refs

    tip = read_refs(repo, f"refs/heads/{branch}").get(f"refs/heads/{branch}")
    out: dict[str, Any] = {"branch": branch, "base": base, "tip": tip, "ahead": None, "landed": None}
    if tip:
        ahead = subprocess.run(["git", "-C", str(repo), "rev-list", "--count", "--end-of-options", f"{base}..{tip}"],
                               capture_output=True, text=True)
        if ahead.returncode == 0 and ahead.stdout.strip().isdigit():
            out["ahead"] = int(ahead.stdout.strip())
        out["landed"] = is_ancestor(repo, tip, base)
    return out


def land_team(store: FileStore, team: str, repo: Path, into: str | None = None) -> dict[str, Any]:
    """``omx team land``: the team's integration branch into ``into`` (default: its recorded base branch,
    else the checked-out branch). See :func:`omx.engine.integration.land`."""
    from omx.engine.integration import land

    recorded = _integration_of(store, team, repo) or {}
    if "branch" not in recorded:
        raise Refused(f"team {team} has no integration branch: {recorded.get('none', 'nothing to land')}")
    target = into or recorded.get("base") or base_branch(repo)
    if target == "HEAD":
        raise InvalidInput("the team's base is a detached HEAD: pass --into BRANCH")
    return land(repo, recorded["branch"], target, author="omx")


def shutdown_team(store: FileStore, team: str, *, force: bool = False, confirm_issues: bool = False,
                  wait_s: float = 30.0) -> dict[str, Any]:
    """Ask every worker to stop and wait (bounded) for their ACKs.

    Refuses while tasks are pending or running unless ``force``; failed tasks need ``confirm_issues``.
    """
    summary = store.summary(team)
    c = summary["counts"]
    unfinished = c["pending"] + c["in_progress"] + c["blocked"]
    if unfinished and not force:
        verb = "is" if unfinished == 1 else "are"
        raise NotEmpty(f"{plural(unfinished, 'task')} {verb} not finished (pending {c['pending']}, in progress "
                       f"{c['in_progress']}, blocked {c['blocked']}); pass --force to stop anyway")
    if c["failed"] and not confirm_issues:
        raise Refused(f"{plural(c['failed'], 'task')} failed; read `omx team report` and pass --confirm-issues "
                      "to end the team")
    from omx.clock import iso

    asked_at = iso(store.clock.now_ms() - 1)
    workers = [w["name"] for w in summary["workers"]]
    for w in workers:
        store.write_shutdown_request(team, w, names.LEADER, "team shutdown")
    began = time.monotonic()
    deadline = began + wait_s
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
    # waited_s: how long it actually waited (every ACK in: less than the allowed wait_s).
    return {"team": team, "acknowledged": acked, "no_answer": silent, "waited_s": round(time.monotonic() - began, 3),
            "wait_s": wait_s}
