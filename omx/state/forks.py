"""This process's pid, without a ``getpid`` syscall each time it is asked.

Several parts of the store keep per-process state — open descriptors (:mod:`omx.state.fds`), a pool
of random names (:func:`omx.state.atomic.random_hex8`) — and must not use what a forked child
inherited. Asking ``os.getpid()`` on every use cost 17 syscalls a claim. Python calls its at-fork
hooks in a child that goes on running Python (``os.fork``, multiprocessing, ``preexec_fn``), and
only then can inherited state be used, so the pid is read once per process and refreshed there.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def pid() -> int:
    """``os.getpid()``, as of this process's start or last fork."""
    return _pid


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
