"""A scripted stand-in for ``codex app-server``, for the edges the real one will not show on demand.

Run it as the runtime's command: ``[sys.executable, FAKE_APP_SERVER, "<scenario>"]``. It speaks the
same line-delimited JSON-RPC as Codex 0.169 (``initialize`` → ``thread/start`` → ``turn/start`` →
notifications → ``turn/completed``). If ``FAKE_APP_SERVER_LOG`` is set, every line it receives is
appended there as JSON, plus ``{"pid": …}`` / ``{"grandchild": …}`` records.

Scenarios:

``ok``               one agent message ``"fake done"``, token usage, ``completed``
``unknown_request``  sends requests omx cannot handle (an unknown method, ``item/tool/requestUserInput``),
                     then answers with a message holding the responses it got (JSON)
``approval``         asks for command, file-change and legacy approvals; the final message holds the
                     decisions it got (JSON)
``malformed``        prints garbage lines between real messages, then completes normally
``failed_turn``      an ``error`` notification, then ``turn/completed`` ``failed`` with ``turn.error``
``die``              after ``turn/started``, writes to stderr and exits 3 (mid-turn death)
``die_leaving_child``  the same, but a grandchild ``sleep`` keeps stdout open after it died
``die_early``        exits 4 before answering ``initialize``
``refuse_thread``    answers ``thread/start`` with a JSON-RPC error
``never_complete``   the turn never ends by itself; ``turn/interrupt`` ends it as ``interrupted``
``deaf``             the turn never ends, ``turn/interrupt`` is ignored, SIGTERM is ignored, and a
                     grandchild ``sleep`` shares its process group (only SIGKILL to the group ends both)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

THREAD_ID = "thread-fake-1"
TURN_ID = "turn-fake-1"


def log(record: dict[str, Any]) -> None:
    path = os.environ.get("FAKE_APP_SERVER_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def send(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def recv() -> dict[str, Any]:
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)  # the client closed stdin: the session is over
    message: dict[str, Any] = json.loads(line)
    log(message)
    return message


def notify(method: str, params: dict[str, Any]) -> None:
    send({"method": method, "params": params})


def await_request(method: str) -> dict[str, Any]:
    while True:
        message = recv()
        if message.get("method") == method and "id" in message:
            return message


def await_response(request_id: int) -> dict[str, Any]:
    while True:
        message = recv()
        if message.get("id") == request_id and "method" not in message:
            return message


def handshake(scenario: str) -> dict[str, Any]:
    init = await_request("initialize")
    if scenario == "die_early":
        sys.stderr.write("fake app-server: dying before initialize\n")
        sys.exit(4)
    send({"id": init["id"], "result": {"userAgent": "fake/0.169.0"}})
    thread = await_request("thread/start")
    if scenario == "refuse_thread":
        send({"id": thread["id"], "error": {"code": -32600, "message": "fake: no threads today"}})
        await_request("never/arrives")
    send({"id": thread["id"], "result": {"thread": {"id": THREAD_ID}}})
    notify("thread/started", {"thread": {"id": THREAD_ID}})
    turn = await_request("turn/start")
    send({"id": turn["id"], "result": {"turn": {"id": TURN_ID, "status": "inProgress", "items": []}}})
    notify("turn/started", {"threadId": THREAD_ID, "turn": {"id": TURN_ID, "status": "inProgress", "items": []}})
    return turn


def agent_message(text: str) -> None:
    item = {"type": "agentMessage", "id": "msg-1", "text": text}
    notify("item/started", {"threadId": THREAD_ID, "turnId": TURN_ID, "item": {**item, "text": ""}})
    notify("item/agentMessage/delta", {"threadId": THREAD_ID, "turnId": TURN_ID, "itemId": "msg-1", "delta": text})
    notify("item/completed", {"threadId": THREAD_ID, "turnId": TURN_ID, "item": item})


def token_usage() -> None:
    total = {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18, "cachedInputTokens": 0}
    last = {"inputTokens": 11, "outputTokens": 7, "totalTokens": 18, "cachedInputTokens": 0}
    usage = {"total": total, "last": last}
    notify("thread/tokenUsage/updated", {"threadId": THREAD_ID, "turnId": TURN_ID, "tokenUsage": usage})


def complete(status: str = "completed", error: dict[str, Any] | None = None) -> None:
    turn: dict[str, Any] = {"id": TURN_ID, "status": status, "items": [], "error": error}
    notify("turn/completed", {"threadId": THREAD_ID, "turn": turn})


def ask(request_id: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    send({"method": method, "id": request_id, "params": params})
    return await_response(request_id)


def run_turn(scenario: str) -> None:
    if scenario == "ok":
        agent_message("fake done")
        token_usage()
        complete()
    elif scenario == "unknown_request":
        got = [
            ask(0, "omx/test/somethingNew", {"threadId": THREAD_ID}),
            ask(1, "item/tool/requestUserInput", {"threadId": THREAD_ID, "turnId": TURN_ID, "questions": []}),
        ]
        agent_message(json.dumps(got))
        complete()
    elif scenario == "approval":
        where = {"threadId": THREAD_ID, "turnId": TURN_ID, "startedAtMs": 0}
        got = [
            ask(0, "item/commandExecution/requestApproval", {**where, "itemId": "c1", "command": "rm -rf build"}),
            ask(1, "item/fileChange/requestApproval", {**where, "itemId": "f1", "reason": "write outside"}),
            ask(2, "execCommandApproval", {"conversationId": THREAD_ID, "callId": "c2", "command": ["ls"]}),
        ]
        agent_message(json.dumps([reply.get("result") for reply in got]))
        complete()
    elif scenario == "malformed":
        sys.stdout.write("this is not json\n[1, 2, 3]\n{broken\n{\"neither\": \"method nor id\"}\n\n")
        sys.stdout.flush()
        agent_message("survived the garbage")
        complete()
    elif scenario == "failed_turn":
        error = {"message": "model exploded", "codexErrorInfo": "other"}
        notify("error", {"threadId": THREAD_ID, "turnId": TURN_ID, "willRetry": True, "error": {"message": "retrying"}})
        notify("error", {"threadId": THREAD_ID, "turnId": TURN_ID, "willRetry": False, "error": error})
        complete("failed", error)
    elif scenario in ("die", "die_leaving_child"):
        if scenario == "die_leaving_child":  # a leftover that keeps our stdout open after we are gone
            log({"grandchild": subprocess.Popen(["sleep", "600"]).pid})
        sys.stderr.write("fake app-server: simulated crash mid-turn\n")
        sys.stderr.flush()
        os._exit(3)
    elif scenario == "never_complete":
        interrupt = await_request("turn/interrupt")
        send({"id": interrupt["id"], "result": {}})
        complete("interrupted")
    elif scenario == "deaf":  # deaf to SIGTERM and with its grandchild since before turn/started (main)
        for line in sys.stdin:  # hears everything, answers nothing
            log(json.loads(line))
        time.sleep(600)  # and outlives its stdin too
    # after the turn: stay until the client closes stdin
    while True:
        recv()


def main() -> None:
    scenario = sys.argv[1] if len(sys.argv) > 1 else "ok"
    log({"pid": os.getpid(), "scenario": scenario, "argv": sys.argv, "time": time.time()})
    if scenario == "deaf":  # before the turn starts: a client that stops it at once must meet both
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen(["sleep", "600"])  # same process group as us
        log({"grandchild": grandchild.pid})
    handshake(scenario)
    run_turn(scenario)


if __name__ == "__main__":
    main()
