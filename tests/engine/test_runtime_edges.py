"""Runtime edges the real Codex will not show on demand: a scripted app-server, and the command runtime."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from omx.engine.runtimes import RunRequest, RunResult, make_runtime
from omx.engine.runtimes.app_server import AppServerRuntime
from omx.engine.runtimes.codex_common import toml_value
from omx.engine.runtimes.command import CommandRuntime
from omx.engine.runtimes.exec import ExecRuntime, exec_argv
from omx.engine.runtimes.process import pid_alive
from omx.engine.settings import RuntimeSettings
from omx.errors import InvalidInput
from tests.fakes.recorder import EventRecorder, wait_until

FAKE_APP_SERVER = str(Path(__file__).resolve().parents[1] / "fakes" / "fake_app_server.py")
PROMPT = "Do the task; $(touch /tmp/omx-pwned) {{ x }} ../../etc"


def run_fake(
    scenario: str,
    workdir: Path,
    events: EventRecorder,
    tmp_path: Path,
    *,
    cancel: threading.Event | None = None,
    grace: float = 5.0,
    developer_instructions: str | None = None,
    **settings: Any,
) -> tuple[RunResult, list[dict[str, Any]]]:
    """Run the fake app-server ``scenario``; return the result and everything the fake received."""
    log = tmp_path / "fake-app-server.log"
    env = {**os.environ, "FAKE_APP_SERVER_LOG": str(log)}
    config = RuntimeSettings(kind="codex-app-server", command=[sys.executable, FAKE_APP_SERVER, scenario], **settings)
    request = RunRequest(PROMPT, workdir, env, config, developer_instructions=developer_instructions)
    result = AppServerRuntime(kill_grace_s=grace).run(request, events, cancel or threading.Event())
    lines = log.read_text().splitlines() if log.exists() else []
    return result, [json.loads(line) for line in lines]


def received(log: list[dict[str, Any]], method: str) -> list[dict[str, Any]]:
    return [m for m in log if m.get("method") == method]


def fake_pid(log: list[dict[str, Any]]) -> int:
    return int(next(m["pid"] for m in log if "pid" in m))


# --- the app-server client against the scripted fake ----------------------------------------------


def test_fake_turn_completes_and_the_prompt_is_only_the_text_input(
    workdir: Path, events: EventRecorder, tmp_path: Path
) -> None:
    result, log = run_fake("ok", workdir, events, tmp_path, developer_instructions="be brief", model="m-1")

    assert result.status == "completed", result.error
    assert result.summary == "fake done"
    assert result.tokens == {"input": 11, "output": 7, "total": 18}
    assert result.thread_id == "thread-fake-1"
    thread = received(log, "thread/start")[0]["params"]
    assert thread == {
        "cwd": str(workdir),
        "approvalPolicy": "never",
        "sandbox": "workspace-write",
        "model": "m-1",
        "developerInstructions": "be brief",
    }
    turn = received(log, "turn/start")[0]["params"]
    assert turn["input"] == [{"type": "text", "text": PROMPT}]
    assert sum(json.dumps(m).count("touch /tmp/omx-pwned") for m in log) == 1, "the prompt went somewhere else too"
    assert received(log, "initialized"), "the handshake finished with `initialized`"
    assert events.kinds()[0] == "started"
    assert events.of("started")[0]["turn_id"] == "turn-fake-1"
    assert not pid_alive(fake_pid(log))


def test_unknown_server_requests_get_error_responses(workdir: Path, events: EventRecorder, tmp_path: Path) -> None:
    result, _ = run_fake("unknown_request", workdir, events, tmp_path)

    assert result.status == "completed", result.error
    assert result.summary is not None
    replies = json.loads(result.summary)
    assert [reply["error"]["code"] for reply in replies] == [-32601, -32601]
    assert "omx/test/somethingNew" in replies[0]["error"]["message"]
    assert len(events.of("warning")) == 2


GRANULAR = {"granular": {"sandbox_approval": True, "rules": True, "mcp_elicitations": False}}


@pytest.mark.parametrize(
    ("policy", "decisions"),
    [
        ("never", ["accept", "accept", "approved"]),
        ("on-request", ["decline", "decline", "denied"]),
        (GRANULAR, ["decline", "decline", "denied"]),
    ],
)
def test_approvals_are_answered_by_policy(
    policy: Any, decisions: list[str], workdir: Path, events: EventRecorder, tmp_path: Path
) -> None:
    result, log = run_fake("approval", workdir, events, tmp_path, approvalPolicy=policy)

    assert result.status == "completed", result.error
    assert result.summary is not None
    assert [reply["decision"] for reply in json.loads(result.summary)] == decisions
    assert [a["decision"] for a in events.of("approval")] == decisions
    assert events.of("approval")[0]["command"] == "rm -rf build"
    assert received(log, "thread/start")[0]["params"]["approvalPolicy"] == policy


def test_malformed_lines_are_logged_and_skipped(workdir: Path, events: EventRecorder, tmp_path: Path) -> None:
    result, _ = run_fake("malformed", workdir, events, tmp_path)

    assert result.status == "completed", result.error
    assert result.summary == "survived the garbage"
    garbage = [e["text"] for e in events.of("log") if e.get("malformed")]
    assert "this is not json" in garbage
    assert "[1, 2, 3]" in garbage
    assert "{broken" in garbage


def test_failed_turn_reports_the_turn_error(workdir: Path, events: EventRecorder, tmp_path: Path) -> None:
    result, _ = run_fake("failed_turn", workdir, events, tmp_path)

    assert result.status == "failed"
    assert result.error == "model exploded"
    assert [(e["message"], e["will_retry"]) for e in events.of("error")] == [
        ("retrying", True),
        ("model exploded", False),
    ]


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("die", ["exit status 3", "simulated crash mid-turn"]),
        ("die_leaving_child", ["exit status 3", "simulated crash mid-turn"]),
        ("die_early", ["exit status 4", "dying before initialize"]),
        ("refuse_thread", ["thread/start", "no threads today"]),
    ],
)
def test_server_death_or_refusal_fails_fast(
    scenario: str, expected: list[str], workdir: Path, events: EventRecorder, tmp_path: Path
) -> None:
    began = time.monotonic()

    result, log = run_fake(scenario, workdir, events, tmp_path)

    assert result.status == "failed"
    assert result.error is not None
    for text in expected:
        assert text in result.error
    assert time.monotonic() - began < 10
    assert not pid_alive(fake_pid(log))
    for leftover in [m["grandchild"] for m in log if "grandchild" in m]:
        wait_until(lambda: not pid_alive(leftover), timeout=5, what="the leftover process to die")  # noqa: B023


@pytest.mark.parametrize(
    ("limits", "status", "message"),
    [
        ({"turnTimeoutMs": 2000}, "timeout", "2000 ms"),
        ({"stallTimeoutMs": 2000}, "stalled", "2000 ms"),
    ],
)
def test_turn_that_never_ends_is_interrupted(
    limits: dict[str, Any], status: str, message: str, workdir: Path, events: EventRecorder, tmp_path: Path
) -> None:
    # 2 s, not less: a limit that runs out before the turn/start answer is read (a stalled process on
    # a loaded machine) has no turn to interrupt. The 30 s kill grace tells "interrupted" from "killed".
    result, log = run_fake("never_complete", workdir, events, tmp_path, grace=30.0, **limits)

    assert result.status == status
    assert result.error is not None
    assert message in result.error
    assert received(log, "turn/interrupt")[0]["params"] == {"threadId": "thread-fake-1", "turnId": "turn-fake-1"}
    assert result.duration_ms < 15_000  # the turn/interrupt ended it, not the kill after the grace
    assert not pid_alive(fake_pid(log))


def test_cancel_interrupts_the_turn(
    workdir: Path, events: EventRecorder, tmp_path: Path, cancel: threading.Event
) -> None:
    events.on(lambda e: e.kind == "started", lambda: threading.Timer(0.2, cancel.set).start())

    result, log = run_fake("never_complete", workdir, events, tmp_path, cancel=cancel, grace=30.0)

    assert result.status == "interrupted"
    assert received(log, "turn/interrupt")
    assert result.duration_ms < 15_000  # the turn/interrupt ended it, not the kill after the 30 s grace
    assert not pid_alive(fake_pid(log))


def test_a_server_deaf_to_interrupt_and_sigterm_is_killed_with_its_group(
    workdir: Path, events: EventRecorder, tmp_path: Path, cancel: threading.Event
) -> None:
    events.on(lambda e: e.kind == "started", cancel.set)
    began = time.monotonic()

    result, log = run_fake("deaf", workdir, events, tmp_path, cancel=cancel, grace=0.5)

    assert result.status == "interrupted"
    assert time.monotonic() - began < 8
    grandchild = next(m["grandchild"] for m in log if "grandchild" in m)
    assert not pid_alive(fake_pid(log))
    wait_until(lambda: not pid_alive(grandchild), timeout=5, what="the grandchild to die")


def test_missing_programs_fail_cleanly(workdir: Path, events: EventRecorder) -> None:
    env = {"PATH": str(workdir)}
    for kind in ("codex-app-server", "codex-exec"):
        config = RuntimeSettings(kind=kind)
        result = make_runtime(config).run(RunRequest("x", workdir, env, config), events, threading.Event())
        assert result.status == "failed"
        assert result.error is not None
        assert "codex not found" in result.error
    config = RuntimeSettings(kind="command", command=[str(workdir / "no-such-program")])
    result = make_runtime(config).run(RunRequest("x", workdir, env, config), events, threading.Event())
    assert result.status == "failed"
    assert result.error is not None
    assert "cannot start" in result.error


# --- the command runtime --------------------------------------------------------------------------


def run_command(
    code: str,
    workdir: Path,
    events: EventRecorder,
    *,
    prompt: str = PROMPT,
    cancel: threading.Event | None = None,
    developer_instructions: str | None = None,
    **settings: Any,
) -> RunResult:
    config = RuntimeSettings(kind="command", command=[sys.executable, "-c", code], **settings)
    request = RunRequest(prompt, workdir, dict(os.environ), config, developer_instructions=developer_instructions)
    return CommandRuntime(kill_grace_s=0.5).run(request, events, cancel or threading.Event())


def test_command_gets_the_prompt_on_stdin_and_in_a_private_file(workdir: Path, events: EventRecorder) -> None:
    code = (
        "import os, stat, sys\n"
        "data = sys.stdin.read()\n"
        "path = os.environ['OMX_PROMPT_FILE']\n"
        "print('same' if open(path).read() == data else 'DIFFERENT')\n"
        "print(oct(stat.S_IMODE(os.stat(path).st_mode)))\n"
        "print(open(os.environ['OMX_DEVELOPER_INSTRUCTIONS_FILE']).read())\n"
        "print(os.getcwd())\n"
        "print(path)\n"
        "print(repr(data))\n"
        "print('  ')\n"
    )
    result = run_command(code, workdir, events, developer_instructions="dev-notes")

    assert result.status == "completed", result.error
    lines = [e["text"] for e in events.of("log") if e["stream"] == "stdout"]
    assert lines[:4] == ["same", oct(stat.S_IRUSR | stat.S_IWUSR), "dev-notes", str(workdir)]
    assert result.summary == repr(PROMPT), "the summary is the last non-empty line"
    assert not Path(lines[4]).exists(), "the prompt file is removed after the run"
    assert not Path("/tmp/omx-pwned").exists()
    assert result.tokens == {"input": 0, "output": 0, "total": 0}


def test_command_failure_carries_the_stderr_tail(workdir: Path, events: EventRecorder) -> None:
    code = "import sys; print('partial'); sys.stderr.write('boom: disk on fire\\n'); sys.exit(1)"

    result = run_command(code, workdir, events)

    assert result.status == "failed"
    assert result.error is not None
    assert "exited with status 1" in result.error
    assert "boom: disk on fire" in result.error
    assert result.summary == "partial"


def test_command_that_ignores_a_huge_prompt_does_not_block(workdir: Path, events: EventRecorder) -> None:
    result = run_command("print('ignored stdin')", workdir, events, prompt="x" * 2_000_000)

    assert result.status == "completed", result.error
    assert result.summary == "ignored stdin"


def test_command_that_exits_leaving_a_process_on_its_stdout_completes(workdir: Path, events: EventRecorder) -> None:
    code = "import subprocess; p = subprocess.Popen(['sleep', '600']); print('left', p.pid)"
    began = time.monotonic()

    result = run_command(code, workdir, events, turnTimeoutMs=20_000)

    assert result.status == "completed", result.error
    assert time.monotonic() - began < 8
    assert result.summary is not None
    leftover = int(result.summary.split()[1])
    wait_until(lambda: not pid_alive(leftover), timeout=5, what="the leftover process to die")


SLEEPER = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen(['sleep', '600'])\n"
    "print('ready', child.pid, flush=True)\n"
    "time.sleep(600)\n"
)


def _grandchild(events: EventRecorder) -> int:
    ready = [e["text"] for e in events.of("log") if e["text"].startswith("ready")]
    return int(ready[0].split()[1])


@pytest.mark.parametrize(
    ("how", "status"),
    [("cancel", "interrupted"), ("turnTimeoutMs", "timeout"), ("stallTimeoutMs", "stalled")],
)
def test_command_stops_on_cancel_and_timeouts_and_leaves_no_process(
    how: str, status: str, workdir: Path, events: EventRecorder, cancel: threading.Event
) -> None:
    settings: dict[str, Any] = {}
    if how == "cancel":
        events.on(lambda e: e.data.get("text", "").startswith("ready"), cancel.set)
    else:
        settings[how] = 3000  # the sleeper is ready (SIGTERM ignored, grandchild started) well before, even under load
    began = time.monotonic()

    result = run_command(SLEEPER, workdir, events, cancel=cancel, **settings)

    assert result.status == status
    assert time.monotonic() - began < 15  # not the sleeper's 600 s
    assert not pid_alive(events.of("started")[0]["pid"])
    wait_until(lambda: not pid_alive(_grandchild(events)), timeout=5, what="the grandchild to die")


# --- small parts ----------------------------------------------------------------------------------


def test_make_runtime_picks_by_kind() -> None:
    assert isinstance(make_runtime(RuntimeSettings(kind="codex-app-server")), AppServerRuntime)
    assert isinstance(make_runtime(RuntimeSettings(kind="codex-exec")), ExecRuntime)
    assert isinstance(make_runtime(RuntimeSettings(kind="command", command=["true"])), CommandRuntime)
    with pytest.raises(InvalidInput):
        make_runtime(RuntimeSettings(kind="command"))


def test_exec_argv_keeps_the_prompt_out_and_quotes_config_values(workdir: Path) -> None:
    config = RuntimeSettings(kind="codex-exec", model="m", approval_policy={"granular": {"rules": True}})
    argv = exec_argv(["codex", "exec"], RunRequest(PROMPT, workdir, {}, config, developer_instructions='say "hi"\n'))

    assert PROMPT not in " ".join(argv)
    assert argv[-1] == "-"
    assert "approval_policy={\"granular\" = {\"rules\" = true}}" in argv
    assert 'developer_instructions="say \\"hi\\"\\u000a"' in argv
    assert toml_value("a\\b\x7f") == '"a\\\\b\\u007f"'
