"""Integration: a team's work comes together on one branch (real git, real worker processes).

Each scenario runs ``omx team worker`` processes with the ``command`` runtime: a bash script that
plays the agent, writes files in its worktree and records what it saw into ``$WL_OUT``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine.worker_helpers import (
    OMX,
    Rig,
    bash,
    git,
    make_rig,
    start_worker,
    wait_until,
    write_workflow,
)

pytestmark = pytest.mark.slow

BRANCH = "omx/alpha/integration"


@pytest.fixture
def new_rig(tmp_path: Path) -> Iterator[Callable[..., Rig]]:
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


def run_workers(rig: Rig, *names: str, timeout: float = 120) -> None:
    procs = [start_worker(rig, n, "--until-empty") for n in names]
    for p in procs:
        assert p.wait(timeout) == 0, p.output()


def tree(rig: Rig, ref: str = BRANCH) -> set[str]:
    return set(git(rig.repo, "ls-tree", "-r", "--name-only", ref).splitlines())


def show(rig: Rig, path: str, ref: str = BRANCH) -> str:
    return git(rig.repo, "show", f"{ref}:{path}")


def merges_of(rig: Rig, key: str) -> list[str]:
    """The integration branch's merge commits that bring task ``key`` in (first-parent history)."""
    log = git(rig.repo, "log", "--first-parent", "--format=%H %s", BRANCH).splitlines()
    return [line.split()[0] for line in log if f" omx: integrate {key}:" in f" {line.split(' ', 1)[1]}"]


def cli(rig: Rig, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([OMX, *args], capture_output=True, text=True, env=rig.env, cwd=cwd or rig.repo,
                          stdin=subprocess.DEVNULL, timeout=120)


# --- dependencies carry code ---------------------------------------------------------------------

PARSER = ('if [ "$OMX_TASK_ID" = 1 ]; then echo parser > parser.txt; echo wrote the parser; '
          'elif [ -f parser.txt ]; then echo HAVE_PARSER > test.txt; echo HAVE_PARSER; '
          'else echo NO_PARSER > test.txt; echo NO_PARSER; fi')


def test_a_dependent_task_starts_with_its_dependency_in_its_worktree(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash(PARSER)})
    one = rig.store.create_task(rig.team, "write the parser").id
    two = rig.store.create_task(rig.team, "test the parser", depends_on=[one]).id
    run_workers(rig, "worker-1", "worker-2")

    t1, t2 = rig.task(one), rig.task(two)
    assert (t1.status, t2.status) == ("completed", "completed"), (t1.error, t2.error)
    assert t2.result["summary"] == "HAVE_PARSER"  # the worktree of task 2 held task 1's file
    assert show(rig, "test.txt") == "HAVE_PARSER"
    assert {"parser.txt", "test.txt"} <= tree(rig)
    i1, i2 = t1.result["integration"], t2.result["integration"]
    assert (i1["status"], i2["status"]) == ("merged", "merged")
    assert i1["files"] == ["parser.txt"] and i2["files"] == ["test.txt"]
    # Each task's result names the integration commit that contains it; task 2's builds on task 1's.
    git(rig.repo, "merge-base", "--is-ancestor", i1["commit"], i2["commit"])
    git(rig.repo, "merge-base", "--is-ancestor", t2.result["commit"], i2["commit"])
    assert git(rig.repo, "rev-parse", BRANCH) == i2["commit"]


SEEN = ('ls seen-*.txt 2>/dev/null | sort | tr "\\n" " " > "seen-$OMX_TASK_ID.txt"; '
        'cat "seen-$OMX_TASK_ID.txt"')


