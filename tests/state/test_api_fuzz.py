"""No input of any shape produces a traceback: generated JSON thrown at every operation.

Runs in-process through :func:`omx.cli.api.handle` — the exact code path of the command, minus the
process start — so hypothesis can try thousands of inputs, and prints each answer with the CLI's own
printer (a lone surrogate once broke the printing, not the call). Every answer must be a well-formed
envelope: ok with data, or an error whose code is one of the documented codes (never internal_error)
with the exit status the README's table gives it. The caller's mistakes of issue 10 — deep nesting,
lone surrogates, huge integers, over-long strings — are generated too, and a few go through the real
``omx`` in a subprocess.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omx.cli import api as cli_api
from omx.cli.api import handle
from omx.errors import ERROR_CODES
from omx.state.api import OPERATIONS
from omx.state.apispec import JSON_KINDS, LIST_KINDS
from omx.state.filestore import FileStore
from tests.conftest import OMX, REPO

TEAM = "alpha"
hostile_text = st.sampled_from(["\ud800", "a\udfff", "\udc80x", "\x1b[2J\x1b]0;PWNED\x07", "x" * 100_001, "\x00"])
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
                | st.text(max_size=30) | hostile_text)
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
    st.text(max_size=10), kids, max_size=3), max_leaves=8)
# Plausible values for known fields make the fuzzer reach deep into handlers, not just the type checks.
plausible = {
    "team_name": st.sampled_from([TEAM, "alpha", "../x", "", "zz", "a" * 40, "a\x00"]),
    "worker": st.sampled_from(["worker-1", "worker-2", "leader-fixed", "nobody", "../w", ""]),
    "task_id": st.sampled_from(["1", "2", 1, "task-1", "999", "-1", "x", 2**70]),
    "claim_token": st.text(max_size=40),
    "cursor": st.sampled_from([0, 5, 2**70, 2**53, -1]),
    "to": st.sampled_from(["completed", "failed", "\ud800"]),
    "current_task_id": st.sampled_from(["1", "task-2", 3, "hello", "\ud800", "9" * 40]),
}
#: Raw --input texts no JSON encoder writes: each one the caller's fault, so invalid_input (exit 2).
RAW_HOSTILE = {
    "deep nesting": '{"team_name": "alpha", "data": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "nesting past the limit": '{"team_name": "alpha", "data": ' + "[" * 65 + "]" * 65 + "}",
    "5000-digit integer": '{"team_name": "alpha", "cursor": ' + "9" * 5_000 + "}",
    "cursor of 2**70": '{"team_name": "alpha", "cursor": ' + str(2**70) + "}",
    "NaN": '{"team_name": "alpha", "result": NaN}',
    "Infinity": '{"team_name": "alpha", "limit": -Infinity}',
    "float overflow": '{"team_name": "alpha", "pid": 1e999}',
    "escaped lone surrogate": '{"team_name": "alpha", "worker": "\\ud800"}',
    "raw lone surrogate": '{"team_name": "alpha", "worker": "\udc80"}',
    "surrogate in a key": '{"team_name": "alpha", "\\udfff": 1}',
}


def payloads(op: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = [f.name for f in OPERATIONS[op].fields] + ["bogus"]
    value_for = {name: plausible.get(name, json_values) | json_values for name in fields}
    return st.fixed_dictionaries({}, optional=value_for)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = tmp_path_factory.mktemp("fuzz") / "state"
    s = FileStore(r)
    s.create_team(TEAM, workers=["worker-1", "worker-2"], lease_ms=60_000)
    s.create_task(TEAM, "one")
    s.create_task(TEAM, "two", depends_on=["1"])
    return r


def readme_exit_statuses() -> dict[str, int]:
    """``{error code: exit status}`` from the README's table of exit statuses."""
    out: dict[str, int] = {}
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r"\| ([0-4]) \| [^|]+ \| (.*) \|", line)
        if m:
            out.update({code: int(m.group(1)) for code in re.findall(r"`([a-z_]+)`", m.group(2))})
    return out


README_EXITS = readme_exit_statuses()


def test_the_readme_table_is_what_the_code_answers() -> None:
    assert README_EXITS, "the README's exit-status table was not found"
    assert {c: ERROR_CODES[c] for c in README_EXITS} == README_EXITS


