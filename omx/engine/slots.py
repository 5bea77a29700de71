"""A machine-wide cap on running agents, shared by every worker process (portalocker slot files).

Each running agent holds one of ``maximum`` lock files under ``$OMX_HOME/slots``. Kernel locks die
with their process, so a crashed worker never keeps a slot.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DEFAULT_MACHINE_MAX = 8


def omx_home() -> Path:
    return Path(os.environ.get("OMX_HOME") or Path.home() / ".omx").expanduser()


def machine_max(explicit: int | None = None) -> int:
    """Argument, then ``$OMX_MACHINE_MAX_AGENTS``, then 8."""
    if explicit is not None:
        return max(1, explicit)
    env = os.environ.get("OMX_MACHINE_MAX_AGENTS", "")
    return max(1, int(env)) if env.isdigit() else DEFAULT_MACHINE_MAX


class MachineSlots:
    """``with slots.hold(cancel):`` waits for a free slot (or for ``cancel``), holds it for the body."""

    def __init__(self, maximum: int | None = None, directory: Path | None = None) -> None:
        self.maximum = machine_max(maximum)
        self.directory = directory or omx_home() / "slots"
        self.directory.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def hold(self, cancel: threading.Event) -> Iterator[bool]:
        """Yield True with a slot held, or False if ``cancel`` was set while waiting."""
        import portalocker

        sem = portalocker.BoundedSemaphore(self.maximum, name="omx-agent", directory=str(self.directory),
                                           timeout=0.5, check_interval=0.05)
        while True:
            if cancel.is_set():
                yield False
                return
            try:
                sem.acquire()
                break
            except portalocker.AlreadyLocked:
                continue
        try:
            yield True
        finally:
            sem.release()
