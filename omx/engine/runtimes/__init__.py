"""Agent runtimes: ``codex app-server`` (default), ``codex exec`` and any ``command``.

See :mod:`omx.engine.runtimes.base` for the contract; :func:`make_runtime` picks one from the
settings. The concrete runtimes are imported on first use.
"""

from __future__ import annotations

from omx.engine.runtimes.base import (
    EVENT_KINDS,
    RunRequest,
    RunResult,
    RunStatus,
    Runtime,
    RuntimeEvent,
    make_runtime,
)

__all__ = ["EVENT_KINDS", "RunRequest", "RunResult", "RunStatus", "Runtime", "RuntimeEvent", "make_runtime"]
