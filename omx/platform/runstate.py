"""What a running platform worker tells the other ``omx worker`` commands about itself.

``$OMX_HOME/run/worker-<id>.json`` is rewritten (atomically) on every state change and heartbeat:
the pid, ``state`` (starting | idle | working | stopping | stopped), the sessions running now, counts,
the last platform error and when the platform last answered. ``omx worker status`` shows it and
``omx worker worktrees remove`` reads it so that it never removes a running session's worktree.
``worker-<id>.pid`` holds the pid of a running ``watch`` (foreground or background); the process holds
``worker-<id>.lock`` (a kernel lock, gone with the process) for as long as it runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from omx.clock import iso
from omx.pids import pid_alive as pid_alive  # re-exported for the daemon
from omx.platform.config import run_dir
from omx.state.atomic import write_json


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


def running_sessions(worker_id: str) -> set[str]:
    """Sessions a live worker process says it is running now (empty when none runs)."""
    state = read_state(worker_id)
    if not state or not isinstance(state.get("pid"), int) or not pid_alive(state["pid"]):
        return set()
    return {str(s) for s in state.get("current", [])}


class StateFile:
    """The writer side: one per worker process; thread-safe."""

    def __init__(self, worker_id: str) -> None:
        self.path = state_path(worker_id)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        now = iso(time.time_ns() // 1_000_000)
        self.data: dict[str, Any] = {"worker_id": worker_id, "pid": os.getpid(), "state": "starting", "current": [],
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
