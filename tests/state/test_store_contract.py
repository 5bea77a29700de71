"""The store contract: one suite that every store must pass (the file store now; others later).

Each test states a rule a user relies on. The suite runs against ``make_store``; a new store joins by
adding itself to ``STORES``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from omx import errors
from omx.clock import FakeClock
from omx.state.base import ready_marker, sort_key
from omx.state.filestore import FileStore

STORES: dict[str, Callable[[Path, FakeClock], FileStore]] = {"file": lambda root, clock: FileStore(root, clock=clock)}


@pytest.fixture(params=sorted(STORES))
def s(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> FileStore:
    store = STORES[request.param](tmp_path / "state", clock)
    store.create_team("alpha", goal="g", workers=["worker-1", "worker-2"], lease_ms=1_000)
    return store


T = "alpha"


class TestTeams:
    def test_create_read_list(self, s: FileStore) -> None:
        s.create_team("beta", workers=["w1"], lease_ms=5)
        assert s.list_teams() == ["alpha", "beta"]
        cfg = s.read_config("beta")
        assert (cfg.name, cfg.worker_names(), cfg.lease_ms, cfg.next_task_id) == ("beta", ["w1"], 5, 1)

    def test_duplicate_team_refused(self, s: FileStore) -> None:
        with pytest.raises(errors.TeamExists):
            s.create_team("alpha")

    @pytest.mark.parametrize("name", ["../x", "", "A", "-x", "a" * 31, "a\x00b", "a/b", "a b", ".", "é"])
    def test_bad_team_names(self, s: FileStore, name: str) -> None:
        with pytest.raises(errors.InvalidInput):
            s.create_team(name)
        with pytest.raises(errors.InvalidInput):
            s.read_config(name)

    @pytest.mark.parametrize("name", ["../x", "", "W", "a" * 65, "a\x00", "leader-fixed"])
    def test_bad_worker_names(self, s: FileStore, name: str) -> None:
        with pytest.raises(errors.InvalidInput):
            s.create_team("gamma", workers=[name])

    def test_unknown_team(self, s: FileStore) -> None:
        with pytest.raises(errors.TeamNotFound):
            s.create_task("nope", "x")


class TestTasks:
    def test_ids_are_sequential_and_never_reused(self, s: FileStore) -> None:
        ids = [s.create_task(T, f"t{i}").id for i in range(5)]
        assert ids == ["1", "2", "3", "4", "5"]
        s.cleanup(T, force=True)
        s.create_team(T, workers=["worker-1"])
        assert s.create_task(T, "again").id == "1"  # a new team starts over; within a team ids only grow
        assert s.read_config(T).next_task_id == 2

    def test_read_accepts_id_forms(self, s: FileStore) -> None:
        s.create_task(T, "x")
        assert s.read_task(T, "task-1").id == s.read_task(T, 1).id == s.read_task(T, "1").id == "1"

    def test_list_filters(self, s: FileStore) -> None:
        a = s.create_task(T, "a")
        s.create_task(T, "b", owner="worker-2")
        s.claim_task(T, a.id, "worker-1")
        assert [t.id for t in s.list_tasks(T, status="in_progress").tasks] == ["1"]
        assert [t.id for t in s.list_tasks(T, owner="worker-2").tasks] == ["2"]
        assert [t.id for t in s.list_tasks(T, status="pending").tasks] == ["2"]

    def test_update_changes_metadata_only(self, s: FileStore) -> None:
        t = s.create_task(T, "x")
        u = s.update_task(T, t.id, {"subject": "y", "priority": 3, "files": ["a.py"], "role": "tester"})
        assert (u.subject, u.priority, u.files, u.role, u.version) == ("y", 3, ["a.py"], "tester", 2)
        for field in ("status", "owner", "claim", "version", "bogus"):
            with pytest.raises(errors.InvalidInput, match=field):
                s.update_task(T, t.id, {field: "completed"})
        with pytest.raises(errors.VersionConflict):
            s.update_task(T, t.id, {"subject": "z"}, expected_version=1)

    def test_update_rejects_wrong_types(self, s: FileStore) -> None:
        t = s.create_task(T, "x")
        with pytest.raises(errors.InvalidInput):
            s.update_task(T, t.id, {"files": "not-a-list"})
        with pytest.raises(errors.InvalidInput):
            s.update_task(T, t.id, {"priority": "high"})
        assert s.read_task(T, t.id).version == 1  # nothing written

    def test_unknown_dependency_refused(self, s: FileStore) -> None:
        with pytest.raises(errors.DependencyError):
            s.create_task(T, "x", depends_on=["42"])
        assert s.list_tasks(T).tasks == []
        assert s.read_config(T).next_task_id == 1  # a refused create allocates no id

    def test_cycles_refused(self, s: FileStore) -> None:
        a = s.create_task(T, "a")
        b = s.create_task(T, "b", depends_on=[a.id])
        c = s.create_task(T, "c", depends_on=[b.id])
        with pytest.raises(errors.DependencyError, match="cycle"):
            s.update_task(T, a.id, {"depends_on": [c.id]})
        with pytest.raises(errors.DependencyError, match="itself"):
            s.update_task(T, a.id, {"depends_on": [a.id]})
        assert s.read_task(T, a.id).depends_on == []


class TestClaims:
    def test_claim_returns_token_once_and_file_holds_only_its_hash(self, s: FileStore) -> None:
        t = s.create_task(T, "x")
        r = s.claim_task(T, t.id, "worker-1")
        raw = s.paths(T).task(t.id).read_text()
        assert r.token not in raw
        data = json.loads(raw)
        assert data["claim"]["owner"] == "worker-1" and len(data["claim"]["token_sha256"]) == 64
        for stolen in (data["claim"]["token_sha256"], data["claim"]["leased_until"], ""):
            with pytest.raises((errors.InvalidToken, errors.InvalidInput)):
                s.transition_task(T, t.id, "worker-1", stolen, "completed")

    def test_second_claim_conflicts(self, s: FileStore) -> None:
        t = s.create_task(T, "x")
        s.claim_task(T, t.id, "worker-1")
        with pytest.raises(errors.ClaimConflict):
            s.claim_task(T, t.id, "worker-2")

    def test_expected_version(self, s: FileStore) -> None:
        t = s.create_task(T, "x")
        with pytest.raises(errors.VersionConflict):
            s.claim_task(T, t.id, "worker-1", expected_version=7)
        assert s.claim_task(T, t.id, "worker-1", expected_version=1).task.version == 2

    def test_claim_by_non_member_refused(self, s: FileStore) -> None:
        t = s.create_task(T, "x")
        with pytest.raises(errors.WorkerNotFound):
            s.claim_task(T, t.id, "worker-9")

    def test_pre_assigned_task_only_for_its_worker(self, s: FileStore) -> None:
        t = s.create_task(T, "x", owner="worker-2")
        assert s.claim_next(T, "worker-1") is None
        with pytest.raises(errors.ClaimConflict, match="assigned"):
            s.claim_task(T, t.id, "worker-1")
        r = s.claim_next(T, "worker-2")
        assert r is not None and r.task.id == t.id

    def test_claim_next_order_priority_then_id(self, s: FileStore) -> None:
        s.create_task(T, "low")
        s.create_task(T, "high", priority=5)
        s.create_task(T, "low2")
        s.create_task(T, "neg", priority=-1)
        order = []
        while (r := s.claim_next(T, "worker-1")) is not None:
            order.append(r.task.subject)
        assert order == ["high", "low", "low2", "neg"]

    def test_dependencies_gate_claims(self, s: FileStore) -> None:
        a = s.create_task(T, "a")
        b = s.create_task(T, "b", depends_on=[a.id])
        with pytest.raises(errors.BlockedDependency) as exc:
            s.claim_task(T, b.id, "worker-1")
        assert exc.value.details["blocked_by"] == [{"id": "1", "status": "pending"}]
        ra = s.claim_next(T, "worker-1")
        assert ra is not None and ra.task.id == a.id
        assert s.claim_next(T, "worker-2") is None
        s.transition_task(T, a.id, "worker-1", ra.token, "completed")
        rb = s.claim_next(T, "worker-2")
        assert rb is not None and rb.task.id == b.id

    def test_failed_dependency_is_the_reason(self, s: FileStore) -> None:
        a = s.create_task(T, "a")
        b = s.create_task(T, "b", depends_on=[a.id])
        r = s.claim_task(T, a.id, "worker-1")
        s.transition_task(T, a.id, "worker-1", r.token, "failed", error="boom")
        listing = s.list_tasks(T)
        assert listing.blocked_by[b.id] == [{"id": "1", "status": "failed"}]
        summary = s.summary(T)
        assert summary["blocked"][0]["reason"] == "task 1 is failed"
        assert summary["counts"]["blocked"] == 1 and summary["counts"]["failed"] == 1
        assert s.claim_next(T, "worker-2") is None

    def test_retry_sends_a_failed_task_back_and_keeps_its_history(self, s: FileStore) -> None:
        a = s.create_task(T, "a", owner="worker-1")
        b = s.create_task(T, "b", depends_on=[a.id])
        r = s.claim_task(T, a.id, "worker-1")
        s.transition_task(T, a.id, "worker-1", r.token, "failed", result={"summary": "half"}, error="boom")
        for tid in (b.id, "99"):
            with pytest.raises((errors.InvalidTransition, errors.TaskNotFound)):
                s.retry_task(T, tid)  # pending, and missing: refused
        again = s.retry_task(T, a.id)
        assert (again.status, again.owner, again.claim, again.error, again.attempts) == ("pending", None, None, None, 1)
        assert again.result == {"previous": {"result": {"summary": "half"}, "error": "boom",
                                             "completed_at": s.read_task(T, a.id).result["previous"]["completed_at"],
                                             "owner": "worker-1"}}
        assert s.index_drift(T) == {"missing": [], "extra": []}  # its ready marker is back
        assert s.summary(T)["blocked"][0]["reason"] == "task 1 is pending"
        ev = s.read_events(T, types=["task_retried"]).events
        assert [(e.task_id, e.reason) for e in ev] == [(a.id, "boom")]
        with pytest.raises(errors.InvalidTransition):
            s.retry_task(T, a.id)  # pending now
        ra = s.claim_next(T, "worker-2")  # anyone may take it
        assert ra is not None and ra.task.id == a.id and ra.task.attempts == 2
        s.transition_task(T, a.id, "worker-2", ra.token, "completed")
        rb = s.claim_next(T, "worker-2")  # and its dependent runs
        assert rb is not None and rb.task.id == b.id

    def test_transition_rules(self, s: FileStore) -> None:
        t = s.create_task(T, "x")
        r = s.claim_task(T, t.id, "worker-1")
        with pytest.raises(errors.InvalidTransition):
            s.transition_task(T, t.id, "worker-1", r.token, "pending")
        with pytest.raises(errors.InvalidTransition):
            s.transition_task(T, t.id, "worker-1", r.token, "completed", from_status="pending")
        with pytest.raises(errors.InvalidToken):
            s.transition_task(T, t.id, "worker-2", r.token, "completed")
        done = s.transition_task(T, t.id, "worker-1", r.token, "completed", result={"summary": "ok"})
        assert (done.status, done.result, done.claim, done.version) == ("completed", {"summary": "ok"}, None, 3)
        assert done.completed_at is not None
        with pytest.raises(errors.AlreadyTerminal):
            s.transition_task(T, t.id, "worker-1", r.token, "failed")
        with pytest.raises(errors.AlreadyTerminal):
            s.claim_task(T, t.id, "worker-2")

    def test_release_returns_task_to_queue(self, s: FileStore) -> None:
        t = s.create_task(T, "x")
        r = s.claim_task(T, t.id, "worker-1")
        rel = s.release_claim(T, t.id, "worker-1", r.token, reason="blocked on review")
        assert (rel.status, rel.owner, rel.claim) == ("pending", None, None)
        again = s.claim_next(T, "worker-2")
        assert again is not None and again.task.attempts == 2
        with pytest.raises(errors.InvalidToken):
            s.release_claim(T, t.id, "worker-1", r.token)


class TestLeases:
    def test_renew_keeps_the_task(self, s: FileStore, clock: FakeClock) -> None:
        t = s.create_task(T, "x")
        r = s.claim_task(T, t.id, "worker-1")
        for _ in range(5):  # five lease periods, renewing every third of one
            for _ in range(3):
                clock.advance(333)
                s.renew_claim(T, t.id, "worker-1", r.token)
                assert s.claim_next(T, "worker-2") is None
        assert s.transition_task(T, t.id, "worker-1", r.token, "completed").status == "completed"

    def test_expired_lease_is_claimable_and_old_token_refused(self, s: FileStore, clock: FakeClock) -> None:
        t = s.create_task(T, "x")
        r = s.claim_task(T, t.id, "worker-1")
        clock.advance(999)
        with pytest.raises(errors.ClaimConflict):
            s.claim_task(T, t.id, "worker-2")
        clock.advance(2)
        with pytest.raises(errors.LeaseExpired):
            s.renew_claim(T, t.id, "worker-1", r.token)
        r2 = s.claim_next(T, "worker-2")
        assert r2 is not None and r2.task.owner == "worker-2" and r2.task.attempts == 2
        with pytest.raises(errors.InvalidToken):
            s.transition_task(T, t.id, "worker-1", r.token, "completed")
        assert s.transition_task(T, t.id, "worker-2", r2.token, "completed").status == "completed"

    def test_reclaim_expired(self, s: FileStore, clock: FakeClock) -> None:
        t = s.create_task(T, "x")
        s.claim_task(T, t.id, "worker-1")
        assert s.reclaim_expired(T) == []
        clock.advance(1_001)
        assert s.reclaim_expired(T) == [{"task_id": "1", "previous_owner": "worker-1", "reason": "expired"}]
        task = s.read_task(T, t.id)
        assert (task.status, task.owner, task.claim) == ("pending", None, None)
        assert [e.type for e in s.read_events(T).events][-1] == "claim_expired"

    def test_dead_local_holder_reclaimed_at_once(self, s: FileStore) -> None:
        import subprocess

        proc = subprocess.Popen(["true"])
        proc.wait()  # a pid that is certainly gone
        t = s.create_task(T, "x")
        s.claim_task(T, t.id, "worker-1", pid=proc.pid)
        r = s.claim_next(T, "worker-2")
        assert r is not None and r.task.id == t.id


class TestMailboxAndWorkers:
    def test_send_list_mark(self, s: FileStore) -> None:
        m = s.send_message(T, "worker-1", "leader-fixed", "ACK: worker-1 initialized")
        m2 = s.send_message(T, "leader-fixed", "worker-1", "please do task 1")
        assert [x.message_id for x in s.mailbox_list(T, "leader-fixed")] == [m.message_id]
        s.mark_delivered(T, "worker-1", m2.message_id)
        assert s.mailbox_list(T, "worker-1") == []
        assert len(s.mailbox_list(T, "worker-1", include_delivered=True)) == 1
        assert s.mark_notified(T, "worker-1", m2.message_id).notified_at is not None
        with pytest.raises(errors.MessageNotFound):
            s.mark_delivered(T, "worker-1", "0000000000000-deadbeef")

    def test_unknown_recipient_is_an_error_not_an_orphan_inbox(self, s: FileStore) -> None:
        with pytest.raises(errors.WorkerNotFound):
            s.send_message(T, "worker-1", "worker-9", "hi")
        assert not (s.paths(T).dir / "mailbox" / "worker-9").exists()

    def test_broadcast(self, s: FileStore) -> None:
        msgs = s.broadcast(T, "leader-fixed", "stop soon")
        assert sorted(m.to_worker for m in msgs) == ["worker-1", "worker-2"]

    def test_inbox_renders_assignment_and_unread(self, s: FileStore) -> None:
        s.create_task(T, "write the parser", owner="worker-1")
        s.send_message(T, "leader-fixed", "worker-1", "start with the lexer")
        inbox = (s.paths(T).worker_dir("worker-1") / "inbox.md").read_text()
        assert "task 1 [pending] write the parser" in inbox
        assert "start with the lexer" in inbox

    def test_worker_records(self, s: FileStore) -> None:
        s.write_identity(T, "worker-1", index=1, role="executor", pid=123, host="h")
        assert s.read_identity(T, "worker-1").role == "executor"  # type: ignore[union-attr]
        s.write_status(T, "worker-1", "working", current_task_id="1")
        assert s.read_status(T, "worker-1").state == "working"
        with pytest.raises(errors.InvalidInput):
            s.write_status(T, "worker-1", "dancing")
        hb = s.update_heartbeat(T, "worker-1", pid=42, turn_count=3)
        assert (hb.pid, hb.turn_count) == (42, 3)
        assert s.update_heartbeat(T, "worker-1", pid=42).turn_count == 3  # kept when not given

    def test_shutdown_handshake(self, s: FileStore, clock: FakeClock) -> None:
        assert s.read_shutdown_request(T, "worker-1") is None
        req = s.write_shutdown_request(T, "worker-1", "leader-fixed", "done")
        assert s.read_shutdown_request(T, "worker-1") == req
        clock.advance(10)
        ack = s.write_shutdown_ack(T, "worker-1", "accept")
        assert s.read_shutdown_ack(T, "worker-1", min_updated_at=req.requested_at) == ack
        clock.advance(10)
        from omx.clock import iso

        assert s.read_shutdown_ack(T, "worker-1", min_updated_at=iso(clock.now_ms())) is None


class TestEvents:
    def test_every_state_change_appends_exactly_one_event(self, s: FileStore) -> None:
        start = s.read_events(T).cursor
        t = s.create_task(T, "x")
        r = s.claim_task(T, t.id, "worker-1")
        s.renew_claim(T, t.id, "worker-1", r.token)
        s.transition_task(T, t.id, "worker-1", r.token, "completed")
        s.send_message(T, "worker-1", "leader-fixed", "done")
        s.write_status(T, "worker-1", "idle")
        types = [e.type for e in s.read_events(T, cursor=start).events]
        assert types == ["task_created", "task_claimed", "task_renewed", "task_completed", "message_sent",
                         "worker_state_changed"]

    def test_cursor_and_filters(self, s: FileStore) -> None:
        page = s.read_events(T)
        s.create_task(T, "x")
        s.create_task(T, "y")
        nxt = s.read_events(T, cursor=page.cursor)
        assert [e.task_id for e in nxt.events] == ["1", "2"]
        assert s.read_events(T, cursor=nxt.cursor).events == []
        assert [e.task_id for e in s.read_events(T, task_id="2").events] == ["2"]
        assert s.read_events(T, types=["task_created"], limit=1).events[0].task_id == "1"

    def test_partial_last_line_is_not_consumed(self, s: FileStore) -> None:
        s.create_task(T, "x")
        with open(s.paths(T).events, "ab") as f:
            f.write(b'{"event_id": "half')
        page = s.read_events(T)
        assert page.events[-1].type == "task_created"
        assert page.cursor < s.paths(T).events.stat().st_size

    def test_custom_event_validated(self, s: FileStore) -> None:
        assert s.append_event(T, "note", worker="worker-1", reason="hello").type == "note"
        with pytest.raises(errors.InvalidInput):
            s.append_event(T, "Bad Type")


class TestCorruption:
    def _corrupt(self, s: FileStore, text: str) -> Path:
        s.create_task(T, "good")
        bad = s.create_task(T, "to be broken")
        path = s.paths(T).task(bad.id)
        path.write_text(text)
        return path

    @pytest.mark.parametrize("text", ["{not json", '{"id": "2"}', '{"id": "2", "subject": 5}', ""])
    def test_corrupt_task_is_reported_skipped_and_kept(self, s: FileStore, text: str) -> None:
        path = self._corrupt(s, text)
        listing = s.list_tasks(T)
        assert [t.id for t in listing.tasks] == ["1"]
        assert listing.corrupt[0]["path"] == str(path)
        assert s.summary(T)["corrupt"][0]["path"] == str(path)
        r = s.claim_next(T, "worker-1")
        assert r is not None and r.task.id == "1"  # the good task is unaffected
        assert s.claim_next(T, "worker-2") is None  # the corrupt one is skipped
        with pytest.raises(errors.CorruptState) as exc:
            s.read_task(T, "2")
        assert str(path) in exc.value.message
        assert path.read_text() == text  # never silently overwritten
        s.transition_task(T, "1", "worker-1", r.token, "completed")


class TestIndexRepair:
    def test_rebuild_heals_a_lost_marker(self, s: FileStore) -> None:
        t = s.create_task(T, "x")
        for marker in [f for f in s.paths(T).ready.rglob("*") if f.is_file()]:
            marker.unlink()  # a crash between task write and marker write
        assert s.claim_next(T, "worker-1") is None
        assert s.rebuild_index(T) == {"added": 1, "removed": 0}
        r = s.claim_next(T, "worker-1")
        assert r is not None and r.task.id == t.id

    def test_stale_marker_is_healed_on_read(self, s: FileStore) -> None:
        t = s.create_task(T, "x")
        r = s.claim_task(T, t.id, "worker-1")
        s.transition_task(T, t.id, "worker-1", r.token, "completed")
        lie = ready_marker(s.paths(T), sort_key(s.read_task(T, t.id)))
        lie.parent.mkdir(parents=True, exist_ok=True)
        lie.touch()  # a marker that lies
        assert s.claim_next(T, "worker-2") is None
        assert [f for f in s.paths(T).ready.rglob("*") if f.is_file()] == []  # healed by the reader that found it
        assert s.is_drained(T)
        assert s.rebuild_index(T) == {"added": 0, "removed": 0}


class TestIndexDrift:
    def test_drift_is_reported_without_changes(self, s: FileStore) -> None:
        t = s.create_task(T, "x")
        assert s.index_drift(T) == {"missing": [], "extra": []}
        for marker in [f for f in s.paths(T).ready.rglob("*") if f.is_file()]:
            marker.unlink()
        (s.paths(T).claimed / "9~1~0~-").touch()
        drift = s.index_drift(T)
        marker = ready_marker(s.paths(T), sort_key(t))
        assert drift["missing"] == [f"ready/{marker.parent.name}/{marker.name}"]
        assert drift["extra"] == ["claimed/9~1~0~-"]
        assert s.index_drift(T) == drift  # reading changed nothing


class TestUpgrade:
    @pytest.mark.parametrize("layout", ["flat", "1000-id buckets"])
    def test_ready_markers_of_an_older_layout_are_found(self, s: FileStore, layout: str) -> None:
        ids = [s.create_task(T, f"t{i}").id for i in range(3)]
        ready = s.paths(T).ready
        keys = sorted(f.name for f in ready.rglob("*") if f.is_file())
        for f in list(ready.rglob("*")):
            if f.is_file():
                f.unlink()
        for d in list(ready.iterdir()):
            d.rmdir()
        for key in keys:  # what an older omx left on disk
            where = ready if layout == "flat" else ready / key[:20]
            where.mkdir(exist_ok=True)
            (where / key).touch()
        assert not s.is_drained(T)
        got = []
        while (r := s.claim_next(T, "worker-1")) is not None:
            got.append(r.task.id)
            s.transition_task(T, r.task.id, "worker-1", r.token, "completed")
        assert got == ids
        assert s.is_drained(T)
        assert s.index_drift(T) == {"missing": [], "extra": []}
