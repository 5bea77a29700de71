"""The README's promises that code can check: its commands exist and its API table is complete."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
ROOT = Path(__file__).resolve().parent.parent


def test_api_table_lists_every_operation() -> None:
    from omx.cli.api import all_operations

    listed = set(re.findall(r"^\| `([a-z-]+)`", README, flags=re.M))
    assert set(all_operations()) <= listed, set(all_operations()) - listed
    assert {"prepare-task-worktree", "finish-task"} <= set(all_operations())


def test_ci_runs_the_readme_test_command() -> None:
    assert "./scripts/test" in README and "./scripts/demo" in README
    assert "exec ./scripts/test" in (ROOT / ".ci" / "run").read_text()
