"""Module attributes loaded on first use (PEP 562), for the packages whose imports must stay cheap."""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # not typing's: importing typing costs a worker's start-up ~5 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def lazy_attributes(package: str, where: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``where[name]`` on first access and keeps the value."""

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
