"""Fixtures for the race and crash tests: real worker processes, the installed CLI, deadlines.

Only fixture names that nobody else in ``tests/`` uses (``children``, ``omx_api``, ``wait_until``), so
the shared fixtures of ``tests/conftest.py`` keep their meaning for every other test here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `tests.state.invariants` must import however pytest was started
    sys.path.insert(0, str(REPO))

from tests.state.race_worker import OMX_BIN  # noqa: E402 - needs the sys.path entry above

WORKER = Path(__file__).with_name("race_worker.py")


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: no test hooks or state root leaking in from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
    env.update(extra or {})
    return env


def _wait_until(predicate: Callable[[], Any], timeout: float = 15.0, what: str = "condition",
                interval: float = 0.005) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture
def wait_until() -> Callable[..., Any]:
    return _wait_until


class Children:
    """Worker processes started by one test; whatever is still running at teardown is killed (by handle)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self._files: list[IO[bytes]] = []
        self._err: dict[int, Path] = {}

    def spawn(self, mode: str, cfg: dict[str, Any], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self.run([sys.executable, str(WORKER), mode, json.dumps(cfg)], env=env)

    def run(self, argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start any command; its output goes to files (a full pipe never blocks a worker)."""
        n = len(self.procs)
        out, err = self.dir / f"child-{n}.out", self.dir / f"child-{n}.err"
        fo, fe = open(out, "wb"), open(err, "wb")  # noqa: SIM115 - closed at teardown
        self._files += [fo, fe]
        proc = subprocess.Popen(argv, stdout=fo, stderr=fe, env=clean_env(env), stdin=subprocess.DEVNULL)
        self._err[proc.pid] = err
        self.procs.append(proc)
        return proc

    def stderr(self, proc: subprocess.Popen[bytes]) -> str:
        return self._err[proc.pid].read_text(errors="replace")[-2000:]

    def stdout(self, proc: subprocess.Popen[bytes]) -> str:
        return self._err[proc.pid].with_suffix(".out").read_text(errors="replace")

    def gate(self, ready: list[Path], go: Path | None, timeout: float = 60.0) -> None:
        """The start barrier: wait until every worker is imported and waiting, then let them all go."""
        def all_ready() -> bool:
            dead = [(p.pid, p.returncode, self.stderr(p)) for p in self.procs if p.poll() is not None]
            assert not dead, f"a worker died before the start: {dead}"
            return all(p.exists() for p in ready)

        _wait_until(all_ready, timeout, f"{len(ready)} workers to be ready")
        if go is not None:
            go.touch()

    def wait_all(self, procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
        """Wait for ``procs`` to exit 0 within one shared deadline."""
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker {p.pid} still running after {timeout}s; stderr: {self.stderr(p)}")
        failed = [(p.pid, p.returncode, self.stderr(p)) for p in procs if p.returncode != 0]
        assert not failed, f"workers failed: {failed}"

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a SIGKILLed child always exits
                pass
        for f in self._files:
            f.close()


@pytest.fixture
def children(tmp_path: Path) -> Iterator[Children]:
    kids = Children(tmp_path / "children")
    try:
        yield kids
    finally:
        kids.close()


def _omx_api(root: Path, op: str, *, env: dict[str, str] | None = None, timeout: float = 60,
             **payload: Any) -> tuple[int, dict[str, Any]]:
    """Run ``omx team api <op> --root <root> --input <payload>``; return (exit status, envelope)."""
    proc = subprocess.run([OMX_BIN, "team", "api", op, "--root", str(root), "--input", json.dumps(payload)],
                          capture_output=True, text=True, timeout=timeout, env=clean_env(env))
    try:
        envelope = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"omx team api {op} printed no JSON (exit {proc.returncode}): {proc.stdout!r} {proc.stderr!r}")
    assert envelope["ok"] is (proc.returncode == 0), envelope
    return proc.returncode, envelope


@pytest.fixture
def omx_api() -> Callable[..., tuple[int, dict[str, Any]]]:
    return _omx_api
