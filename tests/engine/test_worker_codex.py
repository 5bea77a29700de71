"""``omx team worker`` with the real Codex binary (app-server and exec) against a fake model on 127.0.0.1.

No ``runtime.command``: the worker finds ``codex`` on the ``PATH`` of its own environment, and Codex
finds the fake model through ``CODEX_HOME``, exactly as on a user's machine. The fake model decides
each answer from the request (the task's marker in the prompt, and whether a tool output came back),
so the order in which Codex asks does not matter.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_helpers import Rig, git, make_rig, start_worker, write_workflow

from tests.fakes.fake_model import FakeModel, RecordedRequest, Turn, fail, message, shell, write_codex_home

pytestmark = [pytest.mark.codex, pytest.mark.slow]

SECRET = "hunter2-do-not-leak"


class Scripted:
    """The fake model's brain: by marker in the prompt, a shell call first, then a final message."""

    def __init__(self, plans: dict[str, tuple[str | None, Turn]]) -> None:
        self.plans = plans
        self.outputs: dict[str, list[str]] = {}

    def __call__(self, request: RecordedRequest) -> Turn:
        prompt = "\n".join(request.user_texts())
        for marker, (cmd, final) in self.plans.items():
            if marker in prompt:
                outputs = request.function_call_outputs()
                if cmd is None or outputs:
                    self.outputs[marker] = outputs
                    return final
                return shell(cmd)
        return fail(f"fake model: no plan for prompt {prompt[-300:]!r}")


@pytest.fixture
def codex_rig(tmp_path: Path, codex_bin: Path, fake_model: FakeModel) -> Iterator[Rig]:
    """A team whose worker environment has Codex on PATH, a CODEX_HOME for the fake model, and bait."""
    home = write_codex_home(tmp_path / "codex-home", fake_model.base_url)
    rig = make_rig(tmp_path, workers=["worker-1"])
    rig.env = {k: v for k, v in rig.env.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    rig.env.update(
        CODEX_HOME=str(home),
        PATH=f"{codex_bin.parent}{os.pathsep}{rig.env.get('PATH', '')}",
        WL_MARKER="present",  # an ordinary variable: it must reach the agent
        SERVICE_API_TOKEN=SECRET,  # a secret: it must not
        OMX_MACHINE_MAX_AGENTS="4",
    )
    yield rig
    rig.close()


def test_app_server_worker_completes_fails_and_keeps_omx_out_of_the_agent_env(
    codex_rig: Rig, fake_model: FakeModel
) -> None:
    rig = codex_rig
    brain = Scripted({
        "[make]": ("printf made > made.txt", message("Created made.txt.", input_tokens=200, output_tokens=40)),
        # Only the lines that matter (Codex trims long tool output): anything omx-ish, the bait, the marker.
        "[env]": ("env | grep -E '^(OMX_|SERVICE_API_TOKEN|WL_MARKER)' ; echo env-listed",
                  message("Listed the environment.")),
        "[broken]": (None, fail("quota exhausted: try again later")),
    })
    fake_model.fallback = brain
    write_workflow(rig, runtime={"kind": "codex-app-server", "stallTimeoutMs": 60_000})
    make = rig.store.create_task(rig.team, "[make] create made.txt", "Run printf.").id
    env = rig.store.create_task(rig.team, "[env] show the environment").id
    broken = rig.store.create_task(rig.team, "[broken] the model fails").id

    proc = start_worker(rig, "worker-1", "--until-empty", by_env=True)
    assert proc.wait(120) == 0, proc.output()

    task = rig.task(make)
    assert task.status == "completed", f"{task.error}\n{proc.output()}"
    result = task.result
    assert result["summary"] == "Created made.txt."
    assert result["tokens"]["total"] > 0
    assert result["tokens"]["input"] > 0
    assert result["thread_id"]
    assert result["branch"] == f"omx/{rig.team}/task-{make}"
    assert git(rig.repo, "show", f"{result['commit']}:made.txt") == "made"
    assert git(rig.repo, "log", "-1", "--format=%an", result["commit"]) == "worker-1"
    commands = [e.data["text"] for e in rig.events("worker_activity", task_id=make) if "ran " in e.data["text"]]
    assert commands, "no command activity was recorded"

    assert rig.task(env).status == "completed", rig.task(env).error
    assert rig.task(env).result["commit"] is None  # `env` changed nothing
    (env_output,) = brain.outputs["[env]"]
    assert "env-listed" in env_output, env_output[-2000:]
    assert "WL_MARKER=present" in env_output, env_output[-2000:]
    # Only the lifeline's tag (the worker's pid and start time: it lets the keeper end this agent).
    leaked = [line for line in env_output.replace("\\n", "\n").splitlines()
              if "OMX_" in line and not re.fullmatch(r"OMX_LIFELINE_TAG=\d+\.\d+", line.strip())]
    assert leaked == [], "omx variables reached the agent"
    assert SECRET not in env_output

    task = rig.task(broken)
    assert task.status == "failed"
    assert task.error is not None
    assert "quota exhausted: try again later" in task.error
    acks = [m.body for m in rig.store.mailbox_list(rig.team, "leader-fixed")]
    assert acks, "no startup ACK"
    assert acks[0].startswith("ACK: worker-1")
    assert rig.store.read_status(rig.team, "worker-1").state == "done"


def test_exec_worker_completes_a_task_with_a_commit(codex_rig: Rig, fake_model: FakeModel) -> None:
    rig = codex_rig
    fake_model.fallback = Scripted({"[exec]": ("printf via-exec > exec.txt", message("Wrote exec.txt."))})
    write_workflow(rig, runtime={"kind": "codex-exec", "stallTimeoutMs": 60_000})
    tid = rig.store.create_task(rig.team, "[exec] write exec.txt").id

    proc = start_worker(rig, "worker-1", "--until-empty")
    assert proc.wait(120) == 0, proc.output()

    task = rig.task(tid)
    assert task.status == "completed", f"{task.error}\n{proc.output()}"
    assert task.result["summary"] == "Wrote exec.txt."
    assert task.result["tokens"]["total"] > 0
    assert git(rig.repo, "show", f"{task.result['commit']}:exec.txt") == "via-exec"
