"""omx: a team of coding agents working one repository through plain files.

The library's public face. ``omx team api`` (the CLI) is a thin layer over :class:`FileStore`.

The names below are loaded on first use (PEP 562): ``import omx.cli.team_worker`` must not pay for
the store's imports before it starts Codex (every worker's first task waits on that start).
"""

from __future__ import annotations

from omx._lazy import lazy_attributes as _lazy_attributes

TYPE_CHECKING = False  # typing itself costs ~5 ms of a worker's start-up
if TYPE_CHECKING:
    from omx.clock import FakeClock, SystemClock
    from omx.errors import ERROR_CODES, OmxError
    from omx.models import Claim, Event, Message, Task, TeamConfig
    from omx.state.claims import ClaimResult
    from omx.state.filestore import FileStore
    from omx.state.paths import TeamPaths, default_root
del TYPE_CHECKING  # not part of the package's face

__version__ = "0.1.0"

_WHERE = {
    "ERROR_CODES": "omx.errors",
    "Claim": "omx.models",
    "ClaimResult": "omx.state.claims",
    "Event": "omx.models",
    "FakeClock": "omx.clock",
    "FileStore": "omx.state.filestore",
    "Message": "omx.models",
    "OmxError": "omx.errors",
    "SystemClock": "omx.clock",
    "Task": "omx.models",
    "TeamConfig": "omx.models",
    "TeamPaths": "omx.state.paths",
    "default_root": "omx.state.paths",
}

__all__ = [
    "ERROR_CODES",
    "Claim",
    "ClaimResult",
    "Event",
    "FakeClock",
    "FileStore",
    "Message",
    "OmxError",
    "SystemClock",
    "Task",
    "TeamConfig",
    "TeamPaths",
    "__version__",
    "default_root",
]


__getattr__ = _lazy_attributes(__name__, _WHERE, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
