"""Name rules for teams, workers and task ids.

Names become path components, so they are checked before any path is built. The rules are stricter
than oh-my-codex's on purpose: lower case, digits and ``-`` only, bounded length, no leading ``-``.
"""

from __future__ import annotations

import re

from omx.errors import InvalidInput

TEAM_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,29}")
WORKER_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
TASK_ID_RE = re.compile(r"(?:task-)?([0-9]{1,12})")

#: The leader's mailbox name (oh-my-codex's).
LEADER = "leader-fixed"


def _check(kind: str, value: object, pattern: re.Pattern[str], rule: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{kind} name must be a string, got {type(value).__name__}", field=kind)
    if not pattern.fullmatch(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidInput(f"invalid {kind} name {shown!r}: {rule}", field=kind)
    return value


def team_name(value: object) -> str:
    """Return ``value`` if it is a valid team name, else raise :class:`InvalidInput`.

    >>> team_name("alpha")
    'alpha'
    """
    return _check("team", value, TEAM_RE, "1-30 chars of a-z, 0-9 and '-', not starting with '-'")


def worker_name(value: object, *, allow_leader: bool = True) -> str:
    """Return ``value`` if it is a valid worker name (``leader-fixed`` included unless disallowed)."""
    name = _check("worker", value, WORKER_RE, "1-64 chars of a-z, 0-9 and '-', not starting with '-'")
    if name == LEADER and not allow_leader:
        raise InvalidInput(f"{LEADER!r} is the leader's mailbox, not a worker", field="worker")
    return name


def task_id(value: object) -> str:
    """Normalise a task id: ``7``, ``"7"`` and ``"task-7"`` all give ``"7"``.

    >>> task_id("task-0042")
    '42'
    """
    if type(value) is str and value.isascii() and value.isdigit() and len(value) <= 12 and (
        value[0] != "0" or value == "0"
    ):
        return value  # already the normal form (the common case: ids the store itself handed out)
    if isinstance(value, bool):  # bool is an int subclass; True is not task 1
        raise InvalidInput("task id must be a string or integer", field="task_id")
    if isinstance(value, int) and value >= 0:
        value = str(value)
    if not isinstance(value, str):
        raise InvalidInput("task id must be a string or integer", field="task_id")
    m = TASK_ID_RE.fullmatch(value)
    if not m:
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise InvalidInput(f"invalid task id {shown!r}: expected digits, optionally prefixed 'task-'", field="task_id")
    return str(int(m.group(1)))


def parse_worker_env(value: str) -> tuple[str, str]:
    """Split ``OMX_TEAM_WORKER=<team>/<worker>`` into validated parts."""
    team, sep, worker = value.partition("/")
    if not sep:
        raise InvalidInput(f"OMX_TEAM_WORKER must be '<team>/<worker>', got {value!r}", field="OMX_TEAM_WORKER")
    return team_name(team), worker_name(worker, allow_leader=False)
