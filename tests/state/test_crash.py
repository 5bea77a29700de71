"""Processes that die at the worst moment: SIGKILL inside a critical section, or while holding a claim.

A claim is data plus a kernel lock held only for the read-check-write, so a dead process must never
wedge a task: its lock dies with it, its claim ends when its lease does (or at once, when it claimed
with its pid on this host), and its token stops working as soon as someone else holds the task.

To stop a process at an exact point we use the store's test hook (``OMX_TEST_LOCK_DELAY`` sleeps right
after a matching lock is taken and drops a pid marker first), or a FIFO where the store is about to
create a marker file (``open(O_WRONLY)`` on a FIFO blocks until a reader comes, which none does).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest.mock import ANY

import pytest

from omx.clock import parse_iso
from omx.errors import InvalidToken
from omx.state.base import ready_marker, sort_key
from omx.state.filestore import FileStore
from omx.state.locks import try_locked
from omx.state.paths import TeamPaths
from tests.state.invariants import event_lines, index_leftovers, task_files, temp_files
from tests.state.race_worker import OMX_BIN

if TYPE_CHECKING:
    from tests.state.conftest import Children

Api = Callable[..., tuple[int, dict[str, Any]]]
HOOK_SLEEP_S = 120  # the victim would sleep this long inside the lock; we kill it long before


@pytest.fixture(autouse=True)
def _no_hooks_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test process is the survivor: only the victims get the lock-delay hook.
    monkeypatch.delenv("OMX_TEST_LOCK_DELAY", raising=False)
    monkeypatch.delenv("OMX_TEST_LOCK_MARKER", raising=False)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _team(root: Path, name: str, lease_ms: int, n_tasks: int = 1, workers: int = 2) -> FileStore:
    store = FileStore(root)
    store.create_team(name, workers=[f"worker-{i}" for i in range(1, workers + 1)], lease_ms=lease_ms)
    for i in range(1, n_tasks + 1):
        store.create_task(name, f"task {i}")
    return store


def _victim_in_lock(children: Children, wait_until: Callable[..., Any], tmp_path: Path, lock: str,
                    argv: list[str]) -> subprocess.Popen[bytes]:
    """Start ``argv`` with the delay hook on ``lock``; return once it is inside that critical section."""
    marker = tmp_path / "held.pid"
    hook = {"OMX_TEST_LOCK_DELAY": f"{lock}:{HOOK_SLEEP_S}", "OMX_TEST_LOCK_MARKER": str(marker)}
    proc = children.run(argv, env=hook)

    def inside() -> str:
        if proc.poll() is not None:
            pytest.fail(f"the victim exited ({proc.returncode}) before taking {lock}: {children.stdout(proc)}")
        return marker.read_text() if marker.exists() else ""

    held_by = wait_until(inside, 30, f"the victim to hold {lock}")
    if int(held_by) != proc.pid:
        pytest.fail(f"{lock} held by {held_by}, not by the victim {proc.pid}")
    return proc


# --- 3. SIGKILL inside the critical section ------------------------------------------------------


@pytest.mark.parametrize("op", ["claim-task", "claim-next"])
def test_sigkill_inside_task_lock_does_not_wedge_the_task(
    tmp_path: Path, children: Children, omx_api: Api, wait_until: Callable[..., Any], op: str
) -> None:
    """A claimer SIGKILLed while it holds task-1.lock: the next claim of task 1 succeeds at once."""
    root = tmp_path / "state"
    store = _team(root, "crash", lease_ms=60_000, n_tasks=2)
    p = TeamPaths.of(root, "crash")
    payload: dict[str, Any] = {"team_name": "crash", "worker": "worker-1"}
    if op == "claim-task":
        payload["task_id"] = "1"
    victim = _victim_in_lock(children, wait_until, tmp_path, "task-1.lock",
                             [OMX_BIN, "team", "api", op, "--root", str(root), "--input", json.dumps(payload)])
    with try_locked(p.task_lock("1")) as got:
        assert not got, "the victim holds task-1.lock"
    # Meanwhile claim-next is not stuck behind the busy lock: it moves on to the next task.
    t0 = time.monotonic()
    other = store.claim_next("crash", "worker-2")
    assert other is not None
    assert other.task.id == "2"
    # Stuck behind the lock would mean HOOK_SLEEP_S (120 s); 10 s leaves room for a loaded machine's fsyncs.
    assert time.monotonic() - t0 < 10.0

    victim.send_signal(signal.SIGKILL)  # not reaped yet: its parent (us) has not waited
    t0 = time.monotonic()
    claim = store.claim_task("crash", "1", "worker-2")
    latency = time.monotonic() - t0
    print(f"\n{op}: claim of task 1 after SIGKILL of the lock holder took {latency * 1000:.0f} ms")
    assert latency < 10.0, f"the claim waited {latency:.2f}s for a dead process's lock"  # else: HOOK_SLEEP_S
    assert victim.wait(timeout=10) == -signal.SIGKILL

    # The victim died before writing anything: the task was intact at version 1 and is now ours.
    assert (claim.task.version, claim.task.attempts, claim.task.owner) == (2, 1, "worker-2")
    tasks, bad = task_files(root, "crash")
    assert bad == []
    assert tasks["1"]["claim"]["token_sha256"] == hashlib.sha256(claim.token.encode()).hexdigest()
    events, bad = event_lines(root, "crash")
    assert bad == []
    assert [e.get("worker") for e in events if e["type"] == "task_claimed"] == ["worker-2", "worker-2"]
    assert temp_files(root) == []

    # A writer killed mid-write leaves ".task-<id>.json.<rand>.tmp": a torn one, and a whole one never
    # renamed into place (here for a task id that does not exist). Neither is state.
    stray_torn = p.tasks / ".task-1.json.0badc0de.tmp"
    stray_torn.write_bytes(json.dumps({**tasks["1"], "subject": "ghost", "status": "pending"}).encode()[:70])
    stray_whole = p.tasks / ".task-3.json.deadbeef.tmp"
    stray_whole.write_text(json.dumps({**tasks["1"], "id": "3", "subject": "ghost", "status": "pending",
                                       "claim": None, "owner": None}))
    code, env = omx_api(root, "list-tasks", team_name="crash")
    assert code == 0
    assert [(t["id"], t["subject"]) for t in env["data"]["tasks"]] == [("1", "task 1"), ("2", "task 2")]
    assert env["data"]["corrupt"] == []
    code, env = omx_api(root, "claim-next", team_name="crash", worker="worker-1")
    assert (code, env["data"]["task"]) == (0, None), "nothing is claimable: a temp file is not a task"
    code, env = omx_api(root, "claim-task", team_name="crash", task_id="3", worker="worker-1")
    assert (code, env["error"]["code"]) == (3, "task_not_found")
    code, env = omx_api(root, "transition-task-status", team_name="crash", task_id="1", worker="worker-2",
                        claim_token=claim.token, to="completed")
    assert code == 0
    assert env["data"]["task"]["version"] == 3
    assert stray_torn.exists()
    assert stray_whole.exists()  # left for `omx doctor` to report; never read as state


def test_sigkill_inside_team_lock_does_not_wedge_task_creation(
    tmp_path: Path, children: Children, wait_until: Callable[..., Any]
) -> None:
    """A creator SIGKILLed while it holds team.lock: the next create succeeds at once, ids stay contiguous."""
    root = tmp_path / "state"
    store = _team(root, "crash", lease_ms=60_000, n_tasks=0)
    victim = _victim_in_lock(children, wait_until, tmp_path, "team.lock", [
        OMX_BIN, "team", "api", "create-task", "--root", str(root),
        "--input", json.dumps({"team_name": "crash", "subject": "never"}),
    ])
    victim.send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    first = store.create_task("crash", "after the crash")
    latency = time.monotonic() - t0
    print(f"\ncreate-task after SIGKILL of the team.lock holder took {latency * 1000:.0f} ms")
    assert latency < 10.0  # waiting for the dead holder would take HOOK_SLEEP_S (120 s)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    second = store.create_task("crash", "and another")
    assert (first.id, second.id) == ("1", "2")
    assert store.read_config("crash").next_task_id == 3
    assert [t.subject for t in store.list_tasks("crash").tasks] == ["after the crash", "and another"]
    assert temp_files(root) == []


# --- 4. SIGKILL of a worker that holds a claim ---------------------------------------------------


def _holder(children: Children, wait_until: Callable[..., Any], tmp_path: Path, root: Path, via: str
            ) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    out = tmp_path / "holder.json"
    proc = children.spawn("hold", {"root": str(root), "team": "crash", "worker": "worker-1", "task": "1",
                                   "via": via, "out": str(out)})

    def claimed() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the holder exited ({proc.returncode}): {children.stderr(proc)}")
        return out.exists()

    wait_until(claimed, 30, "the holder to claim task 1")
    return proc, json.loads(out.read_text())


def _old_token_refused(omx_api: Api, root: Path, token: str) -> None:
    """The dead worker's token no longer finishes, renews or releases the task (exit 1, a refusal code)."""
    for op, extra in (("transition-task-status", {"to": "completed"}), ("renew-claim", {}),
                      ("release-task-claim", {})):
        code, env = omx_api(root, op, team_name="crash", task_id="1", worker="worker-1", claim_token=token, **extra)
        assert code == 1, env
        assert env["error"]["code"] in ("invalid_token", "lease_expired"), env


