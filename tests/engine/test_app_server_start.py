"""A worker starts ``codex app-server`` before it parses WORKFLOW.md when the file plainly asks for it, and only then.

``codex`` on the workers' PATH here is a script that runs ``fake_pooled_app_server.py`` (which logs its
start), so a test sees every Codex server a worker started, needed or not.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from worker_helpers import (
    Rig,
    bash,
    fake_server_pids,
    fake_server_records,
    kill_quietly,
    make_rig,
    start_worker,
    write_workflow,
)

from omx.engine.data.default_workflow import DEFAULT_WORKFLOW_MD
from omx.engine.workflow import runs_codex_app_server

FAKE = str(Path(__file__).resolve().parent / "fake_pooled_app_server.py")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, True),  # no WORKFLOW.md: the built-in default
        ("Just a prompt\n", True),
        (DEFAULT_WORKFLOW_MD, True),  # every runtime key is commented out
        ('---\n{"runtime": {"kind": "codex-app-server"}, "worktree": {"root": "/w"}}\n---\nGo\n', True),
        ("---\nruntime:\n  kind: codex-app-server  # not command\n  sandbox: read-only\n---\nGo\n", True),
        ("---\nruntime:\n  kind: codex-exec\n---\nGo\n", False),
        ('---\n{"runtime": {"kind": "command", "command": ["bash"]}}\n---\nGo\n', False),
        ("---\nruntime:\n  command: [codex, app-server]\n---\nGo\n", False),
        ("---\ncodex:\n  approval_policy: never\n---\nGo\n", False),  # Symphony's section may name a command
        ("---\nruntime: {kind: 'codex-app-server'}\n---\nGo\n", True),
    ],
)
def test_the_guess_reads_the_front_matter_without_yaml(text: str | None, expected: bool, tmp_path: Path) -> None:
    if text is not None:
        (tmp_path / "WORKFLOW.md").write_text(text)
    assert runs_codex_app_server(None, tmp_path) is expected


def test_an_explicit_workflow_that_is_missing_is_no_guess(tmp_path: Path) -> None:
    assert runs_codex_app_server(tmp_path / "nope.md", tmp_path) is False


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    codex = bin_dir / "codex"
    codex.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    codex.chmod(0o755)
    r = make_rig(tmp_path, workers=["worker-1"], extra_env={"FAKE_APP_SERVER_LOG": str(tmp_path / "fake.log")})
    r.env["PATH"] = f"{bin_dir}:{r.env.get('PATH', '')}"
    yield r
    r.close()
    kill_quietly(fake_server_pids(r))


def started_argvs(rig: Rig) -> list[list[str]]:
    return [r["argv"][1:] for r in fake_server_records(rig) if "started" in r]


@pytest.mark.parametrize(
    ("runtime", "servers"),
    [
        ({"kind": "codex-app-server"}, [["app-server", "-c", "allow_login_shell=false"]]),
        ({"kind": "codex-app-server", "command": [sys.executable, FAKE, "mine"]}, [["mine"]]),
        ({"kind": "command", "command": bash("echo done")}, []),
    ],
    ids=["default codex", "own app-server command", "command runtime"],
)
def test_a_worker_starts_exactly_the_server_its_workflow_asks_for(
    rig: Rig, runtime: dict[str, Any], servers: list[list[str]]
) -> None:
    write_workflow(rig, runtime=runtime)
    ids = [rig.store.create_task(rig.team, f"[ok] task {n}").id for n in range(2)]

    proc = start_worker(rig, "worker-1", "--until-empty")
    assert proc.wait() == 0, proc.output()

    assert [rig.task(t).status for t in ids] == ["completed", "completed"]
    assert started_argvs(rig) == servers
