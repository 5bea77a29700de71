"""The ``codex app-server`` runtime: one JSON-RPC session over stdio per turn.

The session: spawn the server (``runtime.command``, else ``codex app-server`` from the agent env's
``PATH``) → ``initialize`` / ``initialized`` → ``thread/start`` (cwd, approval policy, sandbox, model,
developer instructions) → ``turn/start`` with the prompt as the one text input → read notifications
until ``turn/completed``. The prompt travels only inside that JSON string.

Approvals. omx runs unattended: nobody is there to approve. With ``approvalPolicy: never`` Codex does
not ask, and if it does anyway we accept (the policy says "don't ask, run"). With any other policy
(``untrusted``, ``on-request``, a ``granular`` table) every command or file-change request is
declined, so the agent carries on without that action; each answer is reported as an ``approval``
event so the result shows what was refused. Permission requests are granted nothing; MCP elicitations
are declined; dynamic tool calls fail (omx registers none); any other server request gets a JSON-RPC
error response, so a turn never waits on us.

Endings. ``turn/completed`` gives ``completed``, ``interrupted`` or ``failed`` (with ``turn.error``).
Cancel, the turn timeout and the stall timeout (no line from the server for ``stallTimeoutMs``) send
``turn/interrupt`` and wait up to the kill grace for ``turn/completed``; the status is then
``interrupted``, ``timeout`` or ``stalled``. The server closing stdout mid-turn is ``failed`` with
its exit status and stderr tail. Whatever happens, the child's process group is stopped and reaped.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

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
from omx.engine.runtimes.codex_common import find_codex, item_event, message_text, parse_json_line, tokens_from
from omx.engine.runtimes.exec import KEEP_PATH
from omx.engine.runtimes.process import ChildProcess, Output, SpawnError, Watchdog

#: JSON-RPC "method not found", our answer to server requests omx does not handle.
METHOD_NOT_FOUND = -32601

_APPROVALS = ("item/commandExecution/requestApproval", "item/fileChange/requestApproval")
_LEGACY_APPROVALS = ("execCommandApproval", "applyPatchApproval")


class AppServerRuntime:
    """Runs a turn through ``codex app-server``; see the module docstring.

    Args:
        kill_grace_s: after ``turn/interrupt``, how long to wait for the turn to end before killing
            the server (and, at the end, between SIGTERM and SIGKILL).
    """

    def __init__(self, *, kill_grace_s: float = DEFAULT_KILL_GRACE_S) -> None:
        self.kill_grace_s = kill_grace_s

    def run(self, req: RunRequest, on_event: EventSink, cancel: threading.Event) -> RunResult:
        """Run one turn; see :class:`omx.engine.runtimes.base.Runtime`."""
        return _Session(req, on_event, cancel, self.kill_grace_s).run()


class _Ended(Exception):
    """The run is over, for ``status`` (raised from deep in the read loop, caught once)."""

    def __init__(self, status: RunStatus, error: str | None) -> None:
        super().__init__(error)
        self.status: RunStatus = status
        self.error = error


def _client_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("omx")
    except PackageNotFoundError:
        return "0"


def _id_of(thing: Any) -> str | None:
    """``thing["id"]`` as a string, if ``thing`` is an object with a non-empty id."""
    value = thing.get("id") if isinstance(thing, Mapping) else None
    return str(value) if value not in (None, "") else None


class _Session:
    def __init__(self, req: RunRequest, on_event: EventSink, cancel: threading.Event, grace_s: float) -> None:
        self.req = req
        self.settings = req.settings
        self.emit = on_event
        self.cancel = cancel
        self.grace_s = grace_s
        self.watch = Watchdog(self.settings.turn_timeout_ms, self.settings.stall_timeout_ms)
        self.child: ChildProcess | None = None
        self.ids = itertools.count(1)
        self.responses: dict[Any, dict[str, Any]] = {}
        self.thread_id: str | None = None
        self.turn_id: str | None = None
        self.turn: dict[str, Any] | None = None  # the turn object of turn/completed
        self.in_turn = False
        self.eof = False
        self.summary: str | None = None
        self.deltas: dict[str, list[str]] = {}
        self.tokens = empty_tokens()
        self.last_error: str | None = None

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> RunResult:
        try:
            try:
                status, error = self._run()
            except _Ended as end:
                status, error = end.status, end.error
        finally:
            if self.child is not None:
                # A server whose turn ended gets a moment to exit on its own once stdin closes; one that
                # ignored an interrupt (or whose turn never began) goes straight to SIGTERM.
                settled = self.turn is not None or self.eof
                self.child.stop(close_wait_s=1.0 if settled else 0.0, grace_s=self.grace_s)
        return RunResult(
            status=status,
            summary=self._summary(),
            error=error,
            tokens=dict(self.tokens),
            duration_ms=self.watch.elapsed_ms(),
            thread_id=self.thread_id,
        )

    def _run(self) -> tuple[RunStatus, str | None]:
        argv = list(self.settings.command or [])
        if not argv:
            codex = find_codex(self.req.env)
            if codex is None:
                return "failed", "codex not found on the agent's PATH; install it or set runtime.command"
            argv = [codex, "app-server", *KEEP_PATH]
        try:
            self.child = ChildProcess(argv, cwd=self.req.cwd, env=self.req.env)
        except SpawnError as exc:
            return "failed", str(exc)
        self._request(
            "initialize",
            {
                "clientInfo": {"name": "omx", "title": "omx", "version": _client_version()},
                "capabilities": {"experimentalApi": True},
            },
        )
        self._send({"method": "initialized", "params": {}})
        started = self._request("thread/start", self._thread_params())
        self.thread_id = _id_of(started.get("thread"))
        if not self.thread_id:
            return "failed", f"thread/start returned no thread id: {json.dumps(started)[:500]}"
        self.watch.start_turn()
        self.in_turn = True
        text_input = [{"type": "text", "text": self.req.prompt}]  # the prompt: data in a JSON string, only here
        turn_params: dict[str, Any] = {"threadId": self.thread_id, "input": text_input, "cwd": str(self.req.cwd)}
        if self.req.output_schema is not None:
            turn_params["outputSchema"] = self.req.output_schema
        turn = self._request("turn/start", turn_params)
        self.turn_id = self.turn_id or _id_of(turn.get("turn"))
        self._pump(lambda: self.turn is not None)
        return self._outcome()

    def _thread_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "cwd": str(self.req.cwd),
            "approvalPolicy": self.settings.approval_policy,
            "sandbox": self.settings.sandbox,
        }
        if self.settings.model:
            params["model"] = self.settings.model
        if self.req.developer_instructions:
            params["developerInstructions"] = self.req.developer_instructions
        return params

    def _outcome(self) -> tuple[RunStatus, str | None]:
        turn = self.turn or {}
        status = turn.get("status")
        if status == "completed":
            return "completed", None
        if status == "interrupted":
            return "interrupted", "the turn was interrupted"
        error = turn.get("error")
        message = None
        if isinstance(error, Mapping):
            message = str(error.get("message") or "") or None
            if error.get("additionalDetails"):
                message = f"{message}: {error['additionalDetails']}"
        return "failed", message or self.last_error or f"the turn ended with status {status!r}"

    def _summary(self) -> str | None:
        if self.summary is not None:
            return bounded(self.summary)
        if self.deltas:  # no completed message (interrupted mid-stream): what was said so far
            return bounded("".join(list(self.deltas.values())[-1])) or None
        return None

    # --- talking ---------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        assert self.child is not None
        if not self.child.send(json.dumps(message)):
            raise _Ended("failed", self._died("stopped reading its input"))

    def _request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_id = next(self.ids)
        self._send({"method": method, "id": request_id, "params": params})
        read_ms = self.settings.read_timeout_ms
        deadline = time.monotonic() + read_ms / 1000
        self._pump(lambda: request_id in self.responses, deadline=deadline, waiting_for=method)
        response = self.responses.pop(request_id)
        error = response.get("error")
        if error is not None:
            text = error.get("message") if isinstance(error, Mapping) else error
            raise _Ended("failed", f"codex app-server refused {method}: {text}")
        result = response.get("result")
        return result if isinstance(result, dict) else {}

    def _pump(self, done: Callable[[], bool], *, deadline: float | None = None, waiting_for: str = "") -> None:
        assert self.child is not None
        while not done():
            if self.cancel.is_set():
                self._stop_turn("interrupted", "cancelled")
            if self.in_turn and (expired := self.watch.expired()) is not None:
                self._stop_turn(expired, self._expiry_message(expired))
            if deadline is not None and time.monotonic() >= deadline:
                ms = self.settings.read_timeout_ms
                raise _Ended("failed", f"codex app-server did not answer {waiting_for} within {ms} ms")
            if self.eof:
                raise _Ended("failed", self._died("exited before the turn completed"))
            wait = self.watch.wait_s()
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            output = self.child.get(wait)
            if output is not None:
                self._handle(output)
            elif self.child.poll() is not None:  # exited; maybe a leftover process holds stdout open
                for late in self.child.drain():
                    self._handle(late)
                self.eof = True

    def _expiry_message(self, expired: str) -> str:
        if expired == "timeout":
            return f"the turn did not finish within {self.settings.turn_timeout_ms} ms"
        return f"codex app-server sent nothing for {self.settings.stall_timeout_ms} ms"

    def _stop_turn(self, status: RunStatus, error: str) -> None:
        """Interrupt the turn, give it the grace period to end, then end the run with ``status``."""
        assert self.child is not None
        if self.thread_id and self.turn_id and not self.eof and self.turn is None:
            params = {"threadId": self.thread_id, "turnId": self.turn_id}
            if self.child.send(json.dumps({"method": "turn/interrupt", "id": next(self.ids), "params": params})):
                until = time.monotonic() + self.grace_s
                try:
                    while self.turn is None and not self.eof and (left := until - time.monotonic()) > 0:
                        output = self.child.get(min(left, 0.1))
                        if output is not None:
                            self._handle(output)
                except _Ended:
                    pass  # it died while winding down: we are stopping it anyway, for our reason
        raise _Ended(status, error)

    def _died(self, what: str) -> str:
        assert self.child is not None
        code = self.child.wait(2.0)
        for late in self.child.drain():  # its last words on stderr, before quoting them
            if late.stream == "stderr":
                self._handle(late)
        how = f" (exit status {code})" if code is not None else ""
        tail = self.child.stderr_tail()
        return f"codex app-server {what}{how}" + (f"; stderr:\n{tail}" if tail else "")

    # --- listening -------------------------------------------------------------------------------

    def _handle(self, output: Output) -> None:
        if output.stream == "eof":
            self.eof = True
            return
        if output.stream == "stderr":
            self.emit(RuntimeEvent("log", {"stream": "stderr", "text": output.text}))
            return
        self.watch.touch()
        message = parse_json_line(output.text)
        if message is None or ("method" not in message and "id" not in message):
            note = {"stream": "stdout", "text": output.text[:2000], "malformed": True}
            self.emit(RuntimeEvent("log", note))
            return
        method = message.get("method")
        params = message.get("params")
        params = params if isinstance(params, dict) else {}
        if isinstance(method, str) and "id" in message:
            self._answer(message["id"], method, params)
        elif isinstance(method, str):
            self._notification(method, params)
        elif "result" in message or "error" in message:
            self.responses[message["id"]] = message

    def _notification(self, method: str, params: dict[str, Any]) -> None:
        if method in ("item/started", "item/completed"):
            item = params.get("item")
            if not isinstance(item, dict):
                return
            text = message_text(item)
            if method == "item/completed" and text is not None:
                self.summary = text
            event = item_event(method.removeprefix("item/"), item)
            if event is not None:
                self.emit(event)
        elif method == "item/agentMessage/delta":
            self.deltas.setdefault(str(params.get("itemId")), []).append(str(params.get("delta") or ""))
        elif method == "thread/tokenUsage/updated":
            usage = params.get("tokenUsage")
            if isinstance(usage, dict) and isinstance(usage.get("total"), dict):
                self.tokens = tokens_from(usage["total"])  # total is absolute; last is this step's delta
                last = tokens_from(usage["last"]) if isinstance(usage.get("last"), dict) else None
                self.emit(RuntimeEvent("tokens", {**self.tokens, "last": last}))
        elif method == "turn/started":
            self.turn_id = _id_of(params.get("turn")) or self.turn_id
            assert self.child is not None
            ids = {"thread_id": self.thread_id, "turn_id": self.turn_id}
            self.emit(RuntimeEvent("started", {"pid": self.child.pid, **ids}))
        elif method == "turn/completed":
            turn = params.get("turn")
            self.turn = turn if isinstance(turn, dict) else {"status": "failed"}
        elif method == "error":
            self._error(params)
        elif method == "warning":
            self.emit(RuntimeEvent("warning", {"message": str(params.get("message") or "")}))

    def _error(self, params: dict[str, Any]) -> None:
        error = params.get("error")
        text = str(error.get("message") or "") if isinstance(error, dict) else str(error or "")
        will_retry = bool(params.get("willRetry"))
        if not will_retry:
            self.last_error = text
        info = error.get("codexErrorInfo") if isinstance(error, dict) else None
        self.emit(RuntimeEvent("error", {"message": text, "will_retry": will_retry, "info": info}))

    def _answer(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        result, decision = self._decide(method)
        if result is not None:
            self._send({"id": request_id, "result": result})
        else:
            message = f"omx does not handle {method} (it runs unattended)"
            self._send({"id": request_id, "error": {"code": METHOD_NOT_FOUND, "message": message}})
        if decision is not None:
            data = {
                "method": method,
                "decision": decision,
                "policy": self.settings.approval_policy,
                "item_id": params.get("itemId"),
                "command": params.get("command"),
                "cwd": params.get("cwd"),
                "reason": params.get("reason"),
            }
            self.emit(RuntimeEvent("approval", data))
        else:
            how = "refused" if result is not None else "answered with an error"
            self.emit(RuntimeEvent("warning", {"message": f"server request {method} {how}", "method": method}))

    def _decide(self, method: str) -> tuple[dict[str, Any] | None, str | None]:
        """The answer to a server request and, for approvals, the decision word (see the module doc)."""
        accept = self.settings.approval_policy == "never"
        if method in _APPROVALS:
            decision = "accept" if accept else "decline"
            return {"decision": decision}, decision
        if method in _LEGACY_APPROVALS:
            decision = "approved" if accept else "denied"
            return {"decision": decision}, decision
        if method == "item/permissions/requestApproval":
            return {"permissions": {}, "scope": "turn"}, "decline"  # grant nothing beyond the sandbox
        if method == "mcpServer/elicitation/request":
            return {"action": "decline"}, "decline"
        if method == "item/tool/call":
            note = "omx registered no dynamic tools"
            return {"success": False, "contentItems": [{"type": "inputText", "text": note}]}, None
        return None, None
