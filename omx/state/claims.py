"""Claims: claim-task, claim-next, renew, transition, release, reclaim-expired.

A claim is data in the task file — owner, the sha256 of a 128-bit token, a lease — never a held lock.
Every read-check-write of a task happens inside a short critical section on ``locks/task-<id>.lock``.
The token is returned once, to the claimer; the file keeps only its hash, so reading the state does
not let anyone finish somebody else's task. An expired lease (or, on this host, a holder whose pid is
gone) makes the task claimable again, and the old token is refused from then on.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib
import itertools
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from omx.errors import (
    AlreadyTerminal,
    BlockedDependency,
    ClaimConflict,
    CorruptState,
    InvalidInput,
    InvalidToken,
    InvalidTransition,
    LeaseExpired,
    TaskNotFound,
    VersionConflict,
)
from omx.models import TERMINAL, Claim, Task, TeamConfig
from omx.pids import pid_alive
from omx.state import forks, holders, names
from omx.state.base import BUCKET_LEN, lease_end_ms, lease_text, migrate_ready
from omx.state.locks import locked, try_locked
from omx.state.paths import TeamPaths
from omx.state.tasks import TaskOps


def _fast_sha256() -> Callable[[bytes], Any]:
    # CPython's own SHA-256 (``_sha256``; ``_sha2`` from 3.12): on a 32-byte token, OpenSSL's per-call
    # set-up in hashlib.sha256 costs more than the hashing. Same digest; hashlib's where neither exists.
    for name in ("_sha256", "_sha2"):
        try:
            impl: Callable[[bytes], Any] = importlib.import_module(name).sha256
        except (ImportError, AttributeError):
            continue
        return impl
    return hashlib.sha256


_sha256 = _fast_sha256()

Candidate = tuple[str, str, str]  # (index dir, marker name, task id)

#: After claim-next loses a race (a busy lock, or a task taken under its feet), the same store keeps
#: spreading its claims over the ready queue for this long (see :meth:`ClaimOps.claim_next`).
SPREAD_S = 1.0
#: How many same-priority ready tasks at the head of the queue a spreading claim-next chooses among,
#: per worker of the team (8 workers: the first 32).
SPREAD_PER_WORKER = 4


@dataclass(frozen=True)
class ClaimResult:
    """A successful claim: the task as written, and the token (shown only here, never stored)."""

    task: Task
    token: str
    #: When the claim took over an expired or orphaned one: ``previous_owner``, ``reason``, and the old
    #: holder's ``pid`` and ``host`` (so a worker on that host can end the old attempt's agents).
    took_over: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task.to_dict(), "claimToken": self.token}


def hash_token(token: str) -> str:
    digest: str = _sha256(token.encode()).hexdigest()
    return digest


class ClaimOps(TaskOps):
    """The claim protocol."""

    def _lease_state(self, task: Task, now_ms: int) -> str:
        """``live``, ``expired`` or ``orphaned`` (holder on this host is dead) for an in-progress task."""
        c = task.claim
        if c is None:
            return "expired"
        if lease_end_ms(c.leased_until) <= now_ms:
            return "expired"
        if c.pid and c.host == self.host and not pid_alive(c.pid):
            return "orphaned"
        return "live"

    def _claim_locked(
        self, p: TeamPaths, cfg: TeamConfig, tid: str, worker: str, *, pid: int | None,
        expected_version: int | None = None, strict: bool = True,
    ) -> ClaimResult | None:
        """Claim ``tid`` while holding its lock. ``strict``: raise on refusal; else return None."""
        try:
            old = self._load_task(p, tid, shared=True)  # replaced by the write below, or not handed out
        except (TaskNotFound, CorruptState):
            if strict:
                raise
            return None
        now_ms, at = self.now()
        try:
            if expected_version is not None and old.version != expected_version:
                raise VersionConflict(
                    f"task {tid} is at version {old.version}, not {expected_version}", task_id=tid, version=old.version
                )
            took_over: dict[str, Any] | None = None
            if old.status in TERMINAL:
                raise AlreadyTerminal(f"task {tid} is already {old.status}", task_id=tid, status=old.status)
            if old.status == "in_progress":
                state = self._lease_state(old, now_ms)
                if state == "live":
                    holder = old.claim.owner if old.claim else old.owner
                    raise ClaimConflict(
                        f"task {tid} is held by {holder} until {old.claim.leased_until if old.claim else '?'}",
                        task_id=tid, owner=holder,
                    )
                took_over = {"previous_owner": old.owner, "reason": state}
                if old.claim is not None and old.claim.pid:
                    took_over.update(pid=old.claim.pid, host=old.claim.host)
            elif old.status != "pending":
                raise ClaimConflict(f"task {tid} is {old.status}, not pending", task_id=tid, status=old.status)
            elif old.owner not in (None, worker):
                raise ClaimConflict(f"task {tid} is assigned to {old.owner}", task_id=tid, owner=old.owner)
            unmet = self.unmet_dependencies(p, old)
            if unmet:
                raise BlockedDependency(
                    f"task {tid} waits on " + ", ".join(f"{d['id']} ({d['status'] or 'missing'})" for d in unmet),
                    task_id=tid, blocked_by=unmet,
                )
        except (ClaimConflict, AlreadyTerminal, VersionConflict, BlockedDependency):
            if strict:
                raise
            return None
        token = secrets.token_hex(16)
        claim = Claim(
            owner=worker, token_sha256=hash_token(token), leased_until=lease_text(now_ms + cfg.lease_ms),
            claimed_at=at, pid=pid, host=self.host if pid else None,
        )
        new = old.replace(**{
            "status": "in_progress", "owner": worker, "claim": claim, "attempts": old.attempts + 1,
            "version": old.version + 1, "updated_at": at, "error": None,
        })
        self._commit(p, old, new)
        data: dict[str, Any] = {"attempt": new.attempts, "leased_until": claim.leased_until}
        if took_over:
            data["took_over"] = took_over
        self._emit(p, "task_claimed", worker=worker, task_id=tid, data=data, now=(now_ms, at))
        return ClaimResult(new, token, took_over)

    def claim_task(
        self, team: str, task_id: str | int, worker: str, *, expected_version: int | None = None,
        pid: int | None = None,
    ) -> ClaimResult:
        """Claim one task by id. ``pid`` (the worker's long-lived process) lets a dead holder be reclaimed at once."""
        p, cfg = self._team(team)
        tid = names.task_id(task_id)
        self.require_member(cfg, worker)
        with locked(p.task_lock_file(tid)):
            result = self._claim_locked(p, cfg, tid, worker, pid=pid, expected_version=expected_version)
        assert result is not None
        return result

    def claim_next(self, team: str, worker: str, *, pid: int | None = None) -> ClaimResult | None:
        """Claim the best ready task for ``worker``, or return None when there is none.

        Order: abandoned claims (expired lease, dead local holder) first, then ready tasks by
        priority (higher first) and id. Tasks pre-assigned to another worker are skipped. A task
        whose lock is busy is skipped on the first pass (someone is claiming it) and retried last.
        A marker that turns out not to match its task file is removed on the way.

        Under contention the order is relaxed within one priority. When this store's claim-next lost
        a race in the last :data:`SPREAD_S` seconds (a task's lock busy, or a task claimed by someone
        else between the listing and the look), it prefers, among the first ``SPREAD_PER_WORKER`` x
        team-size ready tasks of the head priority, those whose id modulo the team size is the
        worker's index in the team, then the next index's, and so on: eight workers then stop queueing
        for the same head task. A worker may so take a ready task of the best priority that is not the
        lowest id; never one of a lower priority while a better one is free. When nobody else is
        claiming, the order is exact.
        """
        p, cfg = self._team(team)
        roster = self._roster(p, cfg)
        slot = roster.get(worker) if type(worker) is str else None
        if slot is None:
            self.require_member(cfg, worker)  # raises: not a member (or not a name at all)
            slot = cfg.worker_names().index(worker)
        now_ms = self.clock.now_ms()
        ready: Iterable[Candidate] = self._ready_candidates(p)
        n = len(cfg.workers)
        spreading = n > 1 and time.monotonic() < self._spread_until.get(p.team, 0.0)
        if spreading:
            ready = _spread(ready, slot, n, SPREAD_PER_WORKER * n)
        busy: list[Candidate] = []
        lost = False
        try:
            for cand in itertools.chain(self._abandoned(p, now_ms), ready):
                d, name, tid = cand
                # A lock-free look first skips tasks that are someone else's without taking their lock.
                # Not while spreading: workers then take different tasks, so the look is nearly always
                # "yes" and only reads the file once more; a task taken meanwhile shows as a busy lock,
                # or as "claimed since listed" under it (``_claim_or_heal``).
                if d is not p.claimed_s and not spreading:
                    look = self._look(p, tid, worker)
                    if look == "no":
                        continue
                    if look == "held":
                        # Claimed since we listed it if its marker is gone; a marker still there is a
                        # crash's leftover (healed once the task moves on), not somebody claiming.
                        lost = lost or not os.path.exists(f"{d}/{name}")
                        continue
                with try_locked(p.task_lock_file(tid)) as got:
                    if got:
                        result, taken = self._claim_or_heal(p, cfg, cand, worker, pid)
                if not got:
                    lost = True
                    busy.append(cand)
                    continue
                if result is not None:
                    return result
                lost = lost or taken
            for cand in busy:
                with locked(p.task_lock_file(cand[2])):
                    result, _ = self._claim_or_heal(p, cfg, cand, worker, pid)
                if result is not None:
                    return result
            return None
        finally:
            if lost:
                self._spread_until[p.team] = time.monotonic() + SPREAD_S

    def _claim_or_heal(self, p: TeamPaths, cfg: TeamConfig, cand: Candidate, worker: str, pid: int | None
                       ) -> tuple[ClaimResult | None, bool]:
        """Claim ``cand`` (its lock held), or heal its marker; the flag says it was claimed since it was listed."""
        d, name, tid = cand
        result = self._claim_locked(p, cfg, tid, worker, pid=pid, strict=False)
        taken = False
        if result is None:
            try:
                current: Task | None = self._load_task(p, tid, shared=True)  # read only
            except (TaskNotFound, CorruptState):
                current = None
            # A ready marker of an in-progress task that is gone by now: its claimer removed it (a lost
            # race); one still there is a crash's leftover, which the heal below removes.
            taken = (d is not p.claimed_s and current is not None and current.status == "in_progress"
                     and not os.path.exists(f"{d}/{name}"))
            self._heal_marker(p, d, name, current)
        return result, taken

    def _abandoned(self, p: TeamPaths, now_ms: int) -> list[Candidate]:
        out = []
        me = forks.pid()
        alive: set[int] | None = None
        for name in os.listdir(p.claimed_s):
            marker = _CLAIMED.get(name) or _parse_claimed(name)
            if marker is _MALFORMED:
                continue
            until, holder, host, tid = marker
            if until > now_ms:
                if not holder or holder == me or host != self.host_tag:
                    continue
                if alive is None:
                    alive = holders.known_alive()  # one poll for every local holder in this listing
                if holder in alive:
                    continue
                if holders.ask(holder):
                    alive.add(holder)
                    continue
            out.append((p.claimed_s, name, tid))
        return sorted(out, key=lambda c: int(c[2]))

    def _looks_claimable(self, p: TeamPaths, tid: str, worker: str) -> str:
        """A lock-free look (files are replaced whole): ``yes``, ``no`` (someone else's), or ``check``.

        ``check`` means the marker may be stale (the file is not pending, or unreadable): the caller
        takes the lock and heals it. Tasks pre-assigned to another worker are skipped without a lock.
        """
        look = self._look(p, tid, worker)
        return "no" if look == "held" else look

    def _look(self, p: TeamPaths, tid: str, worker: str) -> str:
        """:meth:`_looks_claimable`, telling ``held`` (in progress, live lease: a lost race) from ``no``."""
        raw = self._raw_task(p, tid)
        if raw is None:
            return "check"
        status = raw.get("status")
        if status == "pending":
            return "yes" if raw.get("owner") in (None, worker) else "no"
        if status == "in_progress":
            # Most often a claim still dropping its own ready marker (8 workers racing for the head of
            # the queue): skip it without a lock. A lease that ended is the abandoned path's business.
            claim = raw.get("claim")
            until = claim.get("leased_until") if isinstance(claim, dict) else None
            try:
                if isinstance(until, str) and lease_end_ms(until) > self.clock.now_ms():
                    return "held"
            except ValueError:
                pass
        return "check"

    def _ready_candidates(self, p: TeamPaths) -> Iterator[Candidate]:
        # Lazy, bucket by bucket (see base.ready_bucket): a claim usually takes the first candidate,
        # so only the first non-empty bucket is listed. Empty buckets are removed on the way: rmdir
        # fails on a bucket that just got a marker, and a writer that loses the race re-creates it.
        ready = p.ready_s
        entries = os.listdir(ready)
        if not all(map(BUCKET_LEN.__eq__, map(len, entries))):  # C loops: ~40 buckets a claim
            migrate_ready(p, entries)
            entries = os.listdir(ready)
        for bucket in sorted(entries):
            d = f"{ready}/{bucket}"
            try:
                names = os.listdir(d)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not names:
                with contextlib.suppress(OSError):
                    os.rmdir(d)
                continue
            for name in sorted(names):
                try:
                    yield d, name, str(int(name.rpartition("-")[2]))  # key_task_id, inline: ~10 a claim
                except ValueError:
                    continue

    def _holder_check(self, p: TeamPaths, tid: str, worker: str, token: str, now_ms: int) -> Task:
        """The task, if ``worker`` holds it with ``token`` and the lease is live; else a refusal.

        The store's kept record (``_load_task(shared=True)``): callers write a new version of it before
        they return anything that shares its lists.
        """
        task = self._load_task(p, tid, shared=True)
        if task.status in TERMINAL:
            raise AlreadyTerminal(f"task {tid} is already {task.status}", task_id=tid, status=task.status)
        c = task.claim
        if task.status != "in_progress" or c is None:
            raise LeaseExpired(f"task {tid} is {task.status}; the claim is gone", task_id=tid)
        if c.owner != worker or not hmac.compare_digest(c.token_sha256, hash_token(token)):
            raise InvalidToken(f"worker {worker} with this token does not hold task {tid}", task_id=tid)
        if lease_end_ms(c.leased_until) <= now_ms:
            raise LeaseExpired(f"the lease on task {tid} expired at {c.leased_until}", task_id=tid)
        return task

    def renew_claim(self, team: str, task_id: str | int, worker: str, claim_token: str) -> Task:
        """Extend the lease by the team's ``lease_ms`` from now."""
        p, cfg = self._team(team)
        tid = names.task_id(task_id)
        _check_token(claim_token)
        with locked(p.task_lock_file(tid)):
            now_ms, at = self.now()
            old = self._holder_check(p, tid, worker, claim_token, now_ms)
            assert old.claim is not None
            claim = old.claim.replace(**{"leased_until": lease_text(now_ms + cfg.lease_ms)})
            new = old.replace(**{"claim": claim, "version": old.version + 1, "updated_at": at})
            self._commit(p, old, new)
            self._emit(p, "task_renewed", worker=worker, task_id=tid, data={"leased_until": claim.leased_until})
        return new

    def transition_task(
        self, team: str, task_id: str | int, worker: str, claim_token: str, to: str, *,
        result: Any = None, error: str | None = None, from_status: str | None = None,
    ) -> Task:
        """Finish a task: ``in_progress`` → ``completed`` | ``failed``, with a result or an error."""
        p = self.paths(team)
        tid = names.task_id(task_id)
        _check_token(claim_token)
        if to not in TERMINAL:
            raise InvalidTransition(f"cannot transition to {to!r}: only 'completed' or 'failed'", to=to)
        if from_status is not None and from_status != "in_progress":
            raise InvalidTransition(f"only in_progress tasks transition, not {from_status!r}", from_status=from_status)
        if error is not None and not isinstance(error, str):
            raise InvalidInput("error must be a string", field="error")
        with locked(p.task_lock_file(tid)):
            now_ms, at = self.now()
            old = self._holder_check(p, tid, worker, claim_token, now_ms)
            new = old.replace(**{
                "status": to, "claim": None, "result": result, "error": error, "completed_at": at,
                "version": old.version + 1, "updated_at": at,
            })
            self._commit(p, old, new)
            self._emit(p, f"task_{to}", worker=worker, task_id=tid, reason=error, now=(now_ms, at))
        if to == "completed":
            self._promote_if_ready(p, completed=tid)
        return new

    def release_claim(
        self, team: str, task_id: str | int, worker: str, claim_token: str, *, reason: str | None = None,
        result: Any = None,
    ) -> Task:
        """Give a task back: ``in_progress`` → ``pending``, claimable by anyone.

        ``result``: kept on the task for its next attempt (e.g. why it could not be integrated), with
        ``reason`` as its ``error`` until it is claimed again.
        """
        p = self.paths(team)
        tid = names.task_id(task_id)
        _check_token(claim_token)
        with locked(p.task_lock_file(tid)):
            # A holder may give back a task even after its lease ran out, as long as nobody took it.
            _, at = self.now()
            old = self._holder_check(p, tid, worker, claim_token, 0)
            changes: dict[str, Any] = {
                "status": "pending", "claim": None, "owner": None, "version": old.version + 1, "updated_at": at,
            }
            if result is not None:
                changes.update(result=result, error=reason)
            new = old.replace(**changes)
            self._commit(p, old, new)
            self._emit(p, "task_released", worker=worker, task_id=tid, reason=reason)
        return new

    def reclaim_expired(self, team: str) -> list[dict[str, Any]]:
        """Put every abandoned in-progress task back to pending. Returns what was reclaimed and why."""
        p = self.paths(team)
        out = []
        for d, name, tid in self._abandoned(p, self.clock.now_ms()):
            with locked(p.task_lock_file(tid)):
                try:
                    old: Task | None = self._load_task(p, tid)
                except (TaskNotFound, CorruptState):
                    old = None
                now_ms, at = self.now()
                if old is None or old.status != "in_progress" or self._lease_state(old, now_ms) == "live":
                    self._heal_marker(p, d, name, old)
                    continue
                new = old.replace(**{
                    "status": "pending", "claim": None, "owner": None, "version": old.version + 1, "updated_at": at,
                })
                self._commit(p, old, new)
                self._heal_marker(p, d, name, new)
                self._emit(p, "claim_expired", worker=old.owner, task_id=tid, reason=self._lease_state(old, now_ms))
                out.append({"task_id": tid, "previous_owner": old.owner, "reason": self._lease_state(old, now_ms)})
        return out


_MALFORMED = (0, 0, "", "")
_CLAIMED: dict[str, tuple[int, int, str, str]] = {}  # claimed marker name -> (lease end ms, pid, host, task id)


def _parse_claimed(name: str) -> tuple[int, int, str, str]:
    # claim-next reads every claimed marker on every call, and the same few names again and again.
    parts = name.split("~")
    marker = _MALFORMED
    if len(parts) == 4:
        tid, until, pid, host = parts
        if (until + pid + tid).isascii() and until.isdigit() and pid.isdigit() and tid.isdigit():
            marker = (int(until), int(pid), host, str(int(tid)))
    if len(_CLAIMED) >= 1024:
        _CLAIMED.clear()
    _CLAIMED[name] = marker
    return marker


def _spread(cands: Iterable[Candidate], slot: int, n: int, window: int) -> Iterator[Candidate]:
    """``cands`` with the first ``window`` of the head priority reordered for worker ``slot`` of ``n``.

    Within the window: ids congruent to ``slot`` modulo ``n`` first (yielded as they are met, so a
    claim that takes the first one lists no further), then ``slot + 1``'s, …, each in id order; the
    rest of the queue follows unchanged. Ready markers are named ``<prio>-<id>``.
    """
    it = iter(cands)
    others: list[Candidate] = []
    prio = None
    for seen, cand in enumerate(it, start=1):
        p = cand[1][:10]
        if prio is None:
            prio = p
        elif p != prio:
            others.sort(key=lambda c: (int(c[2]) - slot) % n)  # stable: id order within a residue
            yield from others
            yield cand
            break
        if int(cand[2]) % n == slot:
            yield cand
        else:
            others.append(cand)
        if seen >= window:
            others.sort(key=lambda c: (int(c[2]) - slot) % n)
            yield from others
            break
    else:
        others.sort(key=lambda c: (int(c[2]) - slot) % n)
        yield from others
    yield from it


def _check_token(token: object) -> None:
    if not isinstance(token, str) or not token or len(token) > 200:
        raise InvalidInput("claim_token must be a non-empty string", field="claim_token")