def test_a_chain_and_a_diamond_end_with_every_change_on_one_branch(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash(SEEN)})
    s = rig.store
    a1 = s.create_task(rig.team, "chain 1").id
    a2 = s.create_task(rig.team, "chain 2", depends_on=[a1]).id
    a3 = s.create_task(rig.team, "chain 3", depends_on=[a2]).id
    d1 = s.create_task(rig.team, "diamond top").id
    d2 = s.create_task(rig.team, "diamond left", depends_on=[d1]).id
    d3 = s.create_task(rig.team, "diamond right", depends_on=[d1]).id
    d4 = s.create_task(rig.team, "diamond bottom", depends_on=[d2, d3]).id
    run_workers(rig, "worker-1", "worker-2")

    ids = [a1, a2, a3, d1, d2, d3, d4]
    assert all(rig.task(t).status == "completed" for t in ids)
    assert {f"seen-{t}.txt" for t in ids} <= tree(rig)

    def saw(t: str) -> set[str]:
        return set(rig.task(t).result["summary"].split())

    assert {f"seen-{a1}.txt", f"seen-{a2}.txt"} <= saw(a3)  # the whole chain above it
    assert f"seen-{a1}.txt" in saw(a2)
    assert {f"seen-{d1}.txt", f"seen-{d2}.txt", f"seen-{d3}.txt"} <= saw(d4)  # both sides of the diamond
    assert f"seen-{d1}.txt" in saw(d2) and f"seen-{d1}.txt" in saw(d3)
    for t in ids:
        assert len(merges_of(rig, f"task-{t}")) == 1, t


def test_a_task_that_changes_nothing_completes_with_no_merge(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash("echo nothing to do")})
    tid = rig.store.create_task(rig.team, "look only").id
    before = git(rig.repo, "rev-parse", "main")
    run_workers(rig, "worker-1")
    task = rig.task(tid)
    assert task.status == "completed"
    assert task.result["integration"] == {"status": "unchanged", "branch": BRANCH}
    assert git(rig.repo, "rev-parse", BRANCH) == before


# --- conflicts ---------------------------------------------------------------------------------

#: Task 1 sets the line once task 2's first attempt has started from the same tip; task 2 sets it
#: differently and waits until task 1 is integrated (so it conflicts); on its next attempt — markers in
#: place — it keeps both lines.
RESOLVER = r'''
cp "$OMX_PROMPT_FILE" "$WL_OUT/prompt-$OMX_TASK_ID-$OMX_ATTEMPT"
if [ "$OMX_TASK_ID" = 2 ]; then touch "$WL_OUT/two-started"; fi
if [ "$OMX_TASK_ID" = 1 ]; then while [ ! -e "$WL_OUT/two-started" ]; do sleep 0.05; done; fi
if grep -q '^<<<<<<<' shared.txt 2>/dev/null; then
  cp shared.txt "$WL_OUT/markers-$OMX_TASK_ID"
  if [ -n "$NEVER_RESOLVE" ]; then echo "left the markers"; exit 0; fi
  grep -v '^\(<<<<<<<\|=======\|>>>>>>>\)' shared.txt > s.tmp && mv s.tmp shared.txt
  echo resolved
  exit 0
fi
echo "value = $OMX_TASK_ID" > shared.txt
if [ "$OMX_TASK_ID" = 2 ]; then while [ ! -e "$WL_OUT/one-done" ]; do sleep 0.05; done; fi
echo "set $OMX_TASK_ID"
'''


def _conflict_team(rig: Rig) -> tuple[str, str]:
    (rig.repo / "shared.txt").write_text("value = 0\n")
    write_workflow(rig, runtime={"kind": "command", "command": bash(RESOLVER)})  # commits shared.txt too
    one = rig.store.create_task(rig.team, "set one", owner="worker-1").id
    two = rig.store.create_task(rig.team, "set two", owner="worker-2").id
    return one, two


def _run_conflict(rig: Rig, one: str, extra_env: dict[str, str] | None = None) -> None:
    w1 = start_worker(rig, "worker-1", "--until-empty", "--max-tasks", "1", env=extra_env)
    w2 = start_worker(rig, "worker-2", "--until-empty", env=extra_env)
    assert w1.wait() == 0, w1.output()
    assert rig.task(one).status == "completed", rig.task(one).error
    (rig.out / "one-done").touch()
    assert w2.wait() == 0, w2.output()


