"""`omx team start` through a full disk (a real tmpfs; root only): the workers wait it out, the leader shows
the warning in its progress output and says when the state can be written again, and every task completes."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from omx.state.filestore import FileStore
from omx.team.leader import DiskWatch, Leader, WorkerProc
from tests.state.test_disk_full import fill, tmpfs
from tests.team.test_start import OMX, make_repo


@pytest.mark.timeout(240)
def test_the_leader_shows_a_full_disk_and_the_team_still_finishes(tmp_path: Path) -> None:
    with tmpfs(tmp_path, "3m") as mnt:
        root = mnt / "state"
        repo = make_repo(tmp_path, ["sleep", "0.2"], extra="  mode: repository\n")
        plan = tmp_path / "plan.md"
        plan.write_text("".join(f"- task {i}\n" for i in range(16)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
        env["OMX_HOME"] = str(tmp_path / "omx-home")
        proc = subprocess.Popen([OMX, "team", "start", "through a full disk", "--workers", "2", "--plan", str(plan),
                                 "--team", "fd", "--root", str(root)], cwd=repo, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
        reader.start()
        filler = None
        try:
            store = FileStore(root)
            deadline = time.monotonic() + 60
            while not (root / "team" / "fd" / "config.json").exists() or \
                    store.summary("fd")["counts"]["completed"] < 2:
                assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
                time.sleep(0.05)
            filler = fill(mnt, 0)
            time.sleep(3)
            assert proc.poll() is None, "the team gave up during the full disk:\n" + "".join(lines)
            filler.unlink()
            filler = None
            assert proc.wait(timeout=120) == 0, "".join(lines)
        finally:
            if filler is not None:
                filler.unlink()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        out = "".join(lines)
        assert "warning: the team's state cannot be written" in out, out
        assert "the team's state can be written again" in out, out
        summary = json.loads(subprocess.run([OMX, "team", "status", "--team", "fd", "--root", str(root), "--json"],
                                            capture_output=True, text=True, timeout=60).stdout)
        assert summary["counts"]["completed"] == 16


def test_a_workers_full_disk_warning_in_its_log_is_passed_on_escaped(tmp_path: Path) -> None:
    log = tmp_path / "worker-1.log"
    log.write_bytes(b"2026-12-07 23:00:00 omx.worker INFO claimed task-1\n")
    leader = Leader.__new__(Leader)
    leader.procs = {"worker-1": WorkerProc("worker-1", None, log, log_offset=log.stat().st_size)}
    with open(log, "ab") as f:
        f.write(b"2026-12-07 23:00:01 omx.worker WARNING the team's state cannot be written: "
                b"/s/\x1b[2Jtask-1.json: no room; trying again in 1s\n2026-12-07 23:00:02 omx.worker WARNING half")
    said: list[str] = []
    watch = DiskWatch(said.append)
    for name, line in leader.worker_warnings():
        watch.say(f"{name}: {line}", key=name)
    assert said == ["warning: worker-1: the team's state cannot be written: /s/\\x1b[2Jtask-1.json: no room; "
                    "trying again in 1s"]
    assert leader.worker_warnings() == [], "a line is passed on once; an unfinished one waits for its end"
