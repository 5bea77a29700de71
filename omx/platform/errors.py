"""The remote platform's errors: one branch of omx's error tree, each with a stable ``code``.

The client (:mod:`omx.platform.client`) maps every HTTP failure onto exactly one of these, so the
worker, the commands and the JSON output never look at status codes:

=========================  ====  =================================================================
code                       exit  raised when
=========================  ====  =================================================================
``platform_unavailable``   4     5xx, a timeout or a dropped connection, after the bounded retries
``platform_auth``          1     not logged in, the login expired, or the platform refused the token
``platform_api_key``       1     an API key was configured or offered: worker operations need OAuth
``platform_forbidden``     1     the token is fine but the record is not this user's to use
``platform_not_found``     3     the worker, session or claim does not exist (or is not visible)
``platform_bad_request``   2     the platform rejected the request's content (a 400/422)
``claim_conflict``         1     another worker holds the session, or it is no longer claimable
``session_pinned``         1     the session is pinned to a different worker
``claim_lost``             1     the claim expired, was revoked, or the session was cancelled
``platform_config``        2     no platform URL, a bad local worker settings file, an unknown worker
``platform_error``         4     any other answer the worker does not expect (an unknown 4xx)
``worker_start_failed``    4     a background worker exited as it started without saying why (when it
                                 said, ``omx worker start`` reports the worker's own code and exit)
=========================  ====  =================================================================
"""

from __future__ import annotations

from typing import Any

from omx.errors import EXIT_BAD_INPUT, ClaimConflict, InvalidInput, NotFound, OmxError, Refused


class PlatformError(OmxError):
    """Raised for a platform failure that has no more specific class; the base of this module's tree."""

    code = "platform_error"


class PlatformUnavailable(PlatformError):
    """Raised when the platform answered 5xx, timed out or dropped the connection, after the retries."""

    code = "platform_unavailable"


class PlatformAuthError(Refused, PlatformError):
    """Raised when there is no usable login (none, expired, revoked) or the platform refused the token."""

    code = "platform_auth"


class ApiKeyRefused(PlatformAuthError):
    """Raised when an API key is configured or offered: worker operations accept OAuth user tokens only."""

    code = "platform_api_key"


class PlatformForbidden(Refused, PlatformError):
    """Raised when the platform refuses a record that belongs to someone else (a 403)."""

    code = "platform_forbidden"


class PlatformNotFound(NotFound, PlatformError):
    """Raised when the worker, session or claim does not exist or is not visible to this user."""

    code = "platform_not_found"


class PlatformBadRequest(InvalidInput, PlatformError):
    """Raised when the platform rejects a request's content (400 or 422)."""

    code = "platform_bad_request"


class SessionClaimConflict(ClaimConflict, PlatformError):
    """Raised when another worker holds the session, or it is not in a claimable state."""

    code = "claim_conflict"


class SessionPinned(Refused, PlatformError):
    """Raised when a session pinned to another worker is claimed."""

    code = "session_pinned"


class ClaimLost(Refused, PlatformError):
    """Raised when a claim expired, was revoked, or its session was cancelled on the platform."""

    code = "claim_lost"


class PlatformConfigError(PlatformError):
    """Raised when local platform or worker settings are missing or invalid."""

    code = "platform_config"
    exit_status = EXIT_BAD_INPUT


class WorkerStartFailed(PlatformError):
    """Raised when ``omx worker start``'s child exits at once; it carries the child's own code and exit status."""

    code = "worker_start_failed"

    def __init__(self, message: str, *, code: str | None = None, exit_status: int | None = None,
                 **details: Any) -> None:
        super().__init__(message, **details)
        if code:
            self.code = code  # the child's: an API key refused stays `platform_api_key`, exit 1
        if exit_status is not None:
            self.exit_status = exit_status


PLATFORM_ERRORS: tuple[type[PlatformError], ...] = (
    PlatformError,
    PlatformUnavailable,
    PlatformAuthError,
    ApiKeyRefused,
    PlatformForbidden,
    PlatformNotFound,
    PlatformBadRequest,
    SessionClaimConflict,
    SessionPinned,
    ClaimLost,
    PlatformConfigError,
    WorkerStartFailed,
)