def test_a_conflict_goes_back_to_the_agent_with_markers_and_both_intents_land(rig: Rig) -> None:
    one, two = _conflict_team(rig)
    _run_conflict(rig, one)

    t2 = rig.task(two)
    assert t2.status == "completed", t2.error
    assert t2.attempts == 2
    released = rig.events("task_released", task_id=two)
    assert [e.reason for e in released] == ["merge_conflict: shared.txt"]
    # The second attempt started from the integration tip with task 2's first commit merged in, markers
    # in place, and its prompt named the conflicted file.
    markers = (rig.out / f"markers-{two}").read_text()
    assert "<<<<<<<" in markers and "value = 1" in markers and "value = 2" in markers
    prompt = (rig.out / f"prompt-{two}-2").read_text()
    assert "conflict markers" in prompt and "shared.txt" in prompt and "attempt 2 of 2" in prompt
    assert "conflict" not in (rig.out / f"prompt-{two}-1").read_text()
    final = show(rig, "shared.txt").splitlines()
    assert sorted(final) == ["value = 1", "value = 2"]  # both intents
    assert len(merges_of(rig, f"task-{two}")) == 1 and len(merges_of(rig, f"task-{one}")) == 1


def test_a_conflict_never_resolved_fails_as_merge_conflict_and_loses_no_commit(rig: Rig) -> None:
    one, two = _conflict_team(rig)
    _run_conflict(rig, one, {"NEVER_RESOLVE": "1"})

    t2 = rig.task(two)
    assert t2.status == "failed"
    assert t2.error.startswith("merge_conflict: shared.txt")
    assert t2.result["error_code"] == "merge_conflict"
    assert t2.result["integration"]["paths"] == ["shared.txt"]
    assert t2.result["integration"]["failures"] == 2
    # Never completed unmerged: the branch holds task 1 only, and no marker.
    assert show(rig, "shared.txt") == "value = 1"
    assert merges_of(rig, f"task-{two}") == []
    # No commit lost: task 2's own first commit is still on its branch.
    first = git(rig.repo, "log", "--format=%H", "--grep", "^omx: set two", "omx/alpha/task-2").splitlines()
    assert first, "task 2's commit is gone"
    assert "omx/alpha/task-2" in git(rig.repo, "branch", "--contains", first[-1])
    assert "value = 2" in git(rig.repo, "show", f"{first[-1]}:shared.txt")


# --- verification ------------------------------------------------------------------------------

VERIFY = ('n=$(cat "$WL_OUT/verify-count" 2>/dev/null || echo 0); echo $((n+1)) > "$WL_OUT/verify-count"; '
          'pwd > "$WL_OUT/verify-cwd-$n"; ls > "$WL_OUT/verify-ls-$n"; '
          'if [ "$n" = 0 ]; then echo "FAILED tests/test_feature.py::test_it - VERIFY-TOKEN-42"; exit 1; fi; '
          'test -f feature.txt')


def test_a_failed_verification_sends_the_task_back_with_the_output_in_its_prompt(rig: Rig) -> None:
    agent = 'cp "$OMX_PROMPT_FILE" "$WL_OUT/prompt-$OMX_ATTEMPT"; echo "attempt $OMX_ATTEMPT" >> feature.txt; echo ok'
    write_workflow(rig, runtime={"kind": "command", "command": bash(agent)}, integration={"verify": VERIFY})
    tid = rig.store.create_task(rig.team, "add the feature").id
    run_workers(rig, "worker-1")

    task = rig.task(tid)
    assert task.status == "completed", task.error
    assert task.attempts == 2
    assert (rig.out / "verify-count").read_text().strip() == "2"
    assert "VERIFY-TOKEN-42" not in (rig.out / "prompt-1").read_text()
    second = (rig.out / "prompt-2").read_text()
    assert "VERIFY-TOKEN-42" in second and "failed the verification command" in second
    # It ran in omx's own worktree, on the merged tree, never in the user's checkout.
    cwd = Path((rig.out / "verify-cwd-1").read_text().strip())
    assert cwd != rig.repo and cwd.resolve().is_relative_to(rig.worktrees.resolve())
    assert "feature.txt" in (rig.out / "verify-ls-1").read_text().split()
    assert task.result["integration"]["status"] == "merged"
    assert show(rig, "feature.txt").splitlines() == ["attempt 1", "attempt 2"]
    assert len(merges_of(rig, f"task-{tid}")) == 1


