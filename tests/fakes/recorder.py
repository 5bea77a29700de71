"""Test helpers for runtime callers: an event recorder and a deadline wait.

Example::

    events = EventRecorder()
    events.on(lambda e: e.kind == "started", cancel.set)   # cancel as soon as the turn starts
    result = runtime.run(request, events, cancel)
    assert events.of("message")[-1]["text"] == "done"
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from omx.engine.runtimes import RuntimeEvent

__all__ = ["EventRecorder", "wait_until"]


class EventRecorder:
    """An ``on_event`` sink that keeps every event and can act (once) when a matching one arrives."""

    def __init__(self) -> None:
        self.items: list[RuntimeEvent] = []
        self._triggers: list[tuple[Callable[[RuntimeEvent], bool], Callable[[], object]]] = []

    def __call__(self, event: RuntimeEvent) -> None:
        self.items.append(event)
        for trigger in list(self._triggers):
            if trigger[0](event):
                self._triggers.remove(trigger)
                trigger[1]()

    def on(self, match: Callable[[RuntimeEvent], bool], action: Callable[[], object]) -> None:
        """Call ``action`` the first time an event satisfies ``match``."""
        self._triggers.append((match, action))

    def kinds(self) -> list[str]:
        """The kinds of all events, in order."""
        return [event.kind for event in self.items]

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The data of every event of ``kind``, in order."""
        return [event.data for event in self.items if event.kind == kind]


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true; raise ``TimeoutError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
