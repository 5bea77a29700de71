"""Fixtures for the leader-facing tests: the example tree, the installed ``omx``, the real Codex.

The Codex fixtures are the engine tests' own (``tests/engine/conftest.py``), imported here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `tests.fakes` must import however pytest was started
    sys.path.insert(0, str(REPO))

from tests.engine.conftest import PINNED_CODEX, codex_bin, fake_model, find_codex_binary  # noqa: E402

OMX = Path(sys.executable).parent / "omx"
EXAMPLE_STATE = REPO / ".omx.example" / "state"
EXAMPLE_TEAM = "demo-calc"


def run_omx(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The installed ``omx`` in a subprocess (never in-process: this is what users run)."""
    return subprocess.run([str(OMX), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def api(root: Path, op: str, **payload: Any) -> dict[str, Any]:
    """``omx team api <op>`` against ``root``; fails the test unless it answers ok."""
    proc = run_omx("team", "api", op, "--input", json.dumps(payload), "--json", "--root", str(root))
    assert proc.returncode == 0, f"{op}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    reply: dict[str, Any] = json.loads(proc.stdout)
    assert reply["ok"] is True, reply
    return reply


@pytest.fixture
def agent_env(codex_bin: Path) -> dict[str, str]:
    """The environment Codex runs in: ours minus any OpenAI/Codex settings, with ``omx`` and Codex on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_", "OMX_"))}
    env["PATH"] = os.pathsep.join([str(OMX.parent), str(codex_bin.parent), env.get("PATH", "")])
    return env


__all__ = ["PINNED_CODEX", "codex_bin", "fake_model", "find_codex_binary"]
