"""The worker loop end to end: ``omx team worker`` processes, real git, real files, a bash agent.

Every test starts the installed ``omx`` as a subprocess against a team in a temporary repository
whose WORKFLOW.md runs a ``command`` runtime (a bash script that records what it saw in ``$WL_OUT``).
Nothing waits on luck: each wait polls a condition with a deadline (:func:`worker_helpers.wait_until`),
and the one place where elapsed time is the point (a lease outliving several periods) checks its
invariant continuously while the time passes.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from worker_helpers import (
    PROMPT_BODY,
    TIMED_SCRIPT,
    Rig,
    WorkerProc,
    bash,
    git,
    hold_for,
    in_progress_by,
    intervals,
    kill_quietly,
    make_rig,
    pid_gone,
    start_worker,
    wait_until,
    write_workflow,
)

from omx.clock import parse_iso
from omx.errors import InvalidToken, LeaseExpired, OmxError
from omx.state.locks import try_locked
from omx.state.paths import TeamPaths

pytestmark = pytest.mark.slow

#: Waits for a gate file, so the test decides when the run ends; records its pid first.
GATED_SCRIPT = (
    'echo $$ > "$WL_OUT/pid-$(basename "$PWD")"; '
    'while [ ! -e "$WL_OUT/go" ]; do sleep 0.05; done; echo finished > finished.txt; echo "gated run finished"'
)


@pytest.fixture
def new_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """``new_rig(**options)``: a :func:`make_rig` whose worker processes are killed after the test."""
    made: list[Rig] = []

    def make(**options: Any) -> Rig:
        made.append(make_rig(tmp_path, **options))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def rig(new_rig: Callable[..., Rig]) -> Rig:
    return new_rig()


def open_gate(rig: Rig) -> None:
    (rig.out / "go").touch()


def acks(rig: Rig) -> list[str]:
    return [m.body for m in rig.store.mailbox_list(rig.team, "leader-fixed")]


def worker_states(rig: Rig, worker: str) -> list[str]:
    return [e.data["state"] for e in rig.events("worker_state_changed") if e.worker == worker]


# --- 1. the happy loop ---------------------------------------------------------------------------


def test_until_empty_completes_every_task_with_a_commit_on_its_branch(rig: Rig) -> None:
    script = ('printf "%s\\n" "$(basename "$PWD")" > made-by-agent.txt; cp "$OMX_PROMPT_FILE" prompt-seen.txt; '
              'echo "summary for $(basename "$PWD")"')
    body = "{{ worker }} of {{ team }} ({{ worker.name }}, {{ team.goal }}): " + PROMPT_BODY
    write_workflow(rig, runtime={"kind": "command", "command": bash(script)}, body=body)
    subjects = {rig.store.create_task(rig.team, f"task number {i}", f"description {i}").id: i for i in range(3)}
    ids = list(subjects)

    proc = start_worker(rig, "worker-1", "--until-empty")
    assert proc.wait() == 0, proc.output()

    assert "3 completed, 0 failed, 0 released" in proc.output()
    for tid in ids:
        task = rig.task(tid)
        assert task.status == "completed", (tid, task.error, proc.output())
        assert task.owner == "worker-1"
        assert task.claim is None
        assert task.attempts == 1
        result = task.result
        assert result["summary"] == f"summary for task-{tid}"
        assert result["branch"] == f"omx/{rig.team}/task-{tid}"
        assert result["attempts"] == 1
        assert isinstance(result["duration_ms"], int)
        assert result["duration_ms"] >= 0
        assert Path(result["workspace"]).is_relative_to(rig.worktrees.resolve())
        commit = result["commit"]
        assert git(rig.repo, "rev-parse", f"omx/{rig.team}/task-{tid}") == commit
        author = git(rig.repo, "log", "-1", "--format=%an <%ae>|%cn", commit)
        assert author == "worker-1 <worker-1@omx.invalid>|worker-1"
        assert git(rig.repo, "log", "-1", "--format=%B", commit) == f"omx: task number {subjects[tid]}\n\ntask-{tid}"
        assert git(rig.repo, "show", f"{commit}:made-by-agent.txt") == f"task-{tid}"
        prompt = git(rig.repo, "show", f"{commit}:prompt-seen.txt")
        assert prompt == (f"worker-1 of alpha (worker-1, test the worker): "
                          f"Task {tid}: task number {subjects[tid]}\n\ndescription {subjects[tid]}")
    assert git(rig.repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"  # the main checkout is untouched
    assert git(rig.repo, "status", "--porcelain", "--", ".", ":(exclude).omx") == ""

    assert [b for b in acks(rig) if b.startswith("ACK: worker-1")], acks(rig)
    status = rig.store.read_status(rig.team, "worker-1")
    assert status.state == "done"
    assert status.reason == "the team is drained"
    states = worker_states(rig, "worker-1")
    assert states[0] == "idle"
    assert states[-1] == "done"
    assert states.count("working") == 3
    beat = rig.store.read_heartbeat(rig.team, "worker-1")
    assert beat is not None
    assert beat.pid == proc.pid
    assert beat.last_beat_at
    assert beat.alive is False  # the last word is the worker's own "I have left"
    ident = rig.store.read_identity(rig.team, "worker-1")
    assert ident is not None
    assert ident.pid == proc.pid
    completions = [e for e in rig.events("worker_activity") if e.data.get("kind") == "completion"]
    assert sorted(e.task_id for e in completions) == sorted(ids)


# --- 2. failure and retries ----------------------------------------------------------------------


def test_failing_command_fails_the_task_with_stderr_after_retries_with_backoff(rig: Rig) -> None:
    script = 'echo "$EPOCHREALTIME" >> "$WL_OUT/attempts"; echo "boom: the disk is on fire" >&2; exit 3'
    write_workflow(rig, runtime={"kind": "command", "command": bash(script)},
                   agent={"maxRetryAttempts": 2, "retryBaseMs": 150, "maxRetryBackoffMs": 10_000})
    tid = rig.store.create_task(rig.team, "doomed").id

    proc = start_worker(rig, "worker-1", "--until-empty")
    assert proc.wait() == 0, proc.output()

    task = rig.task(tid)
    assert task.status == "failed"
    assert task.error is not None
    assert "exited with status 3" in task.error
    assert "boom: the disk is on fire" in task.error
    assert task.result["attempts"] == 3
    assert task.attempts == 1  # one claim; the retries happen inside it
    starts = [float(x) for x in rig.lines("attempts")]
    assert len(starts) == 3
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.15, gaps  # retryBaseMs
    assert gaps[1] >= 0.30, gaps  # doubled
    retries = [e.data["text"] for e in rig.events("worker_activity") if "retrying" in e.data.get("text", "")]
    assert len(retries) == 2
    assert "retrying in 0.15s" in retries[0]
    assert "retrying in 0.3s" in retries[1]
    failures = [e for e in rig.events("worker_activity") if e.data.get("kind") == "failure"]
    assert len(failures) == 1
    assert "1 failed" in proc.output()
    assert rig.store.read_status(rig.team, "worker-1").state == "done"


# --- 3. shutdown requests ------------------------------------------------------------------------


def test_shutdown_request_with_policy_finish_lets_the_task_complete(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash(GATED_SCRIPT)})
    first = rig.store.create_task(rig.team, "long one").id
    second = rig.store.create_task(rig.team, "never started").id

    proc = start_worker(rig, "worker-1", "--shutdown-policy", "finish")
    wait_until(lambda: (rig.out / f"pid-task-{first}").exists(), what="the agent to start", proc=proc)
    request = rig.store.write_shutdown_request(rig.team, "worker-1", "leader-fixed", "wrap up")
    wait_until(lambda: "shutdown requested" in proc.stderr(), what="the worker to see the request", proc=proc)
    assert proc.proc.poll() is None  # it waits for the running task
    assert in_progress_by(rig, first, "worker-1")
    open_gate(rig)
    assert proc.wait() == 0, proc.output()

    task = rig.task(first)
    assert task.status == "completed", task.error
    assert task.result["summary"] == "gated run finished"
    assert rig.task(second).status == "pending"  # nothing new was started after the request
    assert rig.task(second).owner is None
    ack = rig.store.read_shutdown_ack(rig.team, "worker-1", min_updated_at=request.requested_at)
    assert ack is not None
    assert ack.status == "accept"
    assert rig.store.read_status(rig.team, "worker-1").state == "done"


def test_shutdown_request_with_policy_interrupt_releases_the_task_and_keeps_the_worktree(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash(GATED_SCRIPT)})
    tid = rig.store.create_task(rig.team, "interrupted one").id

    proc = start_worker(rig, "worker-1", "--shutdown-policy", "interrupt")
    pid_file = rig.out / f"pid-task-{tid}"
    wait_until(pid_file.exists, what="the agent to start", proc=proc)
    agent_pid = int(wait_until(lambda: pid_file.read_text().strip(), what="the pid"))
    assert in_progress_by(rig, tid, "worker-1")
    request = rig.store.write_shutdown_request(rig.team, "worker-1", "leader-fixed")
    assert proc.wait() == 0, proc.output()

    task = rig.task(tid)
    assert task.status == "pending"
    assert task.owner is None
    assert task.claim is None
    assert pid_gone(agent_pid)
    released = rig.events("task_released", task_id=tid)
    assert len(released) == 1
    ack = rig.store.read_shutdown_ack(rig.team, "worker-1", min_updated_at=request.requested_at)
    assert ack is not None
    assert ack.status == "accept"
    worktrees = git(rig.repo, "worktree", "list", "--porcelain")
    kept = [line.split(" ", 1)[1] for line in worktrees.splitlines()
            if line.startswith("worktree ") and line.endswith(f"/task-{tid}")]
    assert len(kept) == 1, worktrees
    assert Path(kept[0]).is_dir()
    assert git(Path(kept[0]), "rev-parse", "--abbrev-ref", "HEAD") == f"omx/{rig.team}/task-{tid}"
    assert rig.store.read_status(rig.team, "worker-1").state == "done"


def test_an_old_shutdown_request_does_not_stop_a_new_worker(rig: Rig) -> None:
    # A previous run was asked to stop and said so; the request file stays behind.
    old = rig.store.write_shutdown_request(rig.team, "worker-1", "leader-fixed", "from a previous run")
    old_ack = rig.store.write_shutdown_ack(rig.team, "worker-1", "accept", "previous run")
    write_workflow(rig, runtime={"kind": "command", "command": bash("echo ok")})
    tid = rig.store.create_task(rig.team, "after an old request").id

    proc = start_worker(rig, "worker-1", "--until-empty")
    assert proc.wait() == 0, proc.output()

    assert rig.task(tid).status == "completed"
    assert rig.store.read_shutdown_ack(rig.team, "worker-1") == old_ack  # no new ACK: nothing new was asked
    assert parse_iso(old_ack.updated_at) >= parse_iso(old.requested_at)


def test_a_shutdown_request_written_while_the_worker_starts_up_is_honoured(rig: Rig) -> None:
    # The leader may ask a worker to stop before the worker got as far as reading its requests
    # (it spends its first half second importing). That request is for this run: it must be obeyed.
    write_workflow(rig, runtime={"kind": "command", "command": bash("echo ok")})
    proc = start_worker(rig, "worker-1")  # no --until-empty: only the request can end it
    request = rig.store.write_shutdown_request(rig.team, "worker-1", "leader-fixed", "changed my mind")
    assert proc.wait(30) == 0, proc.output()

    ack = rig.store.read_shutdown_ack(rig.team, "worker-1", min_updated_at=request.requested_at)
    assert ack is not None
    assert ack.status == "accept"
    assert rig.store.read_status(rig.team, "worker-1").state == "done"


# --- 4. SIGTERM ----------------------------------------------------------------------------------


def test_sigterm_interrupts_the_run_releases_the_claim_and_leaves_no_process(rig: Rig) -> None:
    script = ('sleep 600 & echo $! > "$WL_OUT/child"; echo $$ > "$WL_OUT/parent"; wait')
    write_workflow(rig, runtime={"kind": "command", "command": bash(script)})
    tid = rig.store.create_task(rig.team, "to be interrupted").id

    proc = start_worker(rig, "worker-1")
    pids: list[int] = []
    try:
        for name in ("parent", "child"):
            path = rig.out / name
            pids.append(int(wait_until(lambda p=path: p.exists() and p.read_text().strip(),
                                       what=f"the agent's {name} pid", proc=proc)))
        assert in_progress_by(rig, tid, "worker-1")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output()
        wait_until(lambda: all(pid_gone(p) for p in pids), timeout=10, what="the agent's processes to end")
    finally:
        kill_quietly(pids)

    task = rig.task(tid)
    assert task.status == "pending"
    assert task.owner is None
    assert task.claim is None
    assert rig.store.read_shutdown_ack(rig.team, "worker-1") is None  # nobody asked: nothing to acknowledge
    status = rig.store.read_status(rig.team, "worker-1")
    assert status.state == "done"
    assert "SIGTERM" in (status.reason or "")
    assert "1 released" in proc.output()


# --- 5. SIGKILL and takeover ---------------------------------------------------------------------


def test_a_killed_workers_task_is_taken_over_at_once_and_its_token_refused(rig: Rig) -> None:
    # First run: record the pid and hang (exec: the pid is the hanging process). Second run: wait for
    # the gate, then succeed. The rig's lease is 60 s: only the dead-pid rule can explain a fast takeover.
    script = ('echo $$ >> "$WL_OUT/pids"; if mkdir "$WL_OUT/first" 2>/dev/null; then exec sleep 600; fi; '
              'while [ ! -e "$WL_OUT/go" ]; do sleep 0.05; done; echo second > second.txt; echo "taken over"')
    write_workflow(rig, runtime={"kind": "command", "command": bash(script)})
    tid = rig.store.create_task(rig.team, "survives a crash").id
    tokens = rig.tmp / "tokens"

    victim = start_worker(rig, "worker-1", spy_tokens=tokens)
    orphans: list[int] = []
    try:
        wait_until(lambda: len(rig.lines("pids")) == 1, what="the first run to start", proc=victim)
        orphans.append(int(rig.lines("pids")[0]))
        task_id, token = tokens.read_text().split()
        assert task_id == tid
        victim.signal(signal.SIGKILL)
        victim.proc.wait(timeout=10)

        t0 = time.monotonic()
        heir = start_worker(rig, "worker-2", "--until-empty")
        wait_until(lambda: in_progress_by(rig, tid, "worker-2"), what="worker-2 to take the task over", proc=heir)
        takeover_s = time.monotonic() - t0
        assert takeover_s < 30  # far below the 60 s lease, even on a crowded machine

        for attempt in (
            lambda: rig.store.renew_claim(rig.team, tid, "worker-1", token),
            lambda: rig.store.transition_task(rig.team, tid, "worker-1", token, "completed", result={"x": 1}),
            lambda: rig.store.release_claim(rig.team, tid, "worker-1", token),
        ):
            with pytest.raises((InvalidToken, LeaseExpired)):
                attempt()
        open_gate(rig)
        assert heir.wait() == 0, heir.output()
    finally:
        victim.kill()
        kill_quietly(orphans)

    task = rig.task(tid)
    assert task.status == "completed", task.error
    assert task.owner == "worker-2"
    assert task.attempts == 2
    assert task.result["summary"] == "taken over"
    assert git(rig.repo, "show", f"{task.result['commit']}:second.txt") == "second"
    claims = rig.events("task_claimed", task_id=tid)
    assert [e.worker for e in claims] == ["worker-1", "worker-2"]
    assert claims[1].data["took_over"] == {"previous_owner": "worker-1", "reason": "orphaned",
                                                     "pid": ANY, "host": ANY}
    with pytest.raises(OmxError):  # and after completion, the dead token is still worth nothing
        rig.store.transition_task(rig.team, tid, "worker-1", token, "failed", error="late")
    assert rig.task(tid).status == "completed"


# --- 6. a live worker keeps its lease ------------------------------------------------------------


def test_a_live_worker_renews_its_lease_and_is_never_overtaken(new_rig: Callable[..., Rig]) -> None:
    # 2.4 s lease, renewed every 0.8 s: a renewal would have to stall for 1.6 s (not the few hundred ms
    # of a loaded CI machine's fsync or scheduling: gaps of 0.7 s between renewals were seen under load,
    # and a 600 ms lease flaked) before the rival could take over.
    rig = new_rig(lease_ms=2400)
    write_workflow(rig, runtime={"kind": "command", "command": bash(GATED_SCRIPT)})
    tid = rig.store.create_task(rig.team, "slow but alive").id

    def owner_and_rival() -> bool:
        task = rig.task(tid)
        assert task.status == "in_progress" and task.owner == "worker-1", (task.status, task.owner)
        assert rival.proc.poll() is None, f"the rival exited: {rival.output()}"
        return True

    holder = start_worker(rig, "worker-1", "--until-empty")
    wait_until(lambda: (rig.out / f"pid-task-{tid}").exists(), what="the run to start", proc=holder)
    rival = start_worker(rig, "worker-2", "--until-empty", poll_ms=50)
    try:
        wait_until(lambda: any(b.startswith("ACK: worker-2") for b in acks(rig)), what="worker-2 to start",
                   proc=rival)
        # Three lease periods while a second worker polls the same team: the owner must never change.
        checks = hold_for(7.2, owner_and_rival, "worker-1's claim")
        assert checks > 30
        open_gate(rig)
        assert holder.wait() == 0, holder.output()
        assert rival.wait() == 0, rival.output()
    finally:
        holder.kill()
        rival.kill()

    task = rig.task(tid)
    assert task.status == "completed", task.error
    assert task.owner == "worker-1"
    assert task.attempts == 1
    assert [e.worker for e in rig.events("task_claimed", task_id=tid)] == ["worker-1"]
    assert rig.events("claim_expired") == []
    assert len(rig.events("task_renewed", task_id=tid)) >= 8  # every lease/3 for 7.2+ s
    assert "0 completed" in rival.output()


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")


def freeze_outside_locks(rig: Rig, proc: WorkerProc) -> None:
    """SIGSTOP ``proc`` at a moment it holds none of the team's locks.

    Stopped inside a critical section (a renewal, under load a good part of its time), it would keep the
    task's lock: the heir would wait for that lock, not for the lease, and give up after its lock timeout.
    """
    locks = TeamPaths.of(rig.root, rig.team).locks
    deadline = time.monotonic() + 60
    while True:
        proc.signal(signal.SIGSTOP)
        wait_until(lambda: _stopped(proc.pid), what=f"{proc.name} to stop", proc=proc)
        held = []
        for lock in sorted(locks.glob("*.lock")):
            with try_locked(lock) as got:
                if not got:
                    held.append(lock.name)
        if not held:
            return
        proc.signal(signal.SIGCONT)
        assert time.monotonic() < deadline, f"{proc.name} always held {held} when stopped"
        time.sleep(0.01)  # let it leave the critical section


def test_a_frozen_worker_that_lost_its_lease_stops_its_run_and_reports_nothing(new_rig: Callable[..., Rig]) -> None:
    # A stalled machine: worker-1 is stopped (SIGSTOP) past its lease, worker-2 takes the task, then
    # worker-1 resumes. Its renewal is refused, so it must stop its agent and never report the task.
    # A 3 s lease (renewed every second): with 1 s, a renewal held up by a loaded machine lost a live
    # worker's claim by itself (worker-1 before the freeze, or worker-2 after the takeover).
    rig = new_rig(lease_ms=3000)
    script = ('echo $$ >> "$WL_OUT/pids"; while [ ! -e "$WL_OUT/go" ]; do sleep 0.05; done; '
              'echo "$(basename "$PWD")" > done.txt; echo "finished by pid $$"')
    write_workflow(rig, runtime={"kind": "command", "command": bash(script)})
    tid = rig.store.create_task(rig.team, "outlives a stall").id

    frozen = start_worker(rig, "worker-1", "--until-empty")
    pids: list[int] = []
    try:
        wait_until(lambda: len(rig.lines("pids")) == 1, what="worker-1's run to start", proc=frozen)
        pids.append(int(rig.lines("pids")[0]))
        freeze_outside_locks(rig, frozen)
        heir = start_worker(rig, "worker-2", "--until-empty", poll_ms=50)
        wait_until(lambda: in_progress_by(rig, tid, "worker-2"), what="worker-2 to take the expired task", proc=heir)
        wait_until(lambda: len(rig.lines("pids")) == 2, what="worker-2's run to start", proc=heir)
        pids.append(int(rig.lines("pids")[1]))
        frozen.signal(signal.SIGCONT)
        wait_until(lambda: pid_gone(pids[0]), timeout=30, what="worker-1 to stop the run it lost")
        assert not pid_gone(pids[1])
        assert in_progress_by(rig, tid, "worker-2")  # worker-1 did not release or finish it
        open_gate(rig)
        assert heir.wait() == 0, heir.output()
        assert frozen.wait() == 0, frozen.output()
    finally:
        frozen.signal(signal.SIGCONT)
        kill_quietly(pids)

    task = rig.task(tid)
    assert task.status == "completed", task.error
    assert task.owner == "worker-2"
    assert task.result["summary"] == f"finished by pid {pids[1]}"
    assert "lost the claim" in frozen.stderr()
    assert "0 completed, 0 failed, 0 released" in frozen.output()
    assert [e.worker for e in rig.events("task_claimed", task_id=tid)] == ["worker-1", "worker-2"]
    assert not [e for e in rig.events("task_released", "task_failed") if e.task_id == tid]


def test_a_takeover_ends_the_frozen_holders_agent_before_its_own_starts(new_rig: Callable[..., Rig]) -> None:
    # Two agents in one worktree is the failure: worker-1 is frozen past its lease with its agent still
    # writing; worker-2 must end that agent before it starts its own, so their writes never interleave.
    rig = new_rig(lease_ms=3000)
    script = ('echo $$ >> "$WL_OUT/pids"; while [ ! -e "$WL_OUT/go" ]; do echo "$$ $(date +%s%N)" >> '
              '"$WL_OUT/writes"; sleep 0.02; done; echo done > done.txt; echo "finished by pid $$"')
    write_workflow(rig, runtime={"kind": "command", "command": bash(script)})
    tid = rig.store.create_task(rig.team, "one worktree, one agent").id

    frozen = start_worker(rig, "worker-1", "--until-empty")
    pids: list[int] = []
    try:
        wait_until(lambda: len(rig.lines("pids")) == 1, what="worker-1's run to start", proc=frozen)
        pids.append(int(rig.lines("pids")[0]))
        freeze_outside_locks(rig, frozen)
        assert not pid_gone(pids[0])  # frozen worker, running agent
        heir = start_worker(rig, "worker-2", "--until-empty", poll_ms=50)
        wait_until(lambda: len(rig.lines("pids")) == 2, what="worker-2's run to start", proc=heir)
        pids.append(int(rig.lines("pids")[1]))
        assert pid_gone(pids[0]), "the frozen worker's agent still runs beside the new one"
        wait_until(lambda: sum(line.startswith(f"{pids[1]} ") for line in rig.lines("writes")) >= 3,
                   what="worker-2's agent to write", proc=heir)
        writes = [(int(p), int(t)) for p, t in (line.split() for line in rig.lines("writes"))]
        last_old = max(t for p, t in writes if p == pids[0])
        first_new = min(t for p, t in writes if p == pids[1])
        assert last_old < first_new, "the two agents' writes interleave"
        open_gate(rig)
        assert heir.wait() == 0, heir.output()
        assert "of the previous attempt" in heir.stderr()
    finally:
        frozen.signal(signal.SIGCONT)
        kill_quietly(pids)
    frozen.wait()
    task = rig.task(tid)
    assert task.status == "completed" and task.owner == "worker-2", task.error
    assert task.result["summary"] == f"finished by pid {pids[1]}"


# --- 7. concurrency: per worker and machine-wide --------------------------------------------------


def test_max_concurrent_agents_runs_two_tasks_at_once(rig: Rig) -> None:
    # Each run waits (up to 10 s) until two runs have started: with concurrency they overlap at once;
    # without it the first would wait out its 10 s alone, and the check below would fail.
    script = ('tag=$(basename "$PWD"); echo "start $EPOCHREALTIME $tag" >> "$WL_OUT/runs"; '
              'for i in $(seq 200); do [ "$(grep -c ^start "$WL_OUT/runs")" -ge 2 ] && break; sleep 0.05; done; '
              'echo "end $EPOCHREALTIME $tag" >> "$WL_OUT/runs"')
    write_workflow(rig, runtime={"kind": "command", "command": bash(script)}, agent={"maxConcurrentAgents": 2})
    ids = [rig.store.create_task(rig.team, f"parallel {i}").id for i in range(2)]

    proc = start_worker(rig, "worker-1", "--until-empty")
    assert proc.wait() == 0, proc.output()

    assert all(rig.task(t).status == "completed" for t in ids), proc.output()
    (a_start, a_end, a), (b_start, _, b) = intervals(rig.lines("runs"))
    assert {a, b} == {f"task-{t}" for t in ids}
    assert b_start < a_end, "the two runs did not overlap"
    assert a_end - a_start < 9, "the first run waited alone"


def test_machine_wide_cap_holds_across_worker_processes(new_rig: Callable[..., Rig]) -> None:
    rig = new_rig(extra_env={"OMX_MACHINE_MAX_AGENTS": "1", "WL_SLEEP": "0.25"})
    write_workflow(rig, runtime={"kind": "command", "command": bash(TIMED_SCRIPT)}, agent={"maxConcurrentAgents": 2})
    ids = [rig.store.create_task(rig.team, f"capped {i}").id for i in range(6)]

    procs = [start_worker(rig, w, "--until-empty") for w in ("worker-1", "worker-2")]
    for p in procs:
        assert p.wait() == 0, p.output()

    assert all(rig.task(t).status == "completed" for t in ids)
    runs = intervals(rig.lines("runs"))
    assert len(runs) == 6
    for (_, end, tag), (start, _, nxt) in itertools.pairwise(runs):
        assert start >= end, f"{nxt} started before {tag} ended: the machine-wide cap of 1 was exceeded"
    owners = {rig.task(t).owner for t in ids}
    assert owners <= {"worker-1", "worker-2"}


# --- 8. untrusted task text ----------------------------------------------------------------------


def test_untrusted_task_text_is_data_for_the_agent_and_hooks_only(rig: Rig) -> None:
    pwn = rig.tmp / "pwned"
    pwn.mkdir()
    subject = (f"x'; touch {pwn}/a; echo \"$(touch {pwn}/b)\" `touch {pwn}/c` "
               "{{ 7*7 }} {% for i in range(3) %}LOOP{% endfor %} {# c #} ${HOME} %s "
               f"../../../../{pwn.name}/dotdot && touch {pwn}/h | tee {pwn}/d")
    description = (f"line one\n$(touch {pwn}/e)\n`touch {pwn}/f`; touch {pwn}/g\n{{{{ task.subject }}}}\n"
                   "{% raw %}x{% endraw %}\n../../etc/passwd\n-- --force\t\\n\\0 'single' \"double\" > out")
    hook = 'printf "%s" "$OMX_TASK_SUBJECT" > "$WL_OUT/hook-$OMX_HOOK"'
    script = ('cp "$OMX_PROMPT_FILE" "$WL_OUT/prompt"; cat > "$WL_OUT/stdin"; env > "$WL_OUT/agent-env"; '
              'echo done > done.txt; echo ok')
    write_workflow(rig, runtime={"kind": "command", "command": bash(script)},
                   hooks={"afterCreate": hook, "beforeRun": hook})
    tid = rig.store.create_task(rig.team, subject, description).id

    proc = start_worker(rig, "worker-1", "--until-empty")
    assert proc.wait() == 0, proc.output()

    task = rig.task(tid)
    assert task.status == "completed", task.error
    expected = f"Task {tid}: {subject}\n\n{description}\n"
    assert (rig.out / "prompt").read_text() == expected  # verbatim: no template ran over the task's text
    assert (rig.out / "stdin").read_text() == expected
    assert (rig.out / "hook-afterCreate").read_text() == subject  # data in a variable, nothing more
    assert (rig.out / "hook-beforeRun").read_text() == subject
    assert list(pwn.iterdir()) == [], "the task text ran as a command"
    agent_env = (rig.out / "agent-env").read_text()
    assert str(pwn) not in agent_env, "task text reached the agent's environment"
    omx_vars = {line.split("=", 1)[0] for line in agent_env.splitlines() if line.startswith("OMX_")}
    # A command agent may get the run's plain facts (ids and names, never task text); omx's own state,
    # like the OMX_HOME the worker has, stays out.
    # OMX_LIFELINE_TAG names the worker process (pid and start time), so that its children die with it.
    assert omx_vars <= {"OMX_PROMPT_FILE", "OMX_TASK_ID", "OMX_TEAM", "OMX_WORKER", "OMX_ATTEMPT",
                        "OMX_LIFELINE_TAG"}, omx_vars
    workspace = Path(task.result["workspace"])
    assert ".." not in workspace.parts
    assert workspace.resolve().is_relative_to(rig.worktrees.resolve())
    assert workspace.name == f"task-{tid}"
    assert task.result["branch"] == f"omx/{rig.team}/task-{tid}"
    branches = git(rig.repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/omx").splitlines()
    assert branches == [f"omx/{rig.team}/integration", f"omx/{rig.team}/task-{tid}"]
    # The merge into the integration branch names the task in its message, verbatim (git read it on stdin).
    assert subject[:200] in git(rig.repo, "log", "-1", "--format=%B", f"omx/{rig.team}/integration")
    assert not list(rig.tmp.rglob("dotdot"))
    assert not list(workspace.glob("out"))


# --- once known gaps (hooks not cancellable; agents outliving a SIGKILLed worker), now fixed ------------


def test_sigterm_during_a_long_hook_stops_the_worker_promptly(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash("echo ok")},
                   hooks={"beforeRun": 'echo $$ > "$WL_OUT/hook"; sleep 50', "timeoutMs": 60_000})
    tid = rig.store.create_task(rig.team, "slow hook").id
    proc = start_worker(rig, "worker-1")
    wait_until(lambda: (rig.out / "hook").exists(), what="the hook to start", proc=proc)
    t0 = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.output()
    assert rig.task(tid).status == "pending"
    # The hook sleeps 50 s: 15 s leaves a loaded machine room for the release and the exit.
    assert time.monotonic() - t0 < 15, "the worker waited for the hook to finish"


def test_sigkill_of_the_worker_takes_its_agent_down_too(rig: Rig) -> None:
    # The agent reads its prompt to the end before it says it runs: the worker feeds stdin only after it
    # told its lifeline keeper about the agent. (A worker killed between the spawn and that is the window
    # the keeper leaves open; on a loaded machine the agent could get as far as its pid file within it.)
    script = 'cat > /dev/null; echo $$ > "$WL_OUT/agent"; exec sleep 600'
    write_workflow(rig, runtime={"kind": "command", "command": bash(script)})
    rig.store.create_task(rig.team, "orphan maker")
    proc = start_worker(rig, "worker-1")
    path = rig.out / "agent"
    agent = int(wait_until(lambda: path.exists() and path.read_text().strip(), what="the agent's pid", proc=proc))
    try:
        proc.signal(signal.SIGKILL)
        proc.proc.wait(timeout=10)
        wait_until(lambda: pid_gone(agent), timeout=15, what="the orphaned agent to end")  # not its 600 s
    finally:
        kill_quietly([agent])


def test_a_worker_without_its_agent_program_refuses_to_start(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": ["no-such-agent-program-omx", "--go"]})
    tid = rig.store.create_task(rig.team, "must stay pending").id

    proc = start_worker(rig, "worker-1", "--until-empty")
    assert proc.wait() == 2, proc.output()

    assert "no-such-agent-program-omx" in proc.stderr()
    assert rig.task(tid).status == "pending"  # not claimed, not failed: another worker can still run it
    assert rig.task(tid).attempts == 0
    assert acks(rig) == []
