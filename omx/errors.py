"""One error tree for omx.

Every error has a stable string ``code`` that the JSON API prints and an ``exit_status`` that the
command line returns:

====  ==========================================================================
exit  meaning
====  ==========================================================================
0     ok
1     the operation was refused (claim_conflict, lease_expired, invalid_transition, ...)
2     bad input (invalid_input, unknown_operation, bad names)
3     not found (team, task, worker, message)
4     internal or environment failure (lock timeout, corrupt state, disk full, I/O error)
====  ==========================================================================
"""

from __future__ import annotations

import errno
import os
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_INTERNAL = 4


class OmxError(Exception):
    """Raised for every failure omx reports to a user; the root of the tree."""

    code: str = "internal_error"
    exit_status: int = EXIT_INTERNAL

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            out["details"] = self.details
        return out


# --- bad input (exit 2) -------------------------------------------------------------------------


class InvalidInput(OmxError):
    """Raised when input is malformed: bad JSON, a field of the wrong type, a bad name or id."""

    code = "invalid_input"
    exit_status = EXIT_BAD_INPUT


class UnknownOperation(InvalidInput):
    """Raised when ``omx team api`` is asked for an operation it does not have."""

    code = "unknown_operation"


class DependencyError(InvalidInput):
    """Raised when ``depends_on`` names a task that does not exist, or would make a cycle."""

    code = "invalid_dependency"


# --- not found (exit 3) -------------------------------------------------------------------------


class NotFound(OmxError):
    """Raised when a named thing does not exist."""

    code = "not_found"
    exit_status = EXIT_NOT_FOUND


class TeamNotFound(NotFound):
    """Raised when no team of that name exists under the state root."""

    code = "team_not_found"


class TaskNotFound(NotFound):
    """Raised when no task of that id exists in the team."""

    code = "task_not_found"


class WorkerNotFound(NotFound):
    """Raised when a worker is not a member of the team (and is not ``leader-fixed``)."""

    code = "worker_not_found"


class MessageNotFound(NotFound):
    """Raised when a mailbox message id does not exist."""

    code = "message_not_found"


# --- refused (exit 1) ---------------------------------------------------------------------------


class Refused(OmxError):
    """Raised when the state does not allow the operation right now."""

    code = "refused"
    exit_status = EXIT_REFUSED


class TeamExists(Refused):
    """Raised when creating a team whose name is taken."""

    code = "team_exists"


class ClaimConflict(Refused):
    """Raised when a task is held by another worker, or is not pending."""

    code = "claim_conflict"


class VersionConflict(Refused):
    """Raised when ``expected_version`` does not match the task's version (a stale writer)."""

    code = "version_conflict"


class LeaseExpired(Refused):
    """Raised when the claim's lease ran out, or the claim was reclaimed and the token is gone."""

    code = "lease_expired"


class InvalidToken(Refused):
    """Raised when the worker or claim token does not match the task's current claim."""

    code = "invalid_token"


class InvalidTransition(Refused):
    """Raised for a status change the task's state machine does not allow."""

    code = "invalid_transition"


class AlreadyTerminal(InvalidTransition):
    """Raised when a completed or failed task is asked to change again."""

    code = "already_terminal"


class BlockedDependency(Refused):
    """Raised when claiming a task whose dependencies are not all completed."""

    code = "blocked_dependency"


class WorkerRunning(Refused):
    """Raised when a worker identity is taken by a live process, or an action needs the team's workers stopped."""

    code = "worker_running"


class NotEmpty(Refused):
    """Raised when cleanup or shutdown would drop unfinished work and ``force`` was not given."""

    code = "not_empty"


# --- internal / environment (exit 4) ------------------------------------------------------------


class LockTimeout(OmxError, TimeoutError):
    """Raised when a state lock could not be taken within its timeout."""

    code = "lock_timeout"


class CorruptState(OmxError):
    """Raised when a state file is not valid JSON or fails validation; carries its path."""

    code = "corrupt_state"


class DiskFull(OmxError):
    """Raised when a write found no room (ENOSPC, EDQUOT, EFBIG); carries the path. The old file is left whole."""

    code = "disk_full"


#: The errnos that mean "no room for these bytes": the device, the user's quota, or the file size limit.
DISK_FULL_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(errno, n))


def disk_full(exc: OSError, path: str | None = None) -> DiskFull | None:
    """The :class:`DiskFull` that ``exc`` means (naming ``path``, else the exception's file), or None."""
    if exc.errno not in DISK_FULL_ERRNOS:
        return None
    where = path or (os.fspath(exc.filename) if exc.filename is not None else "?")
    name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    return DiskFull(f"{where}: no room to write ({name}: {exc.strerror}); nothing was changed",
                    path=str(where), errno=name)


ALL_ERRORS: tuple[type[OmxError], ...] = (
    OmxError,
    InvalidInput,
    UnknownOperation,
    DependencyError,
    NotFound,
    TeamNotFound,
    TaskNotFound,
    WorkerNotFound,
    MessageNotFound,
    Refused,
    TeamExists,
    ClaimConflict,
    VersionConflict,
    LeaseExpired,
    InvalidToken,
    InvalidTransition,
    AlreadyTerminal,
    BlockedDependency,
    WorkerRunning,
    NotEmpty,
    LockTimeout,
    CorruptState,
    DiskFull,
)

#: Every code the API may print, mapped to its exit status.
ERROR_CODES: dict[str, int] = {cls.code: cls.exit_status for cls in ALL_ERRORS}
