"""A team through a full disk, end to end: real workers keep going, API calls made meanwhile either
succeed or say ``disk_full``, nothing is lost or torn, and the team drains once there is room again.

Two ways to fill the disk: ``RLIMIT_FSIZE`` lowered to 0 for the workers (``prlimit`` from outside,
so it runs as any user) and the API calls of the period, and — as root — a real tmpfs filled to the last
byte. Either way the kernel refuses the writes, as a full disk does.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from omx.state.atomic import is_temp
from omx.state.filestore import FileStore
from tests.conftest import OMX
from tests.state.test_disk_full import fill, tmpfs
from tests.team.test_start import make_repo

TEAM = "full"
FULL_S = 3.0
TASKS = 30


class Filler:
    """Makes the disk full for the workers and the API calls of the period, then gives the room back."""

    def __init__(self, mode: str, root: Path) -> None:
        self.mode = mode
        self.root = root
        self.pids: list[int] = []
        self.filler: Path | None = None
        self.full = False

    def fill(self) -> None:
        self.full = True
        if self.mode == "rlimit":
            for pid in self.pids:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        else:
            self.filler = fill(self.root.parent, 0)

    def empty(self) -> None:
        self.full = False
        if self.mode == "rlimit":
            for pid in self.pids:
                with contextlib.suppress(ProcessLookupError):
                    resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        elif self.filler is not None:
            self.filler.unlink()
            self.filler = None

    def preexec(self) -> Callable[[], None] | None:
        if self.mode == "rlimit" and self.full:
            return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        return None


@pytest.fixture(params=["rlimit", "tmpfs"])
def state_root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    if request.param == "rlimit":
        yield "rlimit", tmp_path / "state"
    else:
        with tmpfs(tmp_path, "3m") as mnt:
            yield "tmpfs", mnt / "state"


def api(root: Path, op: str, payload: dict[str, Any], preexec: Callable[[], None] | None = None) -> tuple[int, Any]:
    proc = subprocess.run([OMX, "team", "api", op, "--root", str(root), "--input", json.dumps(payload)],
                          capture_output=True, text=True, timeout=60, preexec_fn=preexec)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.timeout(240)
def test_a_team_outlasts_a_full_disk_and_loses_nothing(tmp_path: Path, state_root: tuple[str, Path]) -> None:
    mode, root = state_root
    repo = make_repo(tmp_path, ["sleep", "0.15"], extra="  mode: repository\n")
    store = FileStore(root)
    store.create_team(TEAM, workers=["worker-1", "worker-2"], lease_ms=30_000)
    for i in range(TASKS):
        store.create_task(TEAM, f"before {i}")
    filler = Filler(mode, root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
    workers = []
    readers: list[threading.Thread] = []
    outputs: list[list[str]] = []
    for n in (1, 2):
        proc = subprocess.Popen([OMX, "team", "worker", "--team", TEAM, "--name", f"worker-{n}", "--root", str(root),
                                 "--repo", str(repo), "--until-empty", "-v", "--poll-ms", "200"],
                                env={**env, "OMX_TEAM_WORKER": f"{TEAM}/worker-{n}"}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)  # a pipe: its output is not on the full disk
        lines: list[str] = []
        reader = threading.Thread(target=lambda p=proc, out=lines: out.extend(p.stdout), daemon=True)  # type: ignore[misc]
        reader.start()
        readers.append(reader)
        workers.append(proc)
        outputs.append(lines)
        filler.pids.append(proc.pid)
    try:
        deadline = time.monotonic() + 60
        while store.summary(TEAM)["counts"]["completed"] < 3:  # the workers are busy: now the disk fills
            assert time.monotonic() < deadline, "the workers did not start"
            assert all(w.poll() is None for w in workers)
            time.sleep(0.05)
        filler.fill()
        created: list[str] = []
        sent: list[str] = []
        noted: list[str] = []
        refused = 0
        end = time.monotonic() + FULL_S
        i = 0
        while time.monotonic() < end:
            i += 1
            op, payload = [
                ("create-task", {"team_name": TEAM, "subject": f"during {i}"}),
                ("send-message", {"team_name": TEAM, "from_worker": "leader-fixed", "to_worker": "worker-1",
                                  "body": f"message {i}"}),
                ("append-event", {"team_name": TEAM, "type": "note", "reason": f"note {i}"}),
            ][i % 3]
            code, out = api(root, op, payload, filler.preexec())
            if code == 0:
                {"create-task": created, "send-message": sent, "append-event": noted}[op].append(
                    out["data"].get("task", {}).get("id") or out["data"].get("message", {}).get("message_id")
                    or f"note {i}")
            else:
                assert (code, out["error"]["code"]) == (4, "disk_full"), out
                refused += 1
        assert refused > 0, "the disk was not full"
        assert all(w.poll() is None for w in workers), "a worker left during the full disk"
        filler.empty()
        for i in range(3):  # and calls work again
            code, out = api(root, "create-task", {"team_name": TEAM, "subject": f"after {i}"})
            assert code == 0, out
            created.append(out["data"]["task"]["id"])
        for w in workers:
            assert w.wait(timeout=120) == 0, "".join(outputs[workers.index(w)][-30:])
    finally:
        filler.empty()
        for w, reader in zip(workers, readers, strict=True):
            if w.poll() is None:
                w.kill()
                w.wait()
            reader.join(timeout=10)
            assert w.stdout is not None
            w.stdout.close()

    listing = store.list_tasks(TEAM)
    assert listing.corrupt == [] if hasattr(listing, "corrupt") else True
    tasks = {t.id: t for t in listing.tasks}
    assert len(tasks) == TASKS + len(created)
    assert set(created) <= set(tasks), "a task whose creation said ok is missing"
    assert {t.status for t in tasks.values()} == {"completed"}, [(t.id, t.error) for t in tasks.values()
                                                                 if t.status != "completed"]
    box = {m.message_id for m in store.mailbox_list(TEAM, "worker-1", include_delivered=True)}
    assert set(sent) <= box, "a message whose sending said ok is missing"
    page = store.read_events(TEAM, limit=10_000)
    assert page.torn == [] and store.torn_events(TEAM) == []
    reasons = {e.reason for e in page.events if e.type == "note"}
    assert set(noted) <= reasons, "an event whose append said ok is missing"
    completions = [e.task_id for e in page.events if e.type == "task_completed"]
    assert sorted(completions, key=int) == sorted(tasks, key=int), "each task completed exactly once"
    assert [p for p in root.rglob("*") if is_temp(p.name)] == []
    said = "".join(outputs[0] + outputs[1])
    assert "cannot be written" in said, "the workers did not say why they waited"
    doctor = json.loads(subprocess.run([OMX, "doctor", "--root", str(root), "--json"], capture_output=True,
                                       text=True, timeout=120).stdout)
    bad = [c for c in doctor["checks"] if c["name"].startswith("team ") and not c["ok"] and c["level"] == "error"]
    assert bad == []
