"""``omx.terminal.visible``: the one helper every human-facing output runs data through (issue 10)."""

from __future__ import annotations

import logging
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from omx.terminal import VisibleFormatter, visible


def test_controls_are_escaped_and_text_is_kept() -> None:
    assert visible("\x1b[2J\x1b]0;PWNED\x07") == "\\x1b[2J\\x1b]0;PWNED\\x07"
    assert visible("a\tb\nc\rd\x00\x7f\x9b") == "a\\tb\\nc\\rd\\x00\\x7f\\x9b"
    assert visible("\u202eevil\u2066 \ud800") == "\\u202eevil\\u2066 \\ud800"
    assert visible("é 中 🙂 C:\\path [bold]") == "é 中 🙂 C:\\path [bold]"
    assert visible("one\ntwo\r", keep_newlines=True) == "one\ntwo\\r"
    assert visible("\x1b" * 10, limit=8) == "\\x1b\\x1b"
    assert visible(7) == "7"


@given(st.text())
def test_nothing_that_drives_a_terminal_survives(text: str) -> None:
    shown = visible(text)
    assert all(unicodedata.category(c) not in ("Cc", "Cs") for c in shown)
    assert not set(shown) & {"\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"}
    assert visible(shown) == shown  # escaping twice changes nothing
    shown.encode("utf-8")  # always printable as UTF-8


def test_log_lines_are_escaped_tracebacks_keep_their_lines() -> None:
    fmt = VisibleFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("omx", logging.INFO, __file__, 1, "task %s: %s", ("7", "\x1b]0;x\x07\nfake"), None)
    assert fmt.format(record) == "INFO task 7: \\x1b]0;x\\x07\\nfake"
    try:
        raise ValueError("bad \x1b[31m")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    out = fmt.format(record)
    assert "\x1b" not in out and "ValueError: bad \\x1b[31m" in out and "\nTraceback" in out
