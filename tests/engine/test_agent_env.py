"""The agent's environment holds what it needs and nothing else (issue 10).

Through real workers: a ``command`` runtime whose agent and ``beforeRun`` hook dump their whole
environment, a real Codex app-server against a model provider that reads its key from ``env_key``,
and ``omx workflow check`` listing what passes, by name only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from omx.engine import envpolicy
from tests.engine.worker_helpers import OMX, make_rig, start_worker, write_workflow
from tests.fakes.fake_model import FakeModel, message, write_codex_home

#: The secrets issue 10 found reaching the command runtime, each with a value to look for.
SECRETS = {name: f"s3cret-{name.lower()}" for name in (
    "STRIPE_KEY", "AZURE_OPENAI_KEY", "SIGNING_KEY", "SSH_KEY", "AWS_ACCESS_KEY_ID", "DB_PASS", "GH_PAT")}
#: Ordinary variables whose names only look close to a credential's.
ORDINARY = {"KEYBOARD_LAYOUT": "us", "OLDPWD": "/tmp", "WL_MARKER": "present", "SESSIONIZER_HOME": "/x",
            "PATHEXT_DIRS": "a:b", "GIT_AUTHOR_NAME": "someone"}
DUMP = """\
import json, os, sys
kind = sys.argv[1] if len(sys.argv) > 1 else "agent"
path = os.path.join(os.environ["WL_OUT"], f"{kind}-{os.environ['OMX_TASK_ID']}.json")
with open(path, "w") as f:
    json.dump(dict(os.environ), f)
