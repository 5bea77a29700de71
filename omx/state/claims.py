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
import itertools
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omx.clock import iso
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
from omx.state import names
from omx.state.base import BUCKET_LEN, key_task_id, lease_end_ms, migrate_ready
from omx.state.locks import locked, try_locked
from omx.state.paths import TeamPaths
from omx.state.tasks import TaskOps

Candidate = tuple[Path, str, str]  # (index dir, marker name, task id)

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

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task.to_dict(), "claimToken": self.token}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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
            old = self._load_task(p, tid)
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
            owner=worker, token_sha256=hash_token(token), leased_until=iso(now_ms + cfg.lease_ms),
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
        self._emit(p, "task_claimed", worker=worker, task_id=tid, data=data)
        return ClaimResult(new, token)

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
        self.require_member(cfg, worker)
        now_ms = self.clock.now_ms()
        ready: Iterable[Candidate] = self._ready_candidates(p)
        n = len(cfg.workers)
        if n > 1 and time.monotonic() < self._spread_until.get(p.team, 0.0):
            ready = _spread(ready, cfg.worker_names().index(worker), n, SPREAD_PER_WORKER * n)
        busy: list[Candidate] = []
        lost = False
        try:
            for cand in itertools.chain(self._abandoned(p, now_ms), ready):
                d, name, tid = cand
                if d is not p.claimed:
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
                        result = self._claim_or_heal(p, cfg, cand, worker, pid)
                if not got:
                    lost = True
                    busy.append(cand)
                    continue
                if result is not None:
                    return result
            for cand in busy:
                with locked(p.task_lock_file(cand[2])):
                    result = self._claim_or_heal(p, cfg, cand, worker, pid)
                if result is not None:
                    return result
            return None
        finally:
            if lost:
                self._spread_until[p.team] = time.monotonic() + SPREAD_S

    def _claim_or_heal(self, p: TeamPaths, cfg: TeamConfig, cand: Candidate, worker: str, pid: int | None
                       ) -> ClaimResult | None:
        d, name, tid = cand
        result = self._claim_locked(p, cfg, tid, worker, pid=pid, strict=False)
        if result is None:
            try:
                current: Task | None = self._load_task(p, tid)
            except (TaskNotFound, CorruptState):
                current = None
            self._heal_marker(p, d, name, current)
        return result

    def _abandoned(self, p: TeamPaths, now_ms: int) -> list[Candidate]:
        out = []
        me = os.getpid()
        for name in os.listdir(p.claimed):
            parts = name.split("~")
            if len(parts) != 4 or not parts[1].isdigit() or not parts[2].isdigit() or not parts[0].isdigit():
                continue
            until, pid, host = int(parts[1]), int(parts[2]), parts[3]
            if until <= now_ms or (pid and pid != me and host == self.host_tag and not _holder_alive(pid)):
                out.append((p.claimed, name, str(int(parts[0]))))
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
        entries = os.listdir(p.ready)
        if any(len(e) != BUCKET_LEN for e in entries):
            migrate_ready(p, entries)
            entries = os.listdir(p.ready)
        for bucket in sorted(entries):
            d = p.bucket(bucket)
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
                    yield d, name, key_task_id(name)
                except ValueError:
                    continue

    def _holder_check(self, p: TeamPaths, tid: str, worker: str, token: str, now_ms: int) -> Task:
        """The task, if ``worker`` holds it with ``token`` and the lease is live; else a refusal."""
        task = self._load_task(p, tid)
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
            claim = old.claim.replace(**{"leased_until": iso(now_ms + cfg.lease_ms)})
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
            self._emit(p, f"task_{to}", worker=worker, task_id=tid, reason=error)
        if to == "completed":
            self._promote_if_ready(p, completed=tid)
        return new

    def release_claim(
        self, team: str, task_id: str | int, worker: str, claim_token: str, *, reason: str | None = None
    ) -> Task:
        """Give a task back: ``in_progress`` → ``pending``, claimable by anyone."""
        p = self.paths(team)
        tid = names.task_id(task_id)
        _check_token(claim_token)
        with locked(p.task_lock_file(tid)):
            # A holder may give back a task even after its lease ran out, as long as nobody took it.
            _, at = self.now()
            old = self._holder_check(p, tid, worker, claim_token, 0)
            new = old.replace(**{
                "status": "pending", "claim": None, "owner": None, "version": old.version + 1, "updated_at": at,
            })
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


_STAT_FDS: dict[int, int] = {}  # pid -> open /proc/<pid>/stat of the process that had that pid when seen alive
_STAT_FDS_MAX = 64
_STAT_LOCK = threading.Lock()


def _reset_stat_lock() -> None:
    # In a forked child: a fresh lock (the parent's may have been held by another thread at the
    # fork); the inherited descriptors still name the same processes and stay usable.
    global _STAT_LOCK
    _STAT_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_stat_lock)


def _holder_alive(pid: int) -> bool:
    """:func:`omx.pids.pid_alive`, answered from a kept-open ``/proc/<pid>/stat`` while that process lives.

    claim-next checks every local holder's pid on every call (8 workers: 7 pids per claim); reading a
    descriptor kept open costs a fifth of ``kill`` + open + read + close. The descriptor belongs to the
    process it was opened for, so "running" from it means that process still has the pid; any other
    answer (gone, zombie, unreadable) is re-asked of :func:`pid_alive` afresh, which may find a new
    process with the same pid, exactly as it always would.
    """
    with _STAT_LOCK:
        fd = _STAT_FDS.pop(pid, None)
        if fd is not None:
            try:
                stat = os.pread(fd, 512, 0)
                running = stat.rsplit(b")", 1)[-1].split()[0] not in (b"Z", b"X")
            except (OSError, IndexError):
                running = False
            if running:
                _STAT_FDS[pid] = fd
                return True
            os.close(fd)
        if not pid_alive(pid):
            return False
        if len(_STAT_FDS) < _STAT_FDS_MAX:
            with contextlib.suppress(OSError):
                _STAT_FDS[pid] = os.open(f"/proc/{pid}/stat", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        return True


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
