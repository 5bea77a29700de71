"""Run one claimed piece of work: workspace → hooks → prompt → runtime (lease renewed) → commit → report.

Written once for every work source. Untrusted text (task titles, descriptions, session prompts) is
only ever template *data* and the runtime's prompt; it never reaches a shell, a hook's command line,
a path (workspace keys are sanitized) or the template source.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omx.engine.completion import integrate_attempt, integration_feedback, make_verifier
from omx.engine.hooks import HookContext, HookFailed, HookRunner
from omx.engine.integration import IntegrationTarget, ensure_branch, integrated_commit, merge_tip_into
from omx.engine.patience import is_weather
from omx.engine.runtimes.base import RunRequest, RunResult, Runtime, RuntimeEvent, make_runtime
from omx.engine.runtimes.base import agent_env as agent_env  # re-exported: callers import it from here
from omx.engine.settings import RuntimeSettings
from omx.engine.slots import MachineSlots
from omx.engine.source import Activity, Claimed, LeaseLost, WorkSource
from omx.engine.workflow import Workflow
from omx.engine.workspaces import (
    Workspace,
    WorkspaceError,
    commit_changes,
    prepare_workspace,
    release_workspace,
)
from omx.errors import InvalidInput, OmxError

log = logging.getLogger("omx.worker")
#: What git says when the disk, not the task, is the trouble (strerror of ENOSPC, EDQUOT, EFBIG, EIO).
_GIT_WEATHER = ("No space left on device", "Disk quota exceeded", "File too large", "Input/output error")
#: An agent with no event for this long is reported as silent (again at each further multiple).
SILENT_S = float(os.environ.get("OMX_SILENT_AFTER_S") or 30)
SILENCE_CHECK_S = min(5.0, SILENT_S / 3)


def check_runtime(settings: RuntimeSettings, env: dict[str, str] | None = None) -> None:
    """Refuse to start a worker whose agent program cannot be found on the agent's ``PATH``.

    Without it every claimed task fails in milliseconds ("codex not found"), and one misconfigured
    worker empties the whole queue into ``failed``. A relative path with a slash is looked up in each
    task's worktree, so it is left to the run.

    Raises:
        InvalidInput: the program is missing, or ``runtime.command`` is required and not set.
    """
    from omx.engine.early import INSTALL_CODEX
    from omx.engine.runtimes.codex_common import find_codex

    env = agent_env() if env is None else env
    argv = list(settings.command or [])
    if not argv:
        if settings.kind == "command":
            raise InvalidInput("runtime.command is required when runtime.kind is 'command'", kind=settings.kind)
        if find_codex(env) is None:
            raise InvalidInput(f"runtime {settings.kind}: codex is not on the agent's PATH "
                               f"({env.get('PATH', '')!r}); install it ({INSTALL_CODEX}) or set runtime.command",
                               kind=settings.kind)
        return
    program = argv[0]
    if "/" not in program:
        found = shutil.which(program, path=env.get("PATH"))
    else:
        found = program if not os.path.isabs(program) or os.access(program, os.X_OK) else None
    if found is None:
        raise InvalidInput(f"runtime.command: {program!r} is not an executable on the agent's PATH", kind=settings.kind)


@dataclass
class Outcome:
    status: str  # completed | failed | released | lost
    result: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    note: dict[str, Any] | None = None  # released: why it could not be integrated, for the next attempt


@dataclass
class RunnerConfig:
    repo: Path
    workflow: Workflow
    namespace: str  # workspace namespace: the team name, or the platform worker id
    worker: str
    slots: MachineSlots | None = None
    runtime: Runtime | None = None  # one runtime for every run (the worker's app-server pool), else one per run
    integration: IntegrationTarget | None = None  # a team's branch that finished tasks are merged into


class Runner:
    """Runs claimed items for one worker; safe to use from several threads at once."""

    def __init__(self, source: WorkSource, cfg: RunnerConfig) -> None:
        self.source = source
        self.cfg = cfg
        self.settings = cfg.workflow.settings
        self.hooks = HookRunner(self.settings.hooks, logger=log)
        self._heard: dict[str, list[float]] = {}  # claimed key -> [last event (monotonic), reports made]
        self._agent_env = agent_env(runtime=self.settings.runtime)  # once: filtering os.environ costs ~1 ms
        self.turns = 0

    def run(self, claimed: Claimed, cancel: threading.Event) -> Outcome:
        t0 = time.monotonic()
        lost = threading.Event()
        stop_renew = threading.Event()
        renewer = threading.Thread(target=self._renew_loop, args=(claimed, cancel, lost, stop_renew), daemon=True,
                                   name=f"renew-{claimed.key}")
        renewer.start()
        ws: Workspace | None = None
        target = self.cfg.integration
        conflicts: list[str] = []
        if claimed.previous_pid is not None:
            self._end_previous_attempt(claimed, claimed.previous_pid)
        try:
            try:
                ctx = self._ctx(claimed, None)
                def after_create(w: Workspace) -> object:
                    return self.hooks.after_create(w.path, self._ctx(claimed, w), cancel)

                tip = ensure_branch(target) if target is not None else None
                ws = self._prepare(claimed, after_create, tip, cancel)
                ctx = self._ctx(claimed, ws)
                if target is not None and tip is not None and not ws.new_branch and ws.mode != "repository":
                    # A retried task: its branch is an earlier attempt's. Integrated already (a worker
                    # killed between the merge and the report)? Then report that, once. Else bring the
                    # integration tip in, conflicts and all, for the agent to work on.
                    done = integrated_commit(target, claimed.key)
                    if done is not None:
                        result = {"integration": {"status": "already", "branch": target.branch, "commit": done},
                                  "branch": ws.branch, "workspace": str(ws.path), "attempts": 0,
                                  "summary": "integrated by an earlier attempt"}
                        return self._report(claimed, Outcome("completed", result), lost)
                    conflicts = merge_tip_into(ws.path, tip, self.cfg.worker)
            except OmxError as exc:
                if is_weather(exc) or any(w in exc.message for w in _GIT_WEATHER):
                    # git (or a write) met a full or failing disk: not the task's fault; give it back.
                    return self._report(claimed, Outcome("released", error=f"workspace: {exc.message}"), lost)
                return self._report(claimed, Outcome("failed", error=f"workspace: {exc.message}"), lost)
            feedback = integration_feedback(claimed.integration, conflicts, target, self.settings.integration)
            outcome = self._attempts(claimed, ws, ctx, cancel, lost, feedback)
            if outcome.status == "completed" and target is not None and ws.mode != "repository":
                outcome = self._integrate(claimed, ws, outcome, conflicts, cancel, ctx)
            if outcome.status != "completed" and ws.mode == "branch":
                self._keep_unfinished(claimed, ws, outcome)
            outcome.result.setdefault("duration_ms", int((time.monotonic() - t0) * 1000))
            return self._report(claimed, outcome, lost)
        finally:
            stop_renew.set()
            renewer.join(timeout=5)
            if ws is not None:
                try:
                    release_workspace(ws)
                except OmxError as exc:
                    log.warning("workspace %s: %s", ws.path, exc.message)

    def _prepare(self, claimed: Claimed, after_create: Callable[[Workspace], object], tip: str | None,
                 cancel: threading.Event) -> Workspace:
        """:func:`prepare_workspace`, tried again twice (0.3 s, then 1 s later) when git fails: a worker
        killed in the middle of ``git worktree add`` leaves that git running for a moment after its lock
        is gone (seen in the chaos swarm: the folder vanished under the next claimer's feet). Refusals
        about the workspace itself (unsafe, dirty) are not retried."""
        for pause in (0.3, 1.0, None):
            try:
                return prepare_workspace(self.cfg.repo, self.settings.worktree, self.cfg.namespace,
                                         claimed.workspace_key or claimed.key, on_create=after_create, base=tip)
            except WorkspaceError as exc:
                if pause is None or cancel.is_set():
                    raise
                log.warning("%s: preparing the workspace failed (%s); trying again", claimed.key, exc.message)
                cancel.wait(pause)
        raise AssertionError("unreachable")

    # --- attempts ---------------------------------------------------------------------------

    def _attempts(self, claimed: Claimed, ws: Workspace, ctx: HookContext, cancel: threading.Event,
                  lost: threading.Event, feedback: str = "") -> Outcome:
        agent = self.settings.agent
        tokens = {"input": 0, "output": 0, "total": 0}
        result: RunResult | None = None
        error = "not run"
        attempts = 0
        for n in range(1, agent.max_retry_attempts + 2):
            attempts = n
            if cancel.is_set():
                break
            try:
                self.hooks.before_run(ws.path, ctx, cancel)
                # A source's own ``session`` (the platform's) wins over the default None; passing it
                # twice as a keyword was a TypeError for every platform session.
                variables = {"session": None, **claimed.variables, "attempt": claimed.attempt + n - 1}
                prompt = self.cfg.workflow.render(**variables) + feedback
            except HookFailed as exc:
                error = exc.message
            except OmxError as exc:  # a template that cannot render will not render on retry
                return Outcome("failed", {"attempts": n}, exc.message)
            else:
                result = self._run_agent(claimed, prompt, ws, cancel)
                for k in tokens:
                    tokens[k] += result.tokens.get(k, 0)
                self._after_run(ws, ctx)
                if result.ok or result.status == "interrupted":
                    break
                error = result.error or result.status
            if n <= agent.max_retry_attempts:
                delay = min(agent.retry_base_ms * 2 ** (n - 1), agent.max_retry_backoff_ms) / 1000
                self.source.emit(claimed, Activity("progress", f"attempt {n} failed ({error}); retrying in {delay:g}s"))
                if cancel.wait(delay):
                    break
        base: dict[str, Any] = {"tokens": tokens, "attempts": attempts, "workspace": str(ws.path),
                                "branch": ws.branch}
        if lost.is_set():
            return Outcome("lost", base, "the claim was lost")
        if (result is not None and result.status == "interrupted") or (cancel.is_set() and not (result and result.ok)):
            return Outcome("released", base, "interrupted")
        if result is not None and result.ok:
            base["summary"] = result.summary
            base["thread_id"] = result.thread_id
            try:
                base["commit"] = commit_changes(ws, f"omx: {claimed.title[:200]}\n\n{claimed.key}",
                                                self.cfg.worker, f"{self.cfg.worker}@omx.invalid")
            except OmxError as exc:
                return Outcome("failed", base, f"commit: {exc.message}")
            return Outcome("completed", base)
        return Outcome("failed", base, error)

    def _end_previous_attempt(self, claimed: Claimed, pid: int) -> None:
        """Two agents must never work one worktree: the expired claim's holder on this host may still be
        alive (stopped, or stalled past its lease) and its agents with it. End them first."""
        from omx.engine.runtimes import lifeline

        ended = lifeline.end_tagged(pid)
        if ended:
            msg = f"ended {len(ended)} process(es) of the previous attempt (worker pid {pid}) before starting"
            log.warning("%s: %s", claimed.key, msg)
            self.source.emit(claimed, Activity("progress", msg))

    # --- integration --------------------------------------------------------------------------

    def _integrate(self, claimed: Claimed, ws: Workspace, outcome: Outcome, conflicts: list[str],
                   cancel: threading.Event, ctx: HookContext) -> Outcome:
        """Merge a completed attempt into the team's integration branch, or send it back (or fail it)."""
        assert self.cfg.integration is not None
        verdict = integrate_attempt(
            self.cfg.integration, self.settings, ws, key=claimed.key, title=claimed.title,
            namespace=self.cfg.namespace, worker=self.cfg.worker, result=outcome.result,
            note=claimed.integration or {}, conflicts=conflicts,
            verify=make_verifier(self.settings, ctx, self.cfg.integration, cancel, log),
        )
        if verdict.progress:
            self.source.emit(claimed, Activity("progress", verdict.progress))
        return Outcome(verdict.status, outcome.result, verdict.error, note=verdict.note)

    def _run_agent(self, claimed: Claimed, prompt: str, ws: Workspace, cancel: threading.Event) -> RunResult:
        rt = self.settings.runtime
        runtime = self.cfg.runtime or make_runtime(rt)
        env = dict(self._agent_env)
        if rt.kind == "command":
            # A command runtime is the user's own script: give it the task's plain facts (never its text).
            env.update({"OMX_TASK_ID": self._ctx(claimed, ws).task_id, "OMX_TEAM": self.cfg.namespace,
                        "OMX_WORKER": self.cfg.worker, "OMX_ATTEMPT": str(claimed.attempt)})
        req = RunRequest(prompt=prompt, cwd=ws.path, env=env, settings=rt, developer_instructions=claimed.instructions)

        def on_event(ev: RuntimeEvent) -> None:
            self._heard[claimed.key] = [time.monotonic(), 0]
            self._on_event(claimed, ev)

        try:
            if self.cfg.slots is None:
                self._heard[claimed.key] = [time.monotonic(), 0]
                return runtime.run(req, on_event, cancel)
            with self.cfg.slots.hold(cancel) as got:
                if not got:
                    return RunResult("interrupted", None, "cancelled while waiting for a machine slot",
                                     {"input": 0, "output": 0, "total": 0}, 0)
                self._heard[claimed.key] = [time.monotonic(), 0]
                return runtime.run(req, on_event, cancel)
        finally:
            self._heard.pop(claimed.key, None)

    def _check_silence(self, claimed: Claimed) -> None:
        """Say so when the agent has produced no event for :data:`SILENT_S` (again every SILENT_S)."""
        heard = self._heard.get(claimed.key)
        if heard is None:
            return
        quiet = time.monotonic() - heard[0]
        if quiet >= SILENT_S * (heard[1] + 1):
            heard[1] = int(quiet // SILENT_S)
            agent = "codex" if self.settings.runtime.kind != "command" else \
                os.path.basename((self.settings.runtime.command or ["the agent"])[0])
            text = f"no output from {agent} for {quiet:.0f} s"
            log.warning("%s: %s", claimed.key, text)
            self.source.emit(claimed, Activity("silent", text, {"quiet_s": int(quiet)}))

    def _on_event(self, claimed: Claimed, ev: RuntimeEvent) -> None:
        if ev.kind == "command" and ev.data.get("phase") == "completed":
            self.turns += 1
            cmd = str(ev.data.get("command", ""))[:200]
            self.source.emit(claimed, Activity("progress", f"ran {cmd} (exit {ev.data.get('exit_code')})"))
        elif ev.kind == "message" and ev.data.get("text"):
            self.source.emit(claimed, Activity("progress", str(ev.data["text"])[:500]))
        elif ev.kind == "approval":
            self.source.emit(claimed, Activity("policy", f"{ev.data.get('method')}: {ev.data.get('decision')}"))
        elif ev.kind == "error" and ev.data.get("message"):  # e.g. the model cannot be reached, retrying
            again = " (retrying)" if ev.data.get("will_retry") else ""
            self.source.emit(claimed, Activity("progress", f"error{again}: {str(ev.data['message'])[:500]}"))

    def _keep_unfinished(self, claimed: Claimed, ws: Workspace, outcome: Outcome) -> None:
        # Branch mode shares one checkout: leave it clean for the next task, and keep the partial
        # work on the task's own branch rather than throwing it away.
        try:
            sha = commit_changes(ws, f"omx: unfinished ({outcome.status}): {claimed.title[:150]}\n\n{claimed.key}",
                                 self.cfg.worker, f"{self.cfg.worker}@omx.invalid")
            if sha:
                outcome.result["unfinished_commit"] = sha
        except OmxError as exc:
            log.warning("could not keep the unfinished work of %s: %s", claimed.key, exc.message)

    def _after_run(self, ws: Workspace, ctx: HookContext) -> None:
        try:
            self.hooks.after_run(ws.path, ctx)
        except OmxError as exc:  # afterRun failures are logged, never fatal
            log.warning("afterRun: %s", exc.message)

    # --- lease and report -------------------------------------------------------------------

    def _renew_loop(self, claimed: Claimed, cancel: threading.Event, lost: threading.Event,
                    stop: threading.Event) -> None:
        # Fixed rate, from each renewal's *start*: a renewal held up by a slow fsync (hundreds of ms
        # on a busy disk) must not push the next one past the lease, as "wait lease/3 after the last
        # one returned" would.
        every = max(0.05, claimed.lease_ms / 3000)
        next_at = time.monotonic() + every
        while not stop.wait(max(0.0, min(next_at - time.monotonic(), SILENCE_CHECK_S))):
            self._check_silence(claimed)
            if time.monotonic() < next_at:
                continue
            next_at = time.monotonic() + every
            try:
                self.source.renew(claimed)
            except LeaseLost as exc:
                log.error("lost the claim on %s: %s", claimed.key, exc)
                lost.set()
                cancel.set()
                return
            except Exception as exc:  # a failed renewal is retried at the next tick
                log.warning("renewing %s failed: %s", claimed.key, exc)

    def _report(self, claimed: Claimed, outcome: Outcome, lost: threading.Event) -> Outcome:
        if lost.is_set() or outcome.status == "lost":
            return Outcome("lost", outcome.result, outcome.error)  # someone else owns it now
        try:
            if outcome.status == "completed":
                self.source.emit(claimed, Activity("completion", str(outcome.result.get("summary") or "")[:2000]))
                self.source.complete(claimed, outcome.result)
            elif outcome.status == "released":
                self.source.release(claimed, outcome.error or "interrupted", outcome.note)
            else:
                self.source.emit(claimed, Activity("failure", outcome.error or "failed"))
                self.source.fail(claimed, outcome.error or "failed", outcome.result)
        except OmxError as exc:
            log.error("could not report %s for %s: %s", outcome.status, claimed.key, exc.message)
            return Outcome("lost", outcome.result, exc.message)
        return outcome

    def _ctx(self, claimed: Claimed, ws: Workspace | None) -> HookContext:
        task_id = str(claimed.variables.get("task", {}).get("id") or claimed.key)
        return HookContext(team=self.cfg.namespace, worker=self.cfg.worker, task_id=task_id,
                           task_subject=claimed.title, attempt=claimed.attempt, branch=ws.branch if ws else None)
