"""The state layer: paths and name rules, atomic files, locks, tasks and claims, mailboxes, events."""

from omx.state.claims import ClaimResult
from omx.state.filestore import FileStore
from omx.state.paths import TeamPaths, default_root

__all__ = ["ClaimResult", "FileStore", "TeamPaths", "default_root"]
