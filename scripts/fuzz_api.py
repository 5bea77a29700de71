"""Throw random and hostile input at every ``omx team api`` operation and count answers off the README table.

    .venv/bin/python scripts/fuzz_api.py [--calls 6000] [--seed 10] [--json]

Runs in-process through :func:`omx.cli.api.handle` and prints each envelope with the CLI's own
printer into a byte buffer, so a traceback on output counts too. A call *conforms* when its
envelope prints, is ``ok`` with exit 0, or names a documented error code with that code's exit
status, and a caller's mistake (this script only makes mistakes of the caller's: deep nesting, lone
surrogates, huge numbers, 10 MB strings, wrong types) is never ``internal_error``. Reproducible:
the same seed gives the same calls. Issue 10 quotes its figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import random
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from omx.cli import api as cli_api
from omx.errors import ERROR_CODES
from omx.state.api import OPERATIONS
from omx.state.filestore import FileStore

TEAM = "alpha"
SURROGATES = ["\ud800", "a\udfff", "\udc80x"]
HUGE_INTS = [2**70, -(2**70), 2**63, 2**53, 10**30]
SKIP = {"cleanup"}  # would delete the shared team


def _value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.12:
        return rng.choice(SURROGATES)
    if r < 0.22:
        return rng.choice(HUGE_INTS)
    if r < 0.26:
        return "x" * rng.choice([501, 5_000, 200_001, 10_000_000])
    if r < 0.40:
        return rng.choice(["worker-1", "1", "completed", "failed", "idle", "\x1b[2J", "", "../x", "task-1"])
    if r < 0.55:
        return rng.choice([0, 1, -1, 7, True, False, None, 1.5, 1e308])
    if r < 0.70 and depth < 3:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if r < 0.80 and depth < 3:
        return {rng.choice(["a", "b", "\ud800", "summary"]): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return "".join(rng.choice("ab\x00\x07\u00e9\u4e2d") for _ in range(rng.randint(0, 12)))


def _plausible(rng: random.Random, name: str) -> Any:
    return {
        "team_name": TEAM, "worker": rng.choice(["worker-1", "worker-2"]), "task_id": rng.choice(["1", 2, "task-1"]),
        "to": rng.choice(["completed", "failed"]), "claim_token": "0" * 32, "from_worker": "worker-1",
        "to_worker": "worker-2", "state": "idle", "type": "note", "body": "hi", "content": "# inbox",
        "subject": "s", "message_id": "m-1",
    }.get(name, _value(rng))


def payload_text(rng: random.Random, op: str) -> str:
    """One call's ``--input``: mostly a plausible payload with one or two hostile fields, sometimes raw text."""
    r = rng.random()
    if r < 0.03:
        n = rng.choice([1_000, 100_000])
        return '{"team_name": "alpha", "data": ' + "[" * n + "]" * n + "}"
    if r < 0.05:
        return '{"team_name": "alpha", "cursor": ' + "9" * 5_000 + "}"
    if r < 0.07:
        return '{"team_name": "alpha", "result": NaN, "limit": Infinity, "x": 1e999}'
    fields = [f.name for f in OPERATIONS[op].fields]
    payload = {name: _plausible(rng, name) for name in fields if rng.random() < 0.8 or name == "team_name"}
    for name in rng.sample(fields, k=min(len(fields), rng.randint(1, 2))):
        payload[name] = _value(rng)
    for k in ("timeout_ms", "wait_ms"):  # bounded waits (the default timeout is 30 s)
        if k in fields and (k not in payload or (isinstance(payload[k], int) and not isinstance(payload[k], bool))):
            payload[k] = min(abs(payload.get(k, 0)), 20)
    return json.dumps(payload)


def conforms(envelope: Any, status: int) -> str | None:
    """``None`` when the answer follows the README table, else what is wrong (one word)."""
    if isinstance(envelope, str):
        return None if status == 0 else "help-status"
    buf = io.BytesIO()
    out = io.TextIOWrapper(buf, encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out):
            cli_api._print(envelope)
    except Exception:
        return "traceback"
    if envelope.get("ok"):
        return None if status == 0 else "ok-status"
    code = envelope["error"]["code"]
    if code == "internal_error":
        return "internal_error"
    if code not in ERROR_CODES or ERROR_CODES[code] != status:
        return "status"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=6_000)
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    ops = sorted(set(OPERATIONS) - SKIP)
    bad: Counter[str] = Counter()
    by_op: Counter[str] = Counter()
    examples: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "state"
        store = FileStore(root)
        store.create_team(TEAM, workers=["worker-1", "worker-2"], lease_ms=60_000)
        store.create_task(TEAM, "one")
        store.create_task(TEAM, "two", depends_on=["1"])
        for _ in range(args.calls):
            op = rng.choice(ops)
            text = payload_text(rng, op)
            envelope, status = cli_api.handle([op, "--input", text, "--root", str(root)])
            wrong = conforms(envelope, status)
            if wrong:
                bad[wrong] += 1
                by_op[op] += 1
                detail = envelope["error"]["message"] if isinstance(envelope, dict) and "error" in envelope else ""
                examples.setdefault(f"{op}/{wrong}", detail[:160])
    result = {"calls": args.calls, "seed": args.seed, "non_conforming": sum(bad.values()), "by_kind": dict(bad),
              "by_operation": dict(by_op), "examples": examples}
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=True))
    else:
        print(f"{args.calls} calls (seed {args.seed}): {result['non_conforming']} non-conforming")
        for kind, n in bad.most_common():
            print(f"  {kind:<16} {n}")
        for key, msg in sorted(examples.items()):
            print(f"  e.g. {key}: {msg!a}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
