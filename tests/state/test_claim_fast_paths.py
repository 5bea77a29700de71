"""The claim path's economies keep its rules: spreading under contention, recycled marker inodes,
the kept-open pid check, and the cheaper record and time helpers.

Each economy is checked against the slow, obvious answer it replaces.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from omx.clock import FakeClock, iso
from omx.models import Claim, Task, TeamConfig
from omx.pids import pid_alive
from omx.state import atomic, claims, holders
from omx.state.base import fast_iso, ready_marker, sort_key
from omx.state.claims import _spread
from omx.state.filestore import FileStore
from omx.state.holders import holder_alive
from omx.state.locks import locked, try_locked
from omx.state.paths import TeamPaths
from tests.state.invariants import index_leftovers, temp_files

T = "fast"
WORKERS = [f"worker-{i}" for i in range(1, 5)]


@pytest.fixture
def s(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "state", clock=FakeClock())
    store.create_team(T, workers=WORKERS, lease_ms=60_000)
    return store


def _ready_keys(p: TeamPaths) -> list[str]:
    return sorted(f.name for f in p.ready.rglob("*") if f.is_file())


# --- spreading under contention ------------------------------------------------------------------


def test_without_a_lost_race_the_order_is_exact_whatever_the_team_size(s: FileStore) -> None:
    for i in range(10):
        s.create_task(T, f"t{i}", priority=1 if i == 7 else 0)
    got = []
    while (r := s.claim_next(T, "worker-3")) is not None:
        got.append(r.task.id)
    assert got == ["8", "1", "2", "3", "4", "5", "6", "7", "9", "10"]


def test_after_a_lost_race_workers_take_their_own_share_of_the_head_priority(
    s: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(claims, "SPREAD_S", 600.0)  # a slow machine must not end the spreading mid-test
    for i in range(12):
        s.create_task(T, f"t{i}")
    p = s.paths(T)
    with try_locked(p.task_lock("1")) as got:  # somebody else is claiming task 1
        assert got
        first = s.claim_next(T, "worker-2")
        assert first is not None and first.task.id == "2"  # the busy head is skipped: a lost race
        # Now spreading: worker-2 is index 1 of 4, so ids 1, 5, 9 are its own (1 is still busy).
        second = s.claim_next(T, "worker-2")
        assert second is not None and second.task.id == "5"
    third = s.claim_next(T, "worker-3")  # index 2: ids 2 (taken), 6, 10
    assert third is not None and third.task.id == "6"
    fourth = s.claim_next(T, "worker-1")  # index 0: ids 4, 8, 12
    assert fourth is not None and fourth.task.id == "4"
    # Every task is still claimed exactly once, and the rest come out in a worker's preference order.
    rest = []
    while (r := s.claim_next(T, "worker-2")) is not None:
        rest.append(r.task.id)
    assert sorted(rest, key=int) == ["1", "3", "7", "8", "9", "10", "11", "12"]
    assert rest[:2] == ["1", "9"]  # its own residue first
    assert s.is_drained(T) is False  # all in progress
    assert _ready_keys(p) == []


def test_a_crash_leftover_marker_is_not_taken_for_contention(s: FileStore) -> None:
    for i in range(6):
        s.create_task(T, f"t{i}")
    p = s.paths(T)
    first = s.claim_task(T, "1", "worker-1")
    lie = ready_marker(p, sort_key(first.task))
    lie.parent.mkdir(parents=True, exist_ok=True)
    lie.touch()  # a claim killed before removing its ready marker
    got = [r.task.id for _ in range(3) if (r := s.claim_next(T, "worker-3")) is not None]
    assert got == ["2", "3", "4"], "exact order: nobody else was claiming"
    assert s._spread_until == {}


def test_spreading_never_takes_a_lower_priority_while_a_better_task_is_free(s: FileStore) -> None:
    s.create_task(T, "high-a", priority=5)
    s.create_task(T, "high-b", priority=5)
    for i in range(6):
        s.create_task(T, f"low{i}")
    s._spread_until[T] = time.monotonic() + 60  # as if a race had just been lost
    got = []
    while (r := s.claim_next(T, "worker-4")) is not None:  # index 3: its own ids are 3, 7
        got.append(r.task.subject)
    assert set(got[:2]) == {"high-a", "high-b"}
    assert got[2:4] == ["low0", "low4"]  # ids 3 and 7, then the others in rotation from index 3
    assert sorted(got[4:]) == ["low1", "low2", "low3", "low5"]


def test_spread_order_is_a_permutation_that_keeps_priorities_in_order() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(2, 9)
        slot = rng.randrange(n)
        ids = sorted(rng.sample(range(1, 400), rng.randint(0, 60)))
        prios = sorted(rng.choice([999_999_995, 1_000_000_000, 1_000_000_003]) for _ in ids)
        keys = sorted(f"{pr:010d}-{i:012d}" for pr, i in zip(prios, ids, strict=True))
        cands = [(Path("/x"), k, str(int(k[11:]))) for k in keys]
        window = rng.randint(1, 40)
        out = list(_spread(cands, slot, n, window))
        assert sorted(out) == sorted(cands)
        assert [c[1][:10] for c in out] == [c[1][:10] for c in cands], "a priority never jumps ahead"
        head = [c for c in cands if c[1][:10] == cands[0][1][:10]][:window] if cands else []
        mine = [c for c in head if int(c[2]) % n == slot]
        assert out[: len(mine)] == mine


# --- recycled marker inodes ----------------------------------------------------------------------


def test_claim_links_the_ready_marker_and_completion_turns_the_claimed_marker_into_the_task_file(
    s: FileStore,
) -> None:
    t = s.create_task(T, "x")
    p = s.paths(T)
    ready = ready_marker(p, sort_key(t))
    ready_ino = ready.stat().st_ino
    r = s.claim_task(T, t.id, "worker-1", pid=os.getpid())
    (claimed,) = os.listdir(p.claimed)
    assert (p.claimed / claimed).stat().st_ino == ready_ino, "the claimed marker is the ready marker's inode"
    assert (p.claimed / claimed).stat().st_nlink == 1 and not ready.exists()
    task_file = p.task(t.id)
    done = s.transition_task(T, t.id, "worker-1", r.token, "completed", result={"ok": 1})
    assert task_file.stat().st_ino == ready_ino, "the retired marker carried the finished task"
    assert task_file.stat().st_nlink == 1
    assert json.loads(task_file.read_bytes()) == done.to_dict()
    assert s.read_task(T, t.id) == done
    assert os.listdir(p.claimed) == [] and temp_files(p.root) == [] and index_leftovers(p.root, T) == []


def test_release_and_renew_move_the_same_marker_inode(s: FileStore, tmp_path: Path) -> None:
    t = s.create_task(T, "x")
    p = s.paths(T)
    ino = ready_marker(p, sort_key(t)).stat().st_ino
    r = s.claim_task(T, t.id, "worker-1")
    assert isinstance(s.clock, FakeClock)
    s.clock.advance(5)
    s.renew_claim(T, t.id, "worker-1", r.token)
    (claimed,) = os.listdir(p.claimed)
    assert (p.claimed / claimed).stat().st_ino == ino
    s.release_claim(T, t.id, "worker-1", r.token)
    assert os.listdir(p.claimed) == []
    assert ready_marker(p, sort_key(t)).stat().st_ino == ino
    assert s.index_drift(T) == {"missing": [], "extra": []}


@pytest.mark.parametrize("spoil", ["second name", "not empty", "gone"])
def test_an_unsuitable_marker_is_not_written_into(s: FileStore, spoil: str) -> None:
    t = s.create_task(T, "x")
    p = s.paths(T)
    r = s.claim_task(T, t.id, "worker-1")
    (claimed,) = os.listdir(p.claimed)
    marker = p.claimed / claimed
    other = p.dir / "elsewhere"
    if spoil == "second name":
        os.link(marker, other)  # e.g. a stale marker left by a crash shares the inode
    elif spoil == "not empty":
        marker.write_bytes(b"keep me")
    else:
        marker.unlink()
    done = s.transition_task(T, t.id, "worker-1", r.token, "completed")
    assert s.read_task(T, t.id) == done
    assert not marker.exists() and temp_files(p.root) == []
    if spoil == "second name":
        assert other.read_bytes() == b"" and other.stat().st_nlink == 1
        assert p.task(t.id).stat().st_ino != other.stat().st_ino
    if spoil == "not empty":
        assert p.task(t.id).stat().st_size > len(b"keep me")


def test_write_bytes_with_reuse_falls_back_to_a_new_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic.write_bytes(target, b"one", reuse=str(tmp_path / "missing"))
    assert target.read_bytes() == b"one"
    spare = tmp_path / "spare"
    spare.touch(mode=0o644)
    os.chmod(spare, 0o644)
    atomic.write_bytes(target, b"two", reuse=str(spare))
    assert target.read_bytes() == b"two" and target.stat().st_ino != spare.stat().st_ino, \
        "a 0644 marker (made by an older omx) must not become a 0600 file"
    assert target.stat().st_mode & 0o777 == 0o600
    os.chmod(spare, 0o600)
    atomic.write_bytes(target, b"three", reuse=str(spare))
    assert target.read_bytes() == b"three" and target.stat().st_ino == spare.stat().st_ino
    assert sorted(os.listdir(tmp_path)) == ["f.json", "spare"]  # the caller removes the spare's old name


# --- the kept-open pid check ---------------------------------------------------------------------


def test_holder_alive_agrees_with_pid_alive_through_death_and_reaping() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert holder_alive(proc.pid) and pid_alive(proc.pid)
        assert holder_alive(proc.pid), "asked again: from the kept pidfd"
        if hasattr(os, "pidfd_open"):
            assert proc.pid in holders._fds
        proc.kill()
        deadline = time.monotonic() + 10
        while pid_alive(proc.pid) and time.monotonic() < deadline:  # a zombie until we reap it
            time.sleep(0.01)
        assert not holder_alive(proc.pid), "a zombie holder is dead"
        assert proc.pid not in holders._fds
    finally:
        proc.kill()
        proc.wait()
    assert not holder_alive(proc.pid)
    assert not holder_alive(2**22 + 12345)  # no such pid


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfds are Linux's")
def test_kept_holders_are_answered_by_one_poll_and_an_exited_one_is_asked_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    procs = [subprocess.Popen(["sleep", "30"]) for _ in range(3)]
    try:
        for proc in procs:
            assert holder_alive(proc.pid)  # seen alive: kept
        asked: list[int] = []
        monkeypatch.setattr(holders, "pid_alive", lambda pid: asked.append(pid) or pid_alive(pid))
        assert {proc.pid for proc in procs} <= holders.known_alive()
        assert asked == [], "kept holders are answered from the poll, not asked again"
        procs[1].kill()
        procs[1].wait()
        alive = holders.known_alive()
        assert procs[1].pid not in alive and {procs[0].pid, procs[2].pid} <= alive
        assert procs[1].pid not in holders._fds, "an exited holder's pidfd is closed"
        assert not holder_alive(procs[1].pid) and asked == [procs[1].pid], "and it is asked afresh"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_dead_holder_is_reclaimed_at_once_after_being_seen_alive(s: FileStore) -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        t = s.create_task(T, "x")
        s.create_task(T, "y")
        s.claim_task(T, t.id, "worker-1", pid=proc.pid)
        r = s.claim_next(T, "worker-2")  # sees the holder alive (and keeps its /proc descriptor)
        assert r is not None and r.task.id == "2"
        proc.kill()
        proc.wait()
        again = s.claim_next(T, "worker-3")
        assert again is not None and again.task.id == t.id and again.task.attempts == 2
    finally:
        proc.kill()
        proc.wait()


# --- helpers -------------------------------------------------------------------------------------


def test_fast_iso_is_iso() -> None:
    rng = random.Random(3)
    for ms in [0, 999, 1000, 1_700_000_000_999, 1_700_000_001_000, *(rng.randrange(4 * 10**12) for _ in range(5000))]:
        assert fast_iso(ms) == iso(ms)


def test_record_replace_matches_dataclasses_replace() -> None:
    claim = Claim(owner="w", token_sha256="a" * 64, leased_until="t", claimed_at="t", pid=1, host="h")
    task = Task.from_dict({"id": "1", "subject": "s", "created_at": "t", "updated_at": "t", "claim": claim.to_dict(),
                           "future": {"x": 1}})
    new = task.replace(status="in_progress", version=2, claim=None)
    assert new == dataclasses.replace(task, status="in_progress", version=2, claim=None)
    assert new.extra == {"future": {"x": 1}} and new.to_dict()["future"] == {"x": 1}
    assert task.status == "pending" and task.claim == claim, "the original is unchanged"
    with pytest.raises(TypeError):
        task.replace(no_such_field=1)
    cfg = TeamConfig(name="a", created_at="t")
    copy = cfg.replace()
    copy.next_task_id += 1
    assert cfg.next_task_id == 1


def test_locks_take_str_paths_and_release_on_error(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "x.lock")  # the folder is made on first use

    def fail_inside() -> None:
        with locked(path):
            with try_locked(path) as got:
                assert not got
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail_inside()
    with try_locked(path) as got:
        assert got
