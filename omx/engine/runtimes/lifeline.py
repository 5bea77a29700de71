"""Tie a child process's life to the thread that started it (Linux ``PR_SET_PDEATHSIG``).

Agents and hooks run in their own session (so one ``killpg`` stops their helpers too), which also
means nothing stops them when the worker is SIGKILLed: the next worker would then run a second agent
in the same worktree. With the parent-death signal the kernel sends SIGKILL to the child the moment
its parent goes away, however it went. Elsewhere this is a no-op.

Note: the signal follows the *thread* that forked the child; omx starts agents and hooks from the
thread that waits for them, so the child is gone or reaped before that thread ends.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` (None where unsupported)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:  # runs in the child between fork and exec: no locks, no allocations to speak of
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return arm
