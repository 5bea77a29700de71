"""What the store keeps between calls never changes what a caller sees.

A store keeps the tasks it parsed or wrote (by their exact bytes), descriptors of lock files and of
the event log, pidfds of claim holders and a pool of random names. Each test here changes the world
behind the store's back — a file edited in place, a lock file deleted, a fork, a caller mutating what
it got — and checks the store answers as if it had kept nothing.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import random
import re
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omx import errors
from omx.clock import FakeClock, iso, parse_iso
from omx.models import Claim, Task
from omx.state import atomic, locks
from omx.state.base import lease_end_ms, lease_text
from omx.state.encode import event_line, task_bytes
from omx.state.filestore import FileStore
from omx.state.locks import locked, try_locked
from omx.state.names import task_id

T = "kept"
WORKERS = ["worker-1", "worker-2", "worker-3"]
FORK = mp.get_context("fork")


@pytest.fixture
def s(tmp_path: Path) -> FileStore:
    store = FileStore(tmp_path / "state", clock=FakeClock())
    store.create_team(T, workers=WORKERS, lease_ms=60_000)
    return store


def _edit_in_place(path: Path, old: str, new: str) -> None:
    """Overwrite part of ``path`` in place (same inode, same size): what no omx writer ever does."""
    data = path.read_bytes()
    assert len(old) == len(new) and data.count(old.encode()) == 1
    with open(path, "r+b") as f:
        f.seek(data.index(old.encode()))
        f.write(new.encode())


# --- parsed tasks --------------------------------------------------------------------------------


def test_a_task_edited_in_place_after_the_claim_is_read_afresh(s: FileStore) -> None:
    s.create_task(T, "x")
    r = s.claim_task(T, "1", "worker-1")
    path = s.paths(T).task(r.task.id)
    assert r.task.claim is not None
    # Same length, same inode: only the bytes tell. The store wrote (and kept) the old ones.
    _edit_in_place(path, r.task.claim.token_sha256, "0" * 64)
    with pytest.raises(errors.InvalidToken):
        s.transition_task(T, "1", "worker-1", r.token, "completed")
    _edit_in_place(path, '"in_progress"', '"in_progres!"')
    with pytest.raises(errors.CorruptState):
        s.transition_task(T, "1", "worker-1", r.token, "completed")


def test_a_task_changed_by_another_store_between_look_and_claim_is_not_claimed_twice(
    tmp_path: Path, s: FileStore
) -> None:
    s.create_task(T, "x")
    p = s.paths(T)
    assert s._raw_task(p, "1") is not None  # s has read (and kept) task 1 as pending
    other = FileStore(tmp_path / "state", clock=FakeClock())
    won = other.claim_task(T, "1", "worker-2")
    with pytest.raises(errors.ClaimConflict):
        s.claim_task(T, "1", "worker-1")
    assert s.read_task(T, "1") == won.task


def test_what_a_caller_changes_in_a_returned_task_stays_with_the_caller(s: FileStore) -> None:
    s.create_task(T, "x", files=["a.py"], depends_on=[])
    r = s.claim_task(T, "1", "worker-1")
    assert r.task.claim is not None
    r.task.files.append("injected.py")
    r.task.claim.owner = "worker-3"
    r.task.extra["injected"] = True
    again = s.read_task(T, "1")
    assert again.files == ["a.py"] and again.claim is not None and again.claim.owner == "worker-1"
    again.files.clear()
    done = s.transition_task(T, "1", "worker-1", r.token, "completed")
    on_disk = json.loads(s.paths(T).task("1").read_bytes())
    assert on_disk["files"] == ["a.py"] and "injected" not in on_disk
    assert done.files == ["a.py"] and s.read_task(T, "1").files == ["a.py"]


def test_json_copy_copies_deeply_and_refuses_what_json_would_change() -> None:
    claim = Claim(owner="w", token_sha256="a" * 64, leased_until="t", claimed_at="t", pid=1)
    task = Task(id="1", subject="s", created_at="t", updated_at="t", claim=claim, files=["a"],
                result={"k": [1, {"x": None}]}, extra={"future": [1]})
    copy = task.json_copy()
    assert copy == task and copy is not None and copy.extra == task.extra
    assert copy.files is not task.files and copy.claim is not task.claim
    assert copy.result["k"][1] is not task.result["k"][1] and copy.extra["future"] is not task.extra["future"]
    for odd in [(1, 2), {1: "int key"}, {"x": {1, 2}}, object()]:
        assert task.replace(result=odd).json_copy() is None, odd
    assert task.replace(result=[(1,)]).json_copy() is None


# --- lock descriptors ----------------------------------------------------------------------------


def _hold_in_child(path: str, holding: Any, release: Any) -> None:
    with locked(path):
        holding.set()
        release.wait(30)


def test_a_kept_lock_descriptor_is_not_shared_with_a_forked_child(tmp_path: Path) -> None:
    path = str(tmp_path / "task-1.lock")
    with locked(path):
        pass
    assert path in locks._kept  # kept open (unlocked) for next time, and inherited by the child below
    holding, release = FORK.Event(), FORK.Event()
    child = FORK.Process(target=_hold_in_child, args=(path, holding, release))
    child.start()
    try:
        assert holding.wait(30), "the child never got the lock"
        # Had the child locked the descriptor it inherited, our kept one would share its lock.
        with try_locked(path) as got:
            assert not got, "the parent got a lock its child holds"
    finally:
        release.set()
        child.join(30)
    assert child.exitcode == 0
    with try_locked(path) as got:
        assert got


def test_a_kept_descriptor_of_a_deleted_lock_file_does_not_lock_anything(tmp_path: Path) -> None:
    path = str(tmp_path / "task-1.lock")
    with locked(path):
        pass
    assert path in locks._kept
    os.unlink(path)  # as `omx team cleanup` does, before the team is made again
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # somebody else, on the file now at the path
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with try_locked(path) as got:
            assert not got, "locked the deleted file, not the one at the path"
    finally:
        os.close(fd)
    with try_locked(path) as got:
        assert got
    assert path in locks._kept and os.fstat(_kept_fd(path)).st_ino == os.stat(path).st_ino


def _kept_fd(path: str) -> int:
    fd = locks._kept.take(path)
    locks._kept.give(path, fd)
    return fd


def test_two_threads_never_share_a_kept_lock(tmp_path: Path) -> None:
    path = str(tmp_path / "task-1.lock")
    with locked(path):
        pass
    got: list[bool] = []
    with locked(path):  # this thread holds it, through the kept descriptor
        def other() -> None:
            with try_locked(path) as ok:
                got.append(ok)

        t = threading.Thread(target=other)
        t.start()
        t.join(30)
    assert got == [False]


# --- the event log -------------------------------------------------------------------------------


def test_events_after_a_cleanup_go_to_the_new_log(s: FileStore) -> None:
    s.create_task(T, "before")
    s.cleanup(T, force=True)
    s.create_team(T, workers=WORKERS)
    s.create_task(T, "after")
    assert [e.type for e in s.read_events(T).events] == ["team_created", "task_created"]
    os.unlink(s.paths(T).events)  # somebody removes the log: the next event starts a new one
    s.create_task(T, "again")
    assert [e.data["subject"] for e in s.read_events(T).events] == ["again"]


def _draw_names(out: Any) -> None:
    out.put([atomic.random_hex8() for _ in range(64)])


def test_a_forked_child_draws_its_own_random_names() -> None:
    atomic.random_hex8()  # the parent's pool is drawn and inherited
    out = FORK.Queue()
    child = FORK.Process(target=_draw_names, args=(out,))
    child.start()
    theirs = out.get(timeout=30)
    child.join(30)
    ours = [atomic.random_hex8() for _ in range(64)]
    assert not set(ours) & set(theirs)


# --- encodings and parsers -----------------------------------------------------------------------


texts = st.text(max_size=12)
optional_texts = st.none() | texts


@settings(max_examples=300, deadline=None)
@given(
    subject=texts, status=st.sampled_from(["pending", "in_progress", "completed"]), version=st.integers(1, 10**12),
    owner=optional_texts, error=optional_texts, role=optional_texts, with_claim=st.booleans(),
    pid=st.none() | st.integers(0, 2**31), host=optional_texts, result=st.none() | st.just({"é": [1, 2.5, None]}),
    files=st.lists(texts, max_size=2), extra=st.dictionaries(texts, st.integers(), max_size=1),
)
def test_task_bytes_are_json_dumps_of_the_task(
    subject: str, status: str, version: int, owner: str | None, error: str | None, role: str | None,
    with_claim: bool, pid: int | None, host: str | None, result: Any, files: list[str], extra: dict[str, int],
) -> None:
    claim = Claim(owner="w\"1", token_sha256="ab" * 32, leased_until="t\n", claimed_at="t", pid=pid, host=host)
    task = Task(id="12", subject=subject, created_at="c", updated_at="u", status=status, version=version,
                owner=owner, claim=claim if with_claim else None, error=error, role=role, result=result,
                files=files, extra={k: v for k, v in extra.items() if k not in Task._known})
    assert task_bytes(task) == atomic.dumps(task.to_dict())
    assert Task.from_dict(json.loads(task_bytes(task))) == task


@settings(max_examples=200, deadline=None)
@given(worker=optional_texts, tid=optional_texts, mid=optional_texts, reason=optional_texts,
       data=st.dictionaries(texts, st.none() | st.integers() | texts | st.lists(st.integers(), max_size=2), max_size=3))
def test_event_lines_are_json_dumps_of_the_record(
    worker: str | None, tid: str | None, mid: str | None, reason: str | None, data: dict[str, Any]
) -> None:
    rec = {"event_id": "1-ab", "type": "task_claimed", "team": "t", "created_at": "c", "worker": worker,
           "task_id": tid, "message_id": mid, "reason": reason}
    want = atomic.dumps({**{k: v for k, v in rec.items() if v is not None}, "data": data})
    assert event_line("1-ab", "task_claimed", "t", "c", worker, tid, mid, reason, data) == want


def test_a_lease_written_here_names_its_marker_as_a_parser_elsewhere_does() -> None:
    rng = random.Random(11)
    for ms in [0, 999, 1_700_000_000_123, *(rng.randrange(4 * 10**12) for _ in range(20_000))]:
        text = lease_text(ms)
        assert text == iso(ms) and lease_end_ms(text) == parse_iso(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=1, max_size=14) | st.text(max_size=6))
def test_task_id_fast_path_agrees_with_the_rule(value: str) -> None:
    m = re.fullmatch(r"(?:task-)?([0-9]{1,12})", value)
    if m is None:
        with pytest.raises(errors.InvalidInput):
            task_id(value)
    else:
        assert task_id(value) == str(int(m.group(1)))


# --- claim-next while spreading ------------------------------------------------------------------


def test_while_spreading_a_task_claimed_since_the_listing_is_skipped_as_a_lost_race(
    tmp_path: Path, s: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from omx.state import claims
    from omx.state.base import ready_marker, sort_key

    monkeypatch.setattr(claims, "SPREAD_S", 600.0)
    tasks = [s.create_task(T, f"t{i}") for i in range(6)]
    p = s.paths(T)
    listed = list(s._ready_candidates(p))  # the listing claim-next is about to act on...
    won = FileStore(tmp_path / "state", clock=FakeClock()).claim_task(T, "1", "worker-2")  # ...goes stale
    assert not ready_marker(p, sort_key(tasks[0])).exists()
    monkeypatch.setattr(s, "_ready_candidates", lambda _p: iter(listed))
    s._spread_until[T] = before = claims.time.monotonic() + 300  # spreading: no lock-free look first
    r = s.claim_next(T, "worker-2")  # index 1 of 3: ids 1, 4 first
    assert r is not None and r.task.id == "4"
    assert s.read_task(T, "1") == won.task, "the task claimed meanwhile is untouched"
    assert s._spread_until[T] > before, "and it counts as a lost race"
