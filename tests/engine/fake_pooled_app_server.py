"""A scripted ``codex app-server`` that serves many threads, one after another, like the real one.

For :class:`omx.engine.runtimes.app_server.AppServerPool`: run it as ``runtime.command``
(``[sys.executable, this file]``). Each ``thread/start`` makes thread ``thread-<n>``; each
``turn/start`` runs the scenario named in the prompt:

``[ok]`` (or nothing)  an agent message ``done in <cwd of the turn>``, token usage, ``completed``
``[hang]``             the turn runs until ``turn/interrupt``, then ends ``interrupted``
``[deaf]``             the turn never ends: interrupts and SIGTERM are ignored (SIGKILL only)
``[die]``              writes to stderr and exits 3 mid-turn

After answering ``thread/unsubscribe`` it sends late words about that thread (an agent message
``late words`` and a failed ``turn/completed``), which the next task on this server must ignore.
Every line received is appended as JSON to ``$FAKE_APP_SERVER_LOG`` with this process's pid, plus a
``{"pid": …, "started": …}`` record at start.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any


def log(record: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_APP_SERVER_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({**record, "pid": os.getpid()}) + "\n")


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def recv() -> dict[str, Any]:
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)  # stdin closed: the client is done with us
    message: dict[str, Any] = json.loads(line)
    log({"got": message})
    return message


def notify(method: str, params: dict[str, Any]) -> None:
    send({"method": method, "params": params})


def message_item(thread: str, turn: str, text: str) -> None:
    item = {"type": "agentMessage", "id": f"msg-{turn}", "text": text}
    notify("item/completed", {"threadId": thread, "turnId": turn, "item": item})


def complete(thread: str, turn: str, status: str = "completed") -> None:
    notify("turn/completed", {"threadId": thread, "turn": {"id": turn, "status": status, "items": [], "error": None}})


def run_turn(request: dict[str, Any]) -> None:
    params = request["params"]
    thread = params["threadId"]
    turn = f"turn-{thread.rsplit('-', 1)[1]}"
    prompt = " ".join(part.get("text", "") for part in params.get("input", []))
    if "[deaf]" in prompt:  # before turn/started: a client that stops the turn at once meets a deaf server
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    send({"id": request["id"], "result": {"turn": {"id": turn, "status": "inProgress", "items": []}}})
    notify("turn/started", {"threadId": thread, "turn": {"id": turn, "status": "inProgress", "items": []}})
    if "[hang]" in prompt:
        while True:
            message = recv()
            if message.get("method") == "turn/interrupt":
                send({"id": message["id"], "result": {}})
                complete(thread, turn, "interrupted")
                return
    elif "[deaf]" in prompt:
        for _line in sys.stdin:
            pass
        time.sleep(600)
    elif "[die]" in prompt:
        sys.stderr.write("fake pooled app-server: simulated crash mid-turn\n")
        sys.stderr.flush()
        os._exit(3)
    else:
        message_item(thread, turn, f"done in {params.get('cwd')}")
        usage = {"inputTokens": 5, "outputTokens": 2, "totalTokens": 7}
        notify("thread/tokenUsage/updated", {"threadId": thread, "turnId": turn,
                                             "tokenUsage": {"total": usage, "last": usage}})
        complete(thread, turn)


def main() -> None:
    log({"started": time.time(), "argv": sys.argv, "cwd": os.getcwd()})
    threads = 0
    while True:
        message = recv()
        method = message.get("method")
        if method == "initialize":
            send({"id": message["id"], "result": {"userAgent": "fake-pooled/0.169.0"}})
        elif method == "thread/start":
            threads += 1
            send({"id": message["id"], "result": {"thread": {"id": f"thread-{threads}"}}})
        elif method == "turn/start":
            run_turn(message)
        elif method == "thread/unsubscribe":
            old = message["params"]["threadId"]
            send({"id": message["id"], "result": {"status": "unsubscribed"}})
            message_item(old, "late", "late words")
            complete(old, "late", "failed")
        elif "id" in message and method is not None:
            send({"id": message["id"], "result": {}})


if __name__ == "__main__":
    main()
