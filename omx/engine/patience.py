"""A full disk or a failing one is weather, not a reason for a worker to leave.

During a full disk every write of the team's state fails (``disk_full``), and an I/O error (EIO) can
come and go with the device. A worker that exited on the first one left the team stalled for good
once the space came back. So, like a lock held past its timeout (:mod:`omx.engine.worker`), these
errors make the worker warn, wait, and try again: the loop backs off (1 s, doubling, at most
:data:`MAX_BACKOFF_S`), and a finished task's report is retried the same way instead of being
dropped (which would leave the task claimed until its lease ran out, then run it again).
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from omx.errors import DiskFull

log = logging.getLogger("omx.worker")

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 8.0
#: What a worker waits out: no room (ENOSPC, EDQUOT, EFBIG, as DiskFull or raw) and I/O errors.
WEATHER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO})

T = TypeVar("T")


def is_weather(exc: BaseException) -> bool:
    """True for an error a worker should wait out: a full disk or an I/O error."""
    return isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in WEATHER_ERRNOS)


def describe(exc: BaseException) -> str:
    """A one-line account of ``exc`` for the warning (the message already names the path)."""
    return getattr(exc, "message", None) or str(exc)


class Backoff:
    """Waits that double from :data:`FIRST_BACKOFF_S` to :data:`MAX_BACKOFF_S`; :meth:`reset` after a success."""

    def __init__(self, first: float | None = None, most: float | None = None) -> None:
        self.first = FIRST_BACKOFF_S if first is None else first
        self.most = MAX_BACKOFF_S if most is None else most
        self.next = self.first

    def take(self) -> float:
        wait, self.next = self.next, min(self.next * 2, self.most)
        return wait

    def reset(self) -> None:
        self.next = self.first


def patiently(what: str, fn: Callable[[], T], stop: threading.Event, backoff: Backoff | None = None) -> T:
    """``fn()``, retried after a warning and a wait while it meets a full disk or an I/O error.

    ``stop`` set (a signal asked the worker to stop): the last error is raised instead of waiting again.
    """
    backoff = backoff or Backoff()
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_weather(exc) or stop.is_set():
                raise
            wait = backoff.take()
            log.warning("%s: the team's state cannot be written (%s); trying again in %gs", what, describe(exc), wait)
            stop.wait(wait)


class PatientSource:
    """A work source whose reports (start, complete, fail, release) wait out a full disk (see the module)."""

    def __init__(self, source: Any, stop: threading.Event) -> None:
        self._source = source
        self._stop = stop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._source, name)

    # Arguments are passed through as given: the source protocol's signatures are the source's business.

    def start(self, *args: Any, **kwargs: Any) -> Any:
        return patiently("starting", lambda: self._source.start(*args, **kwargs), self._stop)

    def complete(self, claimed: Any, *args: Any, **kwargs: Any) -> Any:
        return patiently(f"reporting {claimed.key} completed",
                         lambda: self._source.complete(claimed, *args, **kwargs), self._stop)

    def fail(self, claimed: Any, *args: Any, **kwargs: Any) -> Any:
        return patiently(f"reporting {claimed.key} failed", lambda: self._source.fail(claimed, *args, **kwargs),
                         self._stop)

    def release(self, claimed: Any, *args: Any, **kwargs: Any) -> Any:
        return patiently(f"releasing {claimed.key}", lambda: self._source.release(claimed, *args, **kwargs),
                         self._stop)
