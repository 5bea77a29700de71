"""The platform's session queue as a :class:`~omx.engine.source.WorkSource` — the file team's sibling.

``acquire`` polls the queued sessions this worker may see (every ``polling.pollIntervalMs``, at once
after a claim) and claims the first it can: sessions pinned to another worker are skipped, and a
session another worker claimed first (409) is passed over for the next. ``renew`` extends the claim's
lease (the runner calls it every lease/3; a lost claim stops the run). ``emit`` posts activities;
``complete``/``fail``/``release`` end the claim. Errors never escape ``acquire``: the platform being
down means waiting (with backoff) and trying again; a login that stopped working ends the worker
through :meth:`shutdown_requested`. An outage is said twice — when the first call gives up, and when
the platform answers again — however many calls fail in between (each one is logged at INFO, for -v).

When the final report cannot be delivered (the platform keeps failing after the patient retries),
the worker gives up loudly: it tries to report a failure instead, tells the user, and keeps the
result in ``run/worker-<id>-undelivered.jsonl``; the platform marks the session stale when its lease
runs out.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omx.engine.source import Activity, Claimed, LeaseLost
from omx.platform.client import QUICK, PlatformClient, RetryPolicy, after, clean, duration
from omx.platform.config import WorkerSettings, run_dir
from omx.platform.errors import (
    ClaimLost,
    PlatformAuthError,
    PlatformError,
    PlatformNotFound,
    PlatformUnavailable,
    SessionClaimConflict,
    SessionPinned,
)
from omx.platform.models import ClaimGrant, Session
from omx.platform.runstate import StateFile
from omx.platform.template import session_variables
from omx.state import atomic, modes

log = logging.getLogger("omx.platform")
_URL = re.compile(r"https?://[^\s<>\"'`)\]]+")
MAX_POLL_BACKOFF_S = 60.0


@dataclass
class PlatformHandle:
    """What :attr:`Claimed.handle` holds for a platform session."""

    claim_id: str
    session: Session


class PlatformSource:
    """One registered worker's view of the platform queue.

    Args:
        client: a logged-in :class:`PlatformClient`.
        settings: this worker's local settings.
        poll_interval_ms: how often to poll the queue (``polling.pollIntervalMs``).
        lease_ms: the lease asked for each claim (renewed every lease/3).
        only_session: claim this one session and nothing else (``omx worker run <id>``).
        say: where progress lines for a person go (the terminal or the log).
    """

    def __init__(self, client: PlatformClient, settings: WorkerSettings, *, poll_interval_ms: int = 30_000,
                 lease_ms: int = 60_000, only_session: str | None = None,
                 say: Callable[[str], None] | None = None, runtime_policy: dict[str, Any] | None = None,
                 state: StateFile | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.settings = settings
        self.worker_id = settings.id
        self.name = f"platform/{settings.name}"
        self.lease_ms = lease_ms
        self.poll_s = poll_interval_ms / 1000
        self.only_session = only_session
        self.say = say or (lambda line: log.info("%s", line))
        self.policy = runtime_policy or {}
        self.state = state or StateFile(settings.id)
        self.clock = clock
        self.interrupt = threading.Event()  # the Worker's: set on SIGTERM/SIGINT, ends idle waits at once
        self.outcomes: dict[str, str] = {}
        self._current: dict[str, Claimed] = {}
        self._lock = threading.Lock()
        self._next_poll = 0.0
        self._failures = 0
        self._fatal: str | None = None
        self._taken = False
        self._down = False  # an outage was said and its end was not
        client.on_recovery = lambda seconds: self._back(f"after {duration(seconds)}")

    # --- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Say hello to the platform; an auth problem here stops the worker before it claims anything."""
        self.state.update(state="idle")
        try:
            self.client.heartbeat(self.worker_id, "idle", [], retry=QUICK)
            self.state.update(last_platform_ok_at=_now_iso())
        except PlatformUnavailable as exc:
            self._outage(f"the platform is not answering yet ({exc.message}); will keep trying")
        except PlatformNotFound:
            raise PlatformNotFound(f"worker {self.worker_id} does not exist on the platform for this user (deleted, "
                                   "or registered by someone else): `omx worker create` registers a new one") from None
        if self.only_session is None:
            self.say(f"watching as {self.settings.name} ({self.worker_id}) for {self.settings.repo}, polling every "
                     f"{self.poll_s:g}s; Ctrl-C stops (a running session is released, its worktree kept)")

    def heartbeat(self, state: str, current: str | None = None, turns: int = 0) -> None:
        """Tell the platform this worker is alive and which sessions it runs."""
        with self._lock:
            sessions = [c.handle.session.id for c in self._current.values()]
        try:
            self.client.heartbeat(self.worker_id, "working" if sessions else "idle", sessions, retry=QUICK)
        except (PlatformAuthError, PlatformNotFound) as exc:
            self._stop_for(exc)
            raise
        except PlatformError as exc:
            self.state.update(last_error=exc.message)
            if isinstance(exc, PlatformUnavailable):
                self._outage(f"the platform is not answering ({exc.message}); the worker keeps trying")
            raise
        self.state.update(last_platform_ok_at=_now_iso())

    def set_status(self, state: str, current: str | None = None) -> None:
        """Record the engine's idle/working state locally (the heartbeat carries it to the platform)."""
        self.state.update(state=state)

    def shutdown_requested(self) -> str | None:
        """Why the worker must stop (a login that stopped working, a deleted worker), else None."""
        return self._fatal

    def drained(self) -> bool:
        """True after ``omx worker run``'s one session is done."""
        return self.only_session is not None and self._taken and not self._current

    def stop(self, reason: str) -> None:
        """Say goodbye (status offline), close the client, record the final state."""
        self.state.update(state="stopping")
        try:
            self.client.heartbeat(self.worker_id, "offline", [], retry=RetryPolicy(attempts=1))
        except PlatformError as exc:
            log.info("could not say goodbye to the platform: %s", exc.message)
        finally:
            self.client.close()
            self.state.update(state="stopped", current=[], stop_reason=reason)

    # --- claiming -------------------------------------------------------------------------------

    def acquire(self, wait_ms: int) -> Claimed | None:
        """Poll when due and claim the first claimable session; None when there is none (never raises
        for platform trouble: it backs off instead)."""
        if self.only_session is not None:
            return self._acquire_one(wait_ms)
        now = self.clock()
        if self._fatal is not None:
            self.interrupt.wait(wait_ms / 1000)
            return None
        if now < self._next_poll:
            self.interrupt.wait(min(wait_ms / 1000, self._next_poll - now))
            return None
        try:
            sessions = self.client.list_queued_sessions(self.worker_id, cancel=self.interrupt, retry=QUICK)
        except (PlatformAuthError, PlatformNotFound) as exc:
            self._stop_for(exc)
            return None
        except PlatformError as exc:
            self._poll_failed(exc)
            return None
        if self._failures:
            self._back(f"after {self._failures} failed poll(s)")
            self._failures = 0
        self.state.update(last_platform_ok_at=_now_iso())
        self._next_poll = self.clock() + self.poll_s
        for session in sessions:
            if session.pinned_worker_id not in (None, self.worker_id) or session.state != "queued":
                continue  # the platform should not list it; never claim another worker's pinned session
            try:
                grant = self.client.claim_session(session.id, self.worker_id, lease_ms=self.lease_ms, retry=QUICK)
            except (SessionClaimConflict, SessionPinned, ClaimLost, PlatformNotFound) as exc:
                log.info("session %s: not claimed (%s)", session.id, exc.message)
                continue
            except PlatformError as exc:
                self._poll_failed(exc)
                return None
            self._next_poll = 0.0  # with room for more runs, look again at once
            return self._claimed(grant)
        return None

    def _acquire_one(self, wait_ms: int) -> Claimed | None:
        if self._taken:
            self.interrupt.wait(wait_ms / 1000)
            return None
        self._taken = True
        assert self.only_session is not None
        return self._claimed(self.client.claim_session(self.only_session, self.worker_id, lease_ms=self.lease_ms))

    def _claimed(self, grant: ClaimGrant) -> Claimed:
        s = grant.session
        session_vars = session_variables(s, worker_name=self.settings.name,
                                         local_instructions=self.settings.instructions)
        variables: dict[str, Any] = {"session": session_vars, "worker": self.settings.name}
        claimed = Claimed(key=f"session-{s.id}", title=s.title or s.id, variables=variables, attempt=s.attempt,
                          handle=PlatformHandle(grant.claim.id, s),
                          instructions=session_vars["instructions"] or None, lease_ms=grant.claim.lease_ms)
        with self._lock:
            self._current[s.id] = claimed
            current = sorted(self._current)
        self.state.update(state="working", current=current)
        self.say(f"claimed {s.id} {s.title!r} (attempt {s.attempt}{', pinned here' if s.pinned_worker_id else ''})")
        steps = ["prepare the worktree", "run the hooks", "run the agent", "commit the changes", "report"]
        self.emit(claimed, Activity("plan", "; ".join(steps), {"steps": steps}))
        self.emit(claimed, Activity("policy", _describe(self.policy), dict(self.policy)))
        return claimed

    # --- while it runs --------------------------------------------------------------------------

    def renew(self, claimed: Claimed) -> None:
        """Extend the claim's lease; :class:`LeaseLost` when the platform says the claim is gone."""
        h: PlatformHandle = claimed.handle
        budget = RetryPolicy(attempts=4, base_s=0.2, cap_s=2.0, budget_s=claimed.lease_ms / 4000)
        try:
            self.client.renew_claim(h.claim_id, lease_ms=claimed.lease_ms, retry=budget)
        except (ClaimLost, PlatformNotFound, PlatformAuthError) as exc:
            if isinstance(exc, PlatformAuthError):
                self._stop_for(exc)
            self._finished(claimed, "lost", f"the claim is gone ({exc.message}); the run is stopped, "
                           "its worktree kept")
            raise LeaseLost(exc.message) from None
        except PlatformUnavailable as exc:  # retried at the next renewal, while the lease lasts
            self._outage(f"the platform is not answering ({exc.message}); the worker keeps renewing the claim")
            raise

    def emit(self, claimed: Claimed, activity: Activity) -> None:
        """Post an activity (best effort); a completion's URLs also become ``external_url`` activities."""
        h: PlatformHandle = claimed.handle
        if activity.kind in ("progress", "failure"):
            self.say(f"{h.session.id}: {activity.text}")
        try:
            self.client.post_activity(h.claim_id, activity.kind, activity.text[:4000], activity.data, retry=QUICK)
            if activity.kind == "completion":
                for url in list(dict.fromkeys(_URL.findall(activity.text)))[:5]:
                    self.client.post_activity(h.claim_id, "external_url", url, {"url": url}, retry=QUICK)
        except (ClaimLost, PlatformNotFound) as exc:
            log.info("%s: activity not recorded: %s", h.session.id, exc.message)
        except PlatformUnavailable as exc:
            log.info("%s: activity not recorded: %s", h.session.id, exc.message)
            self._outage(f"the platform is not answering ({exc.message}); the worker keeps trying")
        except PlatformError as exc:
            log.warning("%s: activity not recorded: %s", h.session.id, exc.message)

    # --- the end --------------------------------------------------------------------------------

    def complete(self, claimed: Claimed, result: dict[str, Any]) -> None:
        """Report success; if that cannot be delivered, give up loudly (see the module docstring)."""
        h: PlatformHandle = claimed.handle
        summary = str(result.get("summary") or "")
        try:
            self.client.complete_claim(h.claim_id, summary[:8000], _result(result), retry=self.client.retry)
        except PlatformUnavailable as exc:
            self._give_up(claimed, "completed", result, exc)
        except PlatformError as exc:
            self._finished(claimed, "lost", f"completed, but the platform refused the report: {exc.message}")
            raise
        self._finished(claimed, "completed", f"completed in {_secs(result)}{_where(result)}")

    def fail(self, claimed: Claimed, error: str, result: dict[str, Any]) -> None:
        """Report failure; if that cannot be delivered, give up loudly."""
        h: PlatformHandle = claimed.handle
        try:
            self.client.fail_claim(h.claim_id, error[:4000], _result(result), retry=self.client.retry)
        except PlatformUnavailable as exc:
            self._give_up(claimed, "failed", {**result, "error": error}, exc)
        except PlatformError as exc:
            self._finished(claimed, "lost", f"failed, and the platform refused the report: {exc.message}")
            raise
        self._finished(claimed, "failed", f"failed: {error}")

    def release(self, claimed: Claimed, reason: str, note: dict[str, Any] | None = None) -> None:
        """Give the session back unfinished (it is queued again); the worktree stays.

        ``note`` (an integration problem) never comes: platform sessions stay one branch each."""
        h: PlatformHandle = claimed.handle
        try:
            self.client.release_claim(h.claim_id, reason[:500], retry=RetryPolicy(attempts=4, cap_s=2.0))
            said = f"released ({reason}); the worktree is kept"
        except PlatformError as exc:
            said = (f"could not release the claim ({exc.message}); the platform will mark the session stale "
                    "when its lease runs out")
        self._finished(claimed, "released", said)

    def _finished(self, claimed: Claimed, outcome: str, note: str) -> None:
        h: PlatformHandle = claimed.handle
        with self._lock:
            self._current.pop(h.session.id, None)
            current = sorted(self._current)
        self.outcomes[h.session.id] = note
        self.state.count(outcome)
        self.state.update(state="working" if current else "idle", current=current)
        self.say(f"{h.session.id}: {note}")

    def _give_up(self, claimed: Claimed, outcome: str, result: dict[str, Any], exc: PlatformError) -> None:
        """The final report did not get through: try a failure report, keep the result, say so, raise."""
        h: PlatformHandle = claimed.handle
        told = False
        if outcome == "completed":
            try:
                self.client.fail_claim(h.claim_id, f"the run completed but its completion could not be reported: "
                                       f"{exc.message}", _result(result), retry=QUICK)
                told = True
            except PlatformError:
                pass
        path = run_dir() / f"worker-{self.worker_id}-undelivered.jsonl"
        line = json.dumps({"session_id": h.session.id, "claim_id": h.claim_id, "outcome": outcome,
                           "result": _result(result), "error": exc.message, "at": _now_iso()}) + "\n"
        fd = modes.create_file(path, os.O_WRONLY | os.O_APPEND)  # a result: private, whatever the umask
        try:
            atomic.write_all(fd, line.encode(), str(path))  # one whole line or DiskFull
        finally:
            os.close(fd)
        what = "reported a failure instead" if told else f"the result is kept in {path}"
        msg = f"{outcome}, but the platform could not be told ({exc.message}); gave up: {what}"
        self.state.update(last_error=msg)
        self._finished(claimed, "lost", msg)
        raise PlatformUnavailable(f"{h.session.id}: {msg}") from None

    def _poll_failed(self, exc: PlatformError) -> None:
        self._failures += 1
        delay = min(MAX_POLL_BACKOFF_S, max(self.poll_s, self.poll_s * 2 ** (self._failures - 1)))
        delay = delay / 2 + random.uniform(0, delay / 2) if self._failures > 1 else self.poll_s
        self._next_poll = self.clock() + delay
        self.state.update(last_error=exc.message)
        self._outage(f"polling failed ({exc.message}); trying again {after(delay)}")
        log.info("poll %d failed (%s); next poll %s", self._failures, exc.message, after(delay))

    def _outage(self, line: str) -> None:
        """Say that the platform stopped answering — once per outage."""
        with self._lock:
            if self._down:
                return
            self._down = True
        self.say(line)

    def _back(self, detail: str) -> None:
        """Say that the platform answers again, if an outage was said."""
        with self._lock:
            if not self._down:
                return
            self._down = False
        self.say(f"the platform answers again ({detail})")

    def _stop_for(self, exc: PlatformError) -> None:
        if self._fatal is None:
            self._fatal = f"{exc.message} [{exc.code}]"
            self.say(f"stopping: {self._fatal}")


def _result(result: dict[str, Any]) -> dict[str, Any]:
    keep = ("branch", "commit", "unfinished_commit", "tokens", "attempts", "duration_ms", "thread_id", "workspace")
    return {k: result[k] for k in keep if k in result}


def _secs(result: dict[str, Any]) -> str:
    ms = result.get("duration_ms")
    return f"{ms / 1000:.1f}s" if isinstance(ms, int) else "?"


def _where(result: dict[str, Any]) -> str:
    commit = result.get("commit")
    return f" — branch {result.get('branch')}" + (f", commit {str(commit)[:10]}" if commit else ", no changes")


def _describe(policy: dict[str, Any]) -> str:
    return ", ".join(f"{k}={clean(v, 80)}" for k, v in policy.items()) or "default policy"


def _now_iso() -> str:
    from omx.clock import iso

    return iso(time.time_ns() // 1_000_000)
