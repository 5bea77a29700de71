"""The README's main job: `omx demo` runs a real team of Codex workers end to end, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.engine.conftest import find_codex_binary

OMX = str(Path(sys.executable).parent / "omx")


def test_omx_demo_offline(tmp_path: Path) -> None:
    codex = find_codex_binary()
    if codex is None:
        pytest.skip("no Codex binary (run ./scripts/setup)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMX_", "OPENAI_", "CODEX_"))}
    env["PATH"] = f"{codex.parent}{os.pathsep}{env['PATH']}"
    env["CODEX_HOME"] = str(tmp_path / "no-account")  # no auth.json: the offline demo model is used
    env["TMPDIR"] = str(tmp_path)
    # --json: the story goes to stderr, and stdout holds one JSON summary.
    r = subprocess.run([OMX, "demo", "--workers", "3", "--json"], capture_output=True, text=True, timeout=300, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["model"] == "offline demo" and doc["counts"]["completed"] == doc["total"] == 4
    assert doc["landed"]["mode"] == "fast-forward" and doc["landed"]["into"] == "main"
    assert [t["status"] for t in doc["tasks"]] == ["completed"] * 4 and doc["kept"] is None
    out = r.stderr
    assert "OFFLINE DEMO MODEL (scripted answers on 127.0.0.1, not an AI)" in out
    assert "(codex planner)" in out
    assert "4/4 tasks completed by 3 workers" in out
    assert out.count(": integrated at ") == 4  # every task's work is on the integration branch
    assert "omx/calc/integration → main: clean" in out
    # The evaluator (task 2, after task 1) started from the integration branch: the tokenizer was there.
    assert "calc/evaluate.py builds on calc/tokenize.py: found it" in out
    assert "$ omx team land --team calc" in out
    assert "fast-forward: main is now at " in out
    assert not list(tmp_path.glob("omx-demo-*")), "the demo cleans up after itself unless --keep"
