"""Text from data, made safe to show a person: control characters escaped and visible.

Task subjects, worker status fields, event reasons, agent summaries, platform titles and log lines
are data, some of it written by agents or remote users. Printed raw, ``"\\x1b[2J\\x1b]0;PWNED\\x07"``
clears the screen and sets the terminal's title (issue 10). Every output meant for people passes such
text through :func:`visible`, the one helper for it; ``--json`` output is exact and does not.

What is escaped: C0 controls and DEL (``\\x1b``, ``\\n``, ``\\t``...), C1 controls (``\\x9b`` is CSI on
some terminals), the bidirectional overrides and isolates that reorder what a line shows ("Trojan
Source"), and lone surrogates (not characters; they cannot even be encoded). Everything else — any
script, emoji, ``\\`` itself — is kept as it is.

Example:
    >>> visible("\\x1b]0;PWNED\\x07 fix the parser")
    '\\\\x1b]0;PWNED\\\\x07 fix the parser'
    >>> visible("line 1\\nline 2", keep_newlines=True)
    'line 1\\nline 2'
"""

from __future__ import annotations

import logging
import re

_REST = "\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[\x00-\x0a{_REST}]")
_UNSAFE_BUT_NEWLINE = re.compile(f"[\x00-\x09{_REST}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    ch = m.group()
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: object, *, keep_newlines: bool = False, limit: int | None = None) -> str:
    """``text`` (``str()`` of it) with every control character escaped, e.g. ESC as ``\\x1b``.

    Args:
        keep_newlines: keep ``\\n`` as a line break (for multi-line text shown as lines: a log);
            ``\\r`` is escaped all the same, so no line can overwrite another.
        limit: cut the result to this many characters (after escaping, so a cut never splits one).
    """
    s = text if isinstance(text, str) else str(text)
    out = (_UNSAFE_BUT_NEWLINE if keep_newlines else _UNSAFE).sub(_escape, s)
    return out if limit is None else out[:limit]


class VisibleFormatter(logging.Formatter):
    """A log formatter whose lines cannot drive the terminal: message, arguments and traceback are escaped.

    A record's message is one line (its newlines escaped too); a traceback keeps its line breaks.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return visible(super().formatMessage(record))

    def formatException(self, ei: object) -> str:
        return visible(super().formatException(ei), keep_newlines=True)  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:
        return visible(super().formatStack(stack_info), keep_newlines=True)


def install_visible_logging(level: int, fmt: str = "%(asctime)s %(name)s %(levelname)s %(message)s") -> None:
    """``logging.basicConfig(level=..., format=fmt)`` with a :class:`VisibleFormatter` on the root's handlers."""
    logging.basicConfig(level=level, format=fmt)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(VisibleFormatter(fmt))


def plural(count: int, word: str, many: str | None = None) -> str:
    """``count`` and ``word``, in the plural unless the count is one: ``1 worker``, ``2 workers``, ``0 tasks``.

    Example:
        >>> plural(1, "worker"), plural(3, "task"), plural(2, "process", "processes")
        ('1 worker', '3 tasks', '2 processes')
    """
    return f"{count} {word if count == 1 else many or word + 's'}"
