"""Short critical sections on lock files.

A kernel ``flock`` dies with its process, so a SIGKILL inside a critical section never wedges a team.
Lock files are never deleted — deleting one would let two waiters lock two different inodes of the
same name. Lock order: ``team.lock`` before any task lock, and never two task locks at once.

Why not ``filelock`` here, as everywhere else: these two locks are taken several times per claim, and
filelock 4.x spends 250-400 µs of Python on each acquire/release (it re-opens the file, resolves its
real path and creates parent folders every time) against ~6 µs for the same ``flock`` done directly —
about half of a claim's CPU (bench/claim_throughput.py). This module does exactly what filelock's
Unix lock does, minus that work; where ``fcntl`` does not exist it falls back to filelock.

A lock file's descriptor is kept open after the critical section (unlocked with ``LOCK_UN``), so that
a claim's completion, which takes the same task lock, does not open the file again: see
:mod:`omx.state.fds` for why that is safe across threads, forks and a team's cleanup.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from omx.errors import LockTimeout, disk_full
from omx.state import forks, modes
from omx.state.fds import KeptFds, linked

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

DEFAULT_TIMEOUT_S = 30.0
_POLL_S = 0.001
_FLAGS = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)

LockPath = str | os.PathLike[str]


def _open(path: LockPath) -> int:
    # Without O_CREAT first: an O_CREAT open takes the folder's inode lock exclusively even when the
    # file exists, and every claim opens lock files in the same folder. Lock files are never deleted,
    # so the create path runs once per file.
    try:
        return os.open(path, _FLAGS)
    except FileNotFoundError:
        pass
    folder = os.path.dirname(os.fspath(path)) or "."
    try:
        return modes.create_file(path, _FLAGS, _mode_in(folder))
    except FileNotFoundError:
        modes.make_dirs(folder)
        return modes.create_file(path, _FLAGS, modes.FILE)
    except OSError as exc:
        raise disk_full(exc, os.fspath(path)) or exc from None


def _mode_in(folder: str) -> int:
    # A lock file is private (0600) like the state beside it, unless its folder is open to a group (a
    # shared_group team's 0770): then every member must be able to open it to lock it.
    return modes.SHARED_FILE if os.stat(folder).st_mode & 0o070 else modes.FILE


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise


_kept = KeptFds()  # unlocked descriptors of lock files used lately (see omx.state.fds)


def _acquire(path: LockPath, timeout: float) -> int:
    """The locked descriptor of ``path``, or -1 if it is still held after ``timeout`` s (0: one try)."""
    key = os.fspath(path)
    fd = _kept.take(key)
    kept = fd >= 0
    if not kept:
        fd = _open(key)
    try:
        if not _try_flock(fd):
            deadline = time.monotonic() + timeout
            delay = _POLL_S
            while True:
                if time.monotonic() >= deadline:
                    _kept.give(key, fd)
                    return -1
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
                if _try_flock(fd):
                    break
        if kept and not linked(fd):
            # Deleted since we kept it (the team was cleaned up): locking it excludes nobody who opens
            # the path now. Forget it and lock the file that is there.
            os.close(fd)
            return _acquire(path, timeout)
        _test_delay_hook(path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _release(path: LockPath, fd: int, pid: int) -> None:
    if pid != forks.pid():
        # Forked inside the critical section, and this is the child: the lock is the parent's (an
        # inherited descriptor shares it), so only close our copy, which releases nothing.
        os.close(fd)
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        os.close(fd)  # closing releases it too
        return
    _kept.give(os.fspath(path), fd)


class locked:
    """Hold the lock at ``path`` for the ``with`` body; raise :class:`LockTimeout` after ``timeout`` s.

    A class rather than a generator-based context manager: it is entered several times per claim.
    """

    __slots__ = ("_cm", "_fd", "_path", "_pid", "_timeout")

    def __init__(self, path: LockPath, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._path = path
        self._timeout = timeout
        self._fd = -1
        self._pid = 0
        self._cm: AbstractContextManager[None] | None = None

    def __enter__(self) -> None:
        if fcntl is None:  # pragma: no cover
            self._cm = _filelock(Path(self._path), self._timeout)
            self._cm.__enter__()
            return
        self._pid = forks.pid()
        self._fd = _acquire(self._path, self._timeout)
        if self._fd < 0:
            path = os.fspath(self._path)
            raise LockTimeout(f"could not lock {path} within {self._timeout:g}s", path=path)

    def __exit__(self, *exc: object) -> None:
        if self._cm is not None:  # pragma: no cover
            self._cm.__exit__(None, None, None)
        elif self._fd >= 0:
            _release(self._path, self._fd, self._pid)
        self._fd = -1


class try_locked(locked):
    """Like :class:`locked` but never waits: in ``with try_locked(path) as got:``, ``got`` is False when it is held."""

    __slots__ = ()

    def __init__(self, path: LockPath) -> None:
        super().__init__(path, 0)

    def __enter__(self) -> bool:  # type: ignore[override]
        if fcntl is None:  # pragma: no cover
            try:
                super().__enter__()
            except LockTimeout:
                self._cm = None
                return False
            return True
        self._pid = forks.pid()
        self._fd = _acquire(self._path, 0)  # no exception on the busy path: it is a hot one
        return self._fd >= 0


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


# os.environ.get of a missing name raises and catches a KeyError inside (Mapping.get): a lookup in
# os.environ's own table of encoded names is the same answer (it is what os.environ[...] = updates).
_ENV_TABLE: dict[bytes | str, object] | None = getattr(os.environ, "_data", None)
_DELAY_KEY: bytes | str = os.environ.encodekey("OMX_TEST_LOCK_DELAY") if hasattr(os.environ, "encodekey") else ""


def _test_delay_hook(path: LockPath) -> None:
    # Test-only: OMX_TEST_LOCK_DELAY="<substring>:<seconds>" sleeps inside the critical section of
    # matching locks and drops a "<lock>.held" marker first, so a test can SIGKILL a holder there.
    if _ENV_TABLE is not None and _DELAY_KEY and _DELAY_KEY not in _ENV_TABLE:
        return
    spec = os.environ.get("OMX_TEST_LOCK_DELAY")
    if not spec:
        return
    needle, _, secs = spec.rpartition(":")
    if needle and needle in os.path.basename(os.fspath(path)):
        marker = os.environ.get("OMX_TEST_LOCK_MARKER")
        if marker:
            Path(marker).write_text(str(os.getpid()))
        time.sleep(float(secs))
