"""A scriptable fake of the OpenAI Responses API, for driving the real Codex binary offline.

Codex POSTs ``<base_url>/responses`` and reads server-sent events back. :class:`FakeModel` serves that
on ``127.0.0.1`` (a free port), answers each request with the next scripted :class:`Turn`, and records
every request body so a test can assert what reached the model.

Example::

    with FakeModel() as model:
        model.script(shell("echo hi > out.txt"), message("done"))
        home = write_codex_home(tmp_path / "codex-home", model.base_url)
        env = {**os.environ, "CODEX_HOME": str(home)}
        ...  # run codex (app-server, exec) with that env
        assert model.requests[0].user_texts()[-1] == "the prompt"
        assert model.requests[1].function_call_outputs()  # the shell call's output came back

One request is one model "turn step": a tool call makes Codex run the tool and POST again with a
``function_call_output``, so a task that runs one command and then answers needs two scripted turns.
When the script runs out the fallback answers (by default a ``response.failed`` saying so, so a test
that forgot a step fails loudly instead of hanging). A turn may also be a callable
``(RecordedRequest) -> Turn`` to decide from the request itself.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "SHELL_TOOL_NAMES",
    "FakeModel",
    "RecordedRequest",
    "Responder",
    "Turn",
    "codex_config_toml",
    "fail",
    "hang",
    "http_error",
    "message",
    "shell",
    "tool_call",
    "write_codex_home",
]

#: Names Codex has used for its shell tool, most recent first; :func:`shell` picks the first offered.
SHELL_TOOL_NAMES = ("exec_command", "shell_command", "shell", "local_shell")

DEFAULT_USAGE = {"input_tokens": 120, "output_tokens": 30}


# --- what the model answers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Turn:
    """One scripted answer to one ``POST /v1/responses``. Build it with the helpers below."""

    kind: Literal["message", "tool_call", "shell", "fail", "hang", "http_error"]
    text: str = ""
    name: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    status: int = 200
    input_tokens: int = DEFAULT_USAGE["input_tokens"]
    output_tokens: int = DEFAULT_USAGE["output_tokens"]


Responder = Callable[["RecordedRequest"], Turn]


def message(text: str, *, input_tokens: int = 120, output_tokens: int = 30) -> Turn:
    """The assistant answers ``text`` and the response completes (usage as given)."""
    return Turn("message", text=text, input_tokens=input_tokens, output_tokens=output_tokens)


def tool_call(name: str, arguments: dict[str, Any]) -> Turn:
    """The model calls tool ``name`` with ``arguments``; it must be in the request's ``tools``."""
    return Turn("tool_call", name=name, arguments=dict(arguments))


def shell(cmd: str) -> Turn:
    """The model runs ``cmd`` with whatever shell tool the request offers (``exec_command`` in 0.169)."""
    return Turn("shell", text=cmd)


def fail(text: str) -> Turn:
    """The response fails (``response.failed``) with ``text`` as the error message."""
    return Turn("fail", text=text)


def hang() -> Turn:
    """``response.created``, then silence until the client hangs up or the fake stops."""
    return Turn("hang")


def http_error(status: int, text: str = "fake model error") -> Turn:
    """A plain HTTP error (no stream) with ``{"error": {"message": text}}``."""
    return Turn("http_error", text=text, status=status)


# --- what the model was asked -------------------------------------------------------------------


