"""Agent runtimes: ``codex app-server`` (default), ``codex exec`` and any ``command``.

See :mod:`omx.engine.runtimes.base` for the contract; :func:`make_runtime` picks one from the
settings. The concrete runtimes are imported on first use, and so are the names below (PEP 562):
the worker's head start on Codex (:mod:`omx.engine.early`) loads :mod:`.lifeline` from this package
before anything else of the engine.
"""

from __future__ import annotations

from omx._lazy import lazy_attributes as _lazy_attributes

TYPE_CHECKING = False
if TYPE_CHECKING:
    from omx.engine.runtimes.base import (
        EVENT_KINDS,
        RunRequest,
        RunResult,
        RunStatus,
        Runtime,
        RuntimeEvent,
        make_runtime,
    )
del TYPE_CHECKING  # not part of the package's face

__all__ = ["EVENT_KINDS", "RunRequest", "RunResult", "RunStatus", "Runtime", "RuntimeEvent", "make_runtime"]

__getattr__ = _lazy_attributes(__name__, dict.fromkeys(__all__, "omx.engine.runtimes.base"), globals())
