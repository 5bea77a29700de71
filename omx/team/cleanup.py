"""``omx team cleanup``: remove what a team left in git — its worktrees and the task branches whose work is merged.

The team's state (``.omx/state/team/<team>/``) stays: ``omx team api cleanup`` is the operation that
deletes it. Nothing with work not merged anywhere is deleted unless ``force``: a task branch with
commits in neither the integration branch nor the base is kept and listed, and a worktree with
uncommitted changes is kept. The integration branch goes only when it is landed (its tip is in the
base) and no task is left to run; with it go its ``refs/omx/<team>/integrated/*`` markers (``omx
doctor`` would otherwise call the branch missing).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from omx.errors import WorkerRunning
from omx.state.filestore import FileStore
from omx.terminal import plural


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)


def _refs(repo: Path, prefix: str) -> dict[str, str]:
    out = _git(repo, "for-each-ref", "--format=%(refname) %(objectname)", prefix).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def _checked_out(repo: Path) -> dict[str, str]:
    """Branch ref -> the worktree (main checkout included) that has it checked out."""
    out: dict[str, str] = {}
    path = ""
    for line in _git(repo, "worktree", "list", "--porcelain").stdout.splitlines():
        if line.startswith("worktree "):
            path = line[len("worktree "):]
        elif line.startswith("branch "):
            out[line[len("branch "):]] = path
    return out


def _count(repo: Path, spec: str) -> int:
    out = _git(repo, "rev-list", "--count", "--end-of-options", spec).stdout.strip()
    return int(out) if out.isdigit() else 0


def running_workers(store: FileStore, team: str) -> dict[str, dict[str, Any]]:
    """The team's workers a live process runs (see :meth:`omx.state.workers.WorkerOps.live_worker`)."""
    cfg = store.read_config(team)
    found = {w: store.live_worker(team, w, lease_ms=cfg.lease_ms) for w in cfg.worker_names()}
    return {w: r for w, r in found.items() if r is not None}


def cleanup_team(store: FileStore, team: str, repo: Path, *, force: bool = False,
                 workflow: Path | None = None) -> dict[str, Any]:
    """Remove the team's worktrees and merged task branches; keep (and list) what holds unmerged work.

    Refuses (:class:`~omx.errors.WorkerRunning`) while any of the team's workers runs.

    Example::

        out = cleanup_team(store, "alpha", Path("."))
        out["branches_kept"]   # [{"branch": "omx/alpha/task-3", "commits": 2, "reason": ...}]
    """
    from omx.engine.integration import default_branch, is_ancestor, read_refs
    from omx.engine.workflow import load_workflow
    from omx.engine.workspaces import list_workspaces, remove_workspace, workspace_path, worktree_root
    from omx.team.report import base_branch

    running = running_workers(store, team)
    if running:
        who = ", ".join(f"{w} (pid {r['pid']}{'' if r['host'] == store.host else ' on ' + str(r['host'])})"
                        for w, r in sorted(running.items()))
        raise WorkerRunning(f"workers of team {team} are running: {who}; stop them first "
                            f"(omx team shutdown --team {team})", running=sorted(running))
    cfg = store.read_config(team)
    settings = load_workflow(workflow, repo, compile=False).settings
    recorded = cfg.extra.get("integration")
    recorded = recorded if isinstance(recorded, dict) else {}
    integ = str(recorded.get("branch") or default_branch(team))
    base = str(recorded.get("base") or base_branch(repo))
    integ_ref = f"refs/heads/{integ}"
    tips = read_refs(repo, integ_ref, f"refs/heads/{base}")
    integ_tip, base_tip = tips.get(integ_ref), tips.get(f"refs/heads/{base}")
    if base_tip is None:
        base_tip = _git(repo, "rev-parse", "-q", "--verify", "--end-of-options", f"{base}^{{commit}}").stdout.strip() \
            or None

    out: dict[str, Any] = {"team": team, "worktrees_removed": [], "worktrees_kept": [], "branches_deleted": [],
                           "branches_kept": [], "integration": None, "state": str(store.paths(team).dir)}
    # Worktrees first: a branch checked out in one cannot be deleted.
    root = worktree_root(repo, settings.worktree)
    team_dir = workspace_path(repo, settings.worktree, team, "x").parent
    for info in list_workspaces(root):
        if info.path.parent != team_dir:
            continue
        dirty = _git(info.path, "status", "--porcelain").stdout.strip()
        if dirty and not force:
            out["worktrees_kept"].append({"path": str(info.path), "branch": info.branch,
                                          "reason": "uncommitted changes (--force removes them)"})
            continue
        remove_workspace(info.path, repo=repo, root=root)
        out["worktrees_removed"].append(str(info.path))

    checked_out = _checked_out(repo)
    for ref, sha in sorted(_refs(repo, f"refs/heads/omx/{team}/").items()):
        branch = ref[len("refs/heads/"):]
        if not branch.startswith(f"omx/{team}/task-"):
            continue
        merged_into = integ if integ_tip and is_ancestor(repo, sha, integ_tip) else \
            base if base_tip and is_ancestor(repo, sha, base_tip) else None
        if ref in checked_out:
            out["branches_kept"].append({"branch": branch, "commits": None,
                                         "reason": f"checked out in {checked_out[ref]}"})
            continue
        if merged_into is None and not force:
            commits = _count(repo, f"{integ_tip or base_tip}..{sha}") if (integ_tip or base_tip) else None
            out["branches_kept"].append({"branch": branch, "commits": commits,
                                         "reason": f"commits not merged into {integ} or {base} (--force deletes it)"})
            continue
        _git(repo, "update-ref", "-d", ref, sha)
        out["branches_deleted"].append({"branch": branch, "merged_into": merged_into})

    left = sum(store.summary(team)["counts"][k] for k in ("pending", "in_progress"))
    out["integration"] = _integration_branch(repo, team, integ, base, integ_tip, base_tip, left, checked_out)
    return out


def _integration_branch(repo: Path, team: str, integ: str, base: str, integ_tip: str | None, base_tip: str | None,
                        left: int, checked_out: dict[str, str]) -> dict[str, Any]:
    """Delete the integration branch (and its markers) only when it is landed and nothing is left to run."""
    from omx.engine.integration import is_ancestor

    ref = f"refs/heads/{integ}"
    keep = None
    if integ_tip is None:
        keep = "does not exist"
    elif not (base_tip and is_ancestor(repo, integ_tip, base_tip)):
        keep = f"not landed in {base}: kept (omx team land --team {team} brings it in)"
    elif left:
        keep = f"landed in {base}, but {plural(left, 'task')} may still run: kept"
    elif ref in checked_out:
        keep = f"checked out in {checked_out[ref]}: kept"
    if keep is not None or integ_tip is None:
        return {"branch": integ, "deleted": False, "reason": keep}
    _git(repo, "update-ref", "-d", ref, integ_tip)
    for marker, sha in _refs(repo, f"refs/omx/{team}/integrated/").items():
        _git(repo, "update-ref", "-d", marker, sha)
    return {"branch": integ, "deleted": True, "reason": f"landed in {base}"}
