"""Atomic, durable file writes and tolerant reads.

A writer never leaves a half-written file: it writes a temp file in the same directory, fsyncs it,
and ``os.replace``-s it over the target. A reader sees either the old or the new file, whole.
Temp files are named ``.<name>.<random>.tmp`` so that listings can skip and sweepers can find them.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omx.errors import CorruptState, disk_full
from omx.state import forks, modes

TMP_SUFFIX = ".tmp"


def write_bytes(
    path: str | os.PathLike[str], data: bytes, *, durable: bool = True, mode: int = modes.FILE,
    reuse: str | None = None,
) -> None:
    """Replace ``path`` with ``data`` atomically (fsync'd when ``durable``), or raise and leave it as it was.

    ``mode``: the new file's permissions whatever the umask (0600 unless the team is shared, see
    :mod:`omx.state.modes`). Every byte is written or the write fails: a short ``write`` (a nearly
    full disk, a file size limit) is continued, and one that cannot go on raises
    :class:`~omx.errors.DiskFull` naming ``path``; the temp file is removed and ``path`` keeps its old
    content, whole. ``reuse``: an empty file that is about to be deleted (an index marker the same write
    retires) whose inode may serve as the temp file instead of a new one (see :func:`_adopt`); ignored
    when unsuitable.
    """
    folder, sep, name = os.fspath(path).rpartition("/")  # os.path.split + join, minus their Python
    tmp = f"{folder}{sep}.{name}.{random_hex8()}.{writer_tag()}{TMP_SUFFIX}"
    fd = _adopt(reuse, tmp, mode) if reuse is not None else -1  # cleans up after itself
    made = fd < 0
    if made:
        try:
            fd = os.open(tmp, _CREATE_FLAGS, mode)
        except OSError as exc:  # nothing made (an existing name is another writer's: not ours to delete)
            raise disk_full(exc, os.fspath(path)) or exc from None
    try:
        try:
            if made and modes.needs_chmod(mode):
                os.fchmod(fd, mode)
            write_all(fd, data, os.fspath(path))
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:  # a file system that has gone read-only: the original error counts
            pass
        full = disk_full(exc, os.fspath(path)) if isinstance(exc, OSError) else None
        if full is not None:
            raise full from None
        raise


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def write_all(fd: int, data: bytes, path: str) -> None:
    """Write all of ``data`` at ``fd``'s position; raise :class:`~omx.errors.DiskFull` if that cannot be done.

    ``os.write`` may write less than it was given (the device or the file size limit fills up part
    way; a signal): the rest is written by further calls, and the call that can write nothing more
    raises ENOSPC/EFBIG (or returns 0, taken as ENOSPC). What was written stays: callers undo it (a
    temp file is deleted, an appended line truncated away).
    """
    n = os.write(fd, data)
    if n == len(data):
        return
    view = memoryview(data)
    while n < len(data):
        try:
            wrote = os.write(fd, view[n:])
        except OSError as exc:
            raise disk_full(exc, path) or exc from None
        if wrote <= 0:
            raise disk_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path) or OSError(errno.ENOSPC, path)
        n += wrote


_writer: tuple[int, str] = (-1, "")


def writer_tag() -> str:
    """``<host hash>-<pid>`` of this process, carried by its temp file names: a temp file left behind by a
    process that is gone (a crash mid-write) is recognisably stale at once (``omx doctor --fix``)."""
    global _writer
    pid = forks.pid()
    if _writer[0] != pid:
        import hashlib
        import socket

        _writer = (pid, f"{hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]}-{pid}")
    return _writer[1]


_POOL_BYTES = 2048  # 512 names per getrandom
_pool: tuple[int, Iterator[str]] = (-1, iter(()))  # (pid it was drawn in, the names not handed out yet)


def random_hex8() -> str:
    """8 random hex digits (32 bits from the OS's CSPRNG), as ``secrets.token_hex(4)`` but drawn 2 KB at a time.

    Temp file names and event ids take one each, two or three per store call; a ``getrandom`` each was
    a tenth of a claim's syscalls. The pool belongs to the process that drew it: a forked child (the
    benchmark forks its workers after using the store) draws its own, or parent and child would hand
    out the same names. ``next`` on a list iterator is atomic under the GIL, so threads never share one.
    """
    global _pool
    pid = forks.pid()
    owner, names = _pool
    if owner == pid:
        name = next(names, None)
        if name is not None:
            return name
    digits = os.urandom(_POOL_BYTES).hex()
    names = iter([digits[i : i + 8] for i in range(0, len(digits), 8)])
    _pool = (pid, names)
    return next(names)


_ADOPT_FLAGS = os.O_WRONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _adopt(src: str, tmp: str, mode: int) -> int:
    """Make ``tmp`` a second name of the empty file ``src`` and open it for writing; -1 if unsuitable.

    On ext4 without a journal a new inode first scans past every inode freed in the last minute or
    more, which made file creation the largest CPU cost of a claim; a marker the write retires anyway
    can carry the new content instead (no inode allocated, none freed). Only a plain empty file whose
    sole other name is ``src`` is taken, so no reader can see the writes: a marker is never opened for
    reading, and never another file's inode. Its permissions must be the ones asked for (markers are
    made with the team's file mode): the inode becomes the task file.
    """
    try:
        os.link(src, tmp)
    except (OSError, NotImplementedError):
        return -1
    try:
        fd = os.open(tmp, _ADOPT_FLAGS)
    except OSError:
        _discard(tmp)
        return -1
    try:
        st = os.fstat(fd)
    except OSError:
        st = None
    if (st is None or not stat.S_ISREG(st.st_mode) or st.st_nlink != 2 or st.st_size != 0
            or stat.S_IMODE(st.st_mode) != mode):  # a marker from before private modes: not for a 0600 file
        os.close(fd)
        _discard(tmp)
        return -1
    return fd


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


_ENCODER = json.JSONEncoder(ensure_ascii=False)  # what json.dumps(obj, ensure_ascii=False) builds per call
_C_ENCODER: Any = getattr(json.encoder, "c_make_encoder", None)
_ENCODE_STR: Any = json.encoder.encode_basestring


def dumps(obj: Any) -> bytes:
    # One line, no indent: json's C encoder only runs without indent (2.5x faster on a task file,
    # and a task is written twice per claim). `omx team api read-task` pretty-prints for people.
    # Called straight, as JSONEncoder.iterencode(_one_shot=True) calls it (its Python layers cost
    # as much as encoding a small event): a fresh markers dict, so circular data still fails alike.
    if _C_ENCODER is None or isinstance(obj, str):
        return (_ENCODER.encode(obj) + "\n").encode()
    encode = _C_ENCODER({}, _ENCODER.default, _ENCODE_STR, None, ": ", ", ", False, False, True)
    return ("".join(encode(obj, 0)) + "\n").encode()


def write_json(
    path: str | os.PathLike[str], obj: Any, *, durable: bool = True, reuse: str | None = None, mode: int = modes.FILE,
) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (``reuse``, ``mode``: see :func:`write_bytes`)."""
    write_bytes(path, dumps(obj), durable=durable, reuse=reuse, mode=mode)


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """The whole file (``os.read`` on a descriptor: cheaper than a buffered file object for small files)."""
    fd = os.open(path, _READ_FLAGS)
    try:
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:
            return data
        parts = [data]
        while chunk := os.read(fd, _CHUNK):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(fd)


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1 << 16


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON from ``path``; raise :class:`CorruptState` (with the path) when it is not JSON.

    ``FileNotFoundError`` passes through: callers decide what a missing file means.
    """
    raw = read_bytes(path)
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptState(f"{os.fspath(path)}: not valid JSON ({exc})", path=os.fspath(path)) from None


def is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def ignore_in_git(folder: Path) -> None:
    """Keep ``folder`` (omx's own files inside a user's repo) out of ``git status`` with a ``*`` .gitignore."""
    ignore = folder / ".gitignore"
    if not ignore.exists():
        modes.make_dirs(folder)
        try:
            fd = os.open(ignore, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return
        try:
            write_all(fd, b"# omx's own state and locks: never committed\n*\n", os.fspath(ignore))
        finally:
            os.close(fd)
