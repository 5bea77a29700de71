"""Fixtures for the platform tests: the fake platform, an isolated OMX_HOME and git, and a :class:`Rig`."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from platform_helpers import Rig  # noqa: E402

from tests.fakes.fake_platform import FakePlatform  # noqa: E402


@pytest.fixture
def fake() -> Iterator[FakePlatform]:
    with FakePlatform() as server:
        yield server


@pytest.fixture
def rig(tmp_path: Path, fake: FakePlatform, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    """One machine: OMX_HOME, git config and the platform URL, in this process and for every subprocess."""
    gitconfig = tmp_path / "gitconfig"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n"
                         "[user]\n\tname = Repo Owner\n\temail = owner@example.invalid\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMX_", "GIT_"))}
    env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", OMX_HOME=str(tmp_path / "omx-home"),
               OMX_PLATFORM_URL=fake.url, OMX_PLATFORM_TIMEOUT_S="2", OMX_PLATFORM_RETRY_ATTEMPTS="3",
               OMX_PLATFORM_RETRY_MAX_S="0.2", WL_OUT=str(tmp_path / "out"), PYTHONUNBUFFERED="1")
    for k in [k for k in os.environ if k.startswith(("OMX_", "GIT_"))]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        if os.environ.get(k) != v:
            monkeypatch.setenv(k, v)
    (tmp_path / "out").mkdir()
    repo = tmp_path / "project"
    repo.mkdir()
    import subprocess

    for args in (["init", "-q", "-b", "main"], ["commit", "-q", "--allow-empty", "-m", "first"]):
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, env=env)
    (repo / "README.md").write_text("hello\n")
    subprocess.run(["git", "-C", str(repo), "add", "README.md"], check=True, capture_output=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", "readme"], check=True, capture_output=True, env=env)
    r = Rig(tmp=tmp_path, fake=fake, home=tmp_path / "omx-home", repo=repo.resolve(), out=tmp_path / "out",
            worktrees=tmp_path / "worktrees", env=env)
    yield r
    r.close()
