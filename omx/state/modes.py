"""Permissions of what omx writes: private to the user, or to a group for a shared team.

Task text, prompts, results and logs can hold private code, so state and log files are made 0600 and
folders 0700 whatever the umask. A team created with ``shared_group: true`` is for several accounts of
one group (a shared checkout): its files are 0660 and its folders 0770, so every member can take its
locks, append to its log and replace its files.

``open``/``mkdir`` apply the umask to the mode they are given. A umask only takes bits away, and
none of the usual ones (022, 002, 077, even 000) takes the owner's: a private mode comes out as asked
with no further call, so the hot path (a task file per claim) pays nothing. A group mode, or a umask
that takes owner bits, is set again with ``fchmod``/``chmod``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

FILE = 0o600
DIR = 0o700
SHARED_FILE = 0o660
SHARED_DIR = 0o770


def _read_umask() -> int:
    # /proc/self/status says it without changing it (os.umask can only be read by setting it, which
    # another thread could see); the set-and-restore is the fallback where /proc is missing.
    try:
        with open("/proc/self/status", "rb") as f:
            m = re.search(rb"^Umask:\s*([0-7]+)", f.read(), re.MULTILINE)
        if m:
            return int(m.group(1), 8)
    except OSError:
        pass
    old = os.umask(0o077)
    os.umask(old)
    return old


_umask = _read_umask()


def refresh_umask() -> None:
    """Read the umask again (for a caller that changed it after omx was imported)."""
    global _umask
    _umask = _read_umask()


def needs_chmod(mode: int) -> bool:
    """True when ``open``/``mkdir`` with ``mode`` would not give exactly ``mode`` under the current umask."""
    return bool(mode & _umask)


def files(shared: bool) -> int:
    """The file mode of a team (``shared``: its config says ``shared_group``)."""
    return SHARED_FILE if shared else FILE


def dirs(shared: bool) -> int:
    """The folder mode of a team."""
    return SHARED_DIR if shared else DIR


def dir_for(file_mode: int) -> int:
    """The folder mode that goes with a file mode (0600 -> 0700, 0660 -> 0770)."""
    return SHARED_DIR if file_mode & 0o060 else DIR


def make_dirs(path: str | os.PathLike[str], mode: int = DIR) -> None:
    """``os.makedirs(path, exist_ok=True)``, each folder it makes getting ``mode`` whatever the umask.

    Folders that exist already are left as they are (their owner chose their mode).
    """
    path = os.fspath(path)
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return
    except FileNotFoundError:
        parent = os.path.dirname(path.rstrip("/"))
        if not parent or parent == path:
            raise
        make_dirs(parent, mode)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            return
    if needs_chmod(mode):
        os.chmod(path, mode)


def create_file(path: str | os.PathLike[str], flags: int, mode: int = FILE) -> int:
    """``os.open(path, flags | O_CREAT, mode)``, the mode set whatever the umask when this call made the file.

    Opens an existing file as it is. Returns the descriptor.
    """
    plain = flags & ~(os.O_CREAT | os.O_EXCL)
    try:
        return os.open(path, plain)
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, plain | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:  # another process made it meanwhile: it set the mode
        return os.open(path, plain)
    if needs_chmod(mode):
        try:
            os.fchmod(fd, mode)
        except BaseException:
            os.close(fd)
            raise
    return fd


def mode_of(path: Path | str) -> int:
    """The permission bits of ``path`` (for messages and tests)."""
    return os.stat(path).st_mode & 0o7777
