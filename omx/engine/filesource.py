"""The file team as a work source: claim-next, renew, transition, mailbox and shutdown over the store."""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from omx.clock import parse_iso
from omx.engine.source import Activity, Claimed, LeaseLost
from omx.errors import InvalidToken, LeaseExpired, OmxError, WorkerRunning
from omx.state import names
from omx.state.claims import ClaimResult
from omx.state.filestore import FileStore
from omx.state.locks import locked

log = logging.getLogger("omx.worker")


_IMPORTED_MS = time.time_ns() // 1_000_000
#: /proc's start time is good to ~20 ms; a request this close to our start is taken as meant for us.
_START_MARGIN_MS = 1_000


def process_started_ms(now_ms: int) -> int:
    """When this process was started, on the clock that gave ``now_ms`` (from /proc, to ~20 ms).

    Without /proc: when this module was imported (late by the interpreter's start-up, so a request
    written during start-up may then be taken for an old one).
    """
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        age_s = float(Path("/proc/uptime").read_text().split()[0]) - int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return now_ms - max(0, int(age_s * 1000))
    except (OSError, ValueError, IndexError):
        return _IMPORTED_MS


class _Named(dict[str, Any]):
    """A template variable that prints as its name (``{{ team }}``) and still has fields (``{{ team.goal }}``)."""

    def __str__(self) -> str:
        return str(self["name"])


