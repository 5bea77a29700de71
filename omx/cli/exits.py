"""How a command's failure becomes a message and an exit status (typer-free: the fast paths use it too)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any


def guarded(fn: Callable[[], Any], on_other: Callable[[Exception], int | None] | None = None) -> int:
    """Run a command body; turn what it raises into the CLI's message and exit status.

    ``on_other`` may claim any other exception (typer's usage errors) by returning an exit status.
    """
    from omx.errors import EXIT_INTERNAL, OmxError, disk_full

    try:
        try:
            rv = fn()
        except OSError as exc:
            raise disk_full(exc) or exc from None
    except OmxError as exc:
        from omx.terminal import visible

        print(f"omx: error: {visible(exc.message, keep_newlines=True)} [{exc.code}]", file=sys.stderr)
        return exc.exit_status
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except KeyboardInterrupt:
        print("omx: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        status = on_other(exc) if on_other is not None else None
        if status is not None:
            return status
        if os.environ.get("OMX_DEBUG"):
            raise
        from omx.terminal import visible

        print(f"omx: internal error: {type(exc).__name__}: {visible(exc)} (set OMX_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0
