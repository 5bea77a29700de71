"""``omx team api`` as scripts see it: the installed command in a subprocess, JSON out, exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CliResult, api

Omx = Callable[..., CliResult]


@pytest.fixture
def team(omx: Omx) -> str:
    r = api(omx, "create-team", team_name="alpha", workers=2, lease_ms=60_000)
    assert r.code == 0, r.out
    return "alpha"


def test_envelope_and_claim_flow(omx: Omx, team: str) -> None:
    created = api(omx, "create-task", team_name=team, subject="parse", description="write the parser")
    env = created.json
    assert set(env) == {"schema_version", "timestamp", "command", "ok", "operation", "data"}
    assert (env["ok"], env["operation"], env["command"]) == (True, "create-task", "omx team api create-task")
    tid = env["data"]["task"]["id"]
    claim = api(omx, "claim-task", team_name=team, task_id=f"task-{tid}", worker="worker-1", expected_version=1)
    assert claim.code == 0
    token = claim.json["data"]["claimToken"]
    assert claim.json["data"]["task"]["status"] == "in_progress"
    done = api(omx, "transition-task-status", team_name=team, task_id=tid, worker="worker-1", claim_token=token,
               **{"from": "in_progress", "to": "completed", "result": {"summary": "parser written"}})
    assert done.code == 0 and done.json["data"]["task"]["result"] == {"summary": "parser written"}


@pytest.mark.parametrize(("op", "payload", "code", "status"), [
    ("read-task", {"team_name": "alpha", "task_id": "99"}, "task_not_found", 3),
    ("read-task", {"team_name": "zeta", "task_id": "1"}, "team_not_found", 3),
    ("send-message", {"team_name": "alpha", "from_worker": "worker-1", "to_worker": "worker-9", "body": "x"},
     "worker_not_found", 3),
    ("claim-task", {"team_name": "alpha", "task_id": "1", "worker": "worker-1", "surprise": 1}, "invalid_input", 2),
    ("claim-task", {"team_name": "alpha", "task_id": "1"}, "invalid_input", 2),
    ("claim-task", {"team_name": "alpha", "task_id": "1;rm -rf /", "worker": "worker-1"}, "invalid_input", 2),
    ("claim-task", {"team_name": "alpha", "task_id": ["1"], "worker": "worker-1"}, "invalid_input", 2),
    ("transition-task-status", {"team_name": "alpha", "task_id": "1", "worker": "worker-1", "claim_token": "x",
                                "to": "completed"}, "lease_expired", 1),
])
def test_error_codes_and_exit_statuses(omx: Omx, team: str, op: str, payload: dict[str, object], code: str,
                                       status: int) -> None:
    api(omx, "create-task", team_name=team, subject="x")
    r = api(omx, op, **payload)
    assert (r.code, r.json["ok"], r.json["error"]["code"]) == (status, False, code), r.out
    assert "Traceback" not in r.out + r.err


def test_refused_claim_is_exit_1_not_ok_true(omx: Omx, team: str) -> None:
    api(omx, "create-task", team_name=team, subject="x")
    assert api(omx, "claim-task", team_name=team, task_id="1", worker="worker-1").code == 0
    r = api(omx, "claim-task", team_name=team, task_id="1", worker="worker-2")
    assert (r.code, r.json["error"]["code"]) == (1, "claim_conflict")


@pytest.mark.parametrize("name", ["../x", "", "a" * 31, "a\x00b", "UPPER", "a/b", "..", "-rf"])
def test_bad_team_names(omx: Omx, name: str) -> None:
    r = api(omx, "read-config", team_name=name)
    assert (r.code, r.json["error"]["code"]) == (2, "invalid_input")


@pytest.mark.parametrize("name", ["../x", "", "w" * 65, "w\x00", "W1", "x/../y"])
def test_bad_worker_names(omx: Omx, team: str, name: str) -> None:
    r = api(omx, "mailbox-list", team_name=team, worker=name)
    assert (r.code, r.json["error"]["code"]) == (2, "invalid_input")


@pytest.mark.parametrize("raw", ["{bad", "[1,2]", '"str"', "null", "{\"team_name\": \"alpha\"", "\udcff"])
def test_invalid_json_input(omx: Omx, raw: str) -> None:
    r = omx("team", "api", "read-config", "--input", raw.encode("utf-8", "surrogateescape").decode("latin-1"))
    assert (r.code, r.json["error"]["code"]) == (2, "invalid_input")


def test_input_from_file_and_stdin(omx: Omx, team: str, tmp_path: Path) -> None:
    f = tmp_path / "in.json"
    f.write_text(json.dumps({"team_name": team}))
    assert omx("team", "api", "read-config", "--input", f"@{f}").json["data"]["config"]["name"] == team
    r = omx("team", "api", "read-config", "--input", "-", input=json.dumps({"team": team}))
    assert r.json["data"]["config"]["name"] == team
    missing = omx("team", "api", "read-config", "--input", f"@{tmp_path / 'nope.json'}")
    assert (missing.code, missing.json["error"]["code"]) == (2, "invalid_input")


def test_unknown_operation_and_list_and_help(omx: Omx) -> None:
    r = omx("team", "api", "frobnicate", "--input", "{}")
    assert (r.code, r.json["error"]["code"]) == (2, "unknown_operation")
    listing = omx("team", "api", "--list").json["data"]
    names = {o["name"] for o in listing["operations"]}
    omx_ops = {"create-task", "read-task", "list-tasks", "update-task", "claim-task", "transition-task-status",
               "release-task-claim", "send-message", "broadcast", "mailbox-list", "mailbox-mark-delivered",
               "mailbox-mark-notified", "read-config", "read-worker-status", "write-worker-status",
               "read-worker-heartbeat", "update-worker-heartbeat", "write-worker-inbox", "write-worker-identity",
               "append-event", "read-events", "await-event", "get-summary", "write-shutdown-request",
               "read-shutdown-ack", "write-shutdown-ack", "cleanup"}
    ours = {"claim-next", "renew-claim", "await-task", "reclaim-expired"}
    assert omx_ops | ours <= names
    assert listing["error_codes"]["claim_conflict"] == 1
    h = omx("team", "api", "claim-task", "--help")
    assert h.code == 0 and "Required input fields:" in h.out and "expected_version" in h.out


def test_await_task_wakes_on_create(omx: Omx, team: str, root: Path) -> None:
    import subprocess

    from tests.conftest import OMX

    waiter = subprocess.Popen(
        [OMX, "team", "api", "await-task", "--root", str(root), "--input",
         json.dumps({"team_name": team, "worker": "worker-1", "timeout_ms": 30_000})],
        stdout=subprocess.PIPE, text=True,
    )
    # Whether the waiter is already blocked or not when the task appears, it must report it.
    api(omx, "create-task", team_name=team, subject="wake up")
    out, _ = waiter.communicate(timeout=40)
    assert json.loads(out)["data"] == {"timed_out": False, "ready": True, "task_id": "1"}


def test_await_task_times_out(omx: Omx, team: str) -> None:
    r = api(omx, "await-task", team_name=team, worker="worker-1", timeout_ms=200)
    assert (r.code, r.json["data"]) == (0, {"timed_out": True})


def test_human_commands(omx: Omx, root: Path) -> None:
    r = omx("team", "create", "beta", "--workers", "3", "--root", str(root))
    assert r.code == 0 and "beta" in r.out
    bad = omx("team", "create", "../evil", "--root", str(root))
    assert bad.code == 2 and "invalid team name" in bad.err and "Traceback" not in bad.err
    st = omx("team", "status", "--team", "beta", "--root", str(root), "--json")
    assert st.code == 0 and [w["name"] for w in st.json["workers"]] == ["worker-1", "worker-2", "worker-3"]
    doc = omx("doctor", "--root", str(root), "--json")
    assert doc.json["ok"] is True, doc.out
    (root / "team" / "beta" / "tasks" / "task-1.json").write_text("{oops")
    doc = omx("doctor", "--root", str(root), "--json")
    assert doc.code == 1
    failing = [c for c in doc.json["checks"] if not c["ok"] and c["level"] == "error"]
    assert "task-1.json" in failing[0]["detail"]
