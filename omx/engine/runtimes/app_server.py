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

A long-lived worker uses :class:`AppServerPool` instead: one server per running turn, kept between
tasks. Each task is a fresh thread on it (``thread/start`` with the task's cwd, sandbox, approval
policy, model and developer instructions, then ``turn/start``), unsubscribed once the turn has ended;
a cancelled turn is interrupted and the server stays. A server that died, broke the protocol or did
not end an interrupted turn is stopped and replaced by the next task. See the class for what a shared
server cannot do per task.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from omx.engine.early import INIT_ID, INSTALL_CODEX, app_server_argv, handshake
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
from omx.engine.runtimes.codex_common import item_event, message_text, parse_json_line, tokens_from
from omx.engine.runtimes.process import ChildProcess, Output, SpawnError, Watchdog

if TYPE_CHECKING:
    import subprocess

    from omx.engine.early import EarlyServer
    from omx.engine.settings import RuntimeSettings

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


def server_argv(settings: RuntimeSettings, env: Mapping[str, str]) -> list[str] | None:
    """The server's argv: ``runtime.command``, else ``codex app-server`` from ``env``'s PATH (``None``: no codex)."""
    argv = list(settings.command or [])
    return argv if argv else app_server_argv(env)


#: Seconds an unused pooled server is kept.
DEFAULT_IDLE_TIMEOUT_S = 300.0

_NO_CODEX = f"codex not found on the agent's PATH; install it ({INSTALL_CODEX}) or set runtime.command"


class _Server:
    """One ``codex app-server`` process and its request ids (shared by the sessions that use it).

    ``initialize`` and ``initialized`` are sent at once, and the first session sends its
    ``thread/start`` right behind them without waiting for the answer: Codex reads its input in order,
    so the handshake costs no round trip of its own, and Codex starts up meanwhile.
    """

    def __init__(self, argv: list[str], *, cwd: Path, env: Mapping[str, str],
                 proc: subprocess.Popen[bytes] | None = None) -> None:
        self.key = _key(argv, env)
        self.child = ChildProcess(argv, cwd=cwd, env=env, proc=proc)
        self.ids = itertools.count(INIT_ID)
        self.ready = False  # the handshake is done
        self.broken = False  # died, or left in a state no next turn can trust
        self.idle_since = time.monotonic()
        self.init_id = next(self.ids)
        if proc is None:  # an adopted server (omx.engine.early) was sent the same bytes when it started
            self.child.write(handshake(_client_version()))

    def usable(self) -> bool:
        return not self.broken and self.child.poll() is None

    def stop(self, *, settled: bool, grace_s: float) -> None:
        # A server whose turn ended gets a moment to exit on its own once stdin closes; one that
        # ignored an interrupt (or whose turn never began) goes straight to SIGTERM.
        self.broken = True
        self.child.stop(close_wait_s=1.0 if settled else 0.0, grace_s=grace_s)


