"""Is a process alive? One answer for the store (dead claim holders), runtimes and the platform daemon."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process on this host; a zombie waiting for its reaper counts as gone."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # no /proc here: the signal check is all we have
    return stat.rsplit(b")", 1)[-1].split()[0] not in (b"Z", b"X")


def is_omx_worker(pid: int) -> bool:
    """True if ``pid`` is alive and runs ``omx team worker`` (``omx`` in its command line, then ``worker``).

    A pid reused by some other program is not a worker; without /proc, any live pid is taken as one.
    """
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True
    at = next((i for i, a in enumerate(args) if a == b"omx" or a.endswith(b"/omx")), None)
    return at is not None and b"worker" in args[at + 1:]
