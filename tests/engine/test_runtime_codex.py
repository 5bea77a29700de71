"""The Codex runtimes against the real Codex binary and a fake model on 127.0.0.1."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from omx.engine.runtimes import RunRequest, RunResult, make_runtime
from omx.engine.runtimes.process import pid_alive
from omx.engine.settings import RuntimeSettings
from tests.fakes.fake_model import FakeModel, fail, hang, message, shell
from tests.fakes.recorder import EventRecorder as Events

pytestmark = pytest.mark.codex

UNTRUSTED_PROMPT = (
    "Fix it; rm -rf / && echo $(whoami) `id` > /tmp/pwned | cat </etc/passwd & ${IFS}*?~ \n"
    "{{ task.secret }} {% raw %}{% endraw %} {#c#} %s %(name)s {0}\n"
    "../../../etc/shadow ..\\..\\windows \"double\" 'single' \\backslash \\n \t tab\n"
    "-c model=\"evil\" --dangerously-bypass-approvals-and-sandbox 日本語 \u202e\n"
)


def run(
    kind: str,
    workdir: Path,
    env: dict[str, str],
    events: Events,
    *,
    prompt: str = "Create made.txt, please.",
    cancel: threading.Event | None = None,
    developer_instructions: str | None = None,
    **settings: Any,
) -> RunResult:
    config = RuntimeSettings(kind=kind, **settings)
    request = RunRequest(prompt, workdir, env, config, developer_instructions=developer_instructions)
    return make_runtime(config).run(request, events, cancel or threading.Event())


def started_pid(events: Events) -> int:
    pids = [data["pid"] for data in events.of("started")]
    assert pids, f"no started event in {events.kinds()}"
    return int(pids[0])


def test_app_server_turn_runs_a_shell_command(
    fake_model: FakeModel, codex_env: dict[str, str], workdir: Path, events: Events
) -> None:
    fake_model.script(shell("printf made > made.txt"), message("Created made.txt."))

    result = run("codex-app-server", workdir, codex_env, events, developer_instructions="OMX-DEV-MARKER-7")

    assert result.status == "completed", result.error
    assert (workdir / "made.txt").read_text() == "made"
    assert result.summary == "Created made.txt."
    assert result.tokens["total"] > 0
    assert result.tokens["input"] > 0
    assert result.thread_id
    assert result.error is None
    commands = [c for c in events.of("command") if c["phase"] == "completed"]
    assert commands
    assert commands[0]["exit_code"] == 0
    assert "made.txt" in commands[0]["command"]
    assert events.of("message")[-1]["text"] == "Created made.txt."
    assert events.of("tokens")[-1]["total"] == result.tokens["total"]
    assert "OMX-DEV-MARKER-7" in fake_model.requests[0].developer_texts()
    assert fake_model.requests[1].function_call_outputs(), "the command's output went back to the model"
    assert not pid_alive(started_pid(events))


def test_app_server_model_failure_fails_the_run(
    fake_model: FakeModel, codex_env: dict[str, str], workdir: Path, events: Events
) -> None:
    fake_model.script(fail("quota exhausted: try again later"))

    result = run("codex-app-server", workdir, codex_env, events)

    assert result.status == "failed"
    assert result.error is not None
    assert "quota exhausted: try again later" in result.error
    assert any("quota exhausted" in e["message"] for e in events.of("error"))


def test_app_server_stall_interrupts_and_reaps(
    fake_model: FakeModel, codex_env: dict[str, str], workdir: Path, events: Events
) -> None:
    fake_model.script(hang())
    began = time.monotonic()

    # 3 s: Codex answers turn/start and sends turn/started before the stall limit, even on a loaded
    # machine (a stall before turn/started would leave no turn to interrupt and no started event).
    result = run("codex-app-server", workdir, codex_env, events, stallTimeoutMs=3000)

    assert result.status == "stalled"
    assert result.error is not None
    assert "3000 ms" in result.error
    assert time.monotonic() - began < 30  # not the turn timeout (1 h): the stall limit ended it
    assert not pid_alive(started_pid(events))


def test_app_server_cancel_interrupts_promptly(
    fake_model: FakeModel, codex_env: dict[str, str], workdir: Path, events: Events, cancel: threading.Event
) -> None:
    fake_model.script(hang())
    fake_model.when_asked(1, cancel.set)  # cancel while the model stream is open
    began = time.monotonic()

    result = run("codex-app-server", workdir, codex_env, events, cancel=cancel, turnTimeoutMs=30_000)

    assert result.status == "interrupted"
    assert result.error == "cancelled"
    assert time.monotonic() - began < 10
    assert len(fake_model.requests) == 1
    assert not pid_alive(started_pid(events))


def test_app_server_approval_is_declined_unless_policy_is_never(
    fake_model: FakeModel, codex_env: dict[str, str], workdir: Path, events: Events
) -> None:
    fake_model.script(shell("touch approved.txt"), message("Tried."))

    result = run("codex-app-server", workdir, codex_env, events, approvalPolicy="untrusted")

    assert result.status == "completed", result.error
    approvals = events.of("approval")
    assert len(approvals) == 1
    assert approvals[0]["method"] == "item/commandExecution/requestApproval"
    assert approvals[0]["decision"] == "decline"
    assert approvals[0]["policy"] == "untrusted"
    assert "approved.txt" in approvals[0]["command"]
    assert not (workdir / "approved.txt").exists()
    assert [c["status"] for c in events.of("command") if c["phase"] == "completed"] == ["declined"]


def test_exec_runtime_completes_a_turn(
    fake_model: FakeModel, codex_env: dict[str, str], workdir: Path, events: Events
) -> None:
    fake_model.script(shell("printf exec > exec.txt"), message("Done via exec."))

    result = run("codex-exec", workdir, codex_env, events, developer_instructions="OMX-EXEC-DEV")

    assert result.status == "completed", result.error
    assert (workdir / "exec.txt").read_text() == "exec"
    assert result.summary == "Done via exec."
    assert result.tokens["total"] == result.tokens["input"] + result.tokens["output"] > 0
    assert result.thread_id
    assert "OMX-EXEC-DEV" in fake_model.requests[0].developer_texts()
    assert [c["exit_code"] for c in events.of("command") if c["phase"] == "completed"] == [0]


def test_exec_runtime_model_failure_and_stall(
    fake_model: FakeModel, codex_env: dict[str, str], workdir: Path, events: Events
) -> None:
    fake_model.script(fail("exec says no"), hang())

    failed = run("codex-exec", workdir, codex_env, events)
    stalled = run("codex-exec", workdir, codex_env, events, stallTimeoutMs=1200)

    assert failed.status == "failed"
    assert failed.error is not None
    assert "exec says no" in failed.error
    assert stalled.status == "stalled"
    assert all(not pid_alive(data["pid"]) for data in events.of("started"))


@pytest.mark.parametrize("kind", ["codex-app-server", "codex-exec"])
def test_untrusted_prompt_reaches_the_model_verbatim(
    kind: str, fake_model: FakeModel, codex_env: dict[str, str], workdir: Path, events: Events
) -> None:
    fake_model.script(message("Read it."))

    result = run(kind, workdir, codex_env, events, prompt=UNTRUSTED_PROMPT)

    assert result.status == "completed", result.error
    assert UNTRUSTED_PROMPT in fake_model.requests[0].user_texts()
    assert list(workdir.iterdir()) == []
    assert not Path("/tmp/pwned").exists()
