"""Is a claim's holder on this host still alive? Asked for every local holder on every claim-next.

claim-next looks for abandoned claims first, so with 8 workers it asks about 7 pids per call. Each
process seen alive is kept as a pidfd (``pidfd_open``, Linux 5.3+): a pidfd names that very process,
never a later one given the same pid, and turns readable when the process exits (a zombie included).
All kept pidfds are polled together once per claim-next (:func:`known_alive`), so a claim pays one
``poll`` instead of a read of ``/proc/<pid>/stat`` per holder. Any pid not known alive so — exited,
never seen, no pidfds here — is asked afresh of :func:`omx.pids.pid_alive` (:func:`ask`), which may
find a new process with the same pid, exactly as it always would.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading

from omx.pids import pid_alive

_MAX = 64  # kept pidfds: a team's workers on this host, with room to spare
_fds: dict[int, int] = {}  # pid -> pidfd of the process that had that pid when seen alive
_poll = select.poll() if hasattr(select, "poll") else None
_lock = threading.Lock()  # guards _fds and _poll (poll() refuses concurrent calls on one object)
_pidfds = hasattr(os, "pidfd_open") and _poll is not None  # False once the kernel refuses them


def _reset_after_fork() -> None:
    # In a forked child: a fresh lock (the parent's may have been held by another thread at the fork),
    # and no inherited pidfds. They would still work, but a child that goes on to close its descriptors
    # (a daemon does) could have the numbers reused for other files, which _forget would then close.
    global _lock, _poll
    _lock = threading.Lock()
    for fd in _fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _fds.clear()
    _poll = select.poll() if _poll is not None else None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def known_alive() -> set[int]:
    """Pids of the kept holders still running, from one ``poll`` of all their pidfds (exited ones are forgotten).

    A pid not in the set is not known to be dead: ask :func:`ask` about it.
    """
    with _lock:
        if not _fds or _poll is None:
            return set()
        exited = {fd for fd, _ in _poll.poll(0)}
        if exited:
            for pid, fd in list(_fds.items()):
                if fd in exited:
                    _forget(pid, fd)
        return set(_fds)


def ask(pid: int) -> bool:
    """:func:`omx.pids.pid_alive`; a live process is kept as a pidfd, for :func:`known_alive` to answer next time."""
    global _pidfds
    if not pid_alive(pid):
        return False
    with _lock:
        if _pidfds and pid not in _fds and len(_fds) < _MAX and _poll is not None:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                return False  # gone since pid_alive looked
            except OSError:
                _pidfds = False  # not allowed here (an old kernel, a sandbox): ask pid_alive every time
                return True
            _fds[pid] = fd
            _poll.register(fd, select.POLLIN)
    return True


def holder_alive(pid: int) -> bool:
    """:func:`omx.pids.pid_alive`, answered from a kept pidfd while that process lives."""
    return pid in known_alive() or ask(pid)


def _forget(pid: int, fd: int) -> None:
    del _fds[pid]
    if _poll is not None:
        with contextlib.suppress(KeyError):
            _poll.unregister(fd)
    with contextlib.suppress(OSError):
        os.close(fd)
