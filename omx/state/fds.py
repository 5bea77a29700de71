"""Descriptors kept open between store calls: the event log, and lock files.

Opening a file walks its path and allocates an open file description; a claim and its completion
opened ``events.ndjson`` twice and their lock files twice, for a few bytes or a ``flock`` each.
A :class:`KeptFds` keeps one descriptor per path, and hands it to one caller at a time:

* **taken, not shared.** :meth:`KeptFds.take` removes the descriptor from the pool and
  :meth:`KeptFds.give` puts it back, so two threads never use one descriptor at once (two threads
  flocking one open file description would both "get" the lock); the second simply opens its own.
* **per process.** A forked child inherits the pool's descriptors, and an inherited descriptor shares
  its open file description — and so its ``flock`` — with the parent's. The pool remembers the pid
  that filled it; in any other process it closes what it inherited (closing a duplicate releases
  nothing of the parent's) and starts empty.
* **still the file?** A kept descriptor may name a file that was deleted since (``omx team cleanup``
  removes the whole team, which may be created again): callers check ``st_nlink`` with an ``fstat``,
  which costs no path walk. These files are never renamed, so a file that still has a link is still
  the one at its path.
"""

from __future__ import annotations

import contextlib
import os

from omx.state import forks

MAX_KEPT = 64


class KeptFds:
    """At most ``limit`` open descriptors, one per path, for the process that opened them."""

    __slots__ = ("_fds", "_limit", "_pid")

    def __init__(self, limit: int = MAX_KEPT) -> None:
        self._fds: dict[str, int] = {}
        self._limit = limit
        self._pid = forks.pid()

    def take(self, path: str) -> int:
        """The kept descriptor of ``path``, now the caller's alone (-1 if none): give it back or close it."""
        if self._pid != forks.pid():
            self._drop_inherited()
        return self._fds.pop(path, -1)

    def give(self, path: str, fd: int) -> None:
        """Keep ``fd`` (of ``path``) for the next :meth:`take`; close it instead if one is kept already."""
        fds = self._fds  # no pid check: whoever gives took (or opened) the descriptor in this process
        if len(fds) >= self._limit and path not in fds:
            # Full: close the oldest (dict order). Another thread may take it meanwhile: then it is theirs.
            with contextlib.suppress(StopIteration, RuntimeError):
                old = fds.pop(next(iter(fds)), -1)
                if old >= 0:
                    os.close(old)
        if fds.setdefault(path, fd) != fd:  # setdefault: one atomic step, however many threads give
            os.close(fd)

    def _drop_inherited(self) -> None:
        fds, self._fds = self._fds, {}
        self._pid = forks.pid()
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def __contains__(self, path: object) -> bool:
        return path in self._fds


def linked(fd: int) -> bool:
    """False if the file open on ``fd`` has been deleted (no name left)."""
    try:
        return os.fstat(fd).st_nlink > 0
    except OSError:
        return False
