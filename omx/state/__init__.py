"""The state layer: paths and name rules, atomic files, locks, tasks and claims, mailboxes, events.

The names below load on first use (PEP 562), so ``from omx.state import names`` stays cheap: a
worker checks its name before it starts Codex, and the store's imports can wait until after.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from omx.state.claims import ClaimResult
    from omx.state.filestore import FileStore
    from omx.state.paths import TeamPaths, default_root

_WHERE = {"ClaimResult": "omx.state.claims", "FileStore": "omx.state.filestore", "TeamPaths": "omx.state.paths",
          "default_root": "omx.state.paths"}

__all__ = ["ClaimResult", "FileStore", "TeamPaths", "default_root"]


def __getattr__(name: str) -> _typing.Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'omx.state' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value
