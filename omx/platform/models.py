"""The platform's records as the worker sees them: typed views of the JSON in docs/platform-protocol.md.

Unknown fields are ignored (the platform may add some); missing optional fields take the defaults
below. Every text field that a person on the platform can write (titles, prompts, context, target
titles, errors) is untrusted: it is data for the prompt's untrusted section and nothing else.
Only :attr:`Session.instructions` (the agent profile's instructions) is trusted.

Ids are checked against :data:`ID_PATTERN` wherever they come in, because the worker puts them in
URL paths, file names and git branch names.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

#: What an id from the platform may look like (also checked before an id goes into a URL path).
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")

SESSION_STATES: tuple[str, ...] = ("queued", "pending", "active", "awaiting_input", "complete", "error", "stale",
                                   "cancelled")
ACTIVITY_KINDS: tuple[str, ...] = ("progress", "plan", "external_url", "completion", "failure", "policy")


def check_id(value: str, what: str = "id") -> str:
    """``value`` if it is a well-formed platform id; else :class:`ValueError` naming ``what``."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):  # not match(): "$" allows a final "\n"
        raise ValueError(f"{what} {value!r} is not a valid platform id (letters, digits, '.', '_', ':', '-')")
    return value


#: A ``str`` field holding a platform id (validated).
PlatformId = Annotated[str, AfterValidator(check_id)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Workspace(_Record):
    """The team space a user works in; workers, agents and sessions live in one."""

    id: str
    name: str = ""


class User(_Record):
    """``GET /api/v1/me``: who the token belongs to."""

    id: str
    name: str = ""
    email: str = ""
    workspace: Workspace
    token_kind: Literal["oauth", "api_key"] = "oauth"


class Agent(_Record):
    """A capability the platform can hand sessions to (e.g. "Codex on my machine")."""

    id: PlatformId
    name: str = ""
    workspace_id: str = ""


class Worker(_Record):
    """A registered runtime, private to the user who registered it."""

    id: PlatformId
    name: str
    agent_id: str
    workspace_id: str = ""
    owner_id: str = ""
    status: str = "offline"
    last_heartbeat_at: str | None = None
    created_at: str | None = None


class Target(_Record):
    """The item a session works on: a bug, a todo or an initiative (untrusted text)."""

    kind: str = "todo"
    id: str = ""
    title: str = ""
    url: str = ""


class PlanStep(_Record):
    """One step of the platform's plan for a session."""

    title: str = ""
    status: str = "pending"


class Session(_Record):
    """Queued work for an agent; see the module docstring for which fields are trusted."""

    id: PlatformId
    state: str  # one of SESSION_STATES; a state added by the platform later must not break the listing
    agent_id: str = ""
    workspace_id: str = ""
    title: str = ""
    prompt: str = ""
    instructions: str = ""
    context: str = ""
    target: Target = Field(default_factory=Target)
    pinned_worker_id: str | None = None
    plan: list[PlanStep] = Field(default_factory=list)
    external_url: str | None = None
    url: str | None = None
    error: str | None = None
    attempt: int = 1
    claimed_by_worker_id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class Claim(_Record):
    """A lease on one session, scoped to a workspace, an agent, a worker and the session."""

    id: PlatformId
    session_id: PlatformId
    worker_id: PlatformId
    agent_id: str = ""
    workspace_id: str = ""
    lease_ms: int = 60_000
    lease_expires_at: str | None = None
    created_at: str | None = None


class ClaimGrant(_Record):
    """``POST /sessions/{id}/claims``: the claim and the session as it now is (``active``)."""

    claim: Claim
    session: Session


class Heartbeat(_Record):
    """``POST /workers/{id}/heartbeat``'s answer."""

    worker: Worker
    server_time: str | None = None


class DeviceCode(_Record):
    """RFC 8628 device authorization response."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None = None
    expires_in: float = 900
    interval: float = 5


class TokenGrant(_Record):
    """RFC 6749 token response (device code or refresh grant)."""

    access_token: str
    token_type: str = "Bearer"
    expires_in: float | None = None
    refresh_token: str | None = None
    scope: str | None = None


def dump(model: BaseModel) -> dict[str, Any]:
    """A JSON-ready dict of ``model`` (for ``--json`` output and template variables)."""
    return model.model_dump(mode="json")