def test_a_verification_that_never_passes_fails_the_task_and_leaves_the_branch_alone(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash("echo x > x.txt; echo ok")},
                   integration={"verify": "echo always-broken; exit 3", "maxAttempts": 1})
    tid = rig.store.create_task(rig.team, "break it").id
    before = git(rig.repo, "rev-parse", "main")
    run_workers(rig, "worker-1")
    task = rig.task(tid)
    assert task.status == "failed"
    assert task.result["error_code"] == "verify_failed"
    assert "always-broken" in task.result["integration"]["output"]
    assert git(rig.repo, "rev-parse", BRANCH) == before


# --- many at once --------------------------------------------------------------------------------


def _checkout_fingerprint(repo: Path) -> str:
    h = hashlib.sha256()
    for name in ("HEAD", "index"):
        h.update((repo / ".git" / name).read_bytes())
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo)
        if rel.parts[0] in (".git", ".omx") or not path.is_file():
            continue
        h.update(str(rel).encode() + b"\0" + path.read_bytes())
    h.update(git(repo, "status", "--porcelain").encode())
    h.update(git(repo, "rev-parse", "main").encode())
    return h.hexdigest()


def test_four_workers_finishing_forty_tasks_together_lose_no_merge(new_rig: Callable[..., Rig]) -> None:
    rig = new_rig(workers=[f"worker-{i}" for i in range(1, 5)])
    write_workflow(rig, runtime={"kind": "command", "command": bash('echo "$OMX_TASK_ID" > "f-$OMX_TASK_ID.txt"')})
    ids = [rig.store.create_task(rig.team, f"file {i}").id for i in range(40)]
    before = _checkout_fingerprint(rig.repo)
    run_workers(rig, *(f"worker-{i}" for i in range(1, 5)), timeout=300)

    assert all(rig.task(t).status == "completed" for t in ids)
    assert {f"f-{t}.txt" for t in ids} <= tree(rig)
    task_commits = {rig.task(t).result["commit"] for t in ids}
    assert len(task_commits) == 40
    reachable = set(git(rig.repo, "rev-list", BRANCH).split())
    assert task_commits <= reachable  # every task's commit is on the branch: no lost update
    assert sum(len(merges_of(rig, f"task-{t}")) for t in ids) == 40
    owners = {rig.task(t).owner for t in ids}
    assert len(owners) > 1, "the tasks were not spread over the workers"
    assert _checkout_fingerprint(rig.repo) == before  # the user's checkout, index and HEAD untouched


# --- crashes -----------------------------------------------------------------------------------


def test_a_worker_killed_while_verifying_leaves_the_task_integrated_exactly_once(rig: Rig) -> None:
    slow = 'touch "$WL_OUT/verifying"; sleep 60'
    write_workflow(rig, runtime={"kind": "command", "command": bash("echo done > done.txt; echo ok")},
                   integration={"verify": slow})
    tid = rig.store.create_task(rig.team, "one").id
    w1 = start_worker(rig, "worker-1")
    wait_until(lambda: (rig.out / "verifying").exists(), what="the verification to start", proc=w1)
    w1.signal(signal.SIGKILL)
    w1.wait()
    assert rig.task(tid).status == "in_progress"
    assert git(rig.repo, "rev-parse", BRANCH) == git(rig.repo, "rev-parse", "main")  # nothing moved

    write_workflow(rig, runtime={"kind": "command", "command": bash("echo done > done.txt; echo ok")},
                   integration={"verify": "test -f done.txt"})
    # The dead worker's claim is orphaned (its pid is gone): the next worker takes the task at once.
    run_workers(rig, "worker-2")
    task = rig.task(tid)
    assert task.status == "completed", task.error
    assert len(merges_of(rig, f"task-{tid}")) == 1
    assert "done.txt" in tree(rig)


