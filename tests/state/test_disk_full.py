"""A write that cannot be finished fails with ``disk_full`` (exit 4) and changes nothing; it never says ok
over a torn file (issue 10: a 150 KB update-task on a nearly full disk answered ok over 12 KB of invalid JSON).

The short writes are real: the CLI runs under ``RLIMIT_FSIZE`` (the kernel writes up to the limit, then
refuses with EFBIG), or, as root, on a real tmpfs that is nearly full.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omx.state import atomic
from omx.state.filestore import FileStore
from tests.conftest import OMX


def cli(root: Path, op: str, payload: dict[str, Any], *, fsize: int | None = None) -> tuple[int, dict[str, Any]]:
    """``omx team api <op>`` in a subprocess, its files limited to ``fsize`` bytes when given."""
    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

    proc = subprocess.run([OMX, "team", "api", op, "--root", str(root), "--input", "-"], input=json.dumps(payload),
                          capture_output=True, text=True, timeout=60, preexec_fn=limit)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def temp_files(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if atomic.is_temp(p.name))


@pytest.fixture
def team(root: Path) -> str:
    FileStore(root).create_team("alpha", workers=["worker-1", "worker-2"])
    code, out = cli(root, "create-task", {"team_name": "alpha", "subject": "keep me", "description": "the old text"})
    assert code == 0, out
    return "alpha"


def test_a_task_write_cut_short_is_disk_full_and_the_old_task_stays_whole(root: Path, team: str) -> None:
    task_file = root / "team" / team / "tasks" / "task-1.json"
    before = task_file.read_bytes()
    code, out = cli(root, "update-task", {"team_name": team, "task_id": "1", "description": "x" * 150_000},
                    fsize=20_000)
    assert code == 4 and out["ok"] is False
    assert out["error"]["code"] == "disk_full"
    assert out["error"]["details"]["path"] == str(task_file)
    assert str(task_file) in out["error"]["message"]
    assert task_file.read_bytes() == before
    assert temp_files(root) == []
    code, out = cli(root, "read-task", {"team_name": team, "task_id": "1"})
    assert code == 0 and out["data"]["task"]["description"] == "the old text"
    code, out = cli(root, "claim-next", {"team_name": team, "worker": "worker-1"})
    assert code == 0 and out["data"]["task"]["id"] == "1", "the task must still be claimable"


def test_an_event_append_cut_short_leaves_no_partial_line(root: Path, team: str) -> None:
    log = root / "team" / team / "events" / "events.ndjson"
    size = log.stat().st_size
    code, out = cli(root, "append-event", {"team_name": team, "type": "note", "reason": "r" * 2_000},
                    fsize=size + 100)  # room for 100 of its ~2,200 bytes
    assert code == 4 and out["error"]["code"] == "disk_full"
    assert out["error"]["details"]["path"] == str(log)
    assert log.stat().st_size == size and log.read_bytes().endswith(b"\n"), "the partial line must be cut off"
    code, out = cli(root, "append-event", {"team_name": team, "type": "note", "reason": "after"})
    assert code == 0
    code, out = cli(root, "read-events", {"team_name": team})
    assert code == 0 and "torn" not in out["data"]
    assert [e["type"] for e in out["data"]["events"]] == ["team_created", "task_created", "note"]


def test_a_change_whose_event_line_does_not_fit_stands_and_says_so(root: Path, team: str) -> None:
    # The task file (~400 bytes) fits under the limit, the event log (already longer) cannot grow: the
    # claim is made and its token returned; the answer warns that its event was not recorded.
    log = root / "team" / team / "events" / "events.ndjson"
    FileStore(root).append_event(team, "note", reason="n" * 1_000)
    size = log.stat().st_size
    task_size = (root / "team" / team / "tasks" / "task-1.json").stat().st_size
    assert size > task_size + 400
    code, out = cli(root, "claim-next", {"team_name": team, "worker": "worker-1"}, fsize=task_size + 400)
    assert code == 0 and out["ok"] is True and out["data"]["claimToken"]
    assert any("task_claimed" in w and "not recorded" in w for w in out["warnings"])
    assert log.stat().st_size == size
    code, out = cli(root, "read-task", {"team_name": team, "task_id": "1"})
    assert out["data"]["task"]["status"] == "in_progress"


def test_disk_full_is_a_documented_exit_4_error() -> None:
    from omx import errors

    assert errors.ERROR_CODES["disk_full"] == 4
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| 4 |"))
    assert "`disk_full`" in row


# --- a real full disk (root only) -----------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(base: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``base/fs`` for the block; skips the test when that cannot be done."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = base / f"fs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave: int) -> Path:
    """Fill the file system at ``mnt`` until ``leave`` bytes are free (rounded to its blocks)."""
    filler = mnt / "filler"
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    with tmpfs(tmp_path, "3m") as mnt:
        yield lambda leave: fill(mnt, leave)


def test_the_issue_reproduction_on_a_real_nearly_full_tmpfs(tmp_path: Path,
                                                             full_disk: Callable[[int], Path]) -> None:
    filler = full_disk(0)
    filler.unlink()
    root = filler.parent / "state"
    FileStore(root).create_team("alpha", workers=["worker-1"])
    assert cli(root, "create-task", {"team_name": "alpha", "subject": "keep me"})[0] == 0
    full_disk(12 * 1024)
    code, out = cli(root, "update-task", {"team_name": "alpha", "task_id": "1", "description": "x" * 150_000})
    assert code == 4 and out["error"]["code"] == "disk_full"
    assert "task-1.json" in out["error"]["message"]
    code, out = cli(root, "read-task", {"team_name": "alpha", "task_id": "1"})
    assert code == 0 and out["data"]["task"]["subject"] == "keep me"
    code, out = cli(root, "claim-next", {"team_name": "alpha", "worker": "worker-1"})
    assert code == 0 and out["data"]["task"]["id"] == "1"
    assert temp_files(root) == []