class FileTeamSource:
    """``team``/``worker`` of a file store, seen as a :class:`~omx.engine.source.WorkSource`."""

    def __init__(self, store: FileStore, team: str, worker: str) -> None:
        self.store = store
        self.team = names.team_name(team)
        self.worker = names.worker_name(worker, allow_leader=False)
        self.name = f"{team}/{worker}"
        cfg = store.read_config(team)
        store.require_member(cfg, worker)
        self.lease_ms = cfg.lease_ms
        self.started_at = store.now()[1]
        self._seen_request: str | None = None
        self._registered = False  # start() took the identity: only then may stop() write the last records

    def start(self) -> None:
        s, t, w = self.store, self.team, self.worker
        # One live process per identity: checked and registered under the worker's own lock, so that
        # of two started at once the second sees the first. A refused one writes nothing (see stop).
        with locked(s.paths(t).locks / f"worker-{w}.lock"):
            running = s.live_worker(t, w, lease_ms=self.lease_ms)
            if running is not None:
                where = "" if running["host"] == s.host else f" on {running['host']}"
                raise WorkerRunning(f"worker {w} of team {t} is already running (pid {running['pid']}{where}); "
                                    "stop it first, or start a worker with another name", team=t, worker=w,
                                    pid=running["pid"], host=running["host"])
            ident = s.read_identity(t, w)
            s.write_identity(t, w, index=ident.index if ident else 0, role=ident.role if ident else None,
                             pid=os.getpid(), host=socket.gethostname(),
                             worktree=ident.worktree if ident else None)
            s.update_heartbeat(t, w, pid=os.getpid(), turn_count=0, alive=True)
            self._registered = True
        s.send_message(t, w, names.LEADER, f"ACK: {w} initialized (pid {os.getpid()})")
        s.write_status(t, w, "idle")
        # An old request from a previous run of this worker must not stop this one at once: one that
        # was acknowledged, or that is older than this process (a crashed run's). One written while
        # this process was starting up is for us, and the leader waits for its ACK.
        req = s.read_shutdown_request(t, w)
        if req is not None:
            answered = s.read_shutdown_ack(t, w, min_updated_at=req.requested_at) is not None
            born = process_started_ms(s.clock.now_ms()) - _START_MARGIN_MS
            if answered or parse_iso(req.requested_at) < born:
                self._seen_request = req.requested_at

    def heartbeat(self, state: str, current: str | None = None, turns: int = 0) -> None:
        self.store.update_heartbeat(self.team, self.worker, pid=os.getpid(), turn_count=turns or None, alive=True)

    def set_status(self, state: str, current: str | None = None, reason: str | None = None) -> None:
        self.store.write_status(self.team, self.worker, state, current_task_id=current, reason=reason)

    def acquire(self, wait_ms: int) -> Claimed | None:
        s = self.store
        if wait_ms > 0:
            r = s.claim_next_wait(self.team, self.worker, wait_ms=wait_ms, pid=os.getpid())
        else:
            r = s.claim_next(self.team, self.worker, pid=os.getpid())
        return self._claimed(r) if r else None

    def _claimed(self, r: ClaimResult) -> Claimed:
        t = r.task
        cfg = self.store.read_config(self.team)
        task_vars = {"id": t.id, "subject": t.subject, "description": t.description, "role": t.role,
                     "files": list(t.files), "depends_on": list(t.depends_on), "priority": t.priority,
                     "attempt": t.attempts}
        team_vars = _Named(name=self.team, goal=cfg.goal, workers=cfg.worker_names())
        note = t.result.get("integration") if isinstance(t.result, dict) else None
        if not (isinstance(note, dict) and note.get("status") in ("conflict", "verify_failed")):
            note = None
        old = r.took_over or {}
        here = old.get("host") == self.store.host
        previous = old.get("pid") if here and old.get("pid") != os.getpid() else None
        elsewhere = f"task-{t.id}-on-{self.store.host_tag}" if old.get("host") and not here else None
        return Claimed(key=f"task-{t.id}", title=t.subject,
                       variables={"task": task_vars, "team": team_vars, "worker": _Named(name=self.worker)},
                       attempt=t.attempts, handle=r, lease_ms=cfg.lease_ms, integration=note,
                       previous_pid=previous if isinstance(previous, int) else None, workspace_key=elsewhere)

    def integration(self) -> dict[str, Any]:
        """The team's integration settings as the leader recorded them (``branch``, ``base``), or {}."""
        found = self.store.read_config(self.team).extra.get("integration")
        return dict(found) if isinstance(found, dict) else {}

    def renew(self, claimed: Claimed) -> None:
        r: ClaimResult = claimed.handle
        try:
            self.store.renew_claim(self.team, r.task.id, self.worker, r.token)
        except (LeaseExpired, InvalidToken) as exc:
            raise LeaseLost(exc.message) from None

    def emit(self, claimed: Claimed, activity: Activity) -> None:
        r: ClaimResult = claimed.handle
        try:
            data = {"kind": activity.kind, "text": activity.text[:2000], **activity.data}
            self.store.append_event(self.team, "worker_activity", worker=self.worker, task_id=r.task.id, data=data)
        except OmxError as exc:
            log.warning("could not record activity: %s", exc.message)

    def _finish(self, claimed: Claimed, to: str, result: dict[str, Any], error: str | None) -> None:
        r: ClaimResult = claimed.handle
        try:
            self.store.transition_task(self.team, r.task.id, self.worker, r.token, to, result=result, error=error)
        except LeaseExpired:
            # The lease ran out while we finished (a stalled machine). If nobody took the task,
            # claim it again and report; if someone did, theirs is the run that counts.
            again = self.store.claim_task(self.team, r.task.id, self.worker, pid=os.getpid())
            self.store.transition_task(self.team, r.task.id, self.worker, again.token, to, result=result, error=error)

    def complete(self, claimed: Claimed, result: dict[str, Any]) -> None:
        self._finish(claimed, "completed", result, None)

    def fail(self, claimed: Claimed, error: str, result: dict[str, Any]) -> None:
        self._finish(claimed, "failed", result, error[:4000])

    def release(self, claimed: Claimed, reason: str, note: dict[str, Any] | None = None) -> None:
        r: ClaimResult = claimed.handle
        result = {"integration": note} if note is not None else None
        try:
            self.store.release_claim(self.team, r.task.id, self.worker, r.token, reason=reason, result=result)
        except (LeaseExpired, InvalidToken) as exc:
            log.info("task %s was no longer ours to release: %s", r.task.id, exc.message)

    def read_mail(self) -> list[str]:
        """New messages (marked delivered); shutdown requests are read separately."""
        out = []
        for m in self.store.mailbox_list(self.team, self.worker):
            self.store.mark_delivered(self.team, self.worker, m.message_id)
            out.append(f"{m.from_worker}: {m.body}")
        return out

    def shutdown_requested(self) -> str | None:
        req = self.store.read_shutdown_request(self.team, self.worker)
        if req is None or req.requested_at == self._seen_request:
            return None
        return req.reason or f"requested by {req.requested_by}"

    def drained(self) -> bool:
        return self.store.is_drained(self.team)

    def stop(self, reason: str) -> None:
        s, t, w = self.store, self.team, self.worker
        if not self._registered:
            return  # refused at start: the identity, status and heartbeat are another process's
        if self.shutdown_requested() is not None:
            s.write_shutdown_ack(t, w, "accept", reason)
        s.update_heartbeat(t, w, pid=os.getpid(), alive=False)
        s.write_status(t, w, "done", reason=reason)
