"""State and log files are private (0600, folders 0700) whatever the umask; a ``shared_group`` team's are
0660/0770. Task text, prompts, results and logs can hold private code (issue 10)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OMX
from tests.team.test_start import make_repo


def umask_run(umask: int, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.umask(umask), **kw)


def api(root: Path, umask: int, op: str, **payload: Any) -> dict[str, Any]:
    proc = umask_run(umask, [OMX, "team", "api", op, "--root", str(root), "--input", json.dumps(payload)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)["data"]  # type: ignore[no-any-return]


def every_op(root: Path, umask: int, **create: Any) -> None:
    """Make every kind of state file there is, each through the CLI under ``umask``."""
    api(root, umask, "create-team", team_name="alpha", workers=2, **create)
    api(root, umask, "create-task", team_name="alpha", subject="one")
    api(root, umask, "create-task", team_name="alpha", subject="two", depends_on=["1"])
    token = api(root, umask, "claim-next", team_name="alpha", worker="worker-1")["claimToken"]
    api(root, umask, "renew-claim", team_name="alpha", task_id="1", worker="worker-1", claim_token=token)
    api(root, umask, "transition-task-status", team_name="alpha", task_id="1", worker="worker-1",
        claim_token=token, to="completed", result={"summary": "private code"})
    api(root, umask, "send-message", team_name="alpha", from_worker="leader-fixed", to_worker="worker-2", body="hi")
    api(root, umask, "send-message", team_name="alpha", from_worker="worker-2", to_worker="leader-fixed", body="ack")
    api(root, umask, "write-worker-status", team_name="alpha", worker="worker-2", state="idle")
    api(root, umask, "update-worker-heartbeat", team_name="alpha", worker="worker-2")
    api(root, umask, "write-worker-identity", team_name="alpha", worker="worker-2", pid=1)
    api(root, umask, "write-worker-inbox", team_name="alpha", worker="worker-2", content="secret plan")
    api(root, umask, "write-shutdown-request", team_name="alpha", worker="worker-2")
    api(root, umask, "write-shutdown-ack", team_name="alpha", worker="worker-2")
    api(root, umask, "append-event", team_name="alpha", type="note")


def modes(top: Path) -> dict[str, set[str]]:
    """``{"0o600": {paths}, ...}`` for every file and folder under ``top`` (``top`` included)."""
    out: dict[str, set[str]] = {}
    for p in [top, *top.rglob("*")]:
        st = p.lstat()
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        out.setdefault(f"{kind} {oct(stat.S_IMODE(st.st_mode))}", set()).add(str(p.relative_to(top.parent)))
    return out


def test_under_umask_000_every_state_file_is_0600_and_every_folder_0700(tmp_path: Path) -> None:
    root = tmp_path / "state"
    every_op(root, 0o000)
    found = modes(root)
    assert set(found) == {"file 0o600", "dir 0o700"}, {k: sorted(v)[:5] for k, v in found.items()}
    files = found["file 0o600"]
    for name in ("config.json", "task-1.json", "events.ndjson", "inbox.md", "status.json", "task-1.lock",
                 "heartbeat.json", "identity.json", "shutdown-request.json", "shutdown-ack.json"):
        assert any(f.endswith(name) for f in files), name


def test_a_shared_group_team_is_0660_and_0770_under_a_umask_that_would_take_group_write(tmp_path: Path) -> None:
    root = tmp_path / "state"
    every_op(root, 0o022, shared_group=True)
    found = modes(root / "team" / "alpha")
    assert set(found) == {"file 0o660", "dir 0o770"}, {k: sorted(v)[:5] for k, v in found.items()}
    config = json.loads((root / "team" / "alpha" / "config.json").read_text())
    assert config["shared_group"] is True


def test_shared_group_must_be_a_boolean(tmp_path: Path) -> None:
    proc = subprocess.run([OMX, "team", "api", "create-team", "--root", str(tmp_path / "s"), "--input",
                           '{"team_name": "alpha", "shared_group": "yes"}'], capture_output=True, text=True)
    assert proc.returncode == 2 and json.loads(proc.stdout)["error"]["code"] == "invalid_input"


@pytest.mark.timeout(180)
def test_team_start_under_umask_000_keeps_state_and_logs_private(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, ["bash", "-c", "echo private code > out.txt; echo ok"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
    env["OMX_HOME"] = str(tmp_path / "omx-home")
    proc = umask_run(0o000, [OMX, "team", "start", "secret work", "--workers", "2", "--planner", "heuristic",
                             "--team", "sec"], cwd=repo, env=env, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    state = repo / ".omx" / "state"
    found = modes(state / "team" / "sec")
    assert set(found) == {"file 0o600", "dir 0o700"}, {k: sorted(v)[:5] for k, v in found.items()}
    assert {"sec/logs/worker-1.log", "sec/logs/worker-2.log"} <= found["file 0o600"]
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
