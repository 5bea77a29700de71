"""The state layer: paths and name rules, atomic files, locks, tasks and claims, mailboxes, events.

The names below load on first use (PEP 562), so ``from omx.state import names`` stays cheap: a
worker checks its name before it starts Codex, and the store's imports can wait until after.
"""

from __future__ import annotations

import typing as _typing

from omx._lazy import lazy_attributes as _lazy_attributes

if _typing.TYPE_CHECKING:
    from omx.state.claims import ClaimResult
    from omx.state.filestore import FileStore
    from omx.state.paths import TeamPaths, default_root

_WHERE = {"ClaimResult": "omx.state.claims", "FileStore": "omx.state.filestore", "TeamPaths": "omx.state.paths",
          "default_root": "omx.state.paths"}

__all__ = ["ClaimResult", "FileStore", "TeamPaths", "default_root"]


__getattr__ = _lazy_attributes(__name__, _WHERE, globals())
