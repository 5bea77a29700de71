"""A machine-wide cap on running agents, shared by every worker process (portalocker slot files).

Each running agent holds one of ``maximum`` lock files under ``$OMX_HOME/slots`` (named as
portalocker's ``BoundedSemaphore`` names them: ``omx-agent.00.lock`` …). Kernel locks die with their
process, so a crashed worker never keeps a slot.

A worker keeps its slot files open and tries first the slot it had last (processes start spread over
the slots by pid): with as many slots as workers, each worker finds its own slot free at the first
try — one ``flock`` a run instead of opening and probing the files one after another.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

DEFAULT_MACHINE_MAX = 8
SLOT_NAME = "omx-agent.{number:02d}.lock"
#: How often a worker waiting for a slot looks again (and at its cancel flag).
RETRY_S = 0.05


def omx_home() -> Path:
    return Path(os.environ.get("OMX_HOME") or Path.home() / ".omx").expanduser()


def machine_max(explicit: int | None = None) -> int:
    """Argument, then ``$OMX_MACHINE_MAX_AGENTS``, then 8."""
    if explicit is not None:
        return max(1, explicit)
    env = os.environ.get("OMX_MACHINE_MAX_AGENTS", "")
    return max(1, int(env)) if env.isdigit() else DEFAULT_MACHINE_MAX


class MachineSlots:
    """``with slots.hold(cancel):`` waits for a free slot (or for ``cancel``), holds it for the body.

    Safe to use from several threads of one process: a slot held by one thread is never handed to
    another (``flock`` alone would not tell them apart: they share the open file).
    """

    def __init__(self, maximum: int | None = None, directory: Path | None = None) -> None:
        self.maximum = machine_max(maximum)
        self.directory = directory or omx_home() / "slots"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[int, IO[Any]] = {}
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._preferred = os.getpid() % self.maximum
        # The files close with the object too (a worker that never calls close(), a test's store).
        self._finalizer = weakref.finalize(self, _close_all, self._files)

    def _file(self, number: int) -> IO[Any]:
        fh = self._files.get(number)
        if fh is None:
            fh = open(self.directory / SLOT_NAME.format(number=number), "a")  # noqa: SIM115 - kept open
            self._files[number] = fh
        return fh

    def try_acquire(self) -> int | None:
        """Take a free slot now: its number, or ``None`` when all are held."""
        with self._lock:
            for i in range(self.maximum):
                number = (self._preferred + i) % self.maximum
                if number in self._held:
                    continue
                fh = self._file(number)
                import portalocker  # here, not at import: ~35 ms off every worker's start-up

                try:
                    portalocker.lock(fh, portalocker.LOCK_EX | portalocker.LOCK_NB)
                except portalocker.LockException:
                    continue
                self._held.add(number)
                self._preferred = number
                return number
        return None

    def release(self, number: int) -> None:
        """Give slot ``number`` back."""
        with self._lock:
            if number in self._held:
                import portalocker

                portalocker.unlock(self._files[number])
                self._held.discard(number)

    @contextmanager
    def hold(self, cancel: threading.Event) -> Iterator[bool]:
        """Yield True with a slot held, or False if ``cancel`` was set while waiting."""
        while True:
            if cancel.is_set():
                yield False
                return
            number = self.try_acquire()
            if number is not None:
                break
            cancel.wait(RETRY_S)
        try:
            yield True
        finally:
            self.release(number)

    def close(self) -> None:
        """Close the slot files (releasing any slot still held)."""
        with self._lock:
            _close_all(self._files)
            self._held.clear()


def _close_all(files: dict[int, IO[Any]]) -> None:
    for fh in files.values():
        fh.close()
    files.clear()