def test_a_task_merged_before_its_worker_died_is_reported_not_merged_again(rig: Rig) -> None:
    """The state a SIGKILL between the merge and the report leaves: merged, still in progress."""
    from omx.engine.integration import IntegrationTarget, integrate
    from omx.engine.settings import WorktreeSettings
    from omx.engine.workspaces import commit_changes, prepare_workspace

    write_workflow(rig, runtime={"kind": "command", "command": bash('touch "$WL_OUT/agent-ran"; echo x > x.txt')})
    tid = rig.store.create_task(rig.team, "one").id
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    rig.store.claim_task(rig.team, tid, "worker-1", pid=int(dead))
    target = IntegrationTarget(rig.repo, rig.team, BRANCH, "main")
    ws = prepare_workspace(rig.repo, WorktreeSettings(root=str(rig.worktrees)), rig.team, f"task-{tid}",
                           base=git(rig.repo, "rev-parse", "main"))
    (ws.path / "x.txt").write_text("from the first attempt\n")
    head = commit_changes(ws, "omx: one", "worker-1", "w@x")
    assert head
    merged = integrate(target, f"task-{tid}", head, "omx: integrate task-1: one", author="worker-1")
    assert merged.status == "merged"

    run_workers(rig, "worker-2")
    task = rig.task(tid)
    assert task.status == "completed" and task.owner == "worker-2"
    assert task.result["integration"] == {"status": "already", "branch": BRANCH, "commit": merged.commit}
    assert not (rig.out / "agent-ran").exists(), "the agent ran again for an integrated task"
    assert git(rig.repo, "rev-parse", BRANCH) == merged.commit
    assert len(merges_of(rig, f"task-{tid}")) == 1


def test_a_ref_lock_left_by_a_killed_git_does_not_block_the_team_for_long(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash('echo "$OMX_TASK_ID" > "f-$OMX_TASK_ID.txt"')})
    rig.store.create_task(rig.team, "one")
    git(rig.repo, "branch", BRANCH, "main")
    lock = rig.repo / ".git" / "refs" / "heads" / "omx" / "alpha" / "integration.lock"
    lock.write_text("")
    os.utime(lock, (1, 1))  # old: left by a git that was killed long ago
    run_workers(rig, "worker-1")
    assert not lock.exists()
    assert "f-1.txt" in tree(rig)


# --- landing -----------------------------------------------------------------------------------


def _integrated(rig: Rig, *files: str) -> None:
    script = 'for f in $FILES; do echo "$f from $OMX_TASK_ID" > "$f"; done; echo ok'
    write_workflow(rig, runtime={"kind": "command", "command": bash(script)})
    rig.store.create_task(rig.team, "write files")
    proc = start_worker(rig, "worker-1", "--until-empty", env={"FILES": " ".join(files)})
    assert proc.wait() == 0, proc.output()


def land(rig: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(rig, "team", "land", "--team", "alpha", "--root", str(rig.root), *args)


def test_land_fast_forwards_a_clean_checkout(rig: Rig) -> None:
    _integrated(rig, "a.txt")
    r = land(rig)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("fast-forwarded main to ")
    assert git(rig.repo, "rev-parse", "main") == git(rig.repo, "rev-parse", BRANCH)
    assert (rig.repo / "a.txt").read_text() == "a.txt from 1\n"  # the checkout followed
    assert git(rig.repo, "status", "--porcelain") == ""
    again = land(rig, "--json")
    assert json.loads(again.stdout)["mode"] == "up-to-date"


def test_land_merges_when_the_base_moved(rig: Rig) -> None:
    _integrated(rig, "a.txt")
    (rig.repo / "b.txt").write_text("the user's own work\n")
    git(rig.repo, "add", "b.txt")
    git(rig.repo, "commit", "-qm", "user commit")
    user_tip = git(rig.repo, "rev-parse", "main")
    r = land(rig, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["mode"] == "merge" and out["from"] == user_tip
    parents = git(rig.repo, "rev-parse", "main^1", "main^2").split()
    assert parents == [user_tip, git(rig.repo, "rev-parse", BRANCH)]
    assert (rig.repo / "a.txt").exists() and (rig.repo / "b.txt").exists()


def test_land_refuses_a_dirty_checkout_and_changes_nothing(rig: Rig) -> None:
    _integrated(rig, "a.txt")
    (rig.repo / "README.md").write_text("edited, not committed\n")
    before = git(rig.repo, "rev-parse", "main")
    r = land(rig)
    assert r.returncode == 1
    assert "uncommitted changes" in r.stderr and "[workspace_dirty]" in r.stderr
    assert git(rig.repo, "rev-parse", "main") == before
    assert (rig.repo / "README.md").read_text() == "edited, not committed\n"
    assert not (rig.repo / "a.txt").exists()


def test_land_refuses_a_base_that_moved_and_now_conflicts(rig: Rig) -> None:
    _integrated(rig, "README.md")
    (rig.repo / "README.md").write_text("the user rewrote it\n")
    git(rig.repo, "commit", "-qam", "user rewrite")
    before = git(rig.repo, "rev-parse", "main")
    r = land(rig)
    assert r.returncode == 1
    assert "conflicts with omx/alpha/integration in: README.md" in r.stderr
    assert git(rig.repo, "rev-parse", "main") == before
    assert git(rig.repo, "status", "--porcelain") == ""


# --- modes, settings, doctor -----------------------------------------------------------------------


def test_branch_mode_integrates_the_same_way(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash(PARSER)}, mode="branch")
    one = rig.store.create_task(rig.team, "write the parser").id
    two = rig.store.create_task(rig.team, "test the parser", depends_on=[one]).id
    run_workers(rig, "worker-1", "worker-2")
    assert rig.task(two).result["summary"] == "HAVE_PARSER"
    assert show(rig, "test.txt") == "HAVE_PARSER" and "parser.txt" in tree(rig)
    assert git(rig.repo, "symbolic-ref", "--short", "HEAD") == "main"  # the checkout is back on its branch


def test_repository_mode_has_nothing_to_integrate(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash("echo x >> log.txt; echo ok")},
                   mode="repository")
    rig.store.create_task(rig.team, "one")
    run_workers(rig, "worker-1")
    assert git(rig.repo, "branch", "--list", BRANCH) == ""
    rep = cli(rig, "team", "report", "--team", "alpha", "--root", str(rig.root))
    assert "repository mode" in rep.stdout and "nothing to integrate" in rep.stdout


