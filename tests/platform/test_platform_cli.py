"""``omx worker`` and ``omx auth`` as a user runs them: the installed ``omx`` in a subprocess, the fake platform.

What is asserted is what a user sees — the output, the exit status, the files — and what the
platform saw.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tomllib
from pathlib import Path

import httpx
from platform_helpers import Rig, platform_template_body, state_of, wait_until

ROOT = Path(__file__).resolve().parents[2]
CODEX_DIR = ROOT / ".tools" / "codex" / "node_modules" / ".bin"


def test_create_configure_and_doctor(rig: Rig) -> None:
    not_yet = rig.omx("worker", "create", "--name", "laptop", "--repo", str(rig.repo))
    assert not_yet.returncode == 1 and "not logged in" in not_yet.stderr and "omx auth login" in not_yet.stderr
    rig.login()
    workflow = rig.tmp / "conf" / "WORKFLOW.md"
    instructions = 'Say "hi" to \\ everyone\n\tthen stop # not a comment = [x]'
    r = rig.omx("worker", "create", "--name", "laptop", "--repo", str(rig.repo / "."), "--workflow", str(workflow),
                "--worktree-root", str(rig.worktrees), "--instructions", instructions, "--json")
    assert r.returncode == 0, r.stderr
    wid = json.loads(r.stdout)["settings"]["id"]
    assert rig.fake.workers[wid]["owner_id"] == "u1" and rig.fake.workers[wid]["name"] == "laptop"
    path = rig.home / "config" / "workers" / f"{wid}.toml"
    saved = tomllib.loads(path.read_text())
    assert saved["instructions"] == instructions and saved["repo"] == str(rig.repo)
    assert (saved["isolation"], saved["max_concurrent_runs"], saved["auto_start"]) == ("task", 1, False)
    assert saved["workflow"] == str(workflow) and "Context (untrusted" in workflow.read_text()

    # configure: changes the local settings, registers nothing
    registered = len(rig.fake.workers)
    r = rig.omx("worker", "configure", wid, "--max-concurrent-runs", "2", "--isolation", "branch")
    assert r.returncode == 0, r.stderr
    assert "configured worker laptop" in r.stdout and len(rig.fake.workers) == registered
    saved = tomllib.loads(path.read_text())
    assert (saved["isolation"], saved["max_concurrent_runs"], saved["instructions"]) == ("branch", 2, instructions)
    # someone else's worker does not exist for this user
    theirs = rig.fake.register_worker("u2", "grace's laptop")
    r = rig.omx("worker", "configure", theirs, "--repo", str(rig.repo))
    assert r.returncode == 3 and "platform_not_found" in r.stderr
    assert not (rig.home / "config" / "workers" / f"{theirs}.toml").exists()

    # doctor: every check, plus a stale local config for a worker the platform no longer has
    gone = path.with_name("wrk_gone.toml")
    gone.write_text(path.read_text().replace(wid, "wrk_gone"))
    env = {"PATH": f"{CODEX_DIR}{os.pathsep}{os.environ['PATH']}"} if CODEX_DIR.is_dir() else {}
    r = rig.omx("worker", "doctor", "--worker", wid, env=env)
    lines = r.stdout.splitlines()
    for name in ("platform", "auth", "workspace", "registration", "settings", "workflow", "worktree root"):
        assert any(line.startswith(f"[ok  ] {name}:") for line in lines), (name, r.stdout)
    assert "Acme as Ada Lovelace" in r.stdout
    assert any(line.startswith("[warn] settings: isolation 'branch'") for line in lines)
    assert any(line.startswith("[warn] stale config:") and "wrk_gone" in line for line in lines)
    if CODEX_DIR.is_dir():
        assert r.returncode == 0 and any(line.startswith("[ok  ] codex:") for line in lines), r.stdout


def test_run_one_session_and_manage_its_worktree(rig: Rig) -> None:
    rig.login()
    settings = rig.worker()
    sid = rig.fake.create_session(title="\x1b[2J\x1b]0;evil\x07 Fix the parser")
    r = rig.omx("worker", "run", sid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"claimed {sid} ' Fix the parser'" in r.stdout.replace("'\\x1b[2J\\x1b]0;evil\\x07", "'")
    assert f"{sid}: completed in" in r.stdout and "\x1b" not in r.stdout  # the title cannot drive the terminal
    assert state_of(rig.fake, sid) == "complete"

    again = rig.omx("worker", "run", sid)
    assert again.returncode == 1 and "the session is complete" in again.stderr and "[claim_conflict]" in again.stderr

    listing = rig.omx("worker", "worktrees")
    assert listing.returncode == 0 and sid in listing.stdout and f"omx/{settings.id}/session-{sid}" in listing.stdout
    worktree = Path(listing.stdout.split()[2])
    assert (worktree / "agent-output.txt").read_text() == "agent was here\n"
    removed = rig.omx("worker", "worktrees", "remove", sid)
    assert removed.returncode == 0 and f"removed {worktree}" in removed.stdout and not worktree.exists()
    branches = subprocess.run(["git", "-C", str(rig.repo), "branch", "--list", "omx/*"], capture_output=True,
                              text=True, env=rig.env).stdout
    assert f"session-{sid}" in branches  # the committed work stays on its branch
    assert rig.omx("worker", "worktrees", "remove", "--all").stdout.strip() == "no session worktrees"
    assert rig.omx("worker", "worktrees", "remove").returncode == 2  # neither an id nor --all


def test_an_api_key_is_refused_before_any_worker_operation(rig: Rig) -> None:
    rig.login()
    rig.worker()
    sid = rig.fake.create_session()
    key = rig.fake.api_key()
    before = len(rig.fake.requests)
    for args in (["worker", "run", sid], ["worker", "watch"], ["worker", "create", "--name", "x"]):
        r = rig.omx(*args, env={"OMX_PLATFORM_API_KEY": key})
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert "need an OAuth user token" in r.stderr and "API keys are refused" in r.stderr, r.stderr
        assert "OMX_PLATFORM_API_KEY" in r.stderr and key not in r.stderr + r.stdout
    status = rig.omx("auth", "status", env={"OMX_PLATFORM_API_KEY": key})
    assert status.returncode == 1 and "refused" in status.stdout
    # A key stored where the OAuth token belongs is recognised by its prefix, and refused too.
    auth = rig.home / "auth" / "default.json"
    data = json.loads(auth.read_text())
    auth.write_text(json.dumps({**data, "access_token": key}))
    r = rig.omx("worker", "run", sid)
    assert r.returncode == 1 and "is an API key" in r.stderr and "[platform_api_key]" in r.stderr
    assert len(rig.fake.requests) == before, [x.path for x in rig.fake.requests[before:]]
    # The platform refuses it as well: identity calls work with a key, worker operations do not.
    assert httpx.get(f"{rig.fake.url}/api/v1/me", headers={"Authorization": f"Bearer {key}"}).json()["token_kind"] \
        == "api_key"
    answer = httpx.get(f"{rig.fake.url}/api/v1/workers", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 403 and answer.json()["error"]["code"] == "api_key_not_allowed"
    assert state_of(rig.fake, sid) == "queued"


def test_auth_login_status_logout(rig: Rig) -> None:
    rig.fake.auto_approve = "u1"
    rig.fake.device_script = ["authorization_pending"]
    env = {"OMX_PLATFORM_URL": ""}
    r = rig.omx("auth", "login", "--url", rig.fake.url, env=env)
    assert r.returncode == 0, r.stderr
    assert "open " in r.stdout and "and enter the code " in r.stdout
    assert f"Logged in to {rig.fake.url} as Ada Lovelace <ada@example.invalid> in workspace Acme" in r.stdout
    path = rig.home / "auth" / "default.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    token = json.loads(path.read_text())["access_token"]
    assert token in rig.fake.access and token not in r.stdout + r.stderr
    assert tomllib.loads((rig.home / "config" / "platform.toml").read_text())["url"] == rig.fake.url

    st = rig.omx("auth", "status", env=env)  # the URL now comes from config/platform.toml
    assert st.returncode == 0, st.stdout + st.stderr
    assert "Ada Lovelace" in st.stdout and "expires" in st.stdout and "refreshed automatically" in st.stdout
    assert token not in st.stdout and "(mode 0600)" in st.stdout
    as_json = json.loads(rig.omx("auth", "status", "--json").stdout)
    assert as_json["logged_in"] and as_json["verified"] and token not in json.dumps(as_json)

    path.chmod(0o644)  # someone made it world-readable: refused, not used
    st = rig.omx("auth", "status")
    assert st.returncode != 0 and "readable by others (mode 0644)" in st.stdout + st.stderr
    path.chmod(0o600)

    out = rig.omx("auth", "logout")
    assert out.returncode == 0 and "logged out (tokens revoked on the platform)" in out.stdout
    assert not path.exists() and token not in rig.fake.access
    st = rig.omx("auth", "status")
    assert st.returncode == 1 and "not logged in" in st.stdout


def test_errors_name_the_request_as_sent_not_its_route_template(rig: Rig) -> None:
    rig.login()
    rig.worker()
    r = rig.omx("worker", "run", "ses_nope")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "POST /api/v1/sessions/ses_nope/claims: not found: no session ses_nope" in r.stderr, r.stderr
    assert "{session_id}" not in r.stderr


def test_create_without_a_platform_url_says_how_to_set_one(rig: Rig) -> None:
    r = rig.omx("worker", "create", "--name", "laptop", "--repo", str(rig.repo), env={"OMX_PLATFORM_URL": ""})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no platform URL is configured" in r.stderr and "omx auth login --url <url>" in r.stderr
    assert "OMX_PLATFORM_URL" in r.stderr and "None" not in r.stderr and "[platform_config]" in r.stderr


def test_an_oauth_endpoint_answering_an_api_error_object_is_reported_as_text(rig: Rig) -> None:
    r = rig.omx("auth", "login", env={"OMX_PLATFORM_DEVICE_URL": f"{rig.fake.url}/oauth/nowhere"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "device authorization failed: not_found: no route /oauth/nowhere [platform_auth]" in r.stderr, r.stderr
    assert "{" not in r.stderr
    r = rig.omx("auth", "login", env={"OMX_PLATFORM_TOKEN_URL": f"{rig.fake.url}/oauth/nowhere"})
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the login failed: not_found: no route /oauth/nowhere [platform_auth]" in r.stderr, r.stderr
    assert "{" not in r.stderr


def test_run_says_how_the_session_ended_once(rig: Rig) -> None:
    rig.login()
    rig.worker()
    sid = rig.fake.create_session()
    r = rig.omx("worker", "run", sid)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len([line for line in r.stdout.splitlines() if f"{sid}: completed in" in line]) == 1, r.stdout


def test_doctor_without_worker_checks_every_configured_worker(rig: Rig) -> None:
    rig.login()
    one, two = rig.worker("one"), rig.worker("two")
    r = rig.omx("worker", "doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    sections = _doctor_sections(r.stdout)
    assert list(sections) == ["shared", f"worker one ({one.id})", f"worker two ({two.id})"], r.stdout
    for name in ("platform", "auth", "workspace"):
        assert f"[ok  ] {name}:" in sections["shared"], (name, r.stdout)
    for s in (one, two):
        for name in ("registration", "settings", "workflow", "worktree root", "codex"):
            assert f"[ok  ] {name}:" in sections[f"worker {s.name} ({s.id})"], (name, r.stdout)
    del rig.fake.workers[two.id]  # deleted on the platform: that worker's section says so, the other is fine
    r = rig.omx("worker", "doctor")
    assert r.returncode == 1, r.stdout + r.stderr
    sections = _doctor_sections(r.stdout)
    assert f"[FAIL] registration: worker {two.id} is not registered" in sections[f"worker two ({two.id})"]
    assert "[ok  ] registration:" in sections[f"worker one ({one.id})"]


def _doctor_sections(out: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    for line in out.splitlines():
        if not line.startswith(" "):
            current = line.rstrip(":")
            sections[current] = ""
        else:
            sections[current] += line.strip() + "\n"
    return sections


#: Fails for a session titled "broken"; otherwise records its pid and waits for ``$WL_OUT/go``.
DEFAULTS_SCRIPT = r"""echo "run $(basename "$PWD") $$" >> "$WL_OUT/runs"
if grep -q '^Title: broken' "$OMX_PROMPT_FILE"; then echo "tests failed" >&2; exit 3; fi
d="$WL_OUT/$(basename "$PWD")"; mkdir -p "$d"; echo $$ > "$d/pid.tmp"; mv "$d/pid.tmp" "$d/pid"
while [ ! -e "$WL_OUT/go" ]; do sleep 0.05; done
echo "work" > agent-output.txt; echo "finished"
"""


def test_a_platform_workers_documented_defaults(rig: Rig) -> None:
    """One run at a time, no retries, a poll every 30 000 ms — when neither the worker nor WORKFLOW.md says."""
    from omx.platform.config import load_worker_settings
    from omx.platform.service import load_worker_workflow

    rig.login()
    workflow = rig.tmp / "WORKFLOW.md"  # sets the runtime only: no polling, agent or retry keys
    front = {"runtime": {"kind": "command", "command": ["bash", "-c", DEFAULTS_SCRIPT]}}
    workflow.write_text(f"---\n{json.dumps(front)}\n---\n{platform_template_body()}")
    r = rig.omx("worker", "create", "--name", "laptop", "--repo", str(rig.repo), "--workflow", str(workflow),
                "--worktree-root", str(rig.worktrees), "--json")
    assert r.returncode == 0, r.stderr
    settings = load_worker_settings(json.loads(r.stdout)["settings"]["id"])
    wf = load_worker_workflow(settings)
    assert settings.max_concurrent_runs == 1 and wf.settings.agent.max_concurrent_agents == 1
    assert wf.settings.agent.max_retry_attempts == 0
    assert wf.settings.polling.poll_interval_ms == 30_000
    doctor = rig.omx("worker", "doctor")
    assert "1 run(s) at a time" in doctor.stdout and "polls every 30000 ms" in doctor.stdout, doctor.stdout

    # No retries: a failing session runs once and ends in error.
    broken = rig.fake.create_session(title="broken")
    failed = rig.omx("worker", "run", broken)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert rig.fake.session(broken)["state"] == "error" and "exit" in rig.fake.session(broken)["error"]
    assert len(rig.runs()) == 1 and len(rig.fake.claims_of(broken)) == 1

    # One run at a time, polling every 30 s (the first poll is at once).
    first, second = rig.fake.create_session(title="first"), rig.fake.create_session(title="second")
    watch = rig.spawn("watch", "worker", "watch", "--max-sessions", "2")
    wait_until(lambda: (rig.seen(first) / "pid").exists(), what="the first session's agent", proc=watch)
    assert "polling every 30s" in watch.stdout()
    policy = [a for a in rig.fake.activities(first) if a["kind"] == "policy"]
    assert policy[0]["data"]["max_concurrent_runs"] == 1
    assert state_of(rig.fake, second) == "queued" and len(rig.runs()) == 2  # the broken one, and this one
    (rig.out / "go").touch()
    assert watch.wait() == 0, watch.output()
    assert [state_of(rig.fake, s) for s in (first, second)] == ["complete", "complete"]
    [claim_two] = rig.fake.claims_of(second)
    [ended_one] = [a["created_at"] for a in rig.fake.activities(first) if a["kind"] == "completion"]
    assert claim_two["created_at"] >= ended_one  # the second was claimed only after the first had finished
