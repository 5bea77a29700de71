"""Children die with the worker that started them, even when the worker is SIGKILLed.

Agents and hooks run in their own session (so one ``killpg`` stops their helpers too), which also
means nothing stops them when the worker dies without cleaning up: the next worker would then run a
second agent in the same worktree. Two ways to prevent it; :func:`preexec_fn` and :func:`track` pick:

* **the keeper** (default on POSIX): one small helper process per worker, started once, reading a
  pipe only the worker holds. The worker writes ``+<pgid>`` when it starts a child and ``-<pgid>``
  once it has reaped it. When the worker dies, however it dies, the kernel closes the pipe; the
  keeper reads end-of-file, sends SIGTERM to every process group still on its list, SIGKILL to any
  still there :data:`KEEPER_GRACE_S` later, then exits. (A worker that exits on purpose may leave a
  child that is already shutting down to it: see :meth:`~omx.engine.runtimes.process.ChildProcess.close_stdin`.) A spawn
  stays a plain ``vfork`` + ``exec`` (~1 ms), and the lifeline belongs to the process, not to the
  thread that spawned the child, so a long-lived child may be started from any thread.
* **the parent-death signal** (``PR_SET_PDEATHSIG`` from a ``preexec_fn``): the fallback when the
  keeper cannot start. Any ``preexec_fn`` forces a full ``fork`` of the worker and Python code in the
  child (~9 ms a spawn, measured with a 50 MB worker), and the signal follows the *thread* that
  forked the child.

The keeper ignores SIGINT and SIGHUP (a Ctrl-C or a closed terminal reaches the whole foreground
group; the worker handles those itself, and the keeper must outlive it to do its job). If the keeper
itself is killed, the next spawn starts a new one.

**The tag.** A worker killed between a child's ``exec`` and the ``+`` line would leave that child
unlisted. So every child also carries ``OMX_LIFELINE_TAG=<worker pid>.<worker start time>`` in its
environment (:func:`tagged`: added *before* the spawn), and the keeper, which knows the tag from its
start, also ends every process whose environment holds it (read from ``/proc/<pid>/environ``; a child's
children inherit it). A pid and its start time name one process since boot, so the tag never matches
a stranger after pid reuse, and another worker on the host can compute it from the claim's ``pid``:
:func:`end_tagged` is how a worker that takes over an expired claim ends the old attempt's agents
before its own start (the old worker may be alive but stopped, e.g. SIGSTOP). A child that clears its
environment loses the tag; its process group is still listed.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping

_PR_SET_PDEATHSIG = 1

#: Set to "preexec" to use the parent-death signal instead of the keeper (tests; odd systems).
MODE_ENV = "OMX_LIFELINE"

#: After the worker is gone: SIGTERM to every group still listed, SIGKILL to what is left after this.
KEEPER_GRACE_S = 3.0

#: The variable every tracked child carries (see the module doc); its value names the worker.
TAG_ENV = "OMX_LIFELINE_TAG"

_KEEPER = r"""
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
groups = set()
for line in sys.stdin.buffer:
    op, _, pid = line.strip().partition(b" ")
    if pid.isdigit():
        (groups.add if op == b"+" else groups.discard)(int(pid))
import time
NEEDLE = TAG_ENV.encode() + b"=" + TAG.encode() + b"\0"
def tagged():  # children that carry this worker's tag, listed or not (the spawn-to-track window)
    found = set()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if pid == os.getpid():
            continue
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                if NEEDLE in f.read() + b"\0":
                    found.add(pid)
        except OSError:
            pass
    return found
strays = tagged()
for pid in strays:  # a stray's own group, and the stray itself should it be in a foreign one
    try:
        groups.add(os.getpgid(pid))
    except OSError:
        pass
def gone(pid):  # the group's leader exited: a zombie (nobody may reap it now) counts as gone
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] in (b"Z", b"X")
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass
        return not os.path.isdir("/proc/self")  # no /proc: wait out the grace
alive = set()
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGTERM)
        alive.add(pgid)
    except OSError:
        pass
until = time.monotonic() + GRACE_S
while alive and time.monotonic() < until:
    alive = {pgid for pgid in alive if not gone(pgid)}
    if alive:
        time.sleep(0.02)
