"""``omx team worker``'s fast path parses exactly as its typer command does, and imports none of typer's world."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from omx.cli import main
from omx.cli import team_worker as fast

VALID = [
    [],
    ["--team", "alpha", "--name", "worker-1"],
    ["--team=alpha", "--name=worker-2", "--root", "/tmp/state", "--repo", "some/repo"],
    ["--repo", "~/project", "--root", "~/state", "--workflow", "flows/WORKFLOW.md"],
    ["--until-empty", "--max-tasks", "3", "--poll-ms", "10"],
    ["--max-tasks=1", "--poll-ms=2500", "-v", "--verbose"],
    ["--shutdown-policy", "interrupt", "--until-empty"],
    ["--shutdown-policy", "bogus"],  # parsed; the command body refuses it
    ["--team", "a", "--team", "b"],  # the last one wins, as in click
    ["--name", "x y", "--team", "t/u"],
]
LEFT_TO_TYPER = [
    ["--help"],
    ["-h"],
    ["--bogus"],
    ["extra-argument"],
    ["--team"],
    ["--team", "--name"],
    ["--team="],
    ["--poll-ms", "5"],
    ["--poll-ms", "-5"],
    ["--poll-ms", "ten"],
    ["--poll-ms", "1e3"],
    ["--max-tasks", "0"],
    ["--max-tasks", "+3"],
    ["--max-tasks", "007"],
    ["--poll-ms", "\u0663\u0660"],  # non-ASCII digits: int() takes them, the fast path does not
    ["--poll-ms", "1234567890123456789"],
    ["--until-empty=1"],
    ["-vv"],
    ["--", "--team", "x"],
]


def typer_call(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> dict[str, Any]:
    """The keyword arguments the typer command passes to the command body for ``args``."""
    from omx.cli.app import run_app

    seen: dict[str, Any] = {}
    monkeypatch.setattr(fast, "run_worker", lambda **kw: seen.update(kw))
    assert run_app(["team", "worker", *args]) == 0
    return seen


@pytest.mark.parametrize("args", VALID, ids=" ".join)
def test_plain_arguments_parse_as_typer_parses_them(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = fast.parse_args(args)
    assert parsed is not None
    assert parsed == typer_call(monkeypatch, args)
    assert set(parsed) == set(fast.DEFAULTS)




@pytest.mark.parametrize("args", LEFT_TO_TYPER, ids=" ".join)
def test_anything_else_is_left_to_typer_with_its_messages_and_exit_codes(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from omx.cli.app import run_app

    assert fast.parse_args(args) is None
    typer_code = run_app(["team", "worker", *args])
    typer_out = capsys.readouterr()
    fast_code = main(["team", "worker", *args])
    fast_out = capsys.readouterr()
    assert (fast_code, fast_out.out, fast_out.err) == (typer_code, typer_out.out, typer_out.err)
    assert fast_code in (0, 2)


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--team", "alpha", "--name", "worker-1", "--shutdown-policy", "later"], {}, "--shutdown-policy must be"),
        ([], {"OMX_TEAM_WORKER": ""}, "name the worker"),
        (["--team", "no-such-team", "--name", "worker-1"], {}, "no-such-team"),
    ],
)
def test_errors_of_the_command_body_are_the_same_on_both_paths(
    args: list[str], env: dict[str, str], needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from omx.cli.app import run_app

    for k, v in env.items():
        monkeypatch.setenv(k, v)
    (tmp_path / "WORKFLOW.md").write_text('---\nruntime: {kind: command, command: [sh, -c, "echo ok"]}\n---\nGo\n')
    full = [*args, "--root", str(tmp_path / "state"), "--repo", str(tmp_path)]
    typer_code = run_app(["team", "worker", *full])
    typer_out = capsys.readouterr()
    fast_code = main(["team", "worker", *full])
    fast_out = capsys.readouterr()
    assert (fast_code, fast_out.err) == (typer_code, typer_out.err)
    assert fast_code != 0
    assert needle in fast_out.err


def test_the_fast_path_imports_no_typer_rich_or_pydantic(tmp_path: Path) -> None:
    # A worker that starts up for real (a team, a repository, a command runtime) and finds no work.
    script = f"""
import subprocess, sys
from pathlib import Path
from omx.state.filestore import FileStore
repo = Path({str(tmp_path)!r}) / "repo"
repo.mkdir()
subprocess.run(["git", "init", "-q", str(repo)], check=True)
front = '---\\nruntime: {{kind: command, command: [sh, -c, "echo ok"]}}\\n---\\n'
(repo / "WORKFLOW.md").write_text(front + 'Do {{{{ task.subject }}}}\\n')
FileStore(repo / "state").create_team("alpha", workers=["worker-1"])
before = set(sys.modules)
from omx.cli import main
code = main(["team", "worker", "--team", "alpha", "--name", "worker-1", "--root", str(repo / "state"),
             "--repo", str(repo), "--until-empty", "--poll-ms", "10"])
loaded = sorted({{m.split(".")[0] for m in set(sys.modules) - before}})
print(code, " ".join(loaded))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMX_HOME": str(tmp_path / "omx")})
    assert proc.returncode == 0, proc.stderr
    code, *loaded = proc.stdout.split("\n")[-2].split()
    assert code == "0", proc.stdout + proc.stderr
    for heavy in ("typer", "click", "rich", "pydantic", "pydantic_core"):
        assert heavy not in loaded, f"{heavy} was imported on the worker's fast path"