@pytest.mark.parametrize("reaped", [True, False], ids=["reaped", "zombie"])
def test_killed_holder_with_pid_is_reclaimed_at_once(
    tmp_path: Path, children: Children, omx_api: Api, wait_until: Callable[..., Any], reaped: bool
) -> None:
    """A holder that claimed with its pid and died is taken over at once, long before its lease ends."""
    root = tmp_path / "state"
    store = _team(root, "crash", lease_ms=30_000)
    proc, held = _holder(children, wait_until, tmp_path, root, via="lib")
    assert held["task"]["claim"]["pid"] == proc.pid
    leased_until = parse_iso(held["task"]["claim"]["leased_until"])

    # While the holder lives, nobody else gets the task.
    code, env = omx_api(root, "claim-next", team_name="crash", worker="worker-2")
    assert (code, env["data"]["task"], env["data"]["drained"]) == (0, None, False)
    code, env = omx_api(root, "claim-task", team_name="crash", task_id="1", worker="worker-2")
    assert (code, env["error"]["code"]) == (1, "claim_conflict")

    t_kill = time.monotonic()
    proc.send_signal(signal.SIGKILL)
    if reaped:
        assert proc.wait(timeout=10) == -signal.SIGKILL
    else:
        # Dead but not waited for: the pid still exists, as a zombie.
        wait_until(lambda: _proc_state(proc.pid) == "Z", 10, "the holder to become a zombie")
    code, env = omx_api(root, "claim-next", team_name="crash", worker="worker-2")
    latency = time.monotonic() - t_kill
    print(f"\n{'reaped' if reaped else 'zombie'}: claim-next took over the dead holder's task "
          f"{latency * 1000:.0f} ms after SIGKILL (lease had {leased_until - now_ms()} ms left)")
    assert code == 0
    task = env["data"]["task"]
    assert task is not None, "a dead local holder's task must be claimable at once"
    assert (task["id"], task["owner"], task["attempts"]) == ("1", "worker-2", 2)
    assert parse_iso(task["claim"]["claimed_at"]) < leased_until, "taken over before the lease ran out"
    if not reaped:
        assert _proc_state(proc.pid) == "Z", "the holder was still an unreaped zombie at takeover"
    claimed = [e for e in event_lines(root, "crash")[0] if e["type"] == "task_claimed"]
    assert claimed[-1]["data"]["took_over"] == {"previous_owner": "worker-1", "reason": "orphaned",
                                                     "pid": ANY, "host": ANY}

    _old_token_refused(omx_api, root, held["token"])
    code, env = omx_api(root, "transition-task-status", team_name="crash", task_id="1", worker="worker-2",
                        claim_token=env["data"]["claimToken"], to="completed")
    assert code == 0
    assert store.read_task("crash", "1").status == "completed"
    assert index_leftovers(root, "crash") == []


