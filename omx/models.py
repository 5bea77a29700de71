"""Pydantic models of every file omx keeps on disk.

Names follow oh-my-codex so that its users' scripts keep working. State files allow unknown fields
(``extra="allow"``): a newer omx may add fields, and an older one must not drop them on rewrite.
Every model uses ``defer_build`` so that ``omx team api`` builds only the validators it touches —
the CLI's start-up time is a measured goal (bench/cli_latency.py).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskStatus = Literal["pending", "blocked", "in_progress", "completed", "failed"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed"})
WorkerState = Literal["idle", "working", "blocked", "done", "failed", "draining", "unknown"]

SCHEMA_VERSION = "1.0"


class StateModel(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True, validate_assignment=False)


class WorkerInfo(StateModel):
    name: str
    index: int = 0
    role: str | None = None


class TeamConfig(StateModel):
    """``config.json``: the team's identity and settings."""

    schema_version: str = SCHEMA_VERSION
    name: str
    goal: str = ""
    workers: list[WorkerInfo] = Field(default_factory=list)
    lease_ms: int = Field(default=60_000, ge=1)
    created_at: str
    next_task_id: int = Field(default=1, ge=1)

    def worker_names(self) -> list[str]:
        return [w.name for w in self.workers]


class Claim(StateModel):
    """The claim inside a task file. Holds the token's sha256 only, never the token."""

    owner: str
    token_sha256: str
    leased_until: str
    claimed_at: str
    pid: int | None = None
    host: str | None = None


class Task(StateModel):
    """``tasks/task-<id>.json``: one task, the source of truth for its status and claim."""

    id: str
    subject: str
    description: str = ""
    status: TaskStatus = "pending"
    created_at: str
    updated_at: str
    version: int = Field(default=1, ge=1)
    owner: str | None = None
    claim: Claim | None = None
    depends_on: list[str] = Field(default_factory=list)
    priority: int = 0
    role: str | None = None
    files: list[str] = Field(default_factory=list)
    result: Any = None
    error: str | None = None
    attempts: int = 0
    completed_at: str | None = None


class Message(StateModel):
    """``mailbox/<worker>/<message_id>.json``: one message, written once by temp file + rename."""

    message_id: str
    from_worker: str
    to_worker: str
    body: str
    created_at: str
    delivered_at: str | None = None
    notified_at: str | None = None


class WorkerIdentity(StateModel):
    name: str
    team: str
    index: int = 0
    role: str | None = None
    pid: int | None = None
    host: str | None = None
    worktree: str | None = None
    started_at: str | None = None


class WorkerStatus(StateModel):
    state: WorkerState = "unknown"
    current_task_id: str | None = None
    reason: str | None = None
    updated_at: str | None = None


class Heartbeat(StateModel):
    pid: int | None = None
    last_beat_at: str | None = None
    turn_count: int = 0
    alive: bool = True


class ShutdownRequest(StateModel):
    requested_by: str
    requested_at: str
    reason: str | None = None


class ShutdownAck(StateModel):
    worker: str
    status: Literal["accept", "reject"] = "accept"
    reason: str | None = None
    updated_at: str


class Event(StateModel):
    """One line of ``events/events.ndjson``."""

    event_id: str
    type: str
    team: str
    created_at: str
    worker: str | None = None
    task_id: str | None = None
    message_id: str | None = None
    reason: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
