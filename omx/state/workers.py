"""Worker records (identity, status, heartbeat) and the shutdown handshake."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

from omx.errors import CorruptState, InvalidInput
from omx.models import Heartbeat, Record, ShutdownAck, ShutdownRequest, WorkerIdentity, WorkerStatus
from omx.state import atomic, modes
from omx.state.mailbox import MailboxOps
from omx.state.paths import TeamPaths

M = TypeVar("M", bound=Record)


def _read_model(path: Path, model: type[M]) -> M | None:
    try:
        rec: M = model.from_dict(atomic.read_json(path))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise CorruptState(f"{path}: invalid {model.__name__} ({exc})", path=str(path)) from None
    return rec


def _validated(model: type[M], data: dict[str, Any]) -> M:
    try:
        rec: M = model.from_dict(data)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return rec


class WorkerOps(MailboxOps):
    """identity.json, status.json, heartbeat.json, shutdown-request.json, shutdown-ack.json."""

    def _wpath(self, team: str, worker: str, name: str) -> tuple[Any, Path]:
        """The team's paths and ``workers/<worker>/<name>`` (the directory is made by the first write)."""
        p = self.paths(team)
        self.require_member(self._load_config(p), worker)
        return p, p.worker_dir(worker) / name

    def _write(self, p: TeamPaths, path: Path, data: dict[str, Any], *, durable: bool = True) -> None:
        # No mkdir before every write (a running worker writes its status twice a task): only when
        # the directory is not there yet.
        mode = self._fmode(p)
        try:
            atomic.write_json(path, data, durable=durable, mode=mode)
        except FileNotFoundError:
            modes.make_dirs(path.parent, modes.dir_for(mode))
            atomic.write_json(path, data, durable=durable, mode=mode)

    def write_identity(self, team: str, worker: str, **fields: Any) -> WorkerIdentity:
        p, path = self._wpath(team, worker, "identity.json")
        _, at = self.now()
        ident = _validated(WorkerIdentity, {"started_at": at, **fields, "name": worker, "team": team})
        self._write(p, path, ident.to_dict())
        self._emit(p, "worker_registered", worker=worker, data={"pid": ident.pid, "host": ident.host})
        return ident

    def read_identity(self, team: str, worker: str) -> WorkerIdentity | None:
        return _read_model(self._wpath(team, worker, "identity.json")[1], WorkerIdentity)

    def write_status(
        self, team: str, worker: str, state: str, *, current_task_id: str | None = None, reason: str | None = None
    ) -> WorkerStatus:
        p, path = self._wpath(team, worker, "status.json")
        _, at = self.now()
        st = _validated(WorkerStatus, {"state": state, "current_task_id": current_task_id, "reason": reason,
                                       "updated_at": at})
        self._write(p, path, st.to_dict(), durable=False)
        self._emit(p, "worker_state_changed", worker=worker, task_id=current_task_id, reason=reason,
                   data={"state": state})
        return st

    def read_status(self, team: str, worker: str) -> WorkerStatus:
        st = _read_model(self._wpath(team, worker, "status.json")[1], WorkerStatus)
        return st or WorkerStatus()

    def update_heartbeat(
        self, team: str, worker: str, *, pid: int | None = None, turn_count: int | None = None, alive: bool = True
    ) -> Heartbeat:
        """Record liveness. Not an audit event: it happens every few seconds per worker."""
        p, path = self._wpath(team, worker, "heartbeat.json")
        _, at = self.now()
        old = _read_model(path, Heartbeat) if turn_count is None else None
        hb = _validated(Heartbeat, {
            "pid": pid if pid is not None else os.getpid(), "last_beat_at": at, "alive": alive,
            "turn_count": turn_count if turn_count is not None else (old.turn_count if old else 0),
        })
        self._write(p, path, hb.to_dict(), durable=False)
        return hb

    def read_heartbeat(self, team: str, worker: str) -> Heartbeat | None:
        return _read_model(self._wpath(team, worker, "heartbeat.json")[1], Heartbeat)

    def live_worker(self, team: str, worker: str, *, lease_ms: int | None = None) -> dict[str, Any] | None:
        """Who runs ``worker`` now, or ``None`` when no live process does (so it may be started).

        Live: its identity or heartbeat names a pid on this host that is alive and is an ``omx team
        worker`` (not this process), or, from another host, a heartbeat saying alive within 3 leases.
        A process whose last heartbeat says it left (``alive: false``) is on its way out: not live.
        Returns ``{"pid", "host", "heartbeat_age_ms"}``.
        """
        from omx.clock import parse_iso
        from omx.pids import is_omx_worker

        ident = self.read_identity(team, worker)
        hb = self.read_heartbeat(team, worker)
        now_ms = self.clock.now_ms()
        try:
            age = now_ms - parse_iso(hb.last_beat_at) if hb and hb.last_beat_at else None
        except ValueError:
            age = None
        host = ident.host if ident and ident.host else self.host
        if host == self.host:
            for pid in dict.fromkeys([hb.pid if hb else None, ident.pid if ident else None]):
                if not pid or pid == os.getpid():
                    continue
                if hb is not None and hb.pid == pid and not hb.alive:
                    continue
                if is_omx_worker(pid, team, worker):
                    return {"pid": pid, "host": host, "heartbeat_age_ms": age}
            return None
        if lease_ms is None:
            lease_ms = self.read_config(team).lease_ms
        if hb is not None and hb.alive and age is not None and age <= 3 * lease_ms:
            return {"pid": hb.pid, "host": host, "heartbeat_age_ms": age}
        return None

    def write_shutdown_request(self, team: str, worker: str, requested_by: str, reason: str | None = None
                               ) -> ShutdownRequest:
        p, path = self._wpath(team, worker, "shutdown-request.json")
        _, at = self.now()
        req = _validated(ShutdownRequest, {"requested_by": requested_by, "requested_at": at, "reason": reason})
        self._write(p, path, req.to_dict())
        self._emit(p, "shutdown_requested", worker=worker, reason=reason, data={"requested_by": requested_by})
        return req

    def read_shutdown_request(self, team: str, worker: str) -> ShutdownRequest | None:
        return _read_model(self._wpath(team, worker, "shutdown-request.json")[1], ShutdownRequest)

    def write_shutdown_ack(self, team: str, worker: str, status: str = "accept", reason: str | None = None
                           ) -> ShutdownAck:
        p, path = self._wpath(team, worker, "shutdown-ack.json")
        _, at = self.now()
        ack = _validated(ShutdownAck, {"worker": worker, "status": status, "reason": reason, "updated_at": at})
        self._write(p, path, ack.to_dict())
        self._emit(p, "shutdown_ack", worker=worker, reason=reason, data={"status": status})
        return ack

    def read_shutdown_ack(self, team: str, worker: str, min_updated_at: str | None = None) -> ShutdownAck | None:
        ack = _read_model(self._wpath(team, worker, "shutdown-ack.json")[1], ShutdownAck)
        if ack is not None and min_updated_at is not None:
            from omx.clock import parse_iso

            try:
                if parse_iso(ack.updated_at) < parse_iso(min_updated_at):
                    return None
            except ValueError:
                raise InvalidInput("min_updated_at must be an ISO-8601 timestamp", field="min_updated_at") from None
        return ack
