"""A small TOML writer for omx's own settings files (read back with the standard library's ``tomllib``).

It writes what the settings need and nothing more: a flat table of strings, integers, floats,
booleans and lists of those, plus an optional leading comment. Strings are always TOML basic strings
with every quote, backslash and control character escaped, so any text (a path with quotes, an
instruction with newlines, a name with ``\\x1b``) reads back unchanged.

Example:
    >>> import tomllib
    >>> text = dumps({"name": 'say "hi"\\n', "runs": 2, "auto": False})
    >>> tomllib.loads(text) == {"name": 'say "hi"\\n', "runs": 2, "auto": False}
    True
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def quote(text: str) -> str:
    """``text`` as a TOML basic string (double quotes, everything that needs it escaped)."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F or 0xD800 <= ord(ch) <= 0xDFFF:
            # Control characters must be escaped; a lone surrogate cannot be encoded at all.
            out.append(f"\\u{ord(ch) if ord(ch) < 0xD800 else 0xFFFD:04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def key(name: str) -> str:
    """A bare key when possible, else a quoted one."""
    return name if _BARE_KEY.fullmatch(name) else quote(name)  # fullmatch: "$" would let "a\n" through


def value(v: Any) -> str:
    """One TOML value. Raises :class:`TypeError` for anything this writer does not support."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(data: Mapping[str, Any], *, comment: str = "") -> str:
    """A flat TOML document of ``data``; ``None`` values are left out, ``comment`` lines come first."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    if lines:
        lines.append("")
    for name, v in data.items():
        if v is None:
            continue
        if isinstance(v, Mapping):
            raise TypeError(f"{name}: nested tables are not supported by this writer")
        lines.append(f"{key(name)} = {value(v)}")
    return "\n".join(lines) + "\n"
