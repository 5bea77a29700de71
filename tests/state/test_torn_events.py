"""Torn lines in ``events.ndjson`` (left by an older omx on a full disk, or a machine crash): readers skip
and report them, appends never glue onto them, ``omx doctor --fix`` moves them aside (never deletes them)
and deletes stale temp files."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from omx.state.filestore import FileStore
from tests.conftest import OMX


def run(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([OMX, *args], capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def api(root: Path, op: str, **payload: Any) -> tuple[int, dict[str, Any]]:
    proc = run("team", "api", op, "--root", str(root), "--input", json.dumps(payload))
    return proc.returncode, json.loads(proc.stdout)


def doctor(root: Path, *fix: str) -> tuple[int, dict[str, dict[str, Any]]]:
    proc = run("doctor", "--root", str(root), "--json", *fix)
    return proc.returncode, {c["name"]: c for c in json.loads(proc.stdout)["checks"]
                             if c["name"].startswith("team ")} | {"_all": json.loads(proc.stdout)}


def torn_log(root: Path) -> tuple[Path, bytes]:
    """A team whose log holds, as an older omx left it on a full disk: a partial line with the next event glued on."""
    s = FileStore(root)
    s.create_team("alpha", workers=["worker-1"])
    s.append_event("alpha", "first")
    log = root / "team" / "alpha" / "events" / "events.ndjson"
    torn = b'{"event_id": "0000000000001-deadbeef", "type": "lost_to_a_full_di'
    with open(log, "ab") as f:
        f.write(torn)
    with open(log, "ab") as f:  # the next event, glued on as the old append did
        f.write(b'{"event_id": "0000000000002-cafebabe", "type": "glued", "team": "alpha", '
                b'"created_at": "2026-12-07T00:00:00.000Z", "data": {}}\n')
    return log, torn


def test_a_reader_recovers_the_glued_event_and_reports_the_torn_bytes(root: Path) -> None:
    log, torn = torn_log(root)
    code, out = api(root, "read-events", team_name="alpha")
    assert code == 0
    types = [e["type"] for e in out["data"]["events"]]
    assert types == ["team_created", "first", "glued"]
    [t] = out["data"]["torn"]
    assert t["length"] == len(torn) and log.read_bytes()[t["offset"]:t["offset"] + t["length"]] == torn
    assert "doctor --fix" in out["data"]["warning"]


def test_an_append_after_an_unfinished_last_line_is_not_glued_onto_it(root: Path) -> None:
    s = FileStore(root)
    s.create_team("alpha", workers=["worker-1"])
    log = root / "team" / "alpha" / "events" / "events.ndjson"
    with open(log, "ab") as f:
        f.write(b'{"event_id": "0000000000001-deadbeef", "ty')  # the machine crashed here
    code, _ = api(root, "append-event", team_name="alpha", type="after_the_crash")
    assert code == 0
    code, out = api(root, "read-events", team_name="alpha")
    assert [e["type"] for e in out["data"]["events"]] == ["team_created", "after_the_crash"]
    assert len(out["data"]["torn"]) == 1


def test_doctor_fails_on_torn_lines_and_fix_moves_them_aside_keeping_cursors(root: Path) -> None:
    log, torn = torn_log(root)
    code, before = api(root, "read-events", team_name="alpha")
    size = log.stat().st_size
    code, checks = doctor(root)
    assert code == 1
    assert checks["team alpha: event log"]["ok"] is False
    assert "doctor --fix" in checks["team alpha: event log"]["detail"]
    code, checks = doctor(root, "--fix")
    assert checks["team alpha: event log"]["ok"] is True
    side = log.with_name("events.ndjson.torn")
    assert torn in side.read_bytes(), "the torn bytes are kept, never deleted"
    assert log.stat().st_size == size, "blanked in place: every byte offset stays valid"
    assert torn not in log.read_bytes()
    code, checks = doctor(root)
    assert checks["team alpha: event log"]["ok"] is True and checks["team alpha: files"]["ok"] is True
    code, after = api(root, "read-events", team_name="alpha")
    assert after["data"]["events"] == before["data"]["events"] and "torn" not in after["data"]
    assert after["data"]["cursor"] == before["data"]["cursor"]
    assert api(root, "append-event", team_name="alpha", type="later")[0] == 0
    code, page = api(root, "read-events", team_name="alpha", cursor=before["data"]["cursor"])
    assert [e["type"] for e in page["data"]["events"]] == ["later"]


def test_doctor_fix_deletes_stale_temp_files_and_leaves_young_ones(root: Path) -> None:
    FileStore(root).create_team("alpha", workers=["worker-1"])
    tasks = root / "team" / "alpha" / "tasks"
    stale = tasks / ".task-1.json.0badf00d.tmp"
    young = tasks / ".task-2.json.0c0ffee0.tmp"
    stale.write_bytes(b'{"half": ')
    young.write_bytes(b'{"being written')
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    _, checks = doctor(root)
    assert "safe to delete" in checks["team alpha: temp files"]["detail"] and stale.exists()
    _, checks = doctor(root, "--fix")
    assert not stale.exists(), "doctor --fix deletes what it calls safe to delete"
    assert young.exists(), "a temp file younger than a minute may be a write in progress"
    assert str(stale) in json.dumps(checks["_all"])


def test_doctor_fix_deletes_a_dead_writers_temp_file_at_once_and_spares_a_live_ones(root: Path) -> None:
    import subprocess
    import sys

    from omx.state.atomic import writer_tag

    FileStore(root).create_team("alpha", workers=["worker-1"])
    tasks = root / "team" / "alpha" / "tasks"
    here = writer_tag().split("-", 1)[0]
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    crashed = tasks / f".task-1.json.0badf00d.{here}-{dead}.tmp"  # its writer was killed mid-write
    writing = tasks / f".task-2.json.0c0ffee0.{here}-{os.getpid()}.tmp"  # a live writer's, this moment
    crashed.write_bytes(b'{"half": ')
    writing.write_bytes(b'{"being written')
    _, checks = doctor(root, "--fix")
    assert not crashed.exists(), "a temp file whose writer is gone is stale at once"
    assert writing.exists(), "a live writer's temp file is left alone"
    assert str(crashed) in checks["team alpha: temp files"]["detail"]


def test_temp_files_name_their_writer(root: Path) -> None:
    from omx.state import atomic

    seen: list[str] = []
    real = os.replace

    def spy(src: object, dst: object) -> None:
        seen.append(os.fspath(src))  # type: ignore[arg-type]
        real(src, dst)  # type: ignore[arg-type]

    os.replace = spy  # type: ignore[assignment]
    try:
        root.mkdir(parents=True, exist_ok=True)
        atomic.write_json(root / "x.json", {"a": 1})
    finally:
        os.replace = real
    assert seen and seen[0].endswith(f".{atomic.writer_tag()}.tmp") and str(os.getpid()) in seen[0]
