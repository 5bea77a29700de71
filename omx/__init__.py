"""omx: a team of coding agents working one repository through plain files.

The library's public face. ``omx team api`` (the CLI) is a thin layer over :class:`FileStore`.
"""

from omx.clock import FakeClock, SystemClock
from omx.errors import ERROR_CODES, OmxError
from omx.models import Claim, Event, Message, Task, TeamConfig
from omx.state.claims import ClaimResult
from omx.state.filestore import FileStore
from omx.state.paths import TeamPaths, default_root

__version__ = "0.1.0"

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
