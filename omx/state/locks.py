"""Short critical sections on lock files.

``filelock.FileLock`` is a kernel lock (``flock``): it dies with its process, so a SIGKILL inside a
critical section never wedges a team. Lock files are never deleted — deleting one would let two
waiters lock two different inodes of the same name.

Lock order: ``team.lock`` before any task lock, and never two task locks at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock
from filelock import Timeout as _FileLockTimeout

from omx.errors import LockTimeout

DEFAULT_TIMEOUT_S = 30.0


@contextmanager
def locked(path: Path, timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold the lock at ``path`` for the ``with`` body; raise :class:`LockTimeout` after ``timeout`` s."""
    lock = FileLock(str(path), timeout=timeout, is_singleton=False)
    try:
        lock.acquire(poll_interval=0.001)
    except _FileLockTimeout:
        raise LockTimeout(f"could not lock {path} within {timeout:g}s", path=str(path)) from None
    try:
        _test_delay_hook(path)
        yield
    finally:
        lock.release()


@contextmanager
def try_locked(path: Path) -> Iterator[bool]:
    """Like :func:`locked` but never waits: yields ``False`` when someone else holds it."""
    lock = FileLock(str(path), timeout=0, is_singleton=False)
    try:
        lock.acquire(timeout=0)
    except _FileLockTimeout:
        yield False
        return
    try:
        _test_delay_hook(path)
        yield True
    finally:
        lock.release()


def _test_delay_hook(path: Path) -> None:
    # Test-only: OMX_TEST_LOCK_DELAY="<substring>:<seconds>" sleeps inside the critical section of
    # matching locks and drops a "<lock>.held" marker first, so a test can SIGKILL a holder there.
    spec = os.environ.get("OMX_TEST_LOCK_DELAY")
    if not spec:
        return
    needle, _, secs = spec.rpartition(":")
    if needle and needle in path.name:
        import time

        marker = os.environ.get("OMX_TEST_LOCK_MARKER")
        if marker:
            Path(marker).write_text(str(os.getpid()))
        time.sleep(float(secs))