def test_a_bad_integration_branch_name_stops_the_worker_before_it_claims(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash("echo ok")}, integration={"branch": "../x y"})
    tid = rig.store.create_task(rig.team, "one").id
    proc = start_worker(rig, "worker-1", "--until-empty")
    assert proc.wait() == 2, proc.output()
    assert "integration.branch '../x y' is not a valid branch name" in proc.stderr()
    assert "Traceback" not in proc.output()
    assert rig.task(tid).status == "pending"


def test_doctor_finds_and_fixes_an_odd_integration_state(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash('echo x > "f-$OMX_TASK_ID.txt"')},
                   integration={"verify": "true"})
    rig.store.create_task(rig.team, "one")
    rig.store.create_task(rig.team, "two")
    run_workers(rig, "worker-1")
    tip = git(rig.repo, "rev-parse", BRANCH)

    def doctor(*args: str) -> subprocess.CompletedProcess[str]:
        return cli(rig, "doctor", "--root", str(rig.root), "--json", *args)

    checks = [c for c in json.loads(doctor().stdout)["checks"] if c["name"] == "team alpha: integration"]
    assert checks and all(c["ok"] for c in checks), checks

    # A killed git's ref lock, a deleted branch, and an integration worktree with a stale index.lock.
    lock = rig.repo / ".git" / "refs" / "heads" / "omx" / "alpha" / "integration.lock"
    git(rig.repo, "branch", "-D", BRANCH)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text("")
    verify_tree = next(rig.worktrees.glob("*/alpha/integration"))
    gitdir = Path(git(verify_tree, "rev-parse", "--absolute-git-dir"))
    (gitdir / "index.lock").write_text("")

    found = doctor()
    assert found.returncode == 1
    bad = {c["detail"].split(" ")[0]: c for c in json.loads(found.stdout)["checks"]
           if c["name"] == "team alpha: integration" and not c["ok"]}
    details = " | ".join(c["detail"] for c in bad.values())
    assert "integration.lock" in details and "is missing although 2 tasks were integrated" in details
    assert "stale index.lock" in details

    fixed = doctor("--fix")
    assert fixed.returncode == 0, fixed.stdout
    assert not lock.exists()
    assert git(rig.repo, "rev-parse", BRANCH) == tip  # restored at the newest integration
    assert not (gitdir / "index.lock").exists()
    again = [c for c in json.loads(doctor().stdout)["checks"] if c["name"] == "team alpha: integration"]
    assert all(c["ok"] for c in again), again


