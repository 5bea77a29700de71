"""Fixtures for the engine tests: the fake model, a Codex environment, an event recorder."""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `tests.fakes` must import however pytest was started
    sys.path.insert(0, str(ROOT))

from tests.fakes.fake_model import FakeModel, write_codex_home  # noqa: E402
from tests.fakes.recorder import EventRecorder  # noqa: E402

PINNED_CODEX = ROOT / ".tools" / "codex" / "node_modules" / ".bin" / "codex"


def find_codex_binary() -> Path | None:
    """The pinned Codex from scripts/setup, else ``codex`` on PATH, else ``None``."""
    if PINNED_CODEX.exists():
        return PINNED_CODEX
    found = shutil.which("codex")
    return Path(found) if found else None


@pytest.fixture
def events() -> EventRecorder:
    return EventRecorder()


@pytest.fixture
def cancel() -> threading.Event:
    return threading.Event()


@pytest.fixture
def codex_bin() -> Path:
    """The real Codex binary, or skip."""
    path = find_codex_binary()
    if path is None:
        pytest.skip("no Codex binary at .tools/codex/node_modules/.bin/codex or on PATH (run scripts/setup)")
    return path


@pytest.fixture
def fake_model() -> Iterator[FakeModel]:
    with FakeModel() as model:
        yield model


@pytest.fixture
def codex_env(tmp_path: Path, fake_model: FakeModel, codex_bin: Path) -> dict[str, str]:
    """An agent env: a fresh CODEX_HOME pointing at the fake model, and the Codex binary on PATH."""
    home = write_codex_home(tmp_path / "codex-home", fake_model.base_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    env["CODEX_HOME"] = str(home)
    env["PATH"] = f"{codex_bin.parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path
