"""``scripts/setup``: quiet, and pip only when pyproject.toml changed (a stamp in the venv says what was installed)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STAMP = REPO / ".venv" / ".omx-setup-stamp"


def run_setup() -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMX_SKIP_CODEX_INSTALL": "1"}
    return subprocess.run([str(REPO / "scripts" / "setup")], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.timeout(600)
def test_setup_is_quiet_and_skips_pip_when_nothing_changed() -> None:
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip("not running from this checkout's .venv")
    first = run_setup()
    assert first.returncode == 0, first.stderr
    assert "BuildBackendWarning" not in first.stderr and "!!" not in first.stderr  # no setuptools wall
    assert STAMP.exists()
    before = STAMP.stat().st_mtime_ns
    again = run_setup()
    assert again.returncode == 0, again.stderr
    assert again.stderr == "" and again.stdout.startswith("setup: ok (omx "), again.stdout + again.stderr
    assert STAMP.stat().st_mtime_ns == before  # pip did not run: the stamp was not rewritten
