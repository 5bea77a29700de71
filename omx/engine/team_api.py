"""``omx team api`` operations for a Codex session that works as a team worker (the ``$worker`` skill).

An engine worker prepares a task's worktree and integrates its work itself (:mod:`omx.engine.runner`).
A Codex session following ``$worker`` does the same through two operations, so that it too works in a
worktree of its own (never in the checkout another agent uses) and its work reaches the team's
integration branch by the same path:

* ``prepare-task-worktree`` — for a task you hold: the worktree (made from the integration tip, or an
  earlier attempt's with the tip merged in) and what the previous attempt left to resolve;
* ``finish-task`` — commit what is in that worktree, integrate it, and complete the task (or send it
  back with the conflict or the failed verification for its next attempt, or fail it).

They live in the engine (they run git), and register themselves in the state layer's operation
registry when imported: the CLI imports this module only when it needs them.
"""

from __future__ import annotations

import logging
import subprocess
import threading
from pathlib import Path
from typing import Any

from omx.errors import InvalidInput
from omx.state import names
from omx.state.api import ERROR_LEN, PATH_LEN, op
from omx.state.apispec import TASK, TOKEN, WORKER, F
from omx.state.filestore import FileStore

log = logging.getLogger("omx.worker")
SUMMARY_LEN = 20_000
REPO = F("repo", default=None, help="the repository (default: the one holding the state root, else the current)",
         max_len=PATH_LEN)


def _repo(store: FileStore, given: str | None) -> Path:
    if given:
        start = Path(given).expanduser()
    elif store.root.parent.name == ".omx":
        start = store.root.parent.parent
    else:
        start = Path.cwd()
    out = subprocess.run(["git", "-C", str(start), "rev-parse", "--path-format=absolute", "--show-toplevel",
                          "--git-common-dir"], capture_output=True, text=True)
    lines = out.stdout.split("\n")
    if out.returncode != 0 or len(lines) < 2:
        raise InvalidInput(f"{start} is not inside a git repository (pass repo)", field="repo")
    top, common = Path(lines[0]), Path(lines[1])
    # Called from inside a task's worktree: the repository is the one the worktree belongs to.
    return (common.parent if common.name == ".git" else top).resolve()


def _setup(store: FileStore, a: dict[str, Any]) -> tuple[Any, Path, Any, Any]:
    """Check the caller holds the task (the lease is renewed on the way); the task, repo, settings, target."""
    from omx.engine.team_worker import integration_target
    from omx.engine.workflow import load_workflow

    team, tid = a["team_name"], names.task_id(a["task_id"])
    task = store.renew_claim(team, tid, a["worker"], a["claim_token"])
    repo = _repo(store, a.get("repo"))
    settings = load_workflow(None, repo, compile=False).settings
    recorded = store.read_config(team).extra.get("integration")
    target = integration_target(repo, team, settings, recorded if isinstance(recorded, dict) else None)
    return task, repo, settings, target


def _note(task: Any) -> dict[str, Any] | None:
    note = task.result.get("integration") if isinstance(task.result, dict) else None
    return note if isinstance(note, dict) and note.get("status") in ("conflict", "verify_failed") else None


@op("prepare-task-worktree", (TASK, WORKER, TOKEN, REPO),
    "For a task you hold: its own git worktree (from the integration branch) and what to resolve first.",
    ours=True)
def _prepare(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    from omx.engine.completion import integration_feedback
    from omx.engine.integration import ensure_branch, integrated_commit, merge_tip_into
    from omx.engine.workspaces import prepare_workspace

    task, repo, settings, target = _setup(s, a)
    key = f"task-{task.id}"
    tip = ensure_branch(target) if target is not None else None
    ws = prepare_workspace(repo, settings.worktree, a["team_name"], key, base=tip)
    conflicts: list[str] = []
    done = None
    if target is not None and tip is not None and not ws.new_branch and ws.mode != "repository":
        done = integrated_commit(target, key)
        if done is None:
            conflicts = merge_tip_into(ws.path, tip, a["worker"])
    note = _note(task)
    return {
        "path": str(ws.path), "branch": ws.branch, "mode": ws.mode, "created": ws.created,
        "integration_branch": target.branch if target else None, "conflicts": conflicts,
        "already_integrated": done,
        "feedback": integration_feedback(note, conflicts, target, settings.integration).strip(),
    }


@op("finish-task", (TASK, WORKER, TOKEN, F("summary", default="", max_len=SUMMARY_LEN),
                    F("to", default="completed", max_len=16,
                      help="completed: commit, integrate, complete | failed: give up (the work is committed)"),
                    F("error", default=None, max_len=ERROR_LEN), REPO),
    "Commit the task's worktree, merge it into the integration branch and complete it (or send it back).",
    ours=True)
def _finish(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    from omx.engine.completion import integrate_attempt, make_verifier
    from omx.engine.hooks import HookContext
    from omx.engine.integration import _unmerged
    from omx.engine.workspaces import commit_changes, prepare_workspace

    team, worker, token = a["team_name"], a["worker"], a["claim_token"]
    if a["to"] not in ("completed", "failed"):
        raise InvalidInput(f"to must be 'completed' or 'failed', not {a['to']!r}", field="to")
    task, repo, settings, target = _setup(s, a)
    key = f"task-{task.id}"
    ws = prepare_workspace(repo, settings.worktree, team, key)  # the worktree prepare-task-worktree made
    pending = _unmerged(ws.path) if ws.mode != "repository" else []
    failing = a["to"] == "failed"
    message = f"omx: {'unfinished: ' if failing else ''}{task.subject[:200]}\n\n{key}"
    commit = commit_changes(ws, message, worker, f"{worker}@omx.invalid")
    result: dict[str, Any] = {"summary": a["summary"], "branch": ws.branch, "commit": commit,
                              "workspace": str(ws.path)}
    if failing:
        done = s.transition_task(team, task.id, worker, token, "failed", result=result,
                                 error=a["error"] or "given up by the worker")
        return {"status": "failed", "task": done.to_dict(), "integration": None}
    status, error, note = "completed", None, None
    if target is not None and ws.mode != "repository":
        ctx = HookContext(team=team, worker=worker, task_id=task.id, task_subject=task.subject,
                          attempt=task.attempts, branch=ws.branch)
        verdict = integrate_attempt(
            target, settings, ws, key=key, title=task.subject, namespace=team, worker=worker, result=result,
            note=_note(task) or {}, conflicts=pending,
            verify=make_verifier(settings, ctx, target, threading.Event(), log))
        status, error, note = verdict.status, verdict.error, verdict.note
    if status == "completed":
        done = s.transition_task(team, task.id, worker, token, "completed", result=result)
    elif status == "released":
        done = s.release_claim(team, task.id, worker, token, reason=error, result={"integration": note})
    else:
        done = s.transition_task(team, task.id, worker, token, "failed", result=result, error=error)
    return {"status": "sent_back" if status == "released" else status, "error": error, "task": done.to_dict(),
            "integration": result.get("integration")}
