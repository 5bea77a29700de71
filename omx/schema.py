"""Strict validation and JSON Schema of the on-disk records, by pydantic, for where time does not matter.

The hot path validates records by hand (:meth:`omx.models.Record.from_dict`); ``omx doctor`` and the
schema export use pydantic over the very same dataclasses, and ``tests/test_models.py`` checks that
the two agree. Importing this module costs ~150 ms; the ``omx team api`` path never does.
"""

from __future__ import annotations

from typing import Any

from omx.models import RECORDS, Record

_ADAPTERS: dict[str, Any] = {}


def _adapter(cls: type[Record]) -> Any:
    from pydantic import TypeAdapter

    if cls.__name__ not in _ADAPTERS:
        _ADAPTERS[cls.__name__] = TypeAdapter(cls)
    return _ADAPTERS[cls.__name__]


def validate(cls: type[Record], data: Any) -> None:
    """Raise ``ValueError`` when pydantic (strict) rejects ``data`` for ``cls`` or its own checks fail.

    Validated as JSON text: in strict mode pydantic takes a JSON object for a dataclass (from Python
    it would want an instance), and refuses ``"5"`` for an int as our hand-written check does.
    """
    import json

    from pydantic import ValidationError

    try:
        _adapter(cls).validate_json(json.dumps(data), strict=True)
    except ValidationError as exc:
        e = exc.errors(include_url=False)[0]
        loc = ".".join(str(x) for x in e.get("loc", ()))
        raise ValueError(f"{loc}: {e.get('msg')}") from None
    cls.from_dict(data)  # choices and minimums live on the record


def json_schemas() -> dict[str, Any]:
    """JSON Schema of every state file, by path pattern."""
    return {path: _adapter(cls).json_schema() for path, cls in RECORDS.items()}