def _proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat[stat.rfind(")") + 2]


def test_killed_holder_without_pid_keeps_the_task_until_its_lease_ends(
    tmp_path: Path, children: Children, omx_api: Api, wait_until: Callable[..., Any]
) -> None:
    """A holder that claimed through the CLI (no pid recorded) and died: claimable only once the lease ends."""
    root = tmp_path / "state"
    store = _team(root, "crash", lease_ms=4_000)  # the new holder's lease must outlive slow CLI checks under load
    proc, held = _holder(children, wait_until, tmp_path, root, via="cli")
    assert held["task"]["claim"]["pid"] is None
    leased_until = parse_iso(held["task"]["claim"]["leased_until"])
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=10) == -signal.SIGKILL

    # Poll claim-next (in-process, for exact timestamps) until it succeeds.
    tries: list[tuple[int, int, bool]] = []
    deadline = time.monotonic() + 30
    while True:
        start = now_ms()
        r = store.claim_next("crash", "worker-2")
        tries.append((start, now_ms(), r is not None))
        if r is not None or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    refused = [t for t in tries if not t[2]]
    assert r is not None, "the task never became claimable after its lease ended"
    print(f"\nno pid: {len(refused)} claim-next refusals before the lease ended; taken over "
          f"{tries[-1][1] - leased_until} ms after it")
    assert refused, "the task must stay with its holder while the lease runs"
    late = [t for t in refused if t[0] >= leased_until]
    assert late == [], f"claim-next was refused after the lease had ended: {late}"
    assert tries[-1][1] >= leased_until, "claimed before the lease ended"
    assert (r.task.owner, r.task.attempts) == ("worker-2", 2)
    claimed = [e for e in event_lines(root, "crash")[0] if e["type"] == "task_claimed"]
    assert claimed[-1]["data"]["took_over"] == {"previous_owner": "worker-1", "reason": "expired"}

    _old_token_refused(omx_api, root, held["token"])
    store.transition_task("crash", "1", "worker-2", r.token, "completed")
    assert index_leftovers(root, "crash") == []


