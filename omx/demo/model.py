"""The offline demo model: a tiny OpenAI Responses API on 127.0.0.1 that real Codex can talk to.

It is not an AI. It lets ``omx demo`` run the real Codex binary end to end with no account and no
network: asked for a plan (a request with a JSON schema), it answers a fixed task list for the demo
goal; asked to do a task, it makes one shell call that writes a file for that task, then answers a
one-line summary. Every answer is labelled as coming from the demo model.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SHELL_TOOLS = ("exec_command", "shell_command", "shell", "local_shell")

DEMO_PLAN = [
    {"subject": "Write the tokenizer", "description": "calc/tokenize.py: split an expression into tokens.",
     "depends_on": [], "priority": 2, "files": ["calc/tokenize.py"]},
    {"subject": "Write the evaluator",
     "description": "calc/evaluate.py: evaluate tokens with + - * /, using the tokenizer in calc/tokenize.py.",
     "depends_on": [1], "priority": 1, "files": ["calc/evaluate.py"]},
    {"subject": "Write the command line", "description": "calc/__main__.py: read an expression, print it.",
     "depends_on": [2], "priority": 0, "files": ["calc/__main__.py"]},
    {"subject": "Document the calculator", "description": "docs/calc.md: how to use it.",
     "depends_on": [], "priority": 0, "files": ["docs/calc.md"]},
]


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


class DemoModel:
    """``with DemoModel() as m: m.base_url`` — serves until the block ends."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.requests = 0
        handler = type("Handler", (_Handler,), {"model": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="demo-model")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> DemoModel:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_demo_{next(self._ids)}"

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """Decide the reply: ``{"message": text}`` or ``{"tool": name, "arguments": {...}}``."""
        self.requests += 1
        fmt = (body.get("text") or {}).get("format") or {}
        if fmt.get("type") == "json_schema":
            return {"message": json.dumps({"tasks": DEMO_PLAN})}
        items = body.get("input") or []
        if any(isinstance(i, dict) and i.get("type") == "function_call_output" for i in items):
            return {"message": "[offline demo model] Wrote the file for this task with one shell command."}
        prompt = _last_user_text(items)
        tool = next((t for t in SHELL_TOOLS if t in _tool_names(body)), None)
        if tool is None:
            return {"message": "[offline demo model] No shell tool was offered; nothing done."}
        return {"tool": tool, "arguments": _shell_args(tool, _command_for(prompt))}


def _tool_names(body: dict[str, Any]) -> list[str]:
    return [str(t.get("name")) for t in body.get("tools") or [] if isinstance(t, dict)]


def _last_user_text(items: list[Any]) -> str:
    for item in reversed(items):
        if isinstance(item, dict) and item.get("role") == "user":
            for part in item.get("content") or []:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    return str(part["text"])
    return ""


def _command_for(prompt: str) -> str:
    # Where to write: the first path the task names, else notes/task-<id>.md. The content travels
    # base64-encoded, so no task text is ever parsed by the shell.
    # A later path in the prompt is a file the task builds on (an earlier task's): the command checks
    # that it is there — it is when the worktree started from the team's integration branch.
    paths = list(dict.fromkeys(re.findall(r"\b((?:[\w.-]+/)+[\w.-]+\.(?:py|md|txt))\b", prompt)))
    paths = [p for p in paths if ".." not in Path(p).parts and re.fullmatch(r"[\w./-]+", p)]
    task = re.search(r"\btask (\d+)\b", prompt, re.I)
    target = paths[0] if paths else f"notes/task-{task.group(1) if task else 'x'}.md"
    body = f"# written by the offline demo model\n# task prompt follows\n\n{prompt[:2000]}\n"
    b64 = base64.b64encode(body.encode()).decode()
    folder = str(Path(target).parent)
    cmd = f"mkdir -p '{folder}' && printf %s '{b64}' | base64 -d > '{target}' && echo wrote '{target}'"
    for used in paths[1:2]:
        cmd += (f" && if [ -f '{used}' ]; then echo '# builds on {used}: found it' >> '{target}';"
                f" echo found '{used}'; else echo '# builds on {used}: MISSING' >> '{target}';"
                f" echo missing '{used}'; fi")
    return cmd


def _shell_args(tool: str, cmd: str) -> dict[str, Any]:
    if tool in ("shell", "local_shell"):
        return {"command": ["bash", "-lc", cmd]}
    if tool == "shell_command":
        return {"command": cmd}
    return {"cmd": cmd}


class _Handler(BaseHTTPRequestHandler):
    model: DemoModel

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        if not self.path.rstrip("/").endswith("/responses") or not isinstance(body, dict):
            self.send_response(404)
            self.end_headers()
            return
        reply = self.model.answer(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for chunk in self._events(reply):
                self.wfile.write(chunk)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _events(self, reply: dict[str, Any]) -> Iterator[bytes]:
        m = self.model
        rid = m.next_id("resp")
        yield _sse("response.created", {"response": {"id": rid, "status": "in_progress"}})
        if "tool" in reply:
            item = {"type": "function_call", "id": m.next_id("fc"), "call_id": m.next_id("call"),
                    "name": reply["tool"], "arguments": json.dumps(reply["arguments"])}
            yield _sse("response.output_item.done", {"output_index": 0, "item": item})
        else:
            mid = m.next_id("msg")
            added = {"type": "message", "role": "assistant", "id": mid, "status": "in_progress", "content": []}
            yield _sse("response.output_item.added", {"output_index": 0, "item": added})
            yield _sse("response.output_text.delta",
                       {"item_id": mid, "output_index": 0, "content_index": 0, "delta": reply["message"]})
            done = {**added, "status": "completed",
                    "content": [{"type": "output_text", "text": reply["message"], "annotations": []}]}
            yield _sse("response.output_item.done", {"output_index": 0, "item": done})
        usage = {"input_tokens": 200, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 40,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 240}
        yield _sse("response.completed", {"response": {"id": rid, "status": "completed", "usage": usage}})


def codex_config_toml(
    base_url: str,
    *,
    model: str = "omx-offline-demo",
    provider: str = "omx_demo",
    provider_name: str = "omx offline demo model",
    approval_policy: str = "never",
    sandbox_mode: str = "workspace-write",
    extra: str = "",
) -> str:
    """A Codex ``config.toml`` that points Codex at ``base_url`` and keeps it off the network.

    The feature switches are the ones without which Codex 0.169 reaches for the network at start.
    ``extra`` is appended verbatim (more keys; tables at the end). The tests' fake model uses it too.
    """
    q = json.dumps
    return f"""\
model = {q(model)}
model_provider = {q(provider)}
approval_policy = {q(approval_policy)}
sandbox_mode = {q(sandbox_mode)}
web_search = "disabled"
check_for_update_on_startup = false

[model_providers.{provider}]
name = {q(provider_name)}
base_url = {q(base_url)}
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
supports_websockets = false

[features]
plugins = false
apps = false
remote_plugin = false
tool_suggest = false
image_generation = false
goals = false

[agents]
enabled = false

[analytics]
enabled = false

[feedback]
enabled = false
{extra}"""


def write_codex_home(home: Path, base_url: str) -> Path:
    """A CODEX_HOME whose config points Codex at the demo model at ``base_url``."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(codex_config_toml(base_url))
    return home
