"""What the two Codex runtimes share: finding the binary, ``-c`` values, and reading Codex items.

``codex app-server`` names items in camelCase (``commandExecution``, ``exitCode``); ``codex exec
--json`` in snake_case (``command_execution``, ``exit_code``). :func:`item_event` reads both into the
same :class:`~omx.engine.runtimes.base.RuntimeEvent`, so a worker sees one vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from omx.engine.early import find_codex as find_codex  # re-exported: the runtimes import it from here
from omx.engine.runtimes.base import RuntimeEvent

#: Longest command output kept in a ``command`` event (characters, the tail).
MAX_OUTPUT_CHARS = 4000

_COMMAND = ("commandExecution", "command_execution")
_MESSAGE = ("agentMessage", "agent_message")
_FILES = ("fileChange", "file_change")


def toml_value(value: Any) -> str:
    """``value`` as a TOML value for ``codex -c key=<value>`` (strings, numbers, bools, lists, tables).

    Codex falls back to the raw text when a ``-c`` value is not valid TOML; quoting every string
    ourselves means text never changes meaning (a ``[`` or ``=`` in it stays text).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        out = []
        for ch in value:
            if ch in ('"', "\\"):
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{toml_value(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _get(item: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in item and item[name] is not None:
            return item[name]
    return None


def _tail(text: Any, limit: int = MAX_OUTPUT_CHARS) -> str | None:
    if not isinstance(text, str):
        return None
    return text if len(text) <= limit else text[-limit:]


def _change_kind(kind: Any) -> str:
    if isinstance(kind, Mapping):  # app-server: {"type": "update", "move_path": …}
        return str(kind.get("type") or "update")
    return str(kind or "update")


def item_event(phase: str, item: Mapping[str, Any]) -> RuntimeEvent | None:
    """The event for a Codex item that started or completed, or ``None`` for items we do not report.

    Args:
        phase: ``"started"`` or ``"completed"``.
        item: the ``item`` object of ``item/started``/``item/completed`` (app-server) or
            ``item.started``/``item.completed`` (exec).
    """
    kind = item.get("type")
    if kind in _COMMAND:
        return RuntimeEvent(
            "command",
            {
                "phase": phase,
                "id": item.get("id"),
                "command": item.get("command"),
                "cwd": item.get("cwd"),
                "status": item.get("status"),
                "exit_code": _get(item, "exitCode", "exit_code"),
                "output": _tail(_get(item, "aggregatedOutput", "aggregated_output")) if phase == "completed" else None,
            },
        )
    if phase != "completed":
        return None
    if kind in _MESSAGE:
        return RuntimeEvent("message", {"id": item.get("id"), "text": str(item.get("text") or "")})
    if kind in _FILES:
        changes = [
            {"path": str(change.get("path") or ""), "kind": _change_kind(change.get("kind"))}
            for change in item.get("changes") or []
            if isinstance(change, Mapping)
        ]
        return RuntimeEvent("file_change", {"id": item.get("id"), "changes": changes, "status": item.get("status")})
    if kind == "error":  # exec reports warnings (e.g. unknown model metadata) as "error" items
        return RuntimeEvent("warning", {"message": str(item.get("message") or "")})
    return None


def message_text(item: Mapping[str, Any]) -> str | None:
    """The text of an agent-message item (either spelling), else ``None``."""
    if item.get("type") in _MESSAGE:
        return str(item.get("text") or "")
    return None


def tokens_from(usage: Mapping[str, Any]) -> dict[str, int]:
    """``{"input", "output", "total"}`` from a Codex usage object (camelCase or snake_case).

    ``total`` is computed when the object has none (``codex exec``'s ``turn.completed`` usage).
    """

    def num(*names: str) -> int:
        value = _get(usage, *names)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    tokens_in = num("inputTokens", "input_tokens")
    tokens_out = num("outputTokens", "output_tokens")
    total = num("totalTokens", "total_tokens") or tokens_in + tokens_out
    return {"input": tokens_in, "output": tokens_out, "total": total}


def parse_json_line(line: str) -> dict[str, Any] | None:
    """The JSON object on ``line``, or ``None`` if it is not one (a log line, garbage, a list)."""
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