# --- 6. the task file gives no usable token ------------------------------------------------------


def _strings(obj: Any) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (k, *_strings(v))]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def test_state_files_give_no_usable_token(tmp_path: Path, omx_api: Api) -> None:
    """Whoever reads the state (the task file, the events) cannot finish someone else's task."""
    root = tmp_path / "state"
    store = _team(root, "crash", lease_ms=60_000)
    code, env = omx_api(root, "claim-task", team_name="crash", task_id="1", worker="worker-1")
    assert code == 0
    token = env["data"]["claimToken"]

    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            assert token.encode() not in (Path(dirpath) / f).read_bytes(), f"the token is stored in {f}"
    raw = json.loads((root / "team" / "crash" / "tasks" / "task-1.json").read_bytes())
    digest = raw["claim"]["token_sha256"]
    assert digest == hashlib.sha256(token.encode()).hexdigest()

    # Through the CLI, as a user would try it: the stored hash is not a token.
    for op, extra in (("transition-task-status", {"to": "completed"}), ("renew-claim", {}),
                      ("release-task-claim", {})):
        code, env = omx_api(root, op, team_name="crash", task_id="1", worker="worker-1", claim_token=digest, **extra)
        assert (code, env["error"]["code"]) == (1, "invalid_token"), env
    # Every other string in the file, as owner and as anyone else.
    candidates = sorted({s for s in _strings(raw) if s} | {digest.upper()})
    for guess in candidates:
        for worker in ("worker-1", "worker-2"):
            with pytest.raises(InvalidToken):
                store.transition_task("crash", "1", worker, guess, "completed")
    # The real token, from the wrong worker, is refused too: a claim is worker + token.
    code, env = omx_api(root, "transition-task-status", team_name="crash", task_id="1", worker="worker-2",
                        claim_token=token, to="completed")
    assert (code, env["error"]["code"]) == (1, "invalid_token")
    task = store.read_task("crash", "1")
    assert (task.status, task.version) == ("in_progress", 2), "no refused attempt changed the task"
    code, env = omx_api(root, "transition-task-status", team_name="crash", task_id="1", worker="worker-1",
                        claim_token=token, to="completed")
    assert (code, env["data"]["task"]["status"]) == (0, "completed")


