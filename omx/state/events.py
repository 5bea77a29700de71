"""The audit log: ``events/events.ndjson``, read with a byte-offset cursor, awaited with file events."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from omx.errors import InvalidInput, disk_full
from omx.models import Event
from omx.state import atomic, modes
from omx.state.base import _flocked, _unflock
from omx.state.wakeup import wait_for
from omx.state.workers import WorkerOps

EVENT_TYPE_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_BATCH = 10_000


@dataclass
class EventPage:
    events: list[Event] = field(default_factory=list)
    cursor: int = 0  # byte offset just past the last whole line read
    torn: list[dict[str, int]] = field(default_factory=list)  # {"offset", "length"} of bytes that are no event


_EVENT_START = b'{"event_id"'
MAX_TORN_REPORTED = 100


def split_torn(line: bytes) -> tuple[int, Any]:
    """Read one line of the log: ``(torn, data)``, ``torn`` the length of its leading bytes that are no JSON.

    A whole line gives ``(0, its JSON)``; a line of blanks (a torn one ``omx doctor --fix`` blanked
    out) gives ``(0, None)``. An older omx on a full disk could leave part of a line, and the next event
    was then glued onto it: the event is recovered from the last place an event starts, and the bytes
    before it are torn. A line with no JSON at all is torn whole: ``(len(line), None)``.
    """
    try:
        return 0, json.loads(line)
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        pass
    if not line.strip():
        return 0, None
    start = line.rfind(_EVENT_START)
    if start > 0:
        try:
            return start, json.loads(line[start:])
        except ValueError:
            pass
    return len(line.rstrip(b"\n")), None


class EventOps(WorkerOps):
    """append-event, read-events, await-event; the torn bytes ``omx doctor`` finds and moves aside."""

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
                                  data=data, strict=True)
        return Event(event_id=event_id, type=type_, team=p.team, created_at=at, worker=worker, task_id=task_id,
                     message_id=message_id, reason=reason, data=data)

    def read_events(
        self, team: str, *, cursor: int = 0, limit: int = 1000, types: list[str] | None = None,
        worker: str | None = None, task_id: str | None = None,
    ) -> EventPage:
        """Events after ``cursor`` (a byte offset from an earlier page; 0 = the start), filtered.

        Bytes that are no event (a torn line an older omx left on a full disk) are skipped and listed
        in the page's ``torn`` (offset and length); ``omx doctor --fix`` moves them aside.
        """
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
                start = pos
                pos += len(line)
                page.cursor = pos
                try:
                    ev: Event = Event.from_dict(json.loads(line))
                except ValueError:
                    torn, data = split_torn(line)
                    if torn and len(page.torn) < MAX_TORN_REPORTED:
                        page.torn.append({"offset": start, "length": torn})
                    try:
                        ev = Event.from_dict(data)
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
        torn: list[dict[str, int]] = []

        def check() -> EventPage | None:
            page = self.read_events(team, cursor=state["cursor"], types=types, worker=worker, task_id=task_id)
            state["cursor"] = page.cursor  # skip non-matching events for good
            torn.extend(page.torn)
            return page if page.events else None

        found = wait_for(check, [p.events_dir], timeout_ms)
        page = found or EventPage(cursor=state["cursor"])
        page.torn = torn[:MAX_TORN_REPORTED]
        return page

    # --- torn lines (omx doctor) ------------------------------------------------------------

    def torn_events(self, team: str) -> list[dict[str, int]]:
        """Every stretch of the log that is no event (``offset``, ``length``), the unfinished last line included."""
        p = self.paths(team)
        try:
            raw = atomic.read_bytes(p.events)
        except FileNotFoundError:
            return []
        return _torn_in(raw)

    def move_torn_aside(self, team: str) -> dict[str, Any]:
        """Copy the torn bytes to ``events/events.ndjson.torn`` and blank them in the log; nothing is deleted.

        Done under the log's lock (appenders wait), and in place: the torn bytes become spaces, so every
        byte offset stays what it was and readers' cursors stay valid; a recovered event glued behind
        torn bytes stays where it is. A last line without its newline is torn too (no appender is
        writing while the lock is held): its last byte becomes the newline. The side file is written
        and fsync'd before the log is touched; with no room for it, :class:`~omx.errors.DiskFull`
        and the log is left as it was.
        """
        p = self.paths(team)
        side = f"{p.events_s}.torn"
        try:
            fd = os.open(p.events_s, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            return {"moved": 0, "bytes": 0, "side_file": None}
        try:
            _flocked(fd, p.events_s)
            try:
                raw = _read_all(fd)
                torn = _torn_in(raw)
                if not torn:
                    return {"moved": 0, "bytes": 0, "side_file": None}
                _, at = self.now()
                record = b"".join(
                    f"# {at} moved from {p.events_s} at byte {t['offset']}, {t['length']} bytes:\n".encode()
                    + raw[t["offset"]:t["offset"] + t["length"]] + b"\n" for t in torn)
                sfd = modes.create_file(side, os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0),
                                        self._fmode(p))
                try:
                    atomic.write_all(sfd, record, side)
                    os.fsync(sfd)
                finally:
                    os.close(sfd)
                for t in torn:
                    end = t["offset"] + t["length"]
                    blank = b" " * t["length"] if end < len(raw) else b" " * (t["length"] - 1) + b"\n"
                    os.pwrite(fd, blank, t["offset"])
                os.fsync(fd)
            finally:
                _unflock(fd)
        except OSError as exc:
            raise disk_full(exc, side) or exc from None
        finally:
            os.close(fd)
        return {"moved": len(torn), "bytes": sum(t["length"] for t in torn), "side_file": side}


def _read_all(fd: int) -> bytes:
    parts = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _torn_in(raw: bytes) -> list[dict[str, int]]:
    out = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\n", pos)
        if end < 0:
            out.append({"offset": pos, "length": len(raw) - pos})  # unfinished: torn, or still being written
            break
        torn, _ = split_torn(raw[pos:end + 1])
        if torn:
            out.append({"offset": pos, "length": torn})
        pos = end + 1
    return out
