"""``omx setup``: the skills land in $CODEX_HOME/skills, idempotently, and leave foreign folders alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omx.setup import SKILLS, skills_source
from tests.conftest import CliResult


def test_install_is_idempotent_and_uninstall_removes_only_ours(omx: Callable[..., CliResult], tmp_path: Path) -> None:
    home = tmp_path / "codex"
    first = omx("setup", "--codex-home", str(home))
    assert first.code == 0 and "installed: team, swarm, worker" in first.out
    for name in SKILLS:
        text = (home / "skills" / name / "SKILL.md").read_text()
        assert text == (skills_source() / name / "SKILL.md").read_text()
        assert text.startswith(f"---\nname: {name}\ndescription: ")
    again = omx("setup", "--codex-home", str(home))
    assert again.code == 0 and "unchanged: team, swarm, worker" in again.out
    (home / "skills" / "mine").mkdir()
    assert omx("setup", "--codex-home", str(home), "--uninstall").code == 0
    assert sorted(p.name for p in (home / "skills").iterdir()) == ["mine"]


def test_never_overwrites_a_folder_omx_did_not_install(omx: Callable[..., CliResult], tmp_path: Path) -> None:
    home = tmp_path / "codex"
    (home / "skills" / "worker").mkdir(parents=True)
    (home / "skills" / "worker" / "SKILL.md").write_text("the user's own")
    r = omx("setup", "--codex-home", str(home))
    assert r.code == 1 and "skill_conflict" in r.err
    assert (home / "skills" / "worker" / "SKILL.md").read_text() == "the user's own"


def test_codex_home_from_env(omx: Callable[..., CliResult], tmp_path: Path) -> None:
    r = omx("setup", env={"CODEX_HOME": str(tmp_path / "ch")})
    assert r.code == 0
    assert (tmp_path / "ch" / "skills" / "worker" / "SKILL.md").exists()


def test_worker_skill_names_only_real_operations() -> None:
    import re

    from omx.state.api import OPERATIONS

    text = (skills_source() / "worker" / "SKILL.md").read_text()
    used = set(re.findall(r"omx team api ([a-z-]+) --input", text))
    assert used and used <= set(OPERATIONS), used - set(OPERATIONS)
