"""``omx worker create|configure|worktrees``: register workers, write their settings, manage their worktrees.

``create`` registers a new worker on the platform (owned by the logged-in user) and writes its local
settings; ``configure`` binds local settings to a worker that already exists there (or edits them)
without registering another. Settings are validated *before* anything is registered, so a typo never
leaves an orphan worker on the platform.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from omx.clock import iso
from omx.engine.settings import WorktreeSettings
from omx.engine.workspaces import WorkspaceInfo, list_workspaces, remove_workspace, sanitize_key, worktree_root
from omx.errors import Refused
from omx.platform.auth import worker_client
from omx.platform.config import (
    PlatformConfig,
    WorkerSettings,
    home,
    load_worker_settings,
    save_worker_settings,
    settings_path,
    workers_dir,
)
from omx.platform.errors import PlatformConfigError, PlatformNotFound
from omx.platform.models import Agent
from omx.platform.runstate import running_sessions
from omx.platform.template import write_starter_workflow

#: The fields ``create``/``configure`` accept from the command line.
EDITABLE = ("name", "repo", "isolation", "workflow", "max_concurrent_runs", "worktree_root", "auto_start",
            "instructions")


@dataclass
class Configured:
    """What ``create``/``configure`` did."""

    settings: WorkerSettings
    path: Path
    wrote_workflow: bool
    registered: bool
    agent: str
    workspace: str


def create_worker(cfg: PlatformConfig, *, name: str, repo: Path, agent_id: str | None = None,
                  **options: Any) -> Configured:
    """Register a new worker for the logged-in user and write its local settings (and a starter WORKFLOW.md)."""
    repo_top = git_toplevel(repo)
    draft = _validated({"id": "pending", "name": name, "repo": str(repo_top), **_given(options)})
    with worker_client(cfg) as client:
        me = client.me()
        agent = _pick_agent(client.list_agents(), agent_id)
        worker = client.register_worker(draft.name, agent.id, host=socket.gethostname(),
                                        max_concurrent_runs=draft.max_concurrent_runs)
    data = draft.model_dump() | {"id": worker.id, "agent_id": agent.id, "workspace_id": me.workspace.id,
                                 "platform_url": cfg.require_url(), "created_at": _now()}
    return _finish(_validated(data), registered=True, agent=agent.name or agent.id, workspace=me.workspace.name)


def configure_worker(cfg: PlatformConfig, worker_id: str, **options: Any) -> Configured:
    """Bind (or edit) local settings for a worker that exists on the platform and is this user's."""
    path = settings_path(worker_id)
    existing = load_worker_settings(worker_id).model_dump() if path.exists() else None
    given = _given(options)
    if "repo" in given:
        given["repo"] = str(git_toplevel(Path(given["repo"])))
    elif existing is None:
        raise PlatformConfigError(f"worker {worker_id} has no local settings yet: pass --repo <folder>")
    with worker_client(cfg) as client:
        me = client.me()
        worker = client.get_worker(worker_id)  # 404 when it does not exist or is someone else's
    data = {**(existing or {}), **given, "id": worker.id, "agent_id": worker.agent_id,
            "workspace_id": worker.workspace_id or me.workspace.id, "platform_url": cfg.require_url()}
    data.setdefault("name", worker.name)
    data.setdefault("created_at", _now())
    if existing is not None and "workflow" not in given and "repo" in given and given["repo"] != existing["repo"]:
        data.pop("workflow", None)  # a new repository: pick its workflow again
    return _finish(_validated(data), registered=False, agent=worker.agent_id, workspace=me.workspace.name)


def default_worktree_root() -> str:
    """``$OMX_HOME/worktrees``."""
    return str(home() / "worktrees")


def default_workflow(repo: Path, worker_id: str) -> Path:
    """The repository's WORKFLOW.md when its template renders sessions, else one beside the settings."""
    candidate = repo / "WORKFLOW.md"
    try:
        if candidate.is_file() and "session" in candidate.read_text(encoding="utf-8", errors="replace"):
            return candidate
    except OSError:
        pass
    return workers_dir() / f"{worker_id}.WORKFLOW.md"


