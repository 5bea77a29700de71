"""Hooks: facts only through OMX_* variables and a JSON file, group kill on timeout, failure semantics."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from gitfixtures import pid_gone

from omx.engine.hooks import TAIL_BYTES, HookContext, HookFailed, HookRunner, run_hook
from omx.engine.settings import HookSettings
from omx.errors import InvalidInput

HOSTILE = "$(touch pwned1); `touch pwned2`; touch pwned3 && echo \"'\" | cat; ${IFS}touch${IFS}pwned4 #"


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return pred()
        time.sleep(0.01)
    return True


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    d = tmp_path / "workspace"
    d.mkdir()
    return d


def ctx(subject: str = "Fix the parser", **kw: object) -> HookContext:
    return HookContext(team="alpha", worker="worker-1", task_id="7", task_subject=subject, **kw)  # type: ignore[arg-type]


def test_facts_reach_the_script_as_env_and_json(ws: Path) -> None:
    c = ctx(HOSTILE, attempt=3, branch="omx/alpha/7", extra={"OMX_SESSION_ID": "s-1"})
    script = (
        'printf %s "$OMX_TEAM|$OMX_WORKER|$OMX_TASK_ID|$OMX_ATTEMPT|$OMX_BRANCH|$OMX_SESSION_ID|$OMX_HOOK" > env.txt\n'
        'printf %s "$OMX_TASK_SUBJECT" > subject.txt\n'
        'printf %s "$OMX_WORKSPACE" > workspace.txt\n'
        'pwd -P > pwd.txt\n'
        'cp "$OMX_HOOK_CONTEXT" context.json\n'
    )
    result = run_hook("beforeRun", script, ws, c.env(), c.facts(), 10_000)
    assert result.ok, result
    assert result.ran
    assert result.exit_code == 0
    assert (ws / "env.txt").read_text() == "alpha|worker-1|7|3|omx/alpha/7|s-1|beforeRun"
    assert (ws / "subject.txt").read_text() == HOSTILE
    assert (ws / "workspace.txt").read_text() == str(ws)
    assert (ws / "pwd.txt").read_text().strip() == str(ws.resolve())
    facts = json.loads((ws / "context.json").read_text())
    assert facts["task_subject"] == HOSTILE
    assert facts["hook"] == "beforeRun"
    assert facts["workspace"] == str(ws)
    assert facts["attempt"] == 3
    assert facts["session_id"] == "s-1"


@pytest.mark.parametrize(
    "script",
    [
        'echo "$OMX_TASK_SUBJECT"',
        "echo $OMX_TASK_SUBJECT",  # even unquoted: expansion results are never re-parsed as commands
        'eval_me=$(cat "$OMX_HOOK_CONTEXT"); echo "$eval_me"',
    ],
)
def test_hostile_subject_is_never_executed(ws: Path, script: str) -> None:
    c = ctx(HOSTILE)
    result = run_hook("afterCreate", script, ws, c.env(), c.facts(), 10_000)
    assert result.ok, result
    assert not list(ws.glob("pwned*"))
    assert not list(Path.cwd().glob("pwned*"))


def test_not_configured_is_success_without_running(ws: Path) -> None:
    for script in (None, "", "   \n"):
        result = run_hook("afterRun", script, ws, {}, {}, 1000)
        assert not result.ran
        assert result.ok


def test_failure_reports_exit_code_and_output_tails(ws: Path) -> None:
    result = run_hook("beforeRun", "echo out; echo 'boom: disk full' >&2; exit 3", ws, {}, {}, 10_000)
    assert not result.ok
    assert result.exit_code == 3
    assert not result.timed_out
    assert result.stdout_tail == "out\n"
    assert "boom: disk full" in result.stderr_tail
    assert "exited 3" in result.describe()
    assert "boom: disk full" in result.describe()


def test_output_tail_is_bounded(ws: Path) -> None:
    result = run_hook("afterRun", "head -c 200000 /dev/zero | tr '\\0' x; echo END", ws, {}, {}, 10_000)
    assert result.ok
    assert len(result.stdout_tail) <= TAIL_BYTES + 1
    assert result.stdout_tail.endswith("xEND\n")


def test_timeout_kills_the_whole_process_group(ws: Path) -> None:
    # One child that dies on TERM, one that ignores TERM (only the follow-up KILL gets it).
    script = (
        'sleep 300 & echo $! > "$OMX_WORKSPACE/child.pid"\n'
        "bash -c 'trap \"\" TERM; echo $$ > grandchild.pid; exec sleep 300' &\n"
        "while [ ! -s grandchild.pid ]; do sleep 0.01; done\n"
        "touch ready\n"
        "wait\n"
    )
    started = time.monotonic()
    # 4 s: time enough for three process starts on a loaded machine before the timeout kills them.
    result = run_hook("beforeRun", script, ws, {}, {}, 4000, kill_grace_s=0.3)
    elapsed = time.monotonic() - started
    assert (ws / "ready").exists(), result
    assert result.timed_out
    assert not result.ok
    assert elapsed < 20  # not the children's 300 s
    child = int((ws / "child.pid").read_text())
    grandchild = int((ws / "grandchild.pid").read_text())
    assert wait_until(lambda: pid_gone(child)), "child still running"
    assert wait_until(lambda: pid_gone(grandchild)), "TERM-ignoring grandchild still running"
    assert "timed out" in result.describe()


def test_env_names_are_checked(ws: Path) -> None:
    with pytest.raises(InvalidInput):
        run_hook("beforeRun", "true", ws, {"PATH": "/evil"}, {}, 1000)
    with pytest.raises(InvalidInput):
        run_hook("beforeRun", "true", ws, {"OMX_bad name": "x"}, {}, 1000)


def test_nul_bytes_in_values_are_dropped(ws: Path) -> None:
    result = run_hook("beforeRun", 'printf %s "$OMX_TASK_SUBJECT" > s.txt', ws, {"OMX_TASK_SUBJECT": "a\0b"}, {}, 5000)
    assert result.ok
    assert (ws / "s.txt").read_text() == "ab"


def test_missing_workspace_is_a_failure_not_a_crash(tmp_path: Path) -> None:
    result = run_hook("beforeRun", "true", tmp_path / "nope", {}, {}, 5000)
    assert not result.ok
    assert result.exit_code == 127
    assert "cannot start hook" in result.stderr_tail


# --- semantics -----------------------------------------------------------------------------------


def failing(**kw: str | int) -> HookRunner:
    return HookRunner(HookSettings.model_validate(kw))


def test_after_create_failure_raises(ws: Path) -> None:
    runner = failing(afterCreate="echo 'no uv here' >&2; exit 2")
    with pytest.raises(HookFailed) as info:
        runner.after_create(ws, ctx())
    assert info.value.code == "hook_failed"
    assert info.value.result.exit_code == 2
    assert "no uv here" in info.value.message


def test_before_run_failure_and_timeout_raise(ws: Path) -> None:
    with pytest.raises(HookFailed):
        failing(beforeRun="exit 1").before_run(ws, ctx())
    with pytest.raises(HookFailed) as info:
        failing(beforeRun="sleep 30", timeoutMs=200).before_run(ws, ctx())
    assert info.value.result.timed_out


def test_after_run_and_before_remove_failures_are_logged(ws: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = failing(afterRun="echo after-run-broke >&2; exit 4", beforeRemove="exit 5")
    with caplog.at_level(logging.WARNING, logger="omx.engine.hooks"):
        after = runner.after_run(ws, ctx())
        before = runner.before_remove(ws, ctx())
    assert after.exit_code == 4
    assert before.exit_code == 5
    assert not after.ok
    assert not before.ok
    assert "after-run-broke" in caplog.text
    assert "beforeRemove exited 5" in caplog.text


def test_passing_hooks_return_results(ws: Path) -> None:
    runner = failing(afterCreate="touch created", beforeRun="touch ran")
    assert runner.after_create(ws, ctx()).ok
    assert runner.before_run(ws, ctx()).ok
    assert (ws / "created").exists()
    assert (ws / "ran").exists()
    assert not runner.after_run(ws, ctx()).ran  # not configured
