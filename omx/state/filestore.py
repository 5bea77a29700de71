"""The embedded file store: everything under ``<root>/team/<team>/``, one JSON file per record."""

from __future__ import annotations

from typing import Any

from omx.clock import parse_iso
from omx.models import Task
from omx.pids import pid_alive
from omx.state import names
from omx.state.claims import ClaimOps, ClaimResult
from omx.state.events import EventOps
from omx.state.wakeup import wait_for


class FileStore(ClaimOps, EventOps):
    """The file store. Every public method is safe to call from many processes at once.

    >>> store = FileStore(".omx/state")                              # doctest: +SKIP
    >>> store.create_team("alpha", workers=["worker-1"])             # doctest: +SKIP
    >>> store.create_task("alpha", "write the parser")               # doctest: +SKIP
    >>> claim = store.claim_next("alpha", "worker-1")                # doctest: +SKIP
    >>> store.transition_task("alpha", claim.task.id, "worker-1", claim.token, "completed")  # doctest: +SKIP
    """

    def claim_next_wait(self, team: str, worker: str, *, wait_ms: int, pid: int | None = None) -> ClaimResult | None:
        """:meth:`claim_next`, waiting up to ``wait_ms`` for a task to become ready."""
        p = self.paths(team)
        # tasks/ too: a ready marker is made just before its task file, so a waiter woken by the marker
        # may find no file yet; the file's own write wakes it again (instead of the 1 s resync).
        return wait_for(lambda: self.claim_next(team, worker, pid=pid), [p.ready, p.claimed, p.tasks], wait_ms,
                        resync_ms=_resync_ms(self.read_config(team).lease_ms))

    def await_task(
        self, team: str, *, worker: str | None = None, task_id: str | None = None,
        statuses: list[str] | None = None, timeout_ms: int = 30_000,
    ) -> dict[str, Any] | None:
        """Block until there is work, or a task reaches a status; None on timeout.

        With ``task_id``: until that task's status is in ``statuses`` (default: completed or failed).
        Without: until a task is ready for ``worker`` (or for anyone) — it does not claim it.
        """
        p = self.paths(team)
        cfg = self.read_config(team)
        if worker is not None:
            self.require_member(cfg, worker)
        if task_id is not None:
            tid = names.task_id(task_id)
            want = set(statuses or ["completed", "failed"])

            def check_task() -> dict[str, Any] | None:
                t = self._load_task(p, tid)
                return {"task": t.to_dict()} if t.status in want else None

            self._load_task(p, tid)  # not found -> error now, not after the timeout
            return wait_for(check_task, [p.tasks], timeout_ms)

        def check_ready() -> dict[str, Any] | None:
            now_ms, _ = self.now()
            for d, _name, tid in [*self._abandoned(p, now_ms), *self._ready_candidates(p)]:
                if worker is None or d is p.claimed_s or self._looks_claimable(p, tid, worker) == "yes":
                    return {"ready": True, "task_id": tid}
            return None

        return wait_for(check_ready, [p.ready, p.claimed, p.tasks], timeout_ms, resync_ms=_resync_ms(cfg.lease_ms))

    def is_drained(self, team: str) -> bool:
        """True when no task is pending, waiting or in progress (from the marker index: no file reads)."""
        import os

        p = self.paths(team)
        if os.listdir(p.waiting) or os.listdir(p.claimed):
            return False
        return next(self._ready_candidates(p), None) is None

    def summary(self, team: str) -> dict[str, Any]:
        """Counts by status, per-worker state and heartbeat age, stale workers, blocked reasons, corrupt files."""
        p = self.paths(team)
        cfg = self._load_config(p)
        listing = self.list_tasks(team)
        now_ms, at = self.now()
        counts = dict.fromkeys(("pending", "blocked", "in_progress", "completed", "failed"), 0)
        expired: list[str] = []
        tokens: dict[str, int] = {}
        for t in listing.tasks:
            counts["blocked" if t.id in listing.blocked_by else t.status] += 1
            used = t.result.get("tokens") if isinstance(t.result, dict) else None
            if t.owner and isinstance(used, dict) and isinstance(used.get("total"), int):
                tokens[t.owner] = tokens.get(t.owner, 0) + used["total"]
            if t.status == "in_progress" and self._lease_state(t, now_ms) != "live":
                expired.append(t.id)
        workers = []
        stale = []
        for w in cfg.worker_names():
            st = self.read_status(team, w)
            hb = self.read_heartbeat(team, w)
            age = now_ms - parse_iso(hb.last_beat_at) if hb and hb.last_beat_at else None
            dead_pid = bool(hb and hb.pid and self._same_host_pid_dead(team, w, hb.pid))
            is_stale = st.state not in ("done", "failed", "unknown") and (
                age is None or age > 3 * cfg.lease_ms or dead_pid or (hb is not None and not hb.alive)
            )
            if is_stale:
                stale.append(w)
            workers.append({
                "name": w, "state": st.state, "current_task_id": st.current_task_id,
                "heartbeat_age_ms": age, "turn_count": hb.turn_count if hb else 0, "stale": is_stale,
                "tokens": tokens.get(w, 0),
            })
        blocked = [
            {"task_id": tid, "waiting_on": deps,
             "reason": "; ".join(f"task {d['id']} is {d['status'] or 'missing'}" for d in deps)}
            for tid, deps in sorted(listing.blocked_by.items(), key=lambda kv: int(kv[0]))
        ]
        return {
            "team": team, "goal": cfg.goal, "generated_at": at, "total": len(listing.tasks),
            "counts": counts, "workers": workers, "stale_workers": stale, "blocked": blocked,
            "expired_claims": expired, "corrupt": listing.corrupt, "tokens": sum(tokens.values()),
            "drained": counts["pending"] + counts["blocked"] + counts["in_progress"] == 0,
        }

    def _same_host_pid_dead(self, team: str, worker: str, pid: int) -> bool:
        ident = self.read_identity(team, worker)
        return bool(ident and ident.host == self.host and not pid_alive(pid))

    def task_view(self, team: str, task: Task) -> dict[str, Any]:
        """A task as the API shows it: the file's fields plus ``blocked_by`` for a waiting task."""
        out = task.to_dict()
        if task.status == "pending":
            unmet = self.unmet_dependencies(self.paths(team), task)
            if unmet:
                out["blocked_by"] = unmet
        return out


def _resync_ms(lease_ms: int) -> int:
    # Re-read at least this often even without file events: an expired lease makes no file event.
    return max(50, min(1_000, lease_ms // 2))