def git_toplevel(path: Path) -> Path:
    """The top of the git checkout holding ``path``; :class:`PlatformConfigError` when there is none."""
    path = path.expanduser()
    if not path.is_dir():
        raise PlatformConfigError(f"{path}: no such folder (the worker needs a git repository)")
    proc = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise PlatformConfigError(f"{path} is not inside a git repository (sessions run in git worktrees)")
    return Path(proc.stdout.strip()).resolve()


# --- worktrees ----------------------------------------------------------------------------------


def worker_worktrees(settings: WorkerSettings) -> list[WorkspaceInfo]:
    """This worker's session worktrees (``<root>/<repo>-<hash>/<worker id>/session-<id>``)."""
    root = worktree_root(Path(settings.repo), WorktreeSettings(root=settings.worktree_root))
    mine = sanitize_key(settings.id)
    repo = Path(settings.repo).resolve()
    return [w for w in list_workspaces(root) if w.team == mine and (w.repo is None or w.repo.resolve() == repo)]


def remove_worktrees(settings: WorkerSettings, session_id: str | None, *, all_: bool = False,
                     force: bool = False, delete_branch: bool = False) -> tuple[list[WorkspaceInfo], list[str]]:
    """Remove one session's worktree (or all of them); never one whose session runs now unless ``force``.

    Returns (removed, skipped-with-reason).
    """
    found = worker_worktrees(settings)
    if not all_:
        key = str(session_id) if str(session_id).startswith("session-") else f"session-{session_id}"
        found = [w for w in found if w.key in (key, sanitize_key(key))]
        if not found:
            raise PlatformNotFound(f"no worktree for session {session_id} of worker {settings.id}")
    running = running_sessions(settings.id)
    removed, skipped = [], []
    root = worktree_root(Path(settings.repo), WorktreeSettings(root=settings.worktree_root))
    for ws in found:
        if ws.key.removeprefix("session-") in running and not force:
            skipped.append(f"{ws.key}: its session is running now (stop the worker first, or --force)")
            continue
        remove_workspace(ws.path, repo=ws.repo, root=root, delete_branch=delete_branch)
        removed.append(ws)
    if skipped and not removed and not all_:
        raise Refused(skipped[0])
    return removed, skipped


# --- helpers ------------------------------------------------------------------------------------


def _given(options: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in options.items() if k in EDITABLE and v is not None}
    for k in ("workflow", "worktree_root"):
        if k in out:
            out[k] = str(Path(out[k]).expanduser().resolve())
    return out


def _validated(data: dict[str, Any]) -> WorkerSettings:
    data.setdefault("worktree_root", default_worktree_root())
    try:
        return WorkerSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise PlatformConfigError(f"invalid worker settings: {problems}") from None


def _finish(settings: WorkerSettings, *, registered: bool, agent: str, workspace: str) -> Configured:
    if not settings.workflow:
        settings = settings.model_copy(update={"workflow": str(default_workflow(Path(settings.repo), settings.id))})
    assert settings.workflow is not None
    wrote = write_starter_workflow(Path(settings.workflow))
    path = save_worker_settings(settings)
    return Configured(settings, path, wrote, registered, agent, workspace)


def _pick_agent(agents: list[Agent], agent_id: str | None) -> Agent:
    if agent_id:
        for a in agents:
            if a.id == agent_id:
                return a
        raise PlatformNotFound(f"no agent {agent_id!r} in this workspace (have: {', '.join(a.id for a in agents)})")
    if len(agents) == 1:
        return agents[0]
    if not agents:
        raise PlatformNotFound("the workspace has no agent to register a worker for")
    raise PlatformConfigError(f"several agents ({', '.join(f'{a.id} ({a.name})' for a in agents)}): pass --agent <id>")


def _now() -> str:
    return iso(time.time_ns() // 1_000_000)
