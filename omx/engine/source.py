"""The work-source protocol: what the engine needs from whoever hands out work.

The file team (:mod:`omx.engine.filesource`) and the remote platform's session queue both implement
it, so one engine serves both. ARCHITECTURE.md names ``poll()`` and ``claim(item)`` separately; here
they are one call, :meth:`WorkSource.acquire`, because the file store's ``claim-next`` picks and claims
atomically — a remote source polls and then tries to claim candidates inside its own ``acquire``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class LeaseLost(Exception):
    """Raised by :meth:`WorkSource.renew` when the claim is gone (expired and taken, or revoked)."""


@dataclass
class Claimed:
    """One claimed unit of work.

    Attributes:
        key: the workspace key (a task id, a session id): sanitized again before it touches a path.
        title: one line, untrusted.
        variables: what the prompt template sees (``task``, ``team``, ``session``…); untrusted values.
        attempt: the source's attempt number (1 for the first claim).
        handle: the source's own claim data (token, lease…); the engine never looks inside.
        instructions: trusted extra instructions from the source (e.g. a platform's agent profile).
        workspace_key: the workspace to use instead of ``key``'s: a claim taken over from a worker on
            another host works in a worktree of its own (a shared worktree root must never put two
            hosts' agents in one checkout); ``key`` still names the work (integration, exactly once).
        previous_pid: a worker on this host whose claim on this work expired and was taken over; its
            agents may still run (a stopped worker's do), and are ended before this attempt starts.
        integration: why the previous attempt could not be integrated (a team's task sent back with a
            merge conflict or a failed verification), or None.
    """

    key: str
    title: str
    variables: dict[str, Any]
    attempt: int = 1
    handle: Any = None
    instructions: str | None = None
    lease_ms: int = 60_000
    integration: dict[str, Any] | None = None
    previous_pid: int | None = None  # the worker on this host whose expired claim this one took over
    workspace_key: str | None = None  # where to work, when not ``key`` (a takeover from another host)


@dataclass
class Activity:
    """Progress the engine reports: progress, plan, external_url, completion, failure or policy."""

    kind: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


class WorkSource(Protocol):
    """Hands out work and takes reports; every method may be called from the worker's threads."""

    name: str

    def start(self) -> None:
        """Announce the worker (startup ACK, identity, status idle)."""
        ...

    def heartbeat(self, state: str, current: str | None = None, turns: int = 0) -> None:
        """Record liveness and what the worker is doing."""
        ...

    def acquire(self, wait_ms: int) -> Claimed | None:
        """Claim the next piece of work, waiting up to ``wait_ms``; None when there is none."""
        ...

    def renew(self, claimed: Claimed) -> None:
        """Extend the lease; raise :class:`LeaseLost` when the claim is gone."""
        ...

    def emit(self, claimed: Claimed, activity: Activity) -> None:
        """Report progress (best effort: failures are logged, not raised)."""
        ...

    def complete(self, claimed: Claimed, result: dict[str, Any]) -> None:
        """Finish successfully."""
        ...

    def fail(self, claimed: Claimed, error: str, result: dict[str, Any]) -> None:
        """Finish with a failure."""
        ...

    def release(self, claimed: Claimed, reason: str, note: dict[str, Any] | None = None) -> None:
        """Give the work back, unfinished (shutdown, interrupted; ``note``: an integration problem
        for the next attempt, kept with the work)."""
        ...

    def shutdown_requested(self) -> str | None:
        """A reason when the leader (or platform) asked this worker to stop; else None."""
        ...

    def drained(self) -> bool:
        """True when there is no work left at all (for ``--until-empty``)."""
        ...

    def stop(self, reason: str) -> None:
        """The worker is leaving: acknowledge a shutdown request, mark the worker done."""
        ...