@dataclass
class RecordedRequest:
    """One request as it reached the fake: its path, headers and parsed JSON body."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def instructions(self) -> str:
        """The request's top-level ``instructions`` (Codex's base prompt, skills list)."""
        return str(self.body.get("instructions") or "")

    def tool_names(self) -> list[str]:
        """Names of the tools the request offers (functions and typed tools alike)."""
        names = []
        for tool in self.body.get("tools") or []:
            if isinstance(tool, dict):
                names.append(str(tool.get("name") or tool.get("type") or ""))
        return names

    def input_items(self) -> list[dict[str, Any]]:
        """The ``input`` array: messages, function calls and their outputs, in order."""
        return [item for item in self.body.get("input") or [] if isinstance(item, dict)]

    def texts(self, role: str) -> list[str]:
        """Every text part of every ``input`` message with this role, in order."""
        out = []
        for item in self.input_items():
            if item.get("type", "message") == "message" and item.get("role") == role:
                content = item.get("content")
                if isinstance(content, str):
                    out.append(content)
                    continue
                for part in content or []:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        out.append(part["text"])
        return out

    def user_texts(self) -> list[str]:
        """Text parts of user messages (the prompt is one of them, verbatim)."""
        return self.texts("user")

    def developer_texts(self) -> list[str]:
        """Text parts of developer messages (``developerInstructions`` land here)."""
        return self.texts("developer")

    def function_call_outputs(self) -> list[str]:
        """The ``output`` of every ``function_call_output`` item, as text."""
        outs = []
        for item in self.input_items():
            if item.get("type") == "function_call_output":
                output = item.get("output")
                outs.append(output if isinstance(output, str) else json.dumps(output))
        return outs


# --- the server ---------------------------------------------------------------------------------


class FakeModel:
    """The fake Responses API server. Start it with ``with FakeModel() as model:`` (or start/stop).

    Attributes:
        requests: every ``POST /v1/responses`` received, in order.
        other_requests: anything else Codex asked for (answered 404).
        fallback: the answer when the script is empty (default: a failure naming the problem).
    """

    def __init__(self, *, fallback: Turn | Responder | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self.other_requests: list[RecordedRequest] = []
        self.fallback: Turn | Responder = fallback or fail("fake model: no scripted turn left")
        self._script: deque[Turn | Responder] = deque()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeModel:
        """Bind 127.0.0.1 on a free port and serve in a background thread."""
        handler = type("_Handler", (_Handler,), {"model": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        serve = self._server.serve_forever
        self._thread = threading.Thread(target=serve, kwargs={"poll_interval": 0.05}, name="fake-model", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; releases any :func:`hang` in progress."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._server is not None, "FakeModel not started"
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: the provider ``base_url`` for Codex."""
        return f"http://127.0.0.1:{self.port}/v1"

    # scripting

    def script(self, *turns: Turn | Responder) -> None:
        """Append answers; each request to ``/v1/responses`` takes the next one."""
        with self._cond:
            self._script.extend(turns)

    def clear(self) -> None:
        """Forget the remaining script and every recorded request (reuse one fake across runs)."""
        with self._cond:
            self._script.clear()
            self.requests.clear()
            self.other_requests.clear()

    @property
    def pending(self) -> int:
        """How many scripted answers have not been used yet."""
        with self._cond:
            return len(self._script)

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> list[RecordedRequest]:
        """Block until at least ``count`` responses requests arrived; raise ``TimeoutError`` if not."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.requests) >= count, timeout=timeout):
                raise TimeoutError(f"fake model: {len(self.requests)} of {count} requests after {timeout}s")
            return list(self.requests)

    def when_asked(self, count: int, then: Callable[[], None], timeout: float = 60.0) -> None:
        """Call ``then()`` (on a daemon thread) once ``count`` responses requests have arrived.

        For "cancel while the model is being asked": a timer after ``turn/started`` can fire before
        Codex sends the request, and then the scripted answer goes to the next turn instead.
        """
        def wait() -> None:
            try:
                self.wait_for_requests(count, timeout)
            except TimeoutError:
                return  # the test's own assertions say what did not happen
            then()

        threading.Thread(target=wait, name="fake-model-when-asked", daemon=True).start()

    # used by the handler

    def _next_turn(self, request: RecordedRequest) -> Turn:
        with self._cond:
            self.requests.append(request)
            answer = self._script.popleft() if self._script else self.fallback
            self._cond.notify_all()
        return answer(request) if callable(answer) else answer

    def _record_other(self, request: RecordedRequest) -> None:
        with self._cond:
            self.other_requests.append(request)

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


def _usage(turn: Turn) -> dict[str, Any]:
    return {
        "input_tokens": turn.input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": turn.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": turn.input_tokens + turn.output_tokens,
    }


def _shell_call(turn: Turn, request: RecordedRequest) -> Turn:
    offered = request.tool_names()
    for name in SHELL_TOOL_NAMES:
        if name in offered:
            args: dict[str, Any] = {"cmd": turn.text}
            if name in ("shell", "local_shell"):
                args = {"command": ["bash", "-lc", turn.text]}
            elif name == "shell_command":
                args = {"command": turn.text}
            return tool_call(name, args)
    return fail(f"fake model: no shell tool offered (tools: {offered})")


class _Handler(BaseHTTPRequestHandler):
    model: FakeModel
    server_version = "FakeModel/1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    def _read_request(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        if not isinstance(body, dict):
            body = {"_value": body}
        return RecordedRequest(self.command, self.path, dict(self.headers.items()), body)

    def do_GET(self) -> None:
        self.model._record_other(self._read_request())
        self._plain(404, {"error": {"message": f"fake model: no {self.path}"}})

    def do_POST(self) -> None:
        request = self._read_request()
        if not self.path.rstrip("/").endswith("/responses"):
            self.model._record_other(request)
            self._plain(404, {"error": {"message": f"fake model: no {self.path}"}})
            return
        turn = self.model._next_turn(request)
        if turn.kind == "shell":
            turn = _shell_call(turn, request)
        if turn.kind == "tool_call" and turn.name not in request.tool_names():
            turn = fail(f"fake model: tool {turn.name!r} not offered (tools: {request.tool_names()})")
        if turn.kind == "http_error":
            self._plain(turn.status, {"error": {"message": turn.text, "type": "server_error"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for chunk in self._events(turn):
                self.wfile.write(chunk)
                self.wfile.flush()
            if turn.kind == "hang":
                self._hang()
        except (BrokenPipeError, ConnectionResetError):
            pass  # Codex hung up (killed, or interrupted): nothing left to say

    def _plain(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def _events(self, turn: Turn) -> Iterator[bytes]:
        m = self.model
        resp_id = m._next_id("resp")
        yield _sse("response.created", {"response": {"id": resp_id, "status": "in_progress"}})
        if turn.kind == "hang":
            return
        if turn.kind == "fail":
            error = {"code": "server_error", "message": turn.text}
            yield _sse("response.failed", {"response": {"id": resp_id, "status": "failed", "error": error}})
            return
        if turn.kind == "tool_call":
            item = {
                "type": "function_call",
                "id": m._next_id("fc"),
                "call_id": m._next_id("call"),
                "name": turn.name,
                "arguments": json.dumps(turn.arguments),
            }
            yield _sse("response.output_item.done", {"output_index": 0, "item": item})
        else:
            msg_id = m._next_id("msg")
            added = {"type": "message", "role": "assistant", "id": msg_id, "status": "in_progress", "content": []}
            yield _sse("response.output_item.added", {"output_index": 0, "item": added})
            where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
            yield _sse("response.output_text.delta", {**where, "delta": turn.text})
            part = {"type": "output_text", "text": turn.text, "annotations": []}
            done = {**added, "status": "completed", "content": [part]}
            yield _sse("response.output_item.done", {"output_index": 0, "item": done})
        completed = {"id": resp_id, "status": "completed", "usage": _usage(turn)}
        yield _sse("response.completed", {"response": completed})

    def _hang(self) -> None:
        # Hold the stream open; end when the fake stops or the peer closes (a readable socket that
        # peeks zero bytes is a closed one), so no handler thread outlives its client.
        sock = self.connection
        while not self.model._stopping.is_set():
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                try:
                    if not sock.recv(1, socket.MSG_PEEK):
                        return
                except OSError:
                    return


# --- CODEX_HOME ---------------------------------------------------------------------------------


def codex_config_toml(
    base_url: str,
    *,
    model: str = "mock-model",
    approval_policy: str = "never",
    sandbox_mode: str = "danger-full-access",
    extra: str = "",
) -> str:
    """The ``config.toml`` that points Codex at ``base_url`` and keeps it off the network.

    ``extra`` is appended verbatim (more TOML keys, tables at the end). Built by the same function
    as the shipped offline demo model's (:func:`omx.demo.model.codex_config_toml`).
    """
    from omx.demo.model import codex_config_toml as shipped

    return shipped(base_url, model=model, provider="mock_provider", provider_name="local fake",
                   approval_policy=approval_policy, sandbox_mode=sandbox_mode, extra=extra)


def write_codex_home(home: Path, base_url: str, **options: Any) -> Path:
    """Create ``home`` (a fresh ``CODEX_HOME``) with :func:`codex_config_toml`; return it.

    Keyword options are passed to :func:`codex_config_toml`.
    """
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(codex_config_toml(base_url, **options), encoding="utf-8")
    return home