def _key(argv: list[str], env: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    return tuple(argv), tuple(sorted(env.items()))


_T = TypeVar("_T")


class AppServerPool:
    """Long-lived ``codex app-server`` processes for one worker: a thread per task, no process per task.

    :meth:`run` is a :class:`~omx.engine.runtimes.base.Runtime` ``run``, except that the server
    outlives it: it goes back to the pool for the next task. One server per concurrently running
    turn (a worker with ``maxConcurrentAgents: 2`` gets two); :meth:`prestart` starts one ahead of
    the first task, so that Codex starts up while the worker claims and prepares the worktree.
    :meth:`close` stops and reaps them all — call it in a ``finally``.

    Every server is spawned by one long-lived *owner* thread, which ends only after :meth:`close`
    has reaped them: with the parent-death-signal lifeline (:mod:`omx.engine.runtimes.lifeline`'s
    fallback when its keeper process cannot run) a child is killed when the *thread* that spawned it
    ends, so a server spawned by a task's run thread would die with that task.

    What a shared server cannot do per task: its process environment and working directory are fixed
    when it starts. omx gives every app-server task the same environment (the worker's agent
    environment), so servers are keyed by argv and environment and a request whose environment
    differs gets a server of its own; the process cwd is ``cwd`` (the repository), while each task's
    thread and turn get the task's worktree as their cwd, which is what Codex runs commands in. A
    ``runtime.command`` whose program is a relative path (looked up in each task's worktree) cannot
    be shared, so it gets a server per task as with :class:`AppServerRuntime`. Codex kills each
    command's process group when the command ends; anything that escaped it lives until the server
    stops (with a server per task, until the task ended). And Codex reads ``$CODEX_HOME/config.toml``
    when it starts: an edit to it reaches a running worker's tasks only once its server restarts.

    An idle server costs memory (~130 MB for Codex 0.169 and its node launcher): one left idle for
    ``idle_timeout_s`` is stopped, and the next task starts a new one.

    Args:
        cwd: the servers' working directory.
        kill_grace_s: as for :class:`AppServerRuntime`.
        idle_timeout_s: how long a server may sit unused before it is stopped.
    """

    def __init__(self, cwd: Path, *, kill_grace_s: float = DEFAULT_KILL_GRACE_S,
                 idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S) -> None:
        self.cwd = cwd
        self.kill_grace_s = kill_grace_s
        self.idle_timeout_s = idle_timeout_s
        self._lock = threading.Lock()
        self._idle: list[_Server] = []
        self._busy: set[_Server] = set()
        self._closed = False
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._owner = threading.Thread(target=self._own, name="omx-app-server-owner", daemon=True)
        self._owner.start()

    # --- the owner thread -------------------------------------------------------------------------

    def _own(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=max(0.05, self.idle_timeout_s / 4))
            except queue.Empty:
                self._stop_idle()
                continue
            if job is None:
                return
            job()

    def _stop_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            old = [s for s in self._idle if now - s.idle_since >= self.idle_timeout_s]
            self._idle = [s for s in self._idle if s not in old]
        for server in old:
            server.stop(settled=True, grace_s=self.kill_grace_s)

    def _on_owner(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` run on the owner thread (its exception re-raised here)."""
        if threading.current_thread() is self._owner:
            return fn()
        done = threading.Event()
        out: list[Any] = []

        def job() -> None:
            try:
                out.append((True, fn()))
            except BaseException as exc:  # handed to the caller
                out.append((False, exc))
            finally:
                done.set()

        self._jobs.put(job)
        while not done.wait(0.1):
            if not self._owner.is_alive():  # closed before it got to our job
                raise SpawnError("the app-server pool is closed")
        ok, value = out[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def _spawn(self, argv: list[str], env: Mapping[str, str]) -> _Server:
        with self._lock:
            if self._closed:
                raise SpawnError("the app-server pool is closed")
        server = self._on_owner(lambda: _Server(argv, cwd=self.cwd, env=env))
        with self._lock:
            closed = self._closed
        if closed:  # close() ran while we spawned: it could not see this one
            server.stop(settled=False, grace_s=self.kill_grace_s)
            raise SpawnError("the app-server pool is closed")
        return server

    # --- servers -----------------------------------------------------------------------------------

    def prestart(self, settings: RuntimeSettings, env: Mapping[str, str]) -> bool:
        """Start a server for ``settings`` and ``env`` now, for the first task; False if none can be."""
        argv = server_argv(settings, env)
        if argv is None or not _shareable(argv):
            return False
        try:
            server = self._spawn(argv, env)
        except SpawnError:
            return False  # the task will say why
        with self._lock:
            self._idle.append(server)
        return True

    def adopt(self, early: EarlyServer) -> None:
        """Take over a server started ahead of the engine (see :mod:`omx.engine.early`), for the first task.

        Kept like any idle server: a task whose argv and environment differ from what it was started
        with stops it and gets a server of its own.
        """
        server = _Server(early.argv, cwd=Path(early.cwd), env=early.env, proc=early.take())
        with self._lock:
            closed = self._closed
            if not closed:
                self._idle.append(server)
        if closed:
            server.stop(settled=False, grace_s=self.kill_grace_s)

    def _checkout(self, argv: list[str], env: Mapping[str, str]) -> tuple[_Server, bool]:
        """A server for ``argv`` and ``env`` (and whether it was kept from before): an idle one or a new one."""
        key = _key(argv, env)
        found: _Server | None = None
        with self._lock:
            stale = [s for s in self._idle if s.key != key or not s.usable()]
            for server in self._idle:
                if found is None and server not in stale:
                    found = server
            self._idle = [s for s in self._idle if s is not found and s not in stale]
        for server in stale:  # dead, or for settings no task uses now: do not let them pile up
            server.stop(settled=True, grace_s=self.kill_grace_s)
        kept = found is not None
        if found is None:
            found = self._spawn(argv, env)
        with self._lock:
            self._busy.add(found)
        return found, kept

    def _checkin(self, server: _Server, healthy: bool, settled: bool) -> None:
        with self._lock:
            self._busy.discard(server)
            keep = healthy and not self._closed and server.usable()
            if keep:
                server.idle_since = time.monotonic()
                self._idle.append(server)
        if not keep:
            server.stop(settled=settled, grace_s=self.kill_grace_s)

    def run(self, req: RunRequest, on_event: EventSink, cancel: threading.Event) -> RunResult:
        """Run one turn on a pooled server; see :class:`omx.engine.runtimes.base.Runtime`."""
        argv = server_argv(req.settings, req.env)
        if argv is None:
            return _failed(_NO_CODEX)
        if not _shareable(argv):
            return _Session(req, on_event, cancel, self.kill_grace_s).run()
        for attempt in (1, 2):
            try:
                server, kept = self._checkout(argv, req.env)
            except SpawnError as exc:
                return _failed(str(exc))
            session = _Session(req, on_event, cancel, self.kill_grace_s, server=server)
            try:
                result = session.run()
            except BaseException:  # on_event raised: the server is in an unknown state
                self._checkin(server, False, session.settled())
                raise
            self._checkin(server, session.healthy(), session.settled())
            # A kept server that died before this task's turn began (while it sat idle): start a new
            # one and try again, rather than fail the task for it.
            if attempt == 1 and kept and session.died_before_turn():
                continue
            return result
        raise AssertionError("unreachable")

    def close(self, *, wait: bool = True) -> None:
        """Stop and reap every server (busy ones too: their turns fail), then end the owner thread.

        ``wait=False``, for a worker process that exits right after: idle servers only get their
        stdin closed (they exit on their own, ~65 ms) and the lifeline keeper sees to any that does
        not; the process's exit does not wait for theirs.
        """
        with self._lock:
            self._closed = True
            servers = [*self._idle, *self._busy]
            self._idle.clear()
        for server in servers:
            if not wait and server not in self._busy:
                server.broken = True
                server.child.close_stdin()
                continue
            server.stop(settled=server not in self._busy, grace_s=self.kill_grace_s)
        self._jobs.put(None)
        if threading.current_thread() is not self._owner:
            self._owner.join(timeout=10)

    def __enter__(self) -> AppServerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _shareable(argv: list[str]) -> bool:
    # A relative program path is looked up in each task's worktree: a server per task, then.
    return "/" not in argv[0] or os.path.isabs(argv[0])


def _failed(error: str) -> RunResult:
    return RunResult("failed", None, error, empty_tokens(), 0)


class _Ended(Exception):
    """The run is over, for ``status`` (raised from deep in the read loop, caught once)."""

    def __init__(self, status: RunStatus, error: str | None) -> None:
        super().__init__(error)
        self.status: RunStatus = status
        self.error = error


def _client_version() -> str:
    # omx's own constant: importlib.metadata would cost ~20 ms of imports on the way to the first turn
    from omx import __version__

    return __version__


def _id_of(thing: Any) -> str | None:
    """``thing["id"]`` as a string, if ``thing`` is an object with a non-empty id."""
    value = thing.get("id") if isinstance(thing, Mapping) else None
    return str(value) if value not in (None, "") else None


class _Session:
    """One turn: on its own server (spawned and stopped here), or on a pooled one (``server``)."""

    def __init__(self, req: RunRequest, on_event: EventSink, cancel: threading.Event, grace_s: float,
                 server: _Server | None = None) -> None:
        self.req = req
        self.server = server
        self.shared = server is not None
        self.settings = req.settings
        self.emit = on_event
        self.cancel = cancel
        self.grace_s = grace_s
        self.watch = Watchdog(self.settings.turn_timeout_ms, self.settings.stall_timeout_ms)
        self.child: ChildProcess | None = server.child if server is not None else None
        self.pending: set[Any] = set()  # ids of our requests not yet answered
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
        self.stuck = False  # a request went unanswered: the server cannot be trusted with another turn

    # --- the run ---------------------------------------------------------------------------------

    def run(self) -> RunResult:
        try:
            try:
                status, error = self._run()
            except _Ended as end:
                status, error = end.status, end.error
            if self.shared and self.healthy() and self.thread_id:
                self._unsubscribe()
        finally:
            if self.server is not None and not self.shared:
                self.server.stop(settled=self.settled(), grace_s=self.grace_s)
        return RunResult(
            status=status,
            summary=self._summary(),
            error=error,
            tokens=dict(self.tokens),
            duration_ms=self.watch.elapsed_ms(),
            thread_id=self.thread_id,
        )

    def healthy(self) -> bool:
        """The server can take another turn: alive, nothing of ours unanswered, no turn of ours running."""
        return (self.server is not None and not self.eof and not self.stuck and self.server.usable()
                and not self.pending and (not self.in_turn or self.turn is not None))

    def settled(self) -> bool:
        """Our turn ended (or the server is gone): it may be given a moment to exit by itself."""
        return self.turn is not None or self.eof

    def died_before_turn(self) -> bool:
        return self.eof and not self.in_turn

    def _unsubscribe(self) -> None:
        # The thread's work is over: let Codex unload it (a long-lived server would otherwise keep
        # every task's thread). The answer is not waited for; the next session drops it.
        assert self.server is not None
        assert self.child is not None
        request = {"method": "thread/unsubscribe", "id": next(self.server.ids), "params": {"threadId": self.thread_id}}
        self.child.send(json.dumps(request))

    def _run(self) -> tuple[RunStatus, str | None]:
        if self.server is None:
            argv = server_argv(self.settings, self.req.env)
            if argv is None:
                return "failed", _NO_CODEX
            try:
                self.server = _Server(argv, cwd=self.req.cwd, env=self.req.env)
            except SpawnError as exc:
                return "failed", str(exc)
            self.child = self.server.child
        init_id = None if self.server.ready else self.server.init_id
        if init_id is not None:  # the server is still starting up: its answer comes before thread/start's
            self.pending.add(init_id)
        thread_request = self._send_request("thread/start", self._thread_params())
        if init_id is not None:
            self._await(init_id, "initialize")
        started = self._await(thread_request, "thread/start")
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
        return self._await(self._send_request(method, params), method)

    def _send_request(self, method: str, params: dict[str, Any]) -> int:
        assert self.server is not None
        request_id = next(self.server.ids)
        self.pending.add(request_id)
        self._send({"method": method, "id": request_id, "params": params})
        return request_id

    def _await(self, request_id: int, method: str) -> dict[str, Any]:
        read_ms = self.settings.read_timeout_ms
        deadline = time.monotonic() + read_ms / 1000
        self._pump(lambda: request_id in self.responses, deadline=deadline, waiting_for=method)
        self.pending.discard(request_id)
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
                self.stuck = True
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
            assert self.server is not None
            if self.child.send(json.dumps({"method": "turn/interrupt", "id": next(self.server.ids), "params": params})):
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
            thread = params.get("threadId")
            if thread is None or thread == self.thread_id:  # not a late word about an earlier task's thread
                self._notification(method, params)
        elif "result" in message or "error" in message:
            if self.server is not None and message["id"] == self.server.init_id:
                self.server.ready = "error" not in message  # whichever session reads it: the server's state
                self.server.broken = self.server.broken or "error" in message
            if message["id"] in self.pending:
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
