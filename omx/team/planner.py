"""The Codex planner: one read-only Codex turn that answers a task list in a JSON schema.

The answer is validated by pydantic, then checked for nonsense (no tasks, too many, empty subjects,
dependencies out of range or in a cycle). Any failure raises :class:`PlannerFailed`; the leader then
warns and falls back to the heuristic.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from omx.errors import OmxError
from omx.team.plan import PlanError, PlannedTask, check_plan

MAX_PLANNED = 40

PLAN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["tasks"],
    "properties": {
        "tasks": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["subject", "description", "depends_on", "priority", "files"],
                "properties": {
                    "subject": {"type": "string", "description": "imperative, under 80 characters"},
                    "description": {"type": "string", "description": "what done looks like"},
                    "depends_on": {"type": "array", "items": {"type": "integer"},
                                   "description": "1-based positions of tasks that must finish first"},
                    "priority": {"type": "integer"},
                    "files": {"type": "array", "items": {"type": "string"}},
                },
            },
        }
    },
}

PROMPT = """You are the planner of a team of {workers} coding agents that will work in parallel on this repository,
each in its own git worktree. Split the goal below into independent, concrete tasks that can each be done and
reviewed on their own branch. Prefer fewer, meaningful tasks (at most {max_tasks}); keep tasks that touch the
same files in a dependency chain. Do not change any file: only read what you need and answer.

Answer only with JSON that matches the given schema: {{"tasks": [{{"subject", "description", "depends_on",
"priority", "files"}}]}}. depends_on lists 1-based positions of earlier tasks.

The goal (from the user):
{goal}
"""


class PlannerFailed(OmxError):
    """Raised when the Codex planner's turn fails or its answer is not a usable task list."""

    code = "planner_failed"


def codex_plan(goal: str, repo: Path, workers: int, *, runtime_settings: Any = None,
               env: dict[str, str] | None = None) -> list[PlannedTask]:
    """Ask Codex for a plan of ``goal`` in ``repo``; raise :class:`PlannerFailed` on any failure."""
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    from omx.engine.runner import agent_env
    from omx.engine.runtimes.base import RunRequest, make_runtime
    from omx.engine.settings import RuntimeSettings

    class _Task(BaseModel):
        model_config = ConfigDict(extra="forbid")
        subject: str = Field(min_length=1, max_length=200)
        description: str = Field(max_length=20_000)
        depends_on: list[int]
        priority: int = Field(ge=-1000, le=1000)
        files: list[str]

    class _Plan(BaseModel):
        model_config = ConfigDict(extra="forbid")
        tasks: list[_Task]

    base = runtime_settings or RuntimeSettings()
    update: dict[str, Any] = {"kind": "codex-app-server", "sandbox": "read-only", "approval_policy": "never",
                              "turn_timeout_ms": min(base.turn_timeout_ms, 600_000)}
    if base.kind != "codex-app-server":
        update["command"] = None  # the workers' own command is not a Codex app-server
    settings = base.model_copy(update=update)
    prompt = PROMPT.format(workers=workers, max_tasks=MAX_PLANNED, goal=goal)
    req = RunRequest(prompt=prompt, cwd=repo, env=env if env is not None else agent_env(runtime=settings),
                     settings=settings, output_schema=PLAN_SCHEMA)
    result = make_runtime(settings).run(req, lambda ev: None, threading.Event())
    if not result.ok:
        raise PlannerFailed(f"the planning turn {result.status}: {result.error or 'no error given'}")
    try:
        plan = _Plan.model_validate(json.loads(result.summary or ""))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise PlannerFailed(f"the planner's answer is not a task list: {str(exc).splitlines()[0][:300]}") from None
    if not plan.tasks or len(plan.tasks) > MAX_PLANNED:
        raise PlannerFailed(f"the planner answered {len(plan.tasks)} tasks (want 1..{MAX_PLANNED})")
    tasks = [PlannedTask(subject=t.subject.strip(), description=t.description.strip() or t.subject.strip(),
                         depends_on=sorted(set(t.depends_on)), priority=t.priority, files=t.files)
             for t in plan.tasks]
    if any(not t.subject for t in tasks):
        raise PlannerFailed("the planner answered a task without a subject")
    try:
        check_plan(tasks, "the planner's answer")
    except PlanError as exc:
        raise PlannerFailed(exc.message) from None
    return tasks