def test_verify_follows_the_hooks_environment_rules(rig: Rig) -> None:
    verify = 'env > "$WL_OUT/verify-env"; true'
    write_workflow(rig, runtime={"kind": "command", "command": bash("echo x > x.txt")},
                   integration={"verify": verify}, hooks={"passEnv": ["DEPLOY_TOKEN"]})
    rig.store.create_task(rig.team, "one")
    proc = start_worker(rig, "worker-1", "--until-empty", env={"STRIPE_KEY": "sk-secret", "DEPLOY_TOKEN": "let-in"})
    assert proc.wait() == 0, proc.output()
    env = dict(line.split("=", 1) for line in (rig.out / "verify-env").read_text().splitlines() if "=" in line)
    assert "STRIPE_KEY" not in env  # a credential is withheld, as from a hook
    assert env["DEPLOY_TOKEN"] == "let-in"  # hooks.passEnv lets it through
    assert env["OMX_TASK_ID"] == "1" and env["OMX_INTEGRATION_BRANCH"] == BRANCH
    assert env["OMX_INTEGRATION_COMMIT"] == git(rig.repo, "rev-parse", BRANCH)


def test_a_claim_taken_over_from_another_host_works_in_a_worktree_of_its_own(new_rig: Callable[..., Rig]) -> None:
    """A shared worktree root must never put two hosts' agents in one checkout."""
    import time

    from omx.engine.settings import WorktreeSettings
    from omx.engine.workspaces import prepare_workspace
    from omx.state.base import host_tag
    from omx.state.filestore import FileStore

    rig = new_rig(lease_ms=800)
    write_workflow(rig, runtime={"kind": "command", "command": bash('echo "$PWD" > here.txt; echo ok')})
    tid = rig.store.create_task(rig.team, "one").id
    other = FileStore(rig.root)
    other.host, other.host_tag = "elsewhere.example", host_tag("elsewhere.example")
    other.claim_task(rig.team, tid, "worker-1", pid=4242)  # a worker on another machine, still at work
    theirs = prepare_workspace(rig.repo, WorktreeSettings(root=str(rig.worktrees)), rig.team, f"task-{tid}",
                               base=git(rig.repo, "rev-parse", "main"))
    (theirs.path / "wip.txt").write_text("the other host's agent is writing here\n")
    time.sleep(1.0)  # its lease runs out (a host that stopped renewing)

    run_workers(rig, "worker-2")
    task = rig.task(tid)
    assert task.status == "completed" and task.owner == "worker-2", task.error
    mine = Path(task.result["workspace"])
    assert mine != theirs.path and mine.name == f"task-{tid}-on-{rig.store.host_tag}"
    assert show(rig, "here.txt") == str(mine)
    assert (theirs.path / "wip.txt").read_text() == "the other host's agent is writing here\n"  # untouched
    assert not (theirs.path / "here.txt").exists()


# --- a Codex session's worker: the same path through omx team api --------------------------------


def api(rig: Rig, op: str, **payload: Any) -> tuple[dict[str, Any], int]:
    r = cli(rig, "team", "api", op, "--root", str(rig.root), "--input", json.dumps(payload), "--json")
    return json.loads(r.stdout), r.returncode


