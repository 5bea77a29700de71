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
