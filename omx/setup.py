"""``omx setup``: install omx's skills ($team, $swarm, $worker) into Codex's skills folder.

Idempotent: a skill already installed with the same text is left alone; an outdated copy is replaced;
a folder of the same name that omx did not install (no marker file) is never overwritten.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from omx.errors import Refused
from omx.state import atomic

SKILLS = ("team", "swarm", "worker")
MARKER = ".installed-by-omx"


def skills_source() -> Path:
    return Path(__file__).resolve().parent / "skills"


def codex_home(explicit: Path | None = None) -> Path:
    """Argument, then ``$CODEX_HOME``, then ``~/.codex``."""
    if explicit is not None:
        return explicit.expanduser()
    return Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex").expanduser()


@dataclass
class SetupReport:
    target: Path
    installed: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class SkillConflict(Refused):
    """Raised when a skill folder of the same name exists that omx did not install."""

    code = "skill_conflict"


def install(home: Path | None = None) -> SetupReport:
    target = codex_home(home) / "skills"
    report = SetupReport(target)
    target.mkdir(parents=True, exist_ok=True)
    for name in SKILLS:
        src = (skills_source() / name / "SKILL.md").read_bytes()
        d = target / name
        dest = d / "SKILL.md"
        if d.exists() and not (d / MARKER).exists():
            raise SkillConflict(f"{d} exists and was not installed by omx; move it away or rename it", path=str(d))
        if dest.exists() and dest.read_bytes() == src:
            report.unchanged.append(name)
            continue
        (report.updated if dest.exists() else report.installed).append(name)
        d.mkdir(exist_ok=True)
        atomic.write_bytes(dest, src, mode=0o644)  # skills are documentation, not private state
        atomic.write_bytes(d / MARKER, b"omx setup --uninstall removes this folder\n", mode=0o644)
    return report


def uninstall(home: Path | None = None) -> SetupReport:
    target = codex_home(home) / "skills"
    report = SetupReport(target)
    for name in SKILLS:
        d = target / name
        if (d / MARKER).exists():
            shutil.rmtree(d)
            report.removed.append(name)
    return report