def test_a_session_worker_prepares_a_worktree_and_finishes_through_integration(rig: Rig) -> None:
    write_workflow(rig, runtime={"kind": "command", "command": bash("echo unused")})
    (rig.repo / "shared.txt").write_text("value = 0\n")
    git(rig.repo, "add", "shared.txt")
    git(rig.repo, "commit", "-qm", "shared")
    one = rig.store.create_task(rig.team, "set one").id
    two = rig.store.create_task(rig.team, "set two").id
    claimed = {}
    for worker, tid in (("worker-1", one), ("worker-2", two)):
        got, code = api(rig, "claim-task", team_name="alpha", task_id=tid, worker=worker)
        assert code == 0, got
        claimed[tid] = (worker, got["data"]["claimToken"])
    paths = {}
    for tid, (worker, token) in claimed.items():
        got, code = api(rig, "prepare-task-worktree", team_name="alpha", task_id=tid, worker=worker,
                        claim_token=token, repo=str(rig.repo))
        assert code == 0, got
        data = got["data"]
        assert data["branch"] == f"omx/alpha/task-{tid}" and data["conflicts"] == [] and data["feedback"] == ""
        assert Path(data["path"]).resolve().is_relative_to(rig.worktrees.resolve())
        paths[tid] = Path(data["path"])
        (paths[tid] / "shared.txt").write_text(f"value = {tid}\n")  # both change the same line

    w1, t1 = claimed[one]
    got, code = api(rig, "finish-task", team_name="alpha", task_id=one, worker=w1, claim_token=t1,
                    summary="set it to 1", repo=str(rig.repo))
    assert code == 0 and got["data"]["status"] == "completed", got
    assert got["data"]["integration"]["status"] == "merged" and show(rig, "shared.txt") == "value = 1"
    w2, t2 = claimed[two]
    got, code = api(rig, "finish-task", team_name="alpha", task_id=two, worker=w2, claim_token=t2,
                    summary="set it to 2", repo=str(rig.repo))
    assert code == 0 and got["data"]["status"] == "sent_back", got
    assert got["data"]["error"] == "merge_conflict: shared.txt" and rig.task(two).status == "pending"

    got, code = api(rig, "claim-task", team_name="alpha", task_id=two, worker=w2)
    token = got["data"]["claimToken"]
    got, code = api(rig, "prepare-task-worktree", team_name="alpha", task_id=two, worker=w2, claim_token=token,
                    repo=str(rig.repo))
    data = got["data"]
    assert data["conflicts"] == ["shared.txt"] and "conflict markers" in data["feedback"]
    assert "<<<<<<<" in (paths[two] / "shared.txt").read_text()
    (paths[two] / "shared.txt").write_text("value = 1\nvalue = 2\n")
    got, code = api(rig, "finish-task", team_name="alpha", task_id=two, worker=w2, claim_token=token,
                    summary="kept both", repo=str(rig.repo))
    assert code == 0 and got["data"]["status"] == "completed", got
    assert show(rig, "shared.txt") == "value = 1\nvalue = 2"
    assert len(merges_of(rig, f"task-{two}")) == 1
    # Only the holder may finish: a wrong token is refused, and nothing moves.
    bad, code = api(rig, "finish-task", team_name="alpha", task_id=two, worker=w2, claim_token="0" * 32)
    assert code == 1 and bad["error"]["code"] == "already_terminal"


def test_integration_survives_its_long_lived_gits_dying(rig: Rig) -> None:
    """The merge's fast path keeps two git processes alive; killed, the next merge starts new ones (or
    runs a git of its own), and nothing is lost or merged twice."""
    from omx.engine import integration as integ
    from omx.engine.integration import IntegrationTarget, integrate

    target = IntegrationTarget(rig.repo, "alpha", BRANCH, "main")
    main = git(rig.repo, "rev-parse", "main")

    def task(i: int) -> str:
        git(rig.repo, "checkout", "-q", "-b", f"t{i}", main)
        (rig.repo / f"f{i}.txt").write_text(f"{i}\n")
        git(rig.repo, "add", f"f{i}.txt")
        git(rig.repo, "commit", "-qm", f"task {i}")
        head = git(rig.repo, "rev-parse", "HEAD")
        git(rig.repo, "checkout", "-q", "main")
        return head

    assert integrate(target, "task-1", task(1), "omx: integrate task-1: one", author="w").status == "merged"
    helpers = integ._helpers(rig.repo)
    assert helpers.refs is not None and helpers.objects is not None  # the fast path was taken
    for proc in (helpers.refs, helpers.objects):
        proc.kill()
        proc.wait()
    second = integrate(target, "task-2", task(2), "omx: integrate task-2: two", author="w")
    assert second.status == "merged"
    assert integrate(target, "task-2", task(3), "again", author="w").status == "already"
    assert {"f1.txt", "f2.txt"} <= tree(rig) and "f3.txt" not in tree(rig)
    assert [len(merges_of(rig, f"task-{i}")) for i in (1, 2)] == [1, 1]
    assert git(rig.repo, "fsck", "--no-dangling") == ""
    assert git(rig.repo, "log", "-1", "--format=%an <%ae>|%P", BRANCH).split("|")[0] == "w <w@omx.invalid>"