def check(envelope: Any, status: int) -> None:
    assert isinstance(envelope, dict)
    json.dumps(envelope)  # serialisable
    buf = io.BytesIO()
    with contextlib.redirect_stdout(io.TextIOWrapper(buf, encoding="utf-8")) as out:
        cli_api._print(envelope)  # prints as the command does, whatever the envelope holds
        out.flush()
    assert json.loads(buf.getvalue().decode("utf-8")) == json.loads(json.dumps(envelope))
    if envelope["ok"]:
        assert status == 0 and "data" in envelope
    else:
        code = envelope["error"]["code"]
        assert code in ERROR_CODES and code != "internal_error", envelope
        assert status == ERROR_CODES[code], envelope
        assert status == README_EXITS.get(code, status), envelope


@pytest.mark.parametrize("op", sorted(set(OPERATIONS) - {"cleanup", "await-event", "await-task", "claim-next"}))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_input_gives_a_json_answer(root: Path, op: str, data: st.DataObject) -> None:
    payload = data.draw(payloads(op))
    envelope, status = handle([op, "--input", json.dumps(payload), "--root", str(root)])
    check(envelope, status)


@pytest.mark.parametrize("op", ["await-event", "await-task", "claim-next", "cleanup"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_blocking_and_destructive_ops(root: Path, op: str, data: st.DataObject) -> None:
    payload = data.draw(payloads(op))
    for k in ("timeout_ms", "wait_ms"):
        if k in payload and isinstance(payload[k], int) and not isinstance(payload[k], bool):
            payload[k] = min(abs(payload[k]), 20)  # bounded waits
    if op == "cleanup":
        payload["team_name"] = "zz-never-exists"  # fuzz the input path without deleting the shared team
    envelope, status = handle([op, "--input", json.dumps(payload), "--root", str(root)])
    check(envelope, status)


@given(st.lists(st.text(max_size=20), max_size=6))
@settings(max_examples=100, deadline=None)
def test_any_argv_gives_a_json_answer(argv: list[str]) -> None:
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        old = os.environ.get("OMX_TEAM_STATE_ROOT")
        os.environ["OMX_TEAM_STATE_ROOT"] = d  # never the repo's own .omx/state
        try:
            envelope, status = handle(argv)
        finally:
            if old is None:
                del os.environ["OMX_TEAM_STATE_ROOT"]
            else:
                os.environ["OMX_TEAM_STATE_ROOT"] = old
    if isinstance(envelope, str):  # --help text
        assert status == 0
        return
    check(envelope, status)


@pytest.mark.parametrize("op", sorted(OPERATIONS))
@pytest.mark.parametrize("what", sorted(RAW_HOSTILE))
def test_the_callers_mistakes_are_invalid_input(root: Path, op: str, what: str) -> None:
    envelope, status = handle([op, "--input", RAW_HOSTILE[what], "--root", str(root)])
    check(envelope, status)
    assert isinstance(envelope, dict)
    assert (status, envelope["error"]["code"]) == (2, "invalid_input"), envelope


def _too_long(kind: str, limit: int) -> Any:
    if kind in LIST_KINDS or kind in ("str_or_strs", "count_or_strs"):
        return ["1"] * (limit + 1)
    if kind in JSON_KINDS:
        return {"x": "y" * limit}
    return "y" * (limit + 1)


def test_every_field_has_a_bound_and_keeps_it() -> None:
    """Every field of every operation has a bound, printed by --help, and one past it is invalid_input."""
    from omx.state.apispec import parse_input

    checked = 0
    for op in OPERATIONS.values():
        for f in op.fields:
            if f.kind in ("bool", "int", "task_id"):
                continue  # bounded by type: ints by a range (MAX_SAFE_INT at most), task ids by their pattern
            assert f.max_len is not None, f"{op.name}.{f.name} has no bound"
            assert f.bound() and f.bound() in str(cli_api.handle([op.name, "--help"])[0])
            if f.kind in LIST_KINDS or f.kind in ("str_or_strs", "count_or_strs"):
                assert f.item_len is not None or f.kind == "task_ids", f"{op.name}.{f.name} items have no bound"
            with pytest.raises(Exception) as info:
                parse_input(op.name, op.fields, {"team_name": "alpha", f.name: _too_long(f.kind, f.max_len)},
                            allow_extra=op.allow_extra)
            assert getattr(info.value, "code", None) == "invalid_input"
            checked += 1
    assert checked > 40


@pytest.mark.parametrize(("op", "field", "limit"), [
    ("write-worker-status", "reason", 2_000), ("write-worker-inbox", "content", 1_000_000),
    ("write-worker-identity", "host", 255), ("write-worker-identity", "worktree", 4_096),
    ("write-worker-identity", "role", 100), ("write-shutdown-request", "requested_by", 64),
    ("append-event", "message_id", 80), ("append-event", "reason", 2_000), ("create-task", "role", 100),
    ("update-task", "role", 100), ("create-task", "subject", 500), ("create-task", "description", 200_000),
])
def test_the_fields_issue_10_names_are_bounded(root: Path, op: str, field: str, limit: int) -> None:
    base = {"team_name": TEAM, "worker": "worker-1", "task_id": "1", "state": "idle", "type": "note",
            "content": "x", "subject": "s"}
    fields = {f.name for f in OPERATIONS[op].fields}
    payload = {k: v for k, v in base.items() if k in fields}
    payload[field] = "y" * limit  # at the bound: accepted
    envelope, status = handle([op, "--input", json.dumps(payload), "--root", str(root)])
    assert status == 0, envelope
    payload[field] = "y" * (limit + 1)
    envelope, status = handle([op, "--input", json.dumps(payload), "--root", str(root)])
    assert isinstance(envelope, dict)
    assert (status, envelope["error"]["code"], envelope["error"]["details"]["field"]) == (2, "invalid_input", field)


def test_current_task_id_must_be_a_task_id(root: Path) -> None:
    def status_with(current: object) -> tuple[Any, int]:
        return handle(["write-worker-status", "--input", json.dumps(
            {"team_name": TEAM, "worker": "worker-2", "state": "working", "current_task_id": current}),
            "--root", str(root)])

    envelope, status = status_with("task-2")
    assert status == 0 and envelope["data"]["status"]["current_task_id"] == "2"  # type: ignore[index]
    for bad in ("hello", "../1", "9" * 13, -1):
        envelope, status = status_with(bad)
        assert (status, envelope["error"]["details"]["field"]) == (2, "current_task_id")  # type: ignore[index]


@pytest.mark.parametrize(("op", "payload"), [
    ("transition-task-status", '{"team_name":"alpha","task_id":"1","worker":"worker-1","claim_token":"x",'
                               '"to":"\\ud800"}'),
    ("renew-claim", '{"team_name":"alpha","task_id":"1","worker":"\\ud800","claim_token":"x"}'),
    ("read-events", '{"team_name":"alpha","cursor":' + str(2**70) + "}"),
    ("append-event", RAW_HOSTILE["deep nesting"]),
    ("write-worker-status", '{"team_name":"alpha","worker":"worker-1","state":"idle","reason":"' + "r" * 10_000_000
     + '"}'),
])
def test_through_the_real_command(root: Path, tmp_path: Path, op: str, payload: str) -> None:
    """The installed ``omx``: one JSON line on stdout, nothing on stderr, exit 2 — never a traceback."""
    src = tmp_path / "input.json"
    src.write_text(payload, encoding="utf-8", errors="surrogatepass")
    proc = subprocess.run([OMX, "team", "api", op, "--input", f"@{src}", "--root", str(root), "--json"],
                          capture_output=True, timeout=60)
    assert proc.stderr == b""
    envelope = json.loads(proc.stdout)
    assert (proc.returncode, envelope["ok"], envelope["error"]["code"]) == (2, False, "invalid_input")


def test_an_undecodable_argument_is_answered_in_json(root: Path) -> None:
    """Bytes that are not UTF-8 in argv reach Python as lone surrogates: the answer still prints."""
    proc = subprocess.run([OMX.encode(), b"team", b"api", b"read-\xff", b"--root", str(root).encode()],
                          capture_output=True, timeout=60)
    assert proc.stderr == b""
    envelope = json.loads(proc.stdout)
    assert (proc.returncode, envelope["error"]["code"]) == (2, "unknown_operation")
