"""The worker's head start: ``codex app-server`` spawned before the engine is imported, then adopted.

``codex`` on PATH here is a script that runs ``fake_pooled_app_server.py``, which logs its start and
every line it receives, so a test sees which servers ran, what they were sent and by whom.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from worker_helpers import FakeServerLog

from omx.engine import early
from omx.engine.runtimes import RunRequest
from omx.engine.runtimes.app_server import AppServerPool
from omx.engine.runtimes.process import pid_alive
from omx.engine.settings import RuntimeSettings
from tests.fakes.recorder import EventRecorder, wait_until

FAKE = str(Path(__file__).resolve().parent / "fake_pooled_app_server.py")
VERSION = "0.1.0"


class Rig:
    def __init__(self, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tmp = tmp
        self.repo = tmp / "repo"
        self.repo.mkdir()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        self.codex = self.bin / "codex"
        self.codex.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
        self.codex.chmod(0o755)
        self.log = tmp / "fake.log"
        self.server = FakeServerLog(self.log)  # what the fake servers logged
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.setenv("FAKE_APP_SERVER_LOG", str(self.log))
        self.started: list[early.EarlyServer] = []

    def start(self, workflow: Path | None = None) -> early.EarlyServer | None:
        server = early.start(self.repo, workflow, VERSION)
        if server is not None:
            self.started.append(server)
        return server


    def run(self, pool: AppServerPool, env: dict[str, str] | None = None) -> Any:
        cwd = self.tmp / f"task-{len(self.server.got('turn/start'))}"
        cwd.mkdir()
        request = RunRequest("[ok]", cwd, env if env is not None else early.agent_env(), RuntimeSettings())
        return pool.run(request, EventRecorder(), threading.Event())


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    r = Rig(tmp_path, monkeypatch)
    yield r
    for server in r.started:
        server.discard()
    for pid in r.server.pids():
        wait_until(lambda pid=pid: not pid_alive(pid), what=f"fake server {pid} to exit")


def test_the_head_start_server_is_adopted_and_runs_the_first_task(rig: Rig) -> None:
    server = rig.start()
    assert server is not None
    assert server.argv == [str(rig.codex), "app-server", "-c", "allow_login_shell=false"]
    wait_until(lambda: len(rig.server.got("initialize")) == 1, what="the handshake sent at spawn")

    with AppServerPool(rig.repo, kill_grace_s=1.0) as pool:
        pool.adopt(server)
        first, second = rig.run(pool), rig.run(pool)

    assert (first.status, second.status) == ("completed", "completed"), (first.error, second.error)
    assert len(rig.server.pids()) == 1  # the engine started no server of its own
    (init,) = rig.server.got("initialize")  # and did not send the handshake again
    assert init["id"] == 1
    assert init["params"]["clientInfo"] == {"name": "omx", "title": "omx", "version": VERSION}
    assert len(rig.server.got("initialized")) == 1
    assert rig.server.records()[0]["cwd"] == str(rig.repo.resolve())
    assert not pid_alive(rig.server.pids()[0])  # closing the pool stopped the adopted server too


def test_a_task_that_needs_another_server_stops_the_head_start_one(rig: Rig) -> None:
    server = rig.start()
    assert server is not None
    with AppServerPool(rig.repo, kill_grace_s=1.0) as pool:
        pool.adopt(server)
        result = rig.run(pool, env={**early.agent_env(), "EXTRA": "1"})
        assert result.status == "completed", result.error
        first, second = rig.server.pids()
        assert not pid_alive(first)
        assert pid_alive(second)


def test_a_head_start_nobody_adopts_ends_when_discarded(rig: Rig) -> None:
    server = rig.start()
    assert server is not None
    wait_until(lambda: len(rig.server.pids()) == 1, what="the server to start")
    server.discard()
    wait_until(lambda: server.proc.poll() is not None, what="the server to exit at end of input")
    assert server.proc.returncode == 0


@pytest.mark.parametrize(
    "case", ["command workflow", "exec workflow", "no codex", "no repo", "unreadable workflow"],
)
def test_no_head_start_when_the_worker_would_not_run_that_server(rig: Rig, case: str,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    workflow = None
    if case == "command workflow":
        (rig.repo / "WORKFLOW.md").write_text('---\nruntime:\n  kind: command\n  command: ["bash"]\n---\nGo\n')
    elif case == "exec workflow":
        workflow = rig.tmp / "flow.md"
        workflow.write_text("---\nruntime:\n  kind: codex-exec\n---\nGo\n")
    elif case == "no codex":
        monkeypatch.setenv("PATH", str(rig.tmp / "empty"))
    elif case == "no repo":
        rig.repo.rmdir()
    else:
        workflow = rig.tmp / "missing.md"
    assert rig.start(workflow) is None
    assert rig.server.pids() == []


def test_the_head_start_reads_the_agent_environment_and_keeps_secrets_out(rig: Rig,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMX_TEAM_WORKER", "alpha/worker-1")
    monkeypatch.setenv("GITHUB_TOKEN", "s3cret")
    server = rig.start()
    assert server is not None
    assert "OMX_TEAM_WORKER" not in server.env
    assert "GITHUB_TOKEN" not in server.env
    assert server.env == early.agent_env()


def test_the_handshake_is_what_the_engine_would_send() -> None:
    lines = [json.loads(line) for line in early.handshake(VERSION).decode().splitlines()]
    info = {"name": "omx", "title": "omx", "version": VERSION}
    assert lines == [
        {"method": "initialize", "id": early.INIT_ID,
         "params": {"clientInfo": info, "capabilities": {"experimentalApi": True}}},
        {"method": "initialized", "params": {}},
    ]
    with pytest.raises(ValueError):
        early.handshake('1.0", "x": "y')


@pytest.mark.parametrize(
    "layout",
    [["exe"], ["plain", "exe"], ["dir", "exe"], ["plain"], [], ["exe", "exe"]],
    ids=lambda layout: "+".join(layout) or "nothing",
)
def test_which_finds_what_shutil_which_finds(tmp_path: Path, layout: list[str]) -> None:
    dirs = []
    for n, kind in enumerate(layout):
        d = tmp_path / f"d{n}"
        d.mkdir()
        dirs.append(str(d))
        if kind == "dir":
            (d / "tool").mkdir()
        else:
            (d / "tool").write_text("#!/bin/sh\n")
            (d / "tool").chmod(0o755 if kind == "exe" else 0o644)
    path = os.pathsep.join([*dirs, str(tmp_path / "missing")])
    assert early.which("tool", path) == shutil.which("tool", path=path)


def test_the_worker_spawns_codex_before_it_imports_the_engine(rig: Rig) -> None:
    # What a fresh `omx team worker` has loaded when its Codex server starts: none of the engine.
    script = (
        "import sys\n"
        "from omx.cli import team_worker as tw\n"
        f"args = ['--team', 'alpha', '--name', 'worker-1', '--repo', {str(rig.repo)!r}]\n"
        "server = tw.head_start(tw.scan(args))\n"
        "print(server is not None, *sorted(sys.modules))\n"
        "server.discard()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ, timeout=60,
                         check=True)
    started, *modules = out.stdout.split()
    assert started == "True", out.stderr
    heavy = {"yaml", "jinja2", "pydantic", "typer", "json", "dataclasses", "typing", "pathlib", "omx.engine.workflow",
             "omx.engine.settings", "omx.engine.runtimes.app_server", "omx.engine.runtimes.base",
             "omx.state.filestore", "omx.models"}
    assert sorted(heavy.intersection(modules)) == []
    wait_until(lambda: len(rig.server.pids()) == 1, what="the server to start")
