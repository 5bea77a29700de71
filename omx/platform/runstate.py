"""What a running platform worker tells the other ``omx worker`` commands about itself.

``$OMX_HOME/run/worker-<id>.json`` is rewritten (atomically) on every state change and heartbeat:
the pid, ``mode`` (foreground | background | run), ``state`` (starting | idle | working | stopping |
stopped), the sessions running now, counts,
the last platform error and when the platform last answered. ``omx worker status`` shows it and
``omx worker worktrees remove`` reads it so that it never removes a running session's worktree.
``worker-<id>.pid`` holds the pid of a running ``watch`` or ``run`` (foreground or background); the process
holds ``worker-<id>.lock`` (a kernel lock, gone with the process) for as long as it runs. Whether a worker
runs is decided by that lock, never by a command line: a ``watch`` started without ``--worker`` does not
name its worker anywhere a process listing shows (:func:`lock_holder`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from omx.clock import iso
from omx.errors import OmxError
from omx.pids import pid_alive as pid_alive  # re-exported for the daemon
from omx.platform.config import run_dir
from omx.state.atomic import write_json

_PROC_FD = Path("/proc/self/fd")


def state_path(worker_id: str) -> Path:
    """``$OMX_HOME/run/worker-<id>.json``."""
    return run_dir() / f"worker-{worker_id}.json"


def pid_path(worker_id: str) -> Path:
    """``$OMX_HOME/run/worker-<id>.pid``."""
    return run_dir() / f"worker-{worker_id}.pid"


def lock_path(worker_id: str) -> Path:
    """``$OMX_HOME/run/worker-<id>.lock`` (held by the running worker)."""
    return run_dir() / f"worker-{worker_id}.lock"


def read_state(worker_id: str) -> dict[str, Any] | None:
    """The last state the worker wrote, or ``None``."""
    try:
        data = json.loads(state_path(worker_id).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_pid(worker_id: str) -> int | None:
    """The pid in the worker's pidfile, or ``None``."""
    try:
        return int(pid_path(worker_id).read_text().strip())
    except (OSError, ValueError):
        return None


def holds_lock(pid: int, worker_id: str) -> bool:
    """True when ``pid`` is alive and has the worker's lock file open.

    Only the lock's holder keeps that file open (a contender closes it as soon as its ``flock`` fails),
    so this tells a live worker from a recycled pid. Without ``/proc`` a live pid is trusted: only the
    holder writes the pidfile.
    """
    if not pid_alive(pid):
        return False
    if not _PROC_FD.is_dir():
        return True
    want = os.path.realpath(lock_path(worker_id))
    try:
        entries = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # gone meanwhile, or another user's process (not ours, then)
        return False
    for entry in entries:
        try:
            if os.readlink(entry) == want:
                return True
        except OSError:
            continue  # closed while we looked
    return False


def lock_holder(worker_id: str) -> int | None:
    """The pid of the process running this worker here (holding its lock), or ``None``.

    The pidfile names it; when the pidfile is missing or stale (an older omx removed a live worker's),
    ``/proc/locks`` still knows who holds the lock.
    """
    recorded = read_pid(worker_id)
    if recorded is not None and holds_lock(recorded, worker_id):
        return recorded
    for pid in _flock_pids(lock_path(worker_id)):
        if pid != recorded and holds_lock(pid, worker_id):
            return pid
    return None


def _flock_pids(path: Path) -> list[int]:
    """Pids that ``/proc/locks`` says hold a lock on ``path``'s inode (empty without /proc)."""
    try:
        inode = os.stat(path).st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 18472 fe:00:2146311 0 EOF"
        parts = line.split()
        if len(parts) >= 6 and parts[5].rsplit(":", 1)[-1] == str(inode) and parts[4].isdigit():
            pids.append(int(parts[4]))
    return pids


def running_sessions(worker_id: str) -> set[str]:
    """Sessions a live worker process says it is running now (empty when none runs)."""
    state = read_state(worker_id)
    if not state or not isinstance(state.get("pid"), int) or not pid_alive(state["pid"]):
        return set()
    return {str(s) for s in state.get("current", [])}


def start_failure_path(worker_id: str) -> Path:
    """``$OMX_HOME/run/worker-<id>.failed.json``: why a background worker stopped as it started."""
    return run_dir() / f"worker-{worker_id}.failed.json"


def record_start_failure(worker_id: str, exc: OmxError) -> None:
    """Leave ``exc`` for the ``omx worker start`` that launched this process (its stderr is only a log file)."""
    try:
        write_json(start_failure_path(worker_id), {"pid": os.getpid(), "code": exc.code, "message": exc.message,
                                                   "exit_status": exc.exit_status}, durable=False)
    except OSError:
        pass  # `start` falls back to the end of the log


def take_start_failure(worker_id: str, pid: int) -> dict[str, Any] | None:
    """The failure process ``pid`` recorded (and remove it), or ``None`` when it left none."""
    path = start_failure_path(worker_id)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("pid") != pid:
        return None  # another start's child
    path.unlink(missing_ok=True)
    ok = isinstance(data.get("code"), str) and isinstance(data.get("message"), str) and \
        isinstance(data.get("exit_status"), int)
    return data if ok else None


class StateFile:
    """The writer side: one per worker process; thread-safe."""

    def __init__(self, worker_id: str, *, mode: str = "foreground") -> None:
        self.path = state_path(worker_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        now = iso(time.time_ns() // 1_000_000)
        self.data: dict[str, Any] = {"worker_id": worker_id, "pid": os.getpid(), "mode": mode, "state": "starting",
                                     "current": [],
                                     "started_at": now, "updated_at": now, "completed": 0, "failed": 0,
                                     "released": 0, "lost": 0, "last_platform_ok_at": None, "last_error": None}

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` in and rewrite the file (never raises for I/O)."""
        with self._lock:
            self.data.update(fields)
            self.data["updated_at"] = iso(time.time_ns() // 1_000_000)
            try:
                write_json(self.path, self.data, durable=False)
            except OSError:
                pass  # informational: never let it stop the worker

    def count(self, outcome: str) -> None:
        """Add one to the ``outcome`` counter (completed, failed, released, lost)."""
        with self._lock:
            self.data[outcome] = int(self.data.get(outcome, 0)) + 1
        self.update()