print(f"{kind} environment written")
"""
CODEX_CONFIG = """\
model_provider = "gateway"
[model_providers.gateway]
name = "a local gateway"
base_url = "http://127.0.0.1:9/v1"
env_key = "MY_GATEWAY_KEY"
env_http_headers = { "X-Session" = "GATEWAY_SESSION_HEADER" }
[model_providers.other]
name = "another"
env_key = "OTHER_PROVIDER_KEY"
[profiles.alt]
model_provider = "other"
"""


@pytest.mark.parametrize(("name", "credential"), [
    *((n, True) for n in SECRETS), *((n, False) for n in ORDINARY),
    ("PWD", False), ("PATH", False), ("HOME", False), ("SSL_CERT_FILE", False), ("XDG_SESSION_TYPE", False),
    ("GITHUB_TOKEN", True), ("AWS_SECRET_ACCESS_KEY", True), ("AWS_SESSION_TOKEN", True),
    ("GOOGLE_APPLICATION_CREDENTIALS", True), ("AZURE_CLIENT_SECRET", True), ("DB_PWD", True),
    ("NPM_AUTH", True), ("SESSION_COOKIE", True), ("MYSQL_PASSWORD", True), ("DATABASE_URL", True),
    ("AZURE_STORAGE_CONNECTION_STRING", True), ("SENTRY_DSN", True), ("api_keys", True), ("OPENAI_API_KEY", True),
    ("npm_config__authToken", True), ("SSH_AUTH_SOCK", True), ("PATS", True), ("KEY", True),
])
def test_what_looks_like_a_credential(name: str, credential: bool) -> None:
    assert envpolicy.is_credential(name) is credential


def test_the_active_providers_variables_come_from_the_codex_config_and_the_command(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(CODEX_CONFIG)
    env = {"CODEX_HOME": str(tmp_path)}
    assert envpolicy.codex_provider_env(env) == ["MY_GATEWAY_KEY", "GATEWAY_SESSION_HEADER"]
    assert envpolicy.codex_provider_env(env, ["codex", "-c", "model_provider=other", "app-server"]) \
        == ["OTHER_PROVIDER_KEY"]
    assert envpolicy.codex_provider_env(env, ["codex", "app-server", "--profile", "alt"]) == ["OTHER_PROVIDER_KEY"]
    assert envpolicy.codex_provider_env(env, ["codex", "--config=profile=\"alt\""]) == ["OTHER_PROVIDER_KEY"]
    assert envpolicy.codex_provider_env(env, ["codex", "-c", "model_providers.gateway.env_key=\"NEW_KEY\""]) \
        == ["NEW_KEY", "GATEWAY_SESSION_HEADER"]
    assert envpolicy.codex_provider_env(env, ["codex", "-c", 'model_providers."my.gw"={env_key="DOTTED_KEY"}',
                                              "-c", "model_provider=my.gw"]) == ["DOTTED_KEY"]
    assert envpolicy.codex_provider_env(env, ["codex", "-c", "model_provider=nowhere"]) == []
    assert envpolicy.codex_provider_env({"CODEX_HOME": str(tmp_path / "none")}) == []  # no config: none
    (tmp_path / "config.toml").write_text("env_key = [broken")
    assert envpolicy.codex_provider_env(env) == []  # Codex itself will say what is wrong with it


def test_a_real_worker_gives_the_agent_and_hooks_only_what_they_need(tmp_path: Path) -> None:
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(CODEX_CONFIG)
    rig = make_rig(tmp_path, workers=["worker-1"])
    dump = tmp_path / "dump_env.py"
    dump.write_text(DUMP)
    provider = {"MY_GATEWAY_KEY": "gw-key", "GATEWAY_SESSION_HEADER": "gw-session", "OTHER_PROVIDER_KEY": "other"}
    rig.env.update(SECRETS, **ORDINARY, **provider, CODEX_HOME=str(codex_home), PWD=str(rig.repo),
                   OMX_PLATFORM_API_KEY="omxk_never")
    write_workflow(rig, runtime={"kind": "command", "command": [sys.executable, str(dump)], "passEnv": ["SIGNING_KEY"]},
                   hooks={"beforeRun": f"'{sys.executable}' '{dump}' hook", "passEnv": ["DB_PASS"]})
    tid = rig.store.create_task(rig.team, "dump the environment").id
    try:
        proc = start_worker(rig, "worker-1", "--until-empty")
        assert proc.wait(60) == 0, proc.output()
    finally:
        rig.close()
    assert rig.task(tid).status == "completed", rig.task(tid).error
    agent = json.loads((rig.out / f"agent-{tid}.json").read_text())
    hook = json.loads((rig.out / f"hook-{tid}.json").read_text())

    # No secret reaches either, unless WORKFLOW.md lets it through by name (runtime.passEnv / hooks.passEnv).
    assert {n for n in SECRETS if n in agent} == {"SIGNING_KEY"}
    assert {n for n in SECRETS if n in hook} == {"DB_PASS"}
    assert agent["SIGNING_KEY"] == SECRETS["SIGNING_KEY"] and hook["DB_PASS"] == SECRETS["DB_PASS"]
    everything = json.dumps(agent) + json.dumps(hook)
    assert [v for n, v in SECRETS.items() if v in everything] == [SECRETS["SIGNING_KEY"], SECRETS["DB_PASS"]]
    # The active Codex provider's variables reach the agent (not the hooks); another provider's do not.
    assert (agent.get("MY_GATEWAY_KEY"), agent.get("GATEWAY_SESSION_HEADER")) == ("gw-key", "gw-session")
    assert "OTHER_PROVIDER_KEY" not in agent and not set(provider) & set(hook)
    # What only looks like a credential passes; the working directory too.
    for env in (agent, hook):
        assert {n: env.get(n) for n in ORDINARY} == ORDINARY
        assert "PATH" in env and env.get("PWD")  # the working directory is no password
    assert "omxk_never" not in everything
    assert not {n for n in agent if n.startswith("OMX_")} - {  # the tag names the worker (the lifeline's)
        "OMX_TASK_ID", "OMX_TEAM", "OMX_WORKER", "OMX_ATTEMPT", "OMX_PROMPT_FILE", "OMX_LIFELINE_TAG"}


def test_workflow_check_lists_what_passes_by_name_only(tmp_path: Path) -> None:
    codex_home = tmp_path / "codex-home"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(CODEX_CONFIG)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "WORKFLOW.md").write_text(
        "---\nruntime:\n  command: [codex, app-server, -c, model_provider=other]\n  passEnv: [GH_PAT, UNSET_TOKEN]\n"
        "hooks:\n  passEnv: [DB_PASS]\n---\nDo {{ task.subject }}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
    env.update(SECRETS, OTHER_PROVIDER_KEY="other-value", CODEX_HOME=str(codex_home), OMX_PLATFORM_API_KEY="omxk_x")

    def check(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([OMX, "workflow", "check", "--repo", str(repo), *args], capture_output=True,
                              text=True, env=env, timeout=60)

    out = check("--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["data"]
    agent, hooks = data["environment"]["agent"], data["environment"]["hooks"]
    assert agent["codex_provider_variables"] == ["OTHER_PROVIDER_KEY"]
    assert agent["passed_on_purpose"] == ["GH_PAT", "OTHER_PROVIDER_KEY"]
    assert set(agent["withheld"]) == set(SECRETS) - {"GH_PAT"}
    assert agent["omx_own"] == ["OMX_PLATFORM_API_KEY"]
    assert "PATH" in agent["passed"] and "GH_PAT" in agent["passed"] and "STRIPE_KEY" not in agent["passed"]
    assert hooks["passed_on_purpose"] == ["DB_PASS"] and "GH_PAT" in hooks["withheld"]
    assert any("UNSET_TOKEN" in w and "not set" in w for w in data["warnings"])
    text = check()
    assert text.returncode == 0, text.stderr
    assert "withheld as credentials: " in text.stdout and "STRIPE_KEY" in text.stdout
    for output in (out.stdout, text.stdout):  # names, never values
        assert not [v for v in (*SECRETS.values(), "other-value", "omxk_x") if v in output]


def test_codex_with_a_custom_provider_gets_its_key(tmp_path: Path, codex_bin: Path, fake_model: FakeModel) -> None:
    """Codex reads the provider's key from the variable its ``env_key`` names: without it every turn fails
    with "Missing environment variable"."""
    home = write_codex_home(tmp_path / "codex-home", fake_model.base_url)
    config = (home / "config.toml").read_text()
    (home / "config.toml").write_text(config.replace('wire_api = "responses"',
                                                     'env_key = "MOCK_GATEWAY_API_KEY"\nwire_api = "responses"', 1))
    rig = make_rig(tmp_path, workers=["worker-1"])
    rig.env = {k: v for k, v in rig.env.items() if not k.startswith(("OPENAI_", "CODEX_"))}
    rig.env.update(CODEX_HOME=str(home), PATH=f"{codex_bin.parent}{os.pathsep}{rig.env.get('PATH', '')}",
                   MOCK_GATEWAY_API_KEY="gateway-secret-value", STRIPE_KEY="sk_live_never")
    fake_model.script(message("Done, with the gateway's key."))
    write_workflow(rig, runtime={"kind": "codex-app-server", "stallTimeoutMs": 60_000})
    tid = rig.store.create_task(rig.team, "say done").id
    try:
        proc = start_worker(rig, "worker-1", "--until-empty")
        assert proc.wait(120) == 0, proc.output()
    finally:
        rig.close()
    task = rig.task(tid)
    assert task.status == "completed", f"{task.error}\n{proc.output()}"
    (request,) = [r for r in fake_model.wait_for_requests(1) if r.path.endswith("/responses")]
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers.get("authorization") == "Bearer gateway-secret-value"
