"""``omx worker start|status|logs|stop``: the platform worker as a background process.

``start`` runs ``omx worker watch --worker <id>`` detached (a new session, stdin from /dev/null, output
appended to ``$OMX_HOME/logs/worker-<id>.log``) and waits until the child holds the worker's lock and
has written its pidfile — or exits, in which case its own error (code and exit status, which it leaves
in ``run/``) is the error. ``stop`` sends SIGTERM (the running session is interrupted, its claim
released, its worktree kept), waits up to a bound, and kills only when it must, saying so.

A worker runs when a process holds its lock (:func:`~omx.platform.runstate.lock_holder`), whether it
was started here, by ``omx worker watch`` in a terminal (with or without ``--worker``) or by ``omx
worker run``: ``status`` shows it, ``stop`` stops it, ``start`` refuses to start a second one. A pid is
only ever signalled after checking that it still holds the lock, so a recycled pid is never hit, and a
pidfile is only removed when no live process holds the lock.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omx.errors import Refused
from omx.platform.config import logs_dir
from omx.platform.errors import WorkerStartFailed
from omx.platform.runstate import (
    holds_lock,
    lock_holder,
    pid_alive,
    pid_path,
    read_pid,
    read_state,
    take_start_failure,
)
from omx.state import modes

MAX_LOG_BYTES = 10 * 1024 * 1024
#: How ``status`` and the refusals describe each ``mode`` a running worker records.
MODES = {"foreground": "in the foreground (omx worker watch)", "background": "in the background",
         "run": "running one session (omx worker run)"}


def log_path(worker_id: str) -> Path:
    """``$OMX_HOME/logs/worker-<id>.log``."""
    return logs_dir() / f"worker-{worker_id}.log"


@dataclass
class Status:
    """A worker's process as seen from outside: running when a live process holds its lock."""

    worker_id: str
    running: bool
    pid: int | None
    state: dict[str, Any] | None
    log: Path
    stale_pidfile: bool = False
    mode: str | None = None  # foreground | background | run; None while it starts

    def how(self) -> str:
        """``in the background``, ``in the foreground (omx worker watch)``, ... (``starting`` before it says)."""
        return MODES.get(self.mode or "", "starting")


def status(worker_id: str) -> Status:
    """Whether the worker runs here (a stale pidfile is reported, not trusted)."""
    recorded = read_pid(worker_id)
    pid = lock_holder(worker_id)
    state = read_state(worker_id)
    mode = state.get("mode") if pid is not None and state and state.get("pid") == pid else None
    return Status(worker_id, pid is not None, pid, state, log_path(worker_id),
                  stale_pidfile=recorded is not None and pid is None, mode=mode if isinstance(mode, str) else None)


def start(worker_id: str, *, extra_args: list[str] | None = None, wait_s: float = 30.0) -> Status:
    """Start the background worker; return once it runs (or raise the child's own error)."""
    current = status(worker_id)
    if current.running:
        raise Refused(f"worker {worker_id} is already running (pid {current.pid}) {current.how()}; "
                      f"`omx worker stop --worker {worker_id}` stops it", worker=worker_id, pid=current.pid)
    log = log_path(worker_id)
    modes.make_dirs(log.parent)
    if log.exists() and log.stat().st_size > MAX_LOG_BYTES:  # one old log is kept, as <log>.1
        os.replace(log, log.with_name(log.name + ".1"))
    argv = [sys.executable, "-m", "omx", "worker", "watch", "--worker", worker_id, "--background",
            *(extra_args or [])]
    # The log holds prompts and agent output: private (0600) whatever the umask.
    with open(os.devnull, "rb") as devnull, os.fdopen(modes.create_file(log, os.O_WRONLY | os.O_APPEND), "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: omx worker watch --worker {worker_id}\n"
                  .encode())
        out.flush()
        child = subprocess.Popen(argv, stdin=devnull, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 close_fds=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise _start_failed(worker_id, child, log)
        state = read_state(worker_id) or {}
        if read_pid(worker_id) == child.pid and state.get("pid") == child.pid and state.get("state") != "starting":
            return status(worker_id)
        time.sleep(0.05)
    return status(worker_id)  # slow machine: it runs, but has not said hello to the platform yet


def _start_failed(worker_id: str, child: subprocess.Popen[bytes], log: Path) -> WorkerStartFailed:
    """The child's own error when it left one (an API key refused is exit 1, not an internal error)."""
    failure = take_start_failure(worker_id, child.pid)
    if failure is not None:
        return WorkerStartFailed(f"the background worker stopped at once: {failure['message']} (log: {log})",
                                 code=str(failure["code"]), exit_status=int(failure["exit_status"]),
                                 worker=worker_id)
    return WorkerStartFailed(f"the background worker exited at once (status {child.returncode}); the end of "
                             f"{log}:\n" + tail(log, 15), worker=worker_id)


def stop(worker_id: str, *, timeout_s: float = 30.0, say: Callable[[str], None] = print) -> bool:
    """SIGTERM the running worker (background or foreground) and wait; SIGKILL after ``timeout_s``.

    Returns True when it stopped gracefully (its claim released).
    """
    st = status(worker_id)
    if st.pid is None:
        removed = st.stale_pidfile and _remove_pidfile(worker_id, read_pid(worker_id))
        raise Refused(f"worker {worker_id} is not running" + (" (removed a stale pidfile)" if removed else ""),
                      worker=worker_id)
    pid = st.pid
    os.kill(pid, signal.SIGTERM)
    current = ((st.state or {}).get("current") or []) if st.mode else []  # a state file of this process only
    say(f"sent SIGTERM to {pid}" + (f"; releasing {', '.join(current)}" if current else "") + " ...")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    if holds_lock(pid, worker_id):
        os.kill(pid, signal.SIGKILL)
        say(f"worker {worker_id} (pid {pid}) did not stop within {timeout_s:g}s: killed it. Its claim was not "
            "released; the platform marks the session stale when the lease runs out")
        deadline = time.monotonic() + 10.0  # SIGKILL is not refused, but it is not instant either
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
    _remove_pidfile(worker_id, pid)
    return False


def _remove_pidfile(worker_id: str, pid: int | None) -> bool:
    """Remove the pidfile if it still names ``pid`` and ``pid`` no longer holds the lock; True if removed."""
    if pid is None or read_pid(worker_id) != pid or (pid_alive(pid) and holds_lock(pid, worker_id)):
        return False
    pid_path(worker_id).unlink(missing_ok=True)
    return True


def tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of ``path`` (empty when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def follow(path: Path, *, lines: int = 20, stop: Callable[[], bool] = lambda: False,
           poll_s: float = 0.2) -> Iterator[str]:
    """``tail -f``: the last ``lines`` lines, then each new line as it is written, until ``stop()``."""
    yield from tail(path, lines).splitlines()
    pos = path.stat().st_size if path.exists() else 0
    buf = b""
    while not stop():
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < pos:
            pos = 0  # truncated or rotated
        if size > pos:
            with path.open("rb") as handle:
                handle.seek(pos)
                buf += handle.read(size - pos)
                pos = size
            *complete, buf = buf.split(b"\n")
            for raw in complete:
                yield raw.decode("utf-8", errors="replace")
        else:
            time.sleep(poll_s)
