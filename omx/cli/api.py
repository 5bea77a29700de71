"""``omx team api <operation>``: JSON in, one JSON envelope out, a documented exit status.

This module is the CLI's hot path: it imports neither typer nor rich. Every failure — bad JSON, an
unknown operation, a bad name, a refused claim, a corrupt file, a bug — is printed as a JSON error
with a stable code; no traceback ever reaches the caller.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.0"
USAGE = """\
usage: omx team api <operation> [--input JSON | --input @FILE | --input -] [--json] [--root DIR]
       omx team api --list [--json]
       omx team api <operation> --help

Prints one JSON object: {"schema_version","timestamp","command","ok","operation","data"|"error"}.
Exit status: 0 ok, 1 refused, 2 bad input, 3 not found, 4 internal error.
"""


def _now_iso() -> str:
    from omx.clock import SYSTEM_CLOCK, iso

    return iso(SYSTEM_CLOCK.now_ms())


def _envelope(operation: str, *, data: Any = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "timestamp": _now_iso(),
        "command": f"omx team api {operation}".rstrip(),
        "ok": error is None,
        "operation": operation,
    }
    if error is None:
        out["data"] = data
    else:
        out["error"] = error
    return out


def _print(obj: dict[str, Any]) -> None:
    text = json.dumps(obj, ensure_ascii=False)
    try:
        data = (text + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (an argument from undecodable bytes): escape it, \\udXXX
        data = (json.dumps(obj) + "\n").encode("ascii")
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a replaced sys.stdout (tests): text it is
        sys.stdout.write(data.decode("utf-8"))
    else:
        sys.stdout.flush()
        out.write(data)
        out.flush()
    sys.stdout.flush()


#: Input nested deeper than this is refused (no field needs more; Python's JSON reader recurses).
MAX_DEPTH = 64


def _refuse_constant(name: str) -> Any:
    from omx.errors import InvalidInput

    raise InvalidInput(f"--input holds {name}, which is not JSON")


def _finite_float(text: str) -> float:
    from omx.errors import InvalidInput

    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise InvalidInput(f"--input holds a number out of range: {text[:40]}")
    return value


def _check_value(value: Any) -> None:
    """Refuse what JSON can carry but no field may: nesting past :data:`MAX_DEPTH`, lone surrogates."""
    from omx.errors import InvalidInput

    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            strings: Any = (v,)
        elif isinstance(v, dict):
            if depth > MAX_DEPTH:
                raise InvalidInput(f"--input is nested deeper than {MAX_DEPTH} levels")
            strings = v.keys()
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            if depth > MAX_DEPTH:
                raise InvalidInput(f"--input is nested deeper than {MAX_DEPTH} levels")
            strings = ()
            stack.extend((x, depth + 1) for x in v)
        else:
            continue
        for text in strings:
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    raise InvalidInput("--input holds a lone surrogate (\\ud800-\\udfff without its pair): "
                                       "not a character") from None


def _read_input(raw: str, stdin: Any = None) -> Any:
    from omx.errors import InvalidInput

    if raw == "-":
        try:
            text = (stdin or sys.stdin).read()
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"stdin is not UTF-8: {exc}") from None
    elif raw.startswith("@"):
        try:
            text = Path(raw[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read input file {raw[1:]!r}: {exc}") from None
    else:
        text = raw
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--input is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(f"--input is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # an integer of more digits than Python converts (sys.get_int_max_str_digits)
        raise InvalidInput(f"--input holds a number out of range: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"--input must be a JSON object, not {type(value).__name__}")
    _check_value(value)
    return value


def _parse(args: list[str]) -> tuple[str | None, dict[str, Any]]:
    from omx.errors import InvalidInput

    opts: dict[str, Any] = {"input": None, "root": None, "help": False, "list": False}
    operation = None
    it = iter(args)
    for a in it:
        if a in ("--help", "-h", "help"):
            opts["help"] = True
        elif a == "--json":
            pass  # output is always JSON; accepted for oh-my-codex compatibility
        elif a == "--list":
            opts["list"] = True
        elif a in ("--input", "--root"):
            val = next(it, None)
            if val is None:
                raise InvalidInput(f"{a} needs a value")
            opts[a[2:]] = val
        elif a.startswith("--input=") or a.startswith("--root="):
            k, _, v = a[2:].partition("=")
            opts[k] = v
        elif a.startswith("-") or operation is not None:
            raise InvalidInput(f"unexpected argument {a!r}")
        else:
            operation = a
    return operation, opts


def run_api(args: list[str]) -> int:
    """Run one API call; print its envelope (or help text); return the exit status."""
    envelope, status = handle(args)
    if isinstance(envelope, str):
        sys.stdout.write(envelope)
    else:
        _print(envelope)
    return status


def handle(args: list[str], stdin: Any = None) -> tuple[dict[str, Any] | str, int]:
    """The whole call, without printing: ``(envelope or help text, exit status)``. Never raises."""
    from omx import errors

    operation = ""
    try:
        op_name, opts = _parse(args)
        operation = op_name or ""
        if opts["list"] or (op_name is None and opts["help"]):
            return _list(), 0
        if op_name is None:
            raise errors.InvalidInput("missing operation; see omx team api --list")
        from omx.state.api import OPERATIONS

        spec = OPERATIONS.get(op_name)
        if spec is None:
            spec = all_operations().get(op_name)  # the engine's (git) operations, imported only when asked
        if spec is None:
            raise errors.UnknownOperation(
                f"unknown operation {op_name!r}; see omx team api --list", known=sorted(OPERATIONS)
            )
        if opts["help"]:
            from omx.cli.api_help import operation_help

            return operation_help(spec), 0
        payload = _read_input(opts["input"], stdin) if opts["input"] is not None else {}
        data, warnings = _call(spec, payload, opts["root"])
    except errors.OmxError as exc:
        return _envelope(operation, error=exc.to_dict()), exc.exit_status
    except KeyboardInterrupt:
        return _envelope(operation, error={"code": "interrupted", "message": "interrupted"}), 130
    except OSError as exc:
        full = errors.disk_full(exc)  # a write the store did not name (a folder, a lock file): still disk_full
        if full is not None:
            return _envelope(operation, error=full.to_dict()), full.exit_status
        err = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
        return _envelope(operation, error=err), errors.EXIT_INTERNAL
    except Exception as exc:
        err = {"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}
        return _envelope(operation, error=err), errors.EXIT_INTERNAL
    out = _envelope(operation, data=data)
    if warnings:
        out["warnings"] = warnings  # the call succeeded; something beside it did not (an event line on a full disk)
    return out, 0


def _call(spec: Any, payload: dict[str, Any], root_opt: str | None) -> tuple[Any, list[str]]:
    from omx.state.filestore import FileStore
    from omx.state.paths import default_root

    root = Path(root_opt).expanduser() if root_opt else default_root(Path(os.getcwd()))
    store = FileStore(root)
    return spec.call(store, payload), store.warnings


def all_operations() -> dict[str, Any]:
    """Every ``team api`` operation: the state layer's, and the engine's that run git
    (:mod:`omx.engine.team_api` registers them when imported)."""
    import omx.engine.team_api  # noqa: F401 - registers prepare-task-worktree, finish-task
    from omx.state.api import OPERATIONS

    return OPERATIONS


def _list() -> dict[str, Any]:
    from omx.errors import ERROR_CODES

    ops = [{"name": o.name, "summary": o.summary, "omx_extension": o.ours} for o in all_operations().values()]
    return _envelope("", data={"operations": ops, "usage": USAGE, "error_codes": ERROR_CODES})
