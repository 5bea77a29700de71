"""The ``codex exec --json`` runtime: one non-interactive Codex process per turn.

The argv is ``codex exec --json --skip-git-repo-check --sandbox <sandbox> -c approval_policy=<policy>
[-m <model>] [-c developer_instructions=<text>] -``; the trailing ``-`` makes Codex read the prompt
from stdin, which is the only place the prompt goes. ``runtime.command``, when set, replaces the
``codex exec`` prefix (for example ``["/opt/codex/bin/codex", "exec"]``); omx appends the rest.

Codex prints JSON lines: ``thread.started``, ``turn.started``, ``item.started`` / ``item.completed``
(``command_execution``, ``agent_message``, ``file_change``, ``error`` = a warning), ``turn.completed``
with ``usage``, or ``turn.failed`` / ``error``. Exit status 0 after ``turn.completed`` is
``completed``; anything else is ``failed`` with Codex's error (or its stderr tail). Cancel and the
turn and stall timeouts (no JSON line for ``stallTimeoutMs``) terminate the process group, then
kill it after the grace period.

Note: Codex 0.169's exec mode refuses ``approval_policy = "untrusted"`` (it says so on stderr and the
run fails with that text); it has nobody to ask, so use ``never`` or ``on-request`` with it.
"""

from __future__ import annotations

import threading
from typing import Any

from omx.engine.early import KEEP_PATH
from omx.engine.runtimes.base import (
    DEFAULT_KILL_GRACE_S,
    EventSink,
    RunRequest,
    RunResult,
    RunStatus,
    RuntimeEvent,
    bounded,
    empty_tokens,
)
from omx.engine.runtimes.codex_common import (
    find_codex,
    item_event,
    message_text,
    parse_json_line,
    tokens_from,
    toml_value,
)
from omx.engine.runtimes.process import ChildProcess, Output, SpawnError, Watchdog, drive


def exec_argv(prefix: list[str], req: RunRequest) -> list[str]:
    """The full argv for ``codex exec`` after ``prefix`` (no prompt in it: that goes to stdin)."""
    settings = req.settings
    argv = [*prefix, "--json", "--skip-git-repo-check", "--sandbox", settings.sandbox]
    argv += ["-c", f"approval_policy={toml_value(settings.approval_policy)}", *KEEP_PATH]
    if settings.model:
        argv += ["-m", settings.model]
    if req.developer_instructions:
        argv += ["-c", f"developer_instructions={toml_value(req.developer_instructions)}"]
    return [*argv, "-"]


class ExecRuntime:
    """Runs a turn through ``codex exec --json``; see the module docstring.

    Args:
        kill_grace_s: between SIGTERM and SIGKILL when a run is cancelled or times out.
    """

    def __init__(self, *, kill_grace_s: float = DEFAULT_KILL_GRACE_S) -> None:
        self.kill_grace_s = kill_grace_s

    def run(self, req: RunRequest, on_event: EventSink, cancel: threading.Event) -> RunResult:
        """Run one turn; see :class:`omx.engine.runtimes.base.Runtime`."""
        watch = Watchdog(req.settings.turn_timeout_ms, req.settings.stall_timeout_ms)
        reader = _ExecEvents(on_event)
        prefix = list(req.settings.command or [])
        if not prefix:
            codex = find_codex(req.env)
            if codex is None:
                from omx.engine.early import INSTALL_CODEX

                missing = f"codex not found on the agent's PATH; install it ({INSTALL_CODEX}) or set runtime.command"
                return RunResult("failed", None, missing, empty_tokens(), watch.elapsed_ms())
            prefix = [codex, "exec"]
        try:
            child = ChildProcess(exec_argv(prefix, req), cwd=req.cwd, env=req.env, stdin_data=req.prompt.encode())
        except SpawnError as exc:
            return RunResult("failed", None, str(exc), empty_tokens(), watch.elapsed_ms())
        reader.pid = child.pid
        try:
            stopped = drive(child, watch, cancel, reader.handle)
            if stopped is not None:
                child.terminate(self.kill_grace_s)
                status: RunStatus = stopped
                error: str | None = _stop_message(stopped, req)
            else:
                status, error = reader.outcome(child.poll(), child.stderr_tail())
        finally:
            child.stop(close_wait_s=0.0, grace_s=self.kill_grace_s)
        summary = bounded(reader.summary) if reader.summary is not None else None
        return RunResult(status, summary, error, reader.tokens, watch.elapsed_ms(), reader.thread_id)


def _stop_message(stopped: str, req: RunRequest) -> str:
    if stopped == "interrupted":
        return "cancelled"
    if stopped == "timeout":
        return f"the turn did not finish within {req.settings.turn_timeout_ms} ms"
    return f"codex exec printed nothing for {req.settings.stall_timeout_ms} ms"


class _ExecEvents:
    """Reads ``codex exec --json`` lines into events and the run's outcome."""

    def __init__(self, emit: EventSink) -> None:
        self.emit = emit
        self.pid: int | None = None
        self.thread_id: str | None = None
        self.summary: str | None = None
        self.tokens = empty_tokens()
        self.turn_completed = False
        self.turn_error: str | None = None
        self.last_error: str | None = None

    def handle(self, output: Output) -> None:
        if output.stream == "stderr":
            self.emit(RuntimeEvent("log", {"stream": "stderr", "text": output.text}))
            return
        event = parse_json_line(output.text)
        if event is None:
            self.emit(RuntimeEvent("log", {"stream": "stdout", "text": output.text[:2000], "malformed": True}))
            return
        kind = event.get("type")
        if kind == "thread.started":
            self.thread_id = str(event.get("thread_id") or "") or None
        elif kind == "turn.started":
            self.emit(RuntimeEvent("started", {"pid": self.pid, "thread_id": self.thread_id, "turn_id": None}))
        elif kind in ("item.started", "item.completed"):
            self._item(str(kind).removeprefix("item."), event.get("item"))
        elif kind == "turn.completed":
            self.turn_completed = True
            usage = event.get("usage")
            if isinstance(usage, dict):
                self.tokens = tokens_from(usage)
                self.emit(RuntimeEvent("tokens", {**self.tokens, "last": None}))
        elif kind == "turn.failed":
            error = event.get("error")
            self.turn_error = str(error.get("message") if isinstance(error, dict) else error or "turn failed")
        elif kind == "error":
            self.last_error = str(event.get("message") or "")
            self.emit(RuntimeEvent("error", {"message": self.last_error, "will_retry": False}))

    def _item(self, phase: str, item: Any) -> None:
        if not isinstance(item, dict):
            return
        text = message_text(item)
        if phase == "completed" and text is not None:
            self.summary = text
        event = item_event(phase, item)
        if event is not None:
            self.emit(event)

    def outcome(self, code: int | None, stderr_tail: str) -> tuple[RunStatus, str | None]:
        if code == 0 and self.turn_completed and self.turn_error is None:
            return "completed", None
        error = self.turn_error or self.last_error or f"codex exec exited with status {code}"
        if self.turn_error is None and stderr_tail:
            error += f"; stderr:\n{stderr_tail}"
        return "failed", error
