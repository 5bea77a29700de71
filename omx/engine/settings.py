"""Resolved worker settings: the typed form of WORKFLOW.md's front matter.

Keys are camelCase on disk (aliases); attributes are snake_case in code. OpenAI Symphony's snake_case
keys are mapped onto these by ``omx.engine.workflow`` before validation. Defaults are the ones in
ARCHITECTURE.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ApprovalPolicy = Literal["untrusted", "on-request", "on-failure", "never"]
Sandbox = Literal["read-only", "workspace-write", "danger-full-access"]


class _Section(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid", defer_build=True)


class AgentSettings(_Section):
    max_concurrent_agents: int = Field(1, alias="maxConcurrentAgents", ge=1, le=64)
    max_retry_attempts: int = Field(0, alias="maxRetryAttempts", ge=0, le=100)
    max_retry_backoff_ms: int = Field(300_000, alias="maxRetryBackoffMs", ge=0)
    retry_base_ms: int = Field(1_000, alias="retryBaseMs", ge=0)


class PollingSettings(_Section):
    poll_interval_ms: int = Field(30_000, alias="pollIntervalMs", ge=10)


class WorktreeSettings(_Section):
    mode: Literal["task", "branch", "repository"] = "task"
    root: str = "~/.omx/worktrees"
    base_ref: str | None = Field(None, alias="baseRef")


class RuntimeSettings(_Section):
    kind: Literal["codex-app-server", "codex-exec", "command"] = "codex-app-server"
    command: list[str] | None = None
    approval_policy: ApprovalPolicy | dict[str, Any] = Field("never", alias="approvalPolicy")
    sandbox: Sandbox = "workspace-write"
    model: str | None = None
    turn_timeout_ms: int = Field(3_600_000, alias="turnTimeoutMs", ge=1)
    stall_timeout_ms: int = Field(300_000, alias="stallTimeoutMs", ge=0)  # 0 disables
    read_timeout_ms: int = Field(10_000, alias="readTimeoutMs", ge=1)


class HookSettings(_Section):
    after_create: str | None = Field(None, alias="afterCreate")
    before_run: str | None = Field(None, alias="beforeRun")
    after_run: str | None = Field(None, alias="afterRun")
    before_remove: str | None = Field(None, alias="beforeRemove")
    timeout_ms: int = Field(60_000, alias="timeoutMs", ge=1)


class Settings(_Section):
    """Everything WORKFLOW.md's front matter can set."""

    agent: AgentSettings = Field(default_factory=AgentSettings)
    polling: PollingSettings = Field(default_factory=PollingSettings)
    worktree: WorktreeSettings = Field(default_factory=WorktreeSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    hooks: HookSettings = Field(default_factory=HookSettings)