# --- crashes between the task write and its index markers ----------------------------------------


# Crash windows of the marker protocol (omx/state/base.py: _commit). A write makes the markers the new
# state needs, then writes the task file, then removes the old state's markers; a SIGKILL can land in
# either gap, and each gap leaves one determined state on disk. These tests build exactly that state
# (what the killed process leaves) and check the team recovers by itself — no `omx doctor --fix`.


def _ready_files(p: TeamPaths) -> list[Path]:
    return [f for f in p.ready.rglob("*") if f.is_file()]


def _drained(root: Path, omx_api: Api, team: str, worker: str) -> bool:
    code, env = omx_api(root, "claim-next", team_name=team, worker=worker)
    assert code == 0
    return bool(env["data"]["drained"]) and env["data"]["task"] is None


def test_claim_killed_before_its_task_write_leaves_the_task_claimable(tmp_path: Path, omx_api: Api) -> None:
    root = tmp_path / "state"
    store = _team(root, "crash", lease_ms=60_000, n_tasks=2)  # each claim below is finished on a live lease
    p = TeamPaths.of(root, "crash")
    # The claimer made its claimed marker (a lease that ended long ago), then died before the write.
    (p.claimed / "1~1700000001000~0~-").touch()
    r = store.claim_next("crash", "worker-2")
    assert r is not None
    assert r.task.id == "1"
    store.transition_task("crash", "1", "worker-2", r.token, "completed")
    for tid in [t.id for t in store.list_tasks("crash", status="pending").tasks]:
        rr = store.claim_task("crash", tid, "worker-2")
        store.transition_task("crash", tid, "worker-2", rr.token, "completed")
    assert _drained(root, omx_api, "crash", "worker-1")  # the stray marker was healed on the way
    assert os.listdir(p.claimed) == []


def test_claim_killed_after_its_task_write_is_reclaimed_when_the_lease_ends(
    tmp_path: Path, omx_api: Api, wait_until: Callable[..., Any]
) -> None:
    root = tmp_path / "state"
    store = _team(root, "crash", lease_ms=3_000, n_tasks=2)  # outlives one slow CLI call under load
    p = TeamPaths.of(root, "crash")
    first = store.claim_task("crash", "1", "worker-1")  # no pid: only the lease can free it
    ready_marker(p, sort_key(first.task)).parent.mkdir(parents=True, exist_ok=True)
    ready_marker(p, sort_key(first.task)).touch()  # killed before removing its old ready marker
    code, env = omx_api(root, "claim-next", team_name="crash", worker="worker-2")
    assert (code, (env["data"]["task"] or {}).get("id")) == (0, "2")  # not the held task 1
    # Finished at once: waiting out task 1's lease below may outlast task 2's on a loaded machine.
    store.transition_task("crash", "2", "worker-2", env["data"]["claimToken"], "completed")
    # The lying marker is skipped with one lock-free read (the task is in progress with a live lease);
    # it goes once the task's state moves on — here, when the lease ends and the task is taken over.
    assert first.task.claim is not None
    until = parse_iso(first.task.claim.leased_until)
    wait_until(lambda: now_ms() > until, 10, "the lease to end")
    code, env = omx_api(root, "claim-next", team_name="crash", worker="worker-2")
    assert (code, env["data"]["task"]["id"]) == (0, "1")
    store.transition_task("crash", "1", "worker-2", env["data"]["claimToken"], "completed")
    assert store.claim_next("crash", "worker-2") is None
    assert not ready_marker(p, sort_key(first.task)).exists()  # met on the way, as a finished task's: removed
    assert store.is_drained("crash")


