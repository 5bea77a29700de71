"""How a finished attempt becomes a completed task: integrate it, or send it back, or fail it.

One path for every kind of worker: omx's own runner (:class:`omx.engine.runner.Runner`) and a Codex
session following the ``$worker`` skill (``omx team api finish-task``) both end an attempt here, so
both integrate the same way (see :mod:`omx.engine.integration`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omx.engine.hooks import HookContext, run_hook
from omx.engine.integration import (
    IntegrationResult,
    IntegrationTarget,
    added_files,
    ensure_branch,
    integrate,
    is_ancestor,
    markers_in_commit,
)
from omx.engine.settings import IntegrationSettings, Settings
from omx.engine.workspaces import Workspace, _rev
from omx.errors import OmxError
from omx.terminal import plural

#: The verification output an agent is shown (its tail), in characters.
FEEDBACK_OUTPUT_MAX = 4000


class VerifyCancelled(Exception):
    """The worker was told to stop while the verification ran."""


@dataclass
class Verdict:
    """``completed`` (``result`` has the integration), ``released`` (``note`` goes with the task for its
    next attempt) or ``failed`` (``error``); ``progress``: a line worth reporting."""

    status: str
    error: str | None = None
    note: dict[str, Any] | None = None
    progress: str | None = None


def integrate_attempt(
    target: IntegrationTarget, settings: Settings, ws: Workspace, *, key: str, title: str, namespace: str,
    worker: str, result: dict[str, Any], note: dict[str, Any], conflicts: list[str],
    verify: Callable[[Path, str], tuple[bool, str]] | None,
) -> Verdict:
    """Merge a completed attempt (``result['commit']``, or the branch's earlier commits) into ``target``.

    ``result`` gains ``integration`` (and ``error_code`` when it fails). ``note``: why the previous
    attempt was sent back; ``conflicts``: paths that held conflict markers when this attempt started.
    """
    cfg = settings.integration
    head = result.get("commit")
    if head is None and not ws.new_branch:
        head = _rev(ws.path, "HEAD")  # a retried branch: its earlier attempts' commits
        if is_ancestor(ws.path, head, ensure_branch(target)):
            head = None  # nothing beyond what is integrated already
    if head is None:
        result["integration"] = {"status": "unchanged", "branch": target.branch}
        return Verdict("completed")
    was_conflict = bool(conflicts) or note.get("status") == "conflict"
    check = sorted({*conflicts, *(note.get("paths") or [])}) if was_conflict else []
    left = markers_in_commit(ws.path, head, check)
    if left:
        r = IntegrationResult("conflict", paths=left)
    else:
        message = f"omx: integrate {key}: {title[:200]}\n\nTeam: {namespace}\nWorker: {worker}\n"
        try:
            r = integrate(target, key, head, message, author=worker, verify=verify if cfg.verify else None,
                          worktree=settings.worktree)
        except VerifyCancelled:
            return Verdict("released", "interrupted during verification")
        except OmxError as exc:
            return Verdict("failed", f"integration: {exc.message}")
    if r.ok:
        if r.status == "merged" and r.previous and r.commit:
            r.files = added_files(target.repo, r.previous, r.commit)
        result["integration"] = r.to_dict(target.branch)
        return Verdict("completed", progress=f"integrated into {target.branch} at {(r.commit or '')[:12]}")
    failures = int(note.get("failures") or 0) + 1
    info = {**r.to_dict(target.branch), "failures": failures, "max_attempts": cfg.max_attempts, "task_commit": head}
    result["integration"] = info
    code = "merge_conflict" if r.status == "conflict" else "verify_failed"
    what = (f"{code}: {', '.join(r.paths[:20])}" if r.status == "conflict"
            else f"{code}: {cfg.verify!r} failed on the merged tree")
    if failures >= cfg.max_attempts:
        result["error_code"] = code
        return Verdict("failed", f"{what} (after {plural(failures, 'attempt')}; the work is kept on {ws.branch})")
    return Verdict("released", what, note=info, progress=f"{what}; sent back for attempt {failures + 1}")


def make_verifier(settings: Settings, ctx: HookContext, target: IntegrationTarget, cancel: threading.Event,
                  log: logging.Logger) -> Callable[[Path, str], tuple[bool, str]] | None:
    """``integration.verify`` as :func:`omx.engine.integration.integrate` calls it: the hooks' rules
    (``bash -c``, a timeout, task facts only as ``OMX_*`` variables, the hooks' environment filter)."""
    cfg = settings.integration
    script = cfg.verify
    if not script:
        return None
    timeout_ms = cfg.verify_timeout_ms or settings.hooks.timeout_ms

    def verify(path: Path, commit: str) -> tuple[bool, str]:
        extra = {**ctx.extra, "OMX_INTEGRATION_BRANCH": target.branch, "OMX_INTEGRATION_COMMIT": commit}
        vctx = dataclasses.replace(ctx, extra=extra)
        res = run_hook("verify", script, path, vctx.env(), vctx.facts(), timeout_ms, cancel=cancel,
                       pass_env=settings.hooks.pass_env)  # the hooks' environment rules
        if res.cancelled:
            raise VerifyCancelled
        log.log(logging.INFO if res.ok else logging.WARNING, "%s (%s)", res.describe(), commit[:12])
        parts = [res.describe()]
        if res.stdout_tail.strip():
            parts.append(res.stdout_tail.rstrip())
        if res.stderr_tail.strip():
            parts.append(res.stderr_tail.rstrip())
        text = "\n".join(parts)
        return res.ok, text if len(text) <= FEEDBACK_OUTPUT_MAX else "…" + text[-FEEDBACK_OUTPUT_MAX:]

    return verify


def integration_feedback(note: dict[str, Any] | None, conflicts: list[str], target: IntegrationTarget | None,
                         settings: IntegrationSettings) -> str:
    """What the agent must know about integration, appended to its prompt ("" when nothing).

    ``note``: why the previous attempt was sent back; ``conflicts``: paths that hold conflict markers
    now. Paths and output are untrusted data: they are shown, never interpreted.
    """
    if not note and not conflicts:
        return ""
    note = note or {}
    note_status = note.get("status")
    lines = ["", "", "---", "omx — integration (read this before you start):"]
    if conflicts or note_status == "conflict":
        paths = conflicts or [str(p) for p in note.get("paths") or []]
        branch = target.branch if target else "the integration branch"
        lines.append(
            f"This task's earlier work conflicts with what other tasks have since added to {branch}. "
            "That branch is merged into this worktree, and git left conflict markers (<<<<<<<, =======, "
            f">>>>>>>) in: {', '.join(paths[:50])}. Resolve every conflict so that both sides' intents are kept, "
            "remove every marker, and do not abort the merge; omx commits and integrates the result.")
    if note_status == "verify_failed":
        lines.append(f"The merged tree failed the verification command ({settings.verify!r}). "
                     "The end of its output:")
        lines += ["```", str(note.get("output") or "")[-FEEDBACK_OUTPUT_MAX:], "```",
                  "Fix the cause in this worktree; the verification runs again on the merged result."]
    failures = int(note.get("failures") or 0)
    lines.append(f"Integration attempt {failures + 1} of {settings.max_attempts}.")
    return "\n".join(lines) + "\n"
