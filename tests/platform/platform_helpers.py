"""A fake platform, a real repository and ``omx worker`` processes for the platform tests.

:class:`Rig` holds one test's world: the fake platform on 127.0.0.1, an ``OMX_HOME``, a git repository
with one commit, and the environment every ``omx`` subprocess gets (the same values are set in this
process, so library calls and subprocesses see one machine). Agents are ``command`` runtimes: bash
scripts that record what they saw under ``$WL_OUT/<worktree name>/`` — the prompt, the developer
instructions, their argv and environment — so a test can assert exactly what reached the agent.

Every wait has a deadline (:func:`wait_until`); this machine is shared and slow at times.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.fakes.fake_platform import FakePlatform

OMX = str(Path(sys.executable).with_name("omx"))
DEADLINE_S = 60.0

#: Records everything the agent sees, makes a change, and ends with a summary holding a URL.
RECORD_SCRIPT = r"""
d="$WL_OUT/$(basename "$PWD")"; mkdir -p "$d"
cp "$OMX_PROMPT_FILE" "$d/prompt.md"
if [ -n "$OMX_DEVELOPER_INSTRUCTIONS_FILE" ]; then cp "$OMX_DEVELOPER_INSTRUCTIONS_FILE" "$d/instructions.md"; fi
cat /proc/$$/environ > "$d/environ"; cat /proc/$$/cmdline > "$d/cmdline"
echo "run $(basename "$PWD") $$" >> "$WL_OUT/runs"
echo "agent was here" > agent-output.txt
echo "done; opened https://example.invalid/pr/7 for review"
"""

#: Records its pid, then waits for ``$WL_OUT/go`` (the test decides when the run ends).
GATED_SCRIPT = r"""
d="$WL_OUT/$(basename "$PWD")"; mkdir -p "$d"; echo $$ > "$d/pid.tmp"; mv "$d/pid.tmp" "$d/pid"
echo "run $(basename "$PWD") $$" >> "$WL_OUT/runs"
while [ ! -e "$WL_OUT/go" ]; do sleep 0.05; done
echo "gated work" > agent-output.txt; echo "gated run finished"
"""

#: Fails like a broken build.
FAILING_SCRIPT = r"""echo "run $(basename "$PWD") $$" >> "$WL_OUT/runs"; echo "tests failed: 3 errors" >&2; exit 3"""


def platform_template_body() -> str:
    from omx.platform.template import PLATFORM_WORKFLOW_MD

    return PLATFORM_WORKFLOW_MD.split("\n---\n", 1)[1]


@dataclass
class Proc:
    """One ``omx`` subprocess; output goes to files (a pipe nobody reads could block it)."""

    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path

    def wait(self, timeout: float = DEADLINE_S) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} still running after {timeout}s\n{self.output()}") from None

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()

    def stdout(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def output(self) -> str:
        err = self.err.read_text(errors="replace") if self.err.exists() else ""
        return f"--- {self.name} stdout ---\n{self.stdout()}--- {self.name} stderr ---\n{err}"


@dataclass
class Rig:
    tmp: Path
    fake: FakePlatform
    home: Path
    repo: Path
    out: Path
    worktrees: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    # --- identities -------------------------------------------------------------------------------

    def login(self, user: str = "u1", *, ttl_s: float | None = None) -> dict[str, Any]:
        """Store an OAuth login for ``user`` the way `omx auth login` does; return the grant."""
        from omx.platform.auth import StoredTokens, auth_path, write_tokens
        from omx.platform.config import load_platform_config

        grant = self.fake.issue_tokens(user, ttl_s=ttl_s)
        now = time.time()
        write_tokens(auth_path(load_platform_config()), StoredTokens(
            access_token=grant["access_token"], refresh_token=grant["refresh_token"],
            expires_at=now + grant["expires_in"], obtained_at=now, platform_url=self.fake.url))
        return grant

    def worker(self, name: str = "laptop", *, user: str = "u1", script: str = RECORD_SCRIPT, poll_ms: int = 100,
               hooks: dict[str, Any] | None = None, instructions: str = "", max_runs: int = 1,
               isolation: str = "task") -> Any:
        """Register a worker for ``user`` on the fake and write its local settings and WORKFLOW.md."""
        from omx.platform.config import WorkerSettings, save_worker_settings

        wid = self.fake.register_worker(user, name)
        front: dict[str, Any] = {"polling": {"pollIntervalMs": poll_ms},
                                 "runtime": {"kind": "command", "command": ["bash", "-c", script]}}
        if hooks:
            front["hooks"] = hooks
        workflow = self.tmp / f"{name}.WORKFLOW.md"
        workflow.write_text(f"---\n{json.dumps(front, indent=2)}\n---\n{platform_template_body()}")
        settings = WorkerSettings(id=wid, name=name, repo=str(self.repo), workflow=str(workflow),
                                  worktree_root=str(self.worktrees), instructions=instructions,
                                  max_concurrent_runs=max_runs, isolation=isolation,  # type: ignore[arg-type]
                                  platform_url=self.fake.url, agent_id="agt_codex", workspace_id="ws1")
        save_worker_settings(settings)
        return settings

    # --- processes --------------------------------------------------------------------------------

    def omx(self, *args: str, timeout: float = DEADLINE_S, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([OMX, *args], capture_output=True, text=True, timeout=timeout, input=input,
                              env={**self.env, **(env or {})}, cwd=self.repo)

    def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        out = self.tmp / f"{name}-{time.monotonic_ns()}.out"
        err = out.with_suffix(".err")
        with out.open("wb") as o, err.open("wb") as e:
            popen = subprocess.Popen([OMX, *args], stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                     env={**self.env, **(env or {})}, cwd=self.repo)
        proc = Proc(name, popen, out, err)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for p in self.procs:
            p.kill()

    # --- what happened ----------------------------------------------------------------------------

    def runs(self) -> list[str]:
        """``run <worktree> <pid>`` lines, one per agent start."""
        path = self.out / "runs"
        return path.read_text().splitlines() if path.exists() else []

    def seen(self, session_id: str) -> Path:
        """The folder where the agent of ``session_id`` recorded what it saw."""
        return self.out / f"session-{session_id}"


def wait_until(predicate: Callable[[], Any], timeout: float = DEADLINE_S, what: str = "condition",
               proc: Proc | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.popen.poll() is not None:
            value = predicate()
            if value:
                return value
            raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}) before {what}\n{proc.output()}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f"\n{proc.output()}" if proc else ""))
        time.sleep(0.02)


def state_of(fake: FakePlatform, sid: str) -> str:
    return str(fake.session(sid)["state"])


def environ(path: Path) -> dict[str, str]:
    """A ``/proc/<pid>/environ`` dump as a dict."""
    items = [e.split("=", 1) for e in path.read_bytes().decode(errors="replace").split("\0") if "=" in e]
    return dict(items)