def test_release_killed_before_its_task_write_keeps_one_holder(
    tmp_path: Path, omx_api: Api, wait_until: Callable[..., Any]
) -> None:
    root = tmp_path / "state"
    store = _team(root, "crash", lease_ms=4_000, n_tasks=2, workers=3)  # outlives a slow CLI call under load
    p = TeamPaths.of(root, "crash")
    first = store.claim_task("crash", "1", "worker-1")
    ready_marker(p, sort_key(first.task)).parent.mkdir(parents=True, exist_ok=True)
    ready_marker(p, sort_key(first.task)).touch()  # release made its ready marker, then died before the write
    for t in store.list_tasks("crash", status="pending").tasks:
        rr = store.claim_task("crash", t.id, "worker-3")
        store.transition_task("crash", t.id, "worker-3", rr.token, "completed")
    code, env = omx_api(root, "claim-next", team_name="crash", worker="worker-2")
    assert (code, env["data"]["task"]) == (0, None)  # the task is still worker-1's: no double holder
    # The stray ready marker is skipped while the lease lives, and removed once the task moves on (below).
    assert first.task.claim is not None
    until = parse_iso(first.task.claim.leased_until)
    wait_until(lambda: now_ms() > until, 15, "the lease to end")
    r = store.claim_next("crash", "worker-2")
    assert r is not None
    store.transition_task("crash", "1", "worker-2", r.token, "completed")
    assert _drained(root, omx_api, "crash", "worker-2")
    assert os.listdir(p.claimed) == [] and _ready_files(p) == [] and os.listdir(p.waiting) == []


def test_release_killed_after_its_task_write_leaves_no_stale_claim_marker(
    tmp_path: Path, omx_api: Api, wait_until: Callable[..., Any]
) -> None:
    root = tmp_path / "state"
    # Each claim below must still be live when it is finished (a stalled fsync under load took longer than
    # 500 ms); the test then waits this first lease out.
    store = _team(root, "crash", lease_ms=3_000, n_tasks=2)
    p = TeamPaths.of(root, "crash")
    first = store.claim_task("crash", "1", "worker-1")
    stale = os.listdir(p.claimed)
    store.release_claim("crash", "1", "worker-1", first.token)
    for name in stale:
        (p.claimed / name).touch()  # killed after the write, before removing the old claimed marker
    r = store.claim_next("crash", "worker-2")
    assert r is not None
    assert r.task.id == "1"
    store.transition_task("crash", "1", "worker-2", r.token, "completed")
    for t in store.list_tasks("crash", status="pending").tasks:
        rr = store.claim_task("crash", t.id, "worker-2")
        store.transition_task("crash", t.id, "worker-2", rr.token, "completed")
    assert first.task.claim is not None
    until = parse_iso(first.task.claim.leased_until)
    wait_until(lambda: now_ms() > until, 10, "the first lease to end")
    assert store.reclaim_expired("crash") == []
    assert _drained(root, omx_api, "crash", "worker-1"), os.listdir(p.claimed)
