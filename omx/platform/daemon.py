"""``omx worker start|status|logs|stop``: the platform worker as a background process.

``start`` runs ``omx worker watch --worker <id>`` detached (a new session, stdin from /dev/null, output
appended to ``$OMX_HOME/logs/worker-<id>.log``) and waits until the child holds the worker's lock and
has written its pidfile — or exits, in which case the end of its log is the error. ``stop`` sends
SIGTERM (the running session is interrupted, its claim released, its worktree kept), waits up to a
bound, and kills only when it must, saying so. A pid is only ever signalled after checking that it is
still an ``omx worker watch`` for this worker, so a recycled pid is never hit.
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

from omx.errors import OmxError, Refused
from omx.platform.config import logs_dir
from omx.platform.runstate import pid_alive, pid_path, read_pid, read_state

MAX_LOG_BYTES = 10 * 1024 * 1024


def log_path(worker_id: str) -> Path:
    """``$OMX_HOME/logs/worker-<id>.log``."""
    return logs_dir() / f"worker-{worker_id}.log"


@dataclass
class Status:
    """A worker's background process as seen from outside."""

    worker_id: str
    running: bool
    pid: int | None
    state: dict[str, Any] | None
    log: Path
    stale_pidfile: bool = False


def is_our_worker(pid: int, worker_id: str) -> bool:
    """True when ``pid`` is an ``omx worker watch`` for ``worker_id`` (checked through /proc where there is one)."""
    if not pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True  # no /proc: trust the pidfile, which only a live lock holder writes
    words = [a.decode(errors="replace") for a in argv]
    return "worker" in words and "watch" in words and worker_id in words


def status(worker_id: str) -> Status:
    """Whether the worker's background process runs (a stale pidfile is reported, not trusted)."""
    pid = read_pid(worker_id)
    running = pid is not None and is_our_worker(pid, worker_id)
    return Status(worker_id, running, pid if running else None, read_state(worker_id), log_path(worker_id),
                  stale_pidfile=pid is not None and not running)


def start(worker_id: str, *, extra_args: list[str] | None = None, wait_s: float = 30.0) -> Status:
    """Start the background worker; return once it runs (or raise with the end of its log)."""
    current = status(worker_id)
    if current.running:
        raise Refused(f"worker {worker_id} is already running (pid {current.pid})", worker=worker_id)
    if current.stale_pidfile:
        pid_path(worker_id).unlink(missing_ok=True)
    log = log_path(worker_id)
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists() and log.stat().st_size > MAX_LOG_BYTES:  # one old log is kept, as <log>.1
        os.replace(log, log.with_name(log.name + ".1"))
    argv = [sys.executable, "-m", "omx", "worker", "watch", "--worker", worker_id, "--background",
            *(extra_args or [])]
    with open(os.devnull, "rb") as devnull, log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: omx worker watch --worker {worker_id}\n"
                  .encode())
        out.flush()
        child = subprocess.Popen(argv, stdin=devnull, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                 close_fds=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise OmxError(f"the worker exited at once (status {child.returncode}); the end of {log}:\n"
                           + tail(log, 15), worker=worker_id)
        state = read_state(worker_id) or {}
        if read_pid(worker_id) == child.pid and state.get("pid") == child.pid and state.get("state") != "starting":
            return status(worker_id)
        time.sleep(0.05)
    return status(worker_id)  # slow machine: it runs, but has not said hello to the platform yet


def stop(worker_id: str, *, timeout_s: float = 30.0, say: Callable[[str], None] = print) -> bool:
    """SIGTERM the background worker and wait; SIGKILL after ``timeout_s``. True when it stopped gracefully."""
    st = status(worker_id)
    if not st.running or st.pid is None:
        if st.stale_pidfile:
            pid_path(worker_id).unlink(missing_ok=True)
        raise Refused(f"worker {worker_id} is not running" + (" (removed a stale pidfile)" if st.stale_pidfile else ""),
                      worker=worker_id)
    pid = st.pid
    os.kill(pid, signal.SIGTERM)
    current = (st.state or {}).get("current") or []
    say(f"sent SIGTERM to {pid}" + (f"; releasing {', '.join(current)}" if current else "") + " ...")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    if is_our_worker(pid, worker_id):
        os.kill(pid, signal.SIGKILL)
        say(f"worker {worker_id} (pid {pid}) did not stop within {timeout_s:g}s: killed it. Its claim was not "
            "released; the platform marks the session stale when the lease runs out")
    pid_path(worker_id).unlink(missing_ok=True)
    return False


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
