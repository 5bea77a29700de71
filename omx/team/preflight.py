"""Before a team starts: can its workers run at all? Say why not, at once, with the fix.

``omx team start`` and ``omx swarm`` call :func:`preflight` before they plan or write anything. A
WORKFLOW.md that does not parse (or has a key nobody knows), an agent program that is not installed, a
Codex binary that is missing, or Codex without a model account would otherwise end as "worker-1
exited (2) … 0 completed" — or as minutes of silence while Codex retries a model it cannot reach.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from omx.engine.early import PINNED_CODEX
from omx.errors import InvalidInput

CODEX_INSTALL = f"npm install -g @openai/codex@{PINNED_CODEX}"


class PreflightFailed(InvalidInput):
    """Raised when a team cannot start: the message lists every problem found, each with its fix."""

    code = "preflight_failed"


@dataclass
class Preflight:
    """What :func:`preflight` found: ``problems`` stop the start, ``notes`` are said and the start goes on."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    codex: str | None = None  # the Codex binary the runtime (or the planner) would run
    codex_planner: bool = False  # the Codex planner can run (Codex found, with a model account)

    def raise_if_failed(self) -> None:
        if self.problems:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            raise PreflightFailed(f"the team cannot start:\n{lines}", problems=self.problems)


def preflight(repo: Path, workflow: Path | None, *, codex_planner: bool = False,
              codex_agents: bool = False) -> Preflight:
    """Check the workflow, the agent program, Codex and its model account for a team in ``repo``.

    Args:
        codex_planner: the Codex planner will run (no ``--plan``): Codex and an account are needed
            even when the workers run a ``command`` runtime.
        codex_agents: the workers are Codex sessions following ``$worker`` (``--agents codex``): Codex,
            an account and the installed skill are needed whatever the runtime says.
    """
    from omx.engine.envpolicy import model_account
    from omx.engine.runner import agent_env, check_runtime
    from omx.engine.runtimes.codex_common import find_codex
    from omx.engine.workflow import WorkflowError, load_workflow

    out = Preflight()
    try:
        wf = load_workflow(workflow, repo)
    except WorkflowError as exc:
        out.problems.append(f"{exc.message}\n    fix WORKFLOW.md (`omx workflow check` shows the settings it reads)")
        return out
    runtime = wf.settings.runtime
    env = agent_env(runtime=runtime)
    uses_codex = runtime.kind != "command" or codex_agents
    if codex_agents:
        out.problems += _skill_problems(env)
    try:
        if not codex_agents:
            check_runtime(runtime, env)
    except InvalidInput as exc:
        fix = (f"install it ({CODEX_INSTALL})" if uses_codex and not runtime.command
               else "install it, or fix runtime.command")
        out.problems.append(f"{exc.message}\n    {fix}")
    if not (uses_codex or codex_planner):
        return out
    program = runtime.command[0] if uses_codex and runtime.command else None
    codex = program if program and "codex" in Path(program).name else find_codex(env)
    if codex is None:
        if codex_planner and not uses_codex:
            out.notes.append(f"codex is not on PATH: the heuristic planner splits the goal ({CODEX_INSTALL} for "
                             "the Codex planner, or pass --plan FILE)")
            return out
        if not out.problems:
            out.problems.append(f"codex is not on the agent's PATH\n    install it: {CODEX_INSTALL}")
        return out
    out.codex = codex
    version = _codex_version(codex)
    if version is None:
        out.problems.append(f"{codex} --version did not answer\n    reinstall it: {CODEX_INSTALL}")
        return out
    if version != PINNED_CODEX:
        out.notes.append(f"codex {version} at {codex}: omx is tested with {PINNED_CODEX} ({CODEX_INSTALL})")
    ok, detail = model_account(env, runtime.command if uses_codex else None)
    if not ok:
        if codex_planner and not uses_codex:
            out.notes.append(f"{detail}; the heuristic planner splits the goal")
        else:
            out.problems.append(detail)
    out.codex_planner = ok
    return out


def _skill_problems(env: dict[str, str]) -> list[str]:
    """``--agents codex``: the ``$worker`` skill must be installed, and be this omx's."""
    from omx import setup
    from omx.engine.envpolicy import codex_home

    installed = Path(codex_home(env)) / "skills" / "worker" / "SKILL.md"
    ours = setup.skills_source() / "worker" / "SKILL.md"
    try:
        if installed.read_bytes() == ours.read_bytes():
            return []
        what = "is not this omx's version"
    except OSError:
        what = "is not installed"
    return [f"--agents codex: the $worker skill {what} ({installed})\n    run: omx setup"]


def _codex_version(codex: str) -> str | None:
    try:
        out = subprocess.run([codex, "--version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.stdout.split()
    return words[-1] if out.returncode == 0 and words else None
