"""Short critical sections on lock files.

A kernel ``flock`` dies with its process, so a SIGKILL inside a critical section never wedges a team.
Lock files are never deleted — deleting one would let two waiters lock two different inodes of the
same name. Lock order: ``team.lock`` before any task lock, and never two task locks at once.

Why not ``filelock`` here, as everywhere else: these two locks are taken several times per claim, and
filelock 4.x spends 250-400 µs of Python on each acquire/release (it re-opens the file, resolves its
real path and creates parent folders every time) against ~6 µs for the same ``flock`` done directly —
about half of a claim's CPU (bench/claim_throughput.py). This module does exactly what filelock's
Unix lock does, minus that work; where ``fcntl`` does not exist it falls back to filelock.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omx.errors import LockTimeout

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

DEFAULT_TIMEOUT_S = 30.0
_POLL_S = 0.001


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


@contextmanager
def locked(path: Path, timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[None]:
    """Hold the lock at ``path`` for the ``with`` body; raise :class:`LockTimeout` after ``timeout`` s."""
    if fcntl is None:  # pragma: no cover
        with _filelock(path, timeout):
            yield
        return
    fd = _open(path)
    try:
        if not _try_flock(fd):
            deadline = time.monotonic() + timeout
            delay = _POLL_S
            while not _try_flock(fd):
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"could not lock {path} within {timeout:g}s", path=str(path))
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
        _test_delay_hook(path)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextmanager
def try_locked(path: Path) -> Iterator[bool]:
    """Like :func:`locked` but never waits: yields ``False`` when someone else holds it."""
    if fcntl is None:  # pragma: no cover
        try:
            with _filelock(path, 0):
                yield True
        except LockTimeout:
            yield False
        return
    fd = _open(path)
    try:
        if not _try_flock(fd):
            yield False
            return
        _test_delay_hook(path)
        yield True
    finally:
        os.close(fd)


@contextmanager
def _filelock(path: Path, timeout: float) -> Iterator[None]:  # pragma: no cover - non-POSIX fallback
    from filelock import FileLock
    from filelock import Timeout as _Timeout

    lock = FileLock(str(path), timeout=timeout, is_singleton=False)
    try:
        lock.acquire(poll_interval=_POLL_S)
    except _Timeout:
        raise LockTimeout(f"could not lock {path} within {timeout:g}s", path=str(path)) from None
    try:
        _test_delay_hook(path)
        yield
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
        marker = os.environ.get("OMX_TEST_LOCK_MARKER")
        if marker:
            Path(marker).write_text(str(os.getpid()))
        time.sleep(float(secs))
