"""No input of any shape produces a traceback: generated JSON thrown at every operation.

Runs in-process through :func:`omx.cli.api.handle` — the exact code path of the command, minus the
process start — so hypothesis can try thousands of inputs. Every answer must be a well-formed
envelope: ok with data, or an error whose code is one of the documented codes (never internal_error)
with the matching exit status.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omx.cli.api import handle
from omx.errors import ERROR_CODES
from omx.state.api import OPERATIONS
from omx.state.filestore import FileStore

TEAM = "alpha"
json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
                | st.text(max_size=30))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
    st.text(max_size=10), kids, max_size=3), max_leaves=8)
# Plausible values for known fields make the fuzzer reach deep into handlers, not just the type checks.
plausible = {
    "team_name": st.sampled_from([TEAM, "alpha", "../x", "", "zz", "a" * 40, "a\x00"]),
    "worker": st.sampled_from(["worker-1", "worker-2", "leader-fixed", "nobody", "../w", ""]),
    "task_id": st.sampled_from(["1", "2", 1, "task-1", "999", "-1", "x", 2**70]),
    "claim_token": st.text(max_size=40),
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


def check(envelope: Any, status: int) -> None:
    assert isinstance(envelope, dict)
    json.dumps(envelope)  # serialisable
    if envelope["ok"]:
        assert status == 0 and "data" in envelope
    else:
        code = envelope["error"]["code"]
        assert code in ERROR_CODES and code != "internal_error", envelope
        assert status == ERROR_CODES[code], envelope


@pytest.mark.parametrize("op", sorted(set(OPERATIONS) - {"cleanup", "await-event", "await-task", "claim-next"}))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
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
