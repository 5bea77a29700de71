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


def _block(section: str, lang: str) -> str:
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(rf"```{lang}\n(.*?)```", body, flags=re.S)
    assert blocks, f"no {lang} block under '{section}'"
    return str(blocks[0])


def test_the_use_it_on_your_repo_path_runs_as_written(tmp_path: Path) -> None:
    """The README's own plan, WORKFLOW.md and commands, in a fresh repository, with the real omx."""
    import os
    import subprocess
    import sys

    repo = tmp_path / "repo"
    repo.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMX_", "OPENAI_", "CODEX_"))}
    env.update(OMX_HOME=str(tmp_path / "omx-home"), CODEX_HOME=str(tmp_path / "no-account"),
               GIT_AUTHOR_NAME="me", GIT_AUTHOR_EMAIL="me@example.invalid", GIT_COMMITTER_NAME="me",
               GIT_COMMITTER_EMAIL="me@example.invalid",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")

    def sh(cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", cmd], cwd=repo, env=env, capture_output=True, text=True,
                              timeout=180, stdin=subprocess.DEVNULL)

    assert sh("git init -q -b main && echo hi > README.md && git add -A && git commit -qm start").returncode == 0
    (repo / "plan.md").write_text(_block("Use it on your repo", "markdown"))
    workflow = _block("Use it on your repo", "yaml").replace("---\n", "---\nworktree:\n  root: ../wt\n", 1)
    (repo / "WORKFLOW.md").write_text(workflow)
    assert sh("git add -A && git commit -qm 'plan and workflow'").returncode == 0
    commands = [line.split("#", 1)[0].strip() for line in _block("Use it on your repo", "bash").splitlines()]
    outs = []
    for cmd in filter(None, commands):
        r = sh(cmd)
        assert r.returncode == 0, f"{cmd}: {r.stdout}{r.stderr}"
        outs.append(r.stdout)
    assert "integrated: omx/parser/integration at " in outs[0]
    assert "task 2: integrated at " in outs[1]
    assert outs[2].startswith("fast-forwarded main to ")
    # Task 2 started from the integration branch: its own branch holds task 1's notes.
    assert sh("git cat-file -e omx/parser/task-2:notes-1.md").returncode == 0
    assert (repo / "notes-1.md").exists() and (repo / "notes-2.md").exists()
    assert "Write the parser" in (repo / "notes-1.md").read_text()
