"""Shared fixtures: a state root per test, the installed ``omx`` as a subprocess, a fake clock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from omx.clock import FakeClock
from omx.state.filestore import FileStore

REPO = Path(__file__).resolve().parent.parent
OMX = str(Path(sys.executable).parent / "omx")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(root: Path, clock: FakeClock) -> FileStore:
    return FileStore(root, clock=clock)


@pytest.fixture
def team(store: FileStore) -> str:
    store.create_team("alpha", goal="ship it", workers=["worker-1", "worker-2", "worker-3"], lease_ms=10_000)
    return "alpha"


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    @property
    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def omx(root: Path) -> Callable[..., CliResult]:
    """Run the installed ``omx`` in a subprocess with ``--root`` for ``team api`` calls."""

    def run(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> CliResult:
        argv = [OMX, *args]
        if args[:2] == ("team", "api") and "--root" not in args:
            argv += ["--root", str(root)]
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
        return CliResult(proc)

    return run


def api(omx: Callable[..., CliResult], op: str, **payload: Any) -> CliResult:
    return omx("team", "api", op, "--input", json.dumps(payload), "--json")