for pgid in groups:  # what the leaders left behind in their groups, and leaders that ignored SIGTERM
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
for pid in strays | tagged():
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` arming ``PR_SET_PDEATHSIG`` (None where unsupported)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child between fork and exec: no locks, no allocations to speak of
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm


class _Keeper:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = 0  # the worker process the keeper belongs to (a fork must start its own)
        self._groups: set[int] = set()

    def _ensure(self) -> subprocess.Popen[bytes] | None:
        proc = self._proc
        if proc is not None and self._pid == os.getpid() and proc.poll() is None:
            return proc
        head = f"GRACE_S = {KEEPER_GRACE_S}\nTAG_ENV = {TAG_ENV!r}\nTAG = {worker_tag()!r}\n"
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", head + _KEEPER], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=True, start_new_session=True,
                env={k: v for k, v in os.environ.items() if k != TAG_ENV},  # never a match for itself
            )
        except OSError:
            return None
        if self._proc is None:
            atexit.register(self.close)  # a clean exit lets it go at once (and reaps it)
        self._proc, self._pid = proc, os.getpid()
        for pgid in self._groups:  # a keeper that was killed: the new one takes over its list
            self._send(proc, f"+ {pgid}\n")
        return proc

    @staticmethod
    def _send(proc: subprocess.Popen[bytes], line: str) -> bool:
        assert proc.stdin is not None
        try:
            proc.stdin.write(line.encode())
            proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def available(self) -> bool:
        with self._lock:
            return self._ensure() is not None

    def track(self, pgid: int) -> None:
        with self._lock:
            self._groups.add(pgid)
            proc = self._ensure()
            if proc is not None and not self._send(proc, f"+ {pgid}\n"):
                self._ensure()  # it died since the check: a new one gets the whole list

    def untrack(self, pgid: int) -> None:
        with self._lock:
            self._groups.discard(pgid)
            proc = self._proc
            if proc is not None and self._pid == os.getpid():
                self._send(proc, f"- {pgid}\n")

    def close(self) -> None:
        """Let the keeper go (it kills any group still listed, as if the worker had died)."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None and self._pid == os.getpid():
                with contextlib.suppress(OSError, ValueError):
                    assert proc.stdin is not None
                    proc.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)


_keeper = _Keeper()


def _keeper_mode() -> bool:
    return os.name == "posix" and os.environ.get(MODE_ENV) != "preexec"


def preexec_fn() -> Callable[[], None] | None:
    """The ``preexec_fn`` for a ``Popen`` (with ``start_new_session=True``) of a child that must die
    with this worker: ``None`` with the keeper — then call :func:`track` with the child's pid right
    after ``Popen`` and :func:`untrack` once it is reaped — else :func:`die_with_parent`."""
    return None if _keeper_mode() and _keeper.available() else die_with_parent()


def worker_tag(pid: int | None = None) -> str:
    """``<pid>.<start time>`` of process ``pid`` (default: this one): unique on this host since boot.

    Without ``/proc`` (or for a process that is gone): the pid alone for this process, else "".
    """
    own = pid is None
    pid = os.getpid() if pid is None else pid
    if own and _own_tag[0] == pid:
        return str(_own_tag[1])
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            start = f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return str(pid) if own else ""
    if own:
        _own_tag[:] = [pid, f"{pid}.{start}"]
    return f"{pid}.{start}"


_own_tag: list[object] = [0, ""]  # this process's tag, once read (a fork reads its own)


def tagged(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus this worker's tag, for a child that must die with this worker (see the module doc).

    With the keeper, it is running (and knows the tag) before this returns: a child spawned with the
    result is covered even before :func:`track`.
    """
    out = dict(env)
    if _keeper_mode() and _keeper.available():
        out[TAG_ENV] = worker_tag()
    return out


def processes_tagged(tag: str) -> list[int]:
    """The pids whose environment holds ``OMX_LIFELINE_TAG=<tag>`` (``/proc``; [] without it)."""
    if not tag:
        return []
    needle = f"{TAG_ENV}={tag}\0".encode()
    out = []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read() + b"\0":
                    out.append(pid)
        except OSError:
            continue
    return out


def end_tagged(worker_pid: int, *, grace_s: float = 2.0) -> list[int]:
    """End the children of worker ``worker_pid`` on this host (an expired claim's old attempt): SIGTERM
    to each one's process group, SIGKILL to what is left after ``grace_s``. Returns the pids found.

    The worker itself is not touched (it may be stopped, and its other work is its own business).
    """
    tag = worker_tag(worker_pid) if worker_pid != os.getpid() else ""
    found = processes_tagged(tag)
    if not found:
        return []
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in found:
            with contextlib.suppress(OSError):
                os.killpg(os.getpgid(pid), sig)
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and processes_tagged(tag):
            time.sleep(0.02)
        if not processes_tagged(tag):
            break
    return found


def track(pgid: int) -> None:
    """Kill process group ``pgid`` if this worker dies before :func:`untrack`."""
    if _keeper_mode():
        _keeper.track(pgid)


def untrack(pgid: int) -> None:
    """The group's leader was reaped and the group swept: forget it."""
    if _keeper_mode():
        _keeper.untrack(pgid)


def close() -> None:
    """Stop this worker's keeper (tests; a worker does not need to: it goes when the worker goes)."""
    _keeper.close()
