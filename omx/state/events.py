"""The audit log: ``events/events.ndjson``, read with a byte-offset cursor, awaited with file events."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from omx.errors import InvalidInput
from omx.models import Event
from omx.state.wakeup import wait_for
from omx.state.workers import WorkerOps

EVENT_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_BATCH = 10_000


@dataclass
class EventPage:
    events: list[Event] = field(default_factory=list)
    cursor: int = 0  # byte offset just past the last whole line read


class EventOps(WorkerOps):
    """append-event, read-events, await-event."""

    def append_event(
        self, team: str, type_: str, *, worker: str | None = None, task_id: str | None = None,
        message_id: str | None = None, reason: str | None = None, data: dict[str, Any] | None = None,
    ) -> Event:
        """Append a custom event (scripts and skills use it to leave an audit trail)."""
        p = self.paths(team)
        if not isinstance(type_, str) or not EVENT_TYPE_RE.fullmatch(type_):
            raise InvalidInput("event type must match [a-z][a-z0-9_]{0,63}", field="type")
        if worker is not None:
            self.require_member(self._load_config(p), worker, allow_leader=True)
        if task_id is not None:
            from omx.state.names import task_id as norm

            task_id = norm(task_id)
        data = data or {}
        event_id, at = self._emit(p, type_, worker=worker, task_id=task_id, message_id=message_id, reason=reason,
                                  data=data)
        return Event(event_id=event_id, type=type_, team=p.team, created_at=at, worker=worker, task_id=task_id,
                     message_id=message_id, reason=reason, data=data)

    def read_events(
        self, team: str, *, cursor: int = 0, limit: int = 1000, types: list[str] | None = None,
        worker: str | None = None, task_id: str | None = None,
    ) -> EventPage:
        """Events after ``cursor`` (a byte offset from an earlier page; 0 = the start), filtered."""
        p = self.paths(team)
        if isinstance(cursor, bool) or not isinstance(cursor, int) or cursor < 0:
            raise InvalidInput("cursor must be a non-negative integer", field="cursor")
        limit = max(1, min(int(limit), MAX_BATCH))
        page = EventPage(cursor=cursor)
        try:
            f = open(p.events, "rb")  # noqa: SIM115 - closed below; seek before reading
        except FileNotFoundError:
            return page
        with f:
            f.seek(cursor)
            pos = cursor
            for line in f:
                if not line.endswith(b"\n"):
                    break  # a line still being written: read it next time
                pos += len(line)
                page.cursor = pos
                try:
                    ev: Event = Event.from_dict(json.loads(line))
                except ValueError:
                    continue
                if types and ev.type not in types:
                    continue
                if worker is not None and ev.worker != worker:
                    continue
                if task_id is not None and ev.task_id != task_id:
                    continue
                page.events.append(ev)
                if len(page.events) >= limit:
                    break
        return page

    def await_event(
        self, team: str, *, cursor: int = 0, timeout_ms: int = 30_000, types: list[str] | None = None,
        worker: str | None = None, task_id: str | None = None,
    ) -> EventPage:
        """Block until an event after ``cursor`` matches, or ``timeout_ms`` passes (then: no events)."""
        p = self.paths(team)
        state = {"cursor": cursor}

        def check() -> EventPage | None:
            page = self.read_events(team, cursor=state["cursor"], types=types, worker=worker, task_id=task_id)
            state["cursor"] = page.cursor  # skip non-matching events for good
            return page if page.events else None

        found = wait_for(check, [p.events_dir], timeout_ms)
        return found or EventPage(cursor=state["cursor"])
