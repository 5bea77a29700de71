"""Workspaces against real git: task worktrees, branch mode, repository mode, commits, removal."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from gitfixtures import branch, git, head, init_repo, isolate_git, worktree_paths

from omx.engine.hooks import HookContext, HookFailed, HookRunner
from omx.engine.settings import HookSettings, WorktreeSettings
from omx.engine.workspaces import (
    WorkspaceDirty,
    WorkspaceError,
    WorkspaceUnsafe,
    commit_changes,
    list_workspaces,
    open_workspace,
    prepare_workspace,
    release_workspace,
    remove_workspace,
    sanitize_key,
    workspace_path,
    worktree_root,
)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    isolate_git(monkeypatch, tmp_path)
    return init_repo(tmp_path / "project")


@pytest.fixture
def task_mode(tmp_path: Path) -> WorktreeSettings:
    return WorktreeSettings.model_validate({"mode": "task", "root": str(tmp_path / "worktrees")})


def test_task_mode_creates_a_worktree_on_its_own_branch(repo: Path, task_mode: WorktreeSettings) -> None:
    ws = prepare_workspace(repo, task_mode, "alpha", "7")
    root = (Path(task_mode.root)).resolve()
    assert ws.created
    assert ws.new_branch
    assert ws.mode == "task"
    assert ws.branch == "omx/alpha/7"
    assert ws.path.is_relative_to(root)
    assert ws.path.parts[-2:] == ("alpha", "7")
    assert ws.base_commit == head(repo)
    assert (ws.path / "README.md").read_text() == "hello\n"
    assert branch(ws.path) == "omx/alpha/7"
    assert branch(repo) == "main"  # the main checkout is untouched
    assert str(ws.path) in worktree_paths(repo)


def test_retry_reuses_the_worktree(repo: Path, task_mode: WorktreeSettings) -> None:
    first = prepare_workspace(repo, task_mode, "alpha", "7")
    (first.path / "notes.txt").write_text("work in progress\n")
    again = prepare_workspace(repo, task_mode, "alpha", "7")
    assert not again.created
    assert again.path == first.path
    assert again.base_commit == first.base_commit
    assert (again.path / "notes.txt").read_text() == "work in progress\n"


def test_vanished_worktree_is_pruned_and_recreated_on_the_same_branch(repo: Path, task_mode: WorktreeSettings) -> None:
    ws = prepare_workspace(repo, task_mode, "alpha", "7")
    (ws.path / "feature.py").write_text("x = 1\n")
    sha = commit_changes(ws, "add feature", "worker-1", "worker-1@omx.invalid")
    shutil.rmtree(ws.path)
    assert str(ws.path) in worktree_paths(repo)  # git still lists it
    again = prepare_workspace(repo, task_mode, "alpha", "7")
    assert again.created
    assert not again.new_branch  # the branch from the first attempt, with its commit
    assert head(again.path) == sha
    assert (again.path / "feature.py").read_text() == "x = 1\n"
    assert again.base_commit == ws.base_commit


def test_existing_branch_is_checked_out_not_recreated(repo: Path, task_mode: WorktreeSettings) -> None:
    git(repo, "branch", "omx/alpha/8")
    ws = prepare_workspace(repo, task_mode, "alpha", "8")
    assert ws.created
    assert not ws.new_branch
    assert branch(ws.path) == "omx/alpha/8"


def test_base_ref_setting(repo: Path, tmp_path: Path) -> None:
    base = head(repo)
    (repo / "later.txt").write_text("later\n")
    git(repo, "add", "later.txt")
    git(repo, "commit", "-q", "-m", "later")
    git(repo, "tag", "v0", base)
    settings = WorktreeSettings.model_validate({"root": str(tmp_path / "wt"), "baseRef": "v0"})
    ws = prepare_workspace(repo, settings, "alpha", "1")
    assert ws.base_commit == base
    assert not (ws.path / "later.txt").exists()
    bad = WorktreeSettings.model_validate({"root": str(tmp_path / "wt"), "baseRef": "--output=/tmp/x"})
    with pytest.raises(WorkspaceError, match="is not a commit"):
        prepare_workspace(repo, bad, "alpha", "2")


def test_relative_root_is_under_the_repo(repo: Path) -> None:
    settings = WorktreeSettings.model_validate({"root": ".omx/worktrees"})
    assert worktree_root(repo, settings) == repo / ".omx" / "worktrees"


# --- keys and paths ----------------------------------------------------------------------------

SAFE = re.compile(r"[A-Za-z0-9._-]+")
KEYS = ["../x", "a/b", "a_b", "a\0b", "ünïcødé", "..", ".", "...", "-rf", ".hidden", "x.lock", "a..b",
        "/etc/passwd", "~root", "a b$(touch pwned)", "x" * 300, "COM1", "tab\there", "trailing."]


@pytest.mark.parametrize("key", KEYS)
def test_sanitized_keys_stay_inside_the_root(repo: Path, task_mode: WorktreeSettings, key: str) -> None:
    safe = sanitize_key(key)
    assert SAFE.fullmatch(safe)
    assert ".." not in safe
    assert not safe.startswith((".", "-"))
    assert not safe.endswith((".", ".lock"))
    assert len(safe) <= 100
    root = worktree_root(repo, task_mode)
    path = workspace_path(repo, task_mode, "alpha", key)
    assert path.resolve().is_relative_to(root)
    assert path.parent.name == "alpha"
    assert path.name == safe
    git(repo, "check-ref-format", "--branch", f"omx/alpha/{safe}")


def test_sanitizing_keeps_distinct_keys_distinct() -> None:
    assert len({sanitize_key(k) for k in KEYS}) == len(KEYS)
    assert sanitize_key("task-7") == "task-7"  # a clean key is kept as is
    assert sanitize_key("a/b").startswith("a_b-")
    with pytest.raises(WorkspaceUnsafe):
        sanitize_key("")


def test_hostile_key_makes_a_worktree_inside_the_root(repo: Path, task_mode: WorktreeSettings, tmp_path: Path) -> None:
    ws = prepare_workspace(repo, task_mode, "alpha", "../../escape")
    assert ws.path.resolve().is_relative_to(Path(task_mode.root).resolve())
    assert not (tmp_path / "escape").exists()
    assert ws.branch is not None
    assert ws.branch == f"omx/alpha/{ws.key}"
    assert SAFE.fullmatch(ws.key)


def test_symlink_escaping_the_root_is_refused(repo: Path, task_mode: WorktreeSettings, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    team_dir = workspace_path(repo, task_mode, "alpha", "1").parent
    team_dir.parent.mkdir(parents=True, exist_ok=True)
    team_dir.symlink_to(outside, target_is_directory=True)
    with pytest.raises(WorkspaceUnsafe) as info:
        prepare_workspace(repo, task_mode, "alpha", "1")
    assert info.value.code == "workspace_unsafe"
    assert not any(outside.iterdir())


def test_symlinked_workspace_itself_is_refused(repo: Path, task_mode: WorktreeSettings, tmp_path: Path) -> None:
    target = workspace_path(repo, task_mode, "alpha", "other")
    target.mkdir(parents=True)
    link = workspace_path(repo, task_mode, "alpha", "1")
    link.symlink_to(target, target_is_directory=True)  # inside the root, but still not a worktree
    with pytest.raises(WorkspaceUnsafe):
        prepare_workspace(repo, task_mode, "alpha", "1")


def test_a_foreign_directory_is_not_overwritten(repo: Path, task_mode: WorktreeSettings) -> None:
    path = workspace_path(repo, task_mode, "alpha", "1")
    path.mkdir(parents=True)
    (path / "precious.txt").write_text("keep me")
    with pytest.raises(WorkspaceError, match="not a worktree"):
        prepare_workspace(repo, task_mode, "alpha", "1")
    assert (path / "precious.txt").read_text() == "keep me"


# --- afterCreate ---------------------------------------------------------------------------------


def test_failed_after_create_removes_the_half_made_worktree(repo: Path, task_mode: WorktreeSettings) -> None:
    runner = HookRunner(HookSettings.model_validate({"afterCreate": "touch half-made; exit 9"}))
    ctx = HookContext(team="alpha", worker="worker-1", task_id="3")
    with pytest.raises(HookFailed):
        prepare_workspace(repo, task_mode, "alpha", "3", on_create=lambda ws: runner.after_create(ws.path, ctx))
    path = workspace_path(repo, task_mode, "alpha", "3")
    assert not path.exists()
    assert str(path) not in worktree_paths(repo)
    assert git(repo, "branch", "--list", "omx/alpha/3") == ""  # the branch it made is gone too
    ws = prepare_workspace(repo, task_mode, "alpha", "3")  # and a retry starts clean
    assert ws.created


def test_failed_after_create_keeps_an_earlier_attempts_branch(repo: Path, task_mode: WorktreeSettings) -> None:
    git(repo, "branch", "omx/alpha/4")

    def boom(ws: object) -> None:
        raise RuntimeError("hook broke")

    with pytest.raises(RuntimeError):
        prepare_workspace(repo, task_mode, "alpha", "4", on_create=boom)
    assert git(repo, "branch", "--list", "omx/alpha/4") != ""


def test_after_create_runs_only_when_created(repo: Path, task_mode: WorktreeSettings) -> None:
    calls: list[Path] = []
    prepare_workspace(repo, task_mode, "alpha", "5", on_create=lambda ws: calls.append(ws.path))
    prepare_workspace(repo, task_mode, "alpha", "5", on_create=lambda ws: calls.append(ws.path))
    assert len(calls) == 1


# --- commits -------------------------------------------------------------------------------------


def test_commit_changes_commits_modified_and_untracked_files(repo: Path, task_mode: WorktreeSettings) -> None:
    ws = prepare_workspace(repo, task_mode, "alpha", "7")
    (ws.path / "README.md").write_text("hello, world\n")
    (ws.path / "src").mkdir()
    (ws.path / "src" / "new.py").write_text("print('new')\n")
    (ws.path / "-rf").write_text("a file with an option-like name\n")
    message = "# Fix $(touch pwned) `touch pwned2`\n\n--amend -m evil; rm -rf /\n"
    sha = commit_changes(ws, message, "worker-1", "worker-1@omx.invalid")
    assert sha is not None
    assert sha == head(ws.path)
    assert git(ws.path, "log", "-1", "--format=%an <%ae>|%cn") == "worker-1 <worker-1@omx.invalid>|worker-1"
    assert git(ws.path, "log", "-1", "--format=%B") == message.strip()
    assert git(ws.path, "rev-parse", "HEAD~1") == ws.base_commit  # one new commit, not an amend
    files = set(git(ws.path, "show", "--name-only", "--format=", "HEAD").splitlines())
    assert files == {"README.md", "src/new.py", "-rf"}
    assert git(ws.path, "status", "--porcelain") == ""
    assert not list(ws.path.glob("pwned*"))
    assert git(repo, "rev-parse", "refs/heads/omx/alpha/7") == sha
    assert commit_changes(ws, "again", "worker-1", "worker-1@omx.invalid") is None


def test_nothing_to_commit_returns_none(repo: Path, task_mode: WorktreeSettings) -> None:
    ws = prepare_workspace(repo, task_mode, "alpha", "7")
    assert commit_changes(ws, "nothing", "worker-1", "worker-1@omx.invalid") is None
    assert head(ws.path) == ws.base_commit


def test_commit_refuses_a_foreign_branch(repo: Path, task_mode: WorktreeSettings) -> None:
    ws = prepare_workspace(repo, task_mode, "alpha", "7")
    git(ws.path, "checkout", "-q", "-b", "elsewhere")
    (ws.path / "x.txt").write_text("x")
    with pytest.raises(WorkspaceError, match="not the task branch"):
        commit_changes(ws, "m", "worker-1", "worker-1@omx.invalid")


# --- branch mode -----------------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from omx.engine.settings import WorktreeSettings
    from omx.engine.workspaces import prepare_workspace, release_workspace
    from omx.errors import LockTimeout
    try:
        ws = prepare_workspace(Path(sys.argv[1]), WorktreeSettings(mode="branch"), "alpha", sys.argv[2],
                               lock_timeout=float(sys.argv[3]))
    except LockTimeout:
        sys.exit(75)
    print(ws.branch, flush=True)
    release_workspace(ws)
    """
)


def run_holder(repo: Path, key: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", HOLDER, str(repo), key, str(timeout)],
                          capture_output=True, text=True, env=os.environ.copy(), check=False, timeout=60)


def test_branch_mode_is_one_run_at_a_time_and_restores_the_branch(repo: Path) -> None:
    settings = WorktreeSettings(mode="branch")
    ws = prepare_workspace(repo, settings, "alpha", "7")
    assert ws.path == repo
    assert ws.created
    assert ws.branch == "omx/alpha/7"
    assert branch(repo) == "omx/alpha/7"
    assert ws.restore_ref == "main"
    busy = run_holder(repo, "8", 0.3)  # another process, while this one holds the repository
    assert busy.returncode == 75, busy.stderr
    (repo / "change.txt").write_text("agent work\n")
    sha = commit_changes(ws, "task 7", "worker-1", "worker-1@omx.invalid")
    assert sha is not None
    release_workspace(ws)
    assert branch(repo) == "main"
    assert not (repo / "change.txt").exists()
    assert git(repo, "rev-parse", "omx/alpha/7") == sha
    free = run_holder(repo, "8", 5)
    assert free.returncode == 0, free.stderr
    assert free.stdout.strip() == "omx/alpha/8"
    assert branch(repo) == "main"


def test_branch_mode_never_commits_omx_state(repo: Path) -> None:
    (repo / ".omx" / "state").mkdir(parents=True)
    (repo / ".omx" / "state" / "task-1.json").write_text("{}")
    with open_workspace(repo, WorktreeSettings(mode="branch"), "alpha", "1") as ws:
        (repo / "work.txt").write_text("w")
        assert commit_changes(ws, "m", "worker-1", "worker-1@omx.invalid") is not None
        files = git(repo, "show", "--name-only", "--format=", "HEAD").splitlines()
        assert files == ["work.txt"]
    assert branch(repo) == "main"


def test_branch_mode_refuses_a_dirty_checkout_and_releases_the_lock(repo: Path) -> None:
    (repo / "stray.txt").write_text("user's unfinished work")
    with pytest.raises(WorkspaceDirty):
        prepare_workspace(repo, WorktreeSettings(mode="branch"), "alpha", "1", lock_timeout=1)
    assert branch(repo) == "main"
    (repo / "stray.txt").unlink()
    ws = prepare_workspace(repo, WorktreeSettings(mode="branch"), "alpha", "1", lock_timeout=1)
    release_workspace(ws)


def test_branch_mode_release_with_leftovers_refuses_to_switch(repo: Path) -> None:
    ws = prepare_workspace(repo, WorktreeSettings(mode="branch"), "alpha", "1")
    (repo / "left.txt").write_text("uncommitted")
    with pytest.raises(WorkspaceDirty):
        release_workspace(ws)
    assert branch(repo) == "omx/alpha/1"  # the work is not dragged onto main
    (repo / "left.txt").unlink()
    ws2 = prepare_workspace(repo, WorktreeSettings(mode="branch"), "alpha", "2", lock_timeout=1)  # lock was freed
    assert ws2.restore_ref == "omx/alpha/1"
    release_workspace(ws2)


def test_branch_mode_release_can_discard_a_failed_runs_changes(repo: Path) -> None:
    (repo / ".omx").mkdir(exist_ok=True)
    (repo / ".omx" / "keep.json").write_text("{}")
    ws = prepare_workspace(repo, WorktreeSettings(mode="branch"), "alpha", "1")
    (repo / "README.md").write_text("half-done edit\n")
    (repo / "scratch.txt").write_text("untracked")
    release_workspace(ws, discard=True)
    assert branch(repo) == "main"
    assert (repo / "README.md").read_text() == "hello\n"
    assert not (repo / "scratch.txt").exists()
    assert (repo / ".omx" / "keep.json").exists()  # omx's own state survives
    assert git(repo, "rev-parse", "omx/alpha/1") == head(repo)  # the branch keeps no half-done work


def test_branch_mode_restores_a_detached_head(repo: Path) -> None:
    sha = head(repo)
    git(repo, "checkout", "-q", "--detach")
    with open_workspace(repo, WorktreeSettings(mode="branch"), "alpha", "1"):
        assert branch(repo) == "omx/alpha/1"
    assert branch(repo) == "HEAD"
    assert head(repo) == sha


def test_branch_mode_failed_after_create_restores_everything(repo: Path) -> None:
    def hook(ws: object) -> None:
        (repo / "junk.txt").write_text("from the hook")
        raise RuntimeError("afterCreate failed")

    with pytest.raises(RuntimeError):
        prepare_workspace(repo, WorktreeSettings(mode="branch"), "alpha", "1", on_create=hook)
    assert branch(repo) == "main"
    assert not (repo / "junk.txt").exists()
    assert git(repo, "branch", "--list", "omx/alpha/1") == ""
    # the lock was released: the next run gets the repository at once
    release_workspace(prepare_workspace(repo, WorktreeSettings(mode="branch"), "alpha", "1", lock_timeout=1))


# --- repository mode, removal, listing ----------------------------------------------------------------


def test_repository_mode_is_the_repo_as_it_is(repo: Path) -> None:
    (repo / "dirty.txt").write_text("fine in repository mode")
    ws = prepare_workspace(repo, WorktreeSettings(mode="repository"), "alpha", "1")
    assert ws.path == repo
    assert not ws.created
    assert ws.branch == "main"
    assert ws.base_commit == head(repo)
    sha = commit_changes(ws, "repo mode", "worker-1", "worker-1@omx.invalid")
    assert sha == head(repo)
    release_workspace(ws)  # a no-op
    assert branch(repo) == "main"


def test_head_read_from_files_agrees_with_git(repo: Path, task_mode: WorktreeSettings, tmp_path: Path) -> None:
    from omx.engine.workspaces import _head_from_files

    def by_git(cwd: Path) -> tuple[str | None, str]:
        b = git(cwd, "rev-parse", "--abbrev-ref", "HEAD")
        return (None if b == "HEAD" else b), head(cwd)

    assert _head_from_files(repo) == by_git(repo) == ("main", head(repo))  # a loose ref
    ws = prepare_workspace(repo, task_mode, "alpha", "7")  # a linked worktree: .git is a file
    (ws.path / "a.txt").write_text("a")
    commit_changes(ws, "in the worktree", "worker-1", "worker-1@omx.invalid")
    assert _head_from_files(ws.path) == by_git(ws.path) == ("omx/alpha/7", head(ws.path))
    git(repo, "pack-refs", "--all")  # refs only in packed-refs
    assert not (repo / ".git" / "refs" / "heads" / "main").exists()
    assert _head_from_files(repo) == by_git(repo)
    assert _head_from_files(ws.path) == by_git(ws.path)
    git(repo, "checkout", "-q", "--detach")
    assert _head_from_files(repo) == by_git(repo) == (None, head(repo))
    unborn = tmp_path / "unborn"
    subprocess.run(["git", "init", "-q", "-b", "main", str(unborn)], check=True)
    assert _head_from_files(unborn) is None  # no commit yet: the caller asks git, which explains
    with pytest.raises(WorkspaceError, match="first commit"):
        prepare_workspace(unborn, WorktreeSettings(mode="repository"), "alpha", "1")


def test_remove_workspace(repo: Path, task_mode: WorktreeSettings) -> None:
    keep = prepare_workspace(repo, task_mode, "alpha", "1")
    gone = prepare_workspace(repo, task_mode, "alpha", "2")
    (gone.path / "dirty.txt").write_text("uncommitted")
    root = Path(task_mode.root)
    remove_workspace(gone.path, root=root, delete_branch=True)
    assert not gone.path.exists()
    assert str(gone.path) not in worktree_paths(repo)
    assert git(repo, "branch", "--list", "omx/alpha/2") == ""
    remove_workspace(keep.path)  # keeps its branch by default
    assert git(repo, "branch", "--list", "omx/alpha/1") != ""
    remove_workspace(keep.path, repo=repo)  # already gone: fine


def test_remove_refuses_what_is_not_a_task_worktree(repo: Path, task_mode: WorktreeSettings, tmp_path: Path) -> None:
    with pytest.raises(WorkspaceUnsafe):
        remove_workspace(repo)  # the main checkout
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(WorkspaceUnsafe):
        remove_workspace(plain)
    ws = prepare_workspace(repo, task_mode, "alpha", "1")
    with pytest.raises(WorkspaceUnsafe):
        remove_workspace(ws.path, root=tmp_path / "elsewhere")
    with pytest.raises(WorkspaceUnsafe):
        remove_workspace(Path(task_mode.root), root=Path(task_mode.root))
    assert ws.path.exists()


def test_list_workspaces(repo: Path, task_mode: WorktreeSettings, tmp_path: Path) -> None:
    a = prepare_workspace(repo, task_mode, "alpha", "1")
    b = prepare_workspace(repo, task_mode, "beta", "a/b")
    found = list_workspaces(Path(task_mode.root))
    assert [(w.path, w.team, w.key, w.branch, w.repo) for w in found] == [
        (a.path, "alpha", "1", "omx/alpha/1", repo),
        (b.path, "beta", b.key, b.branch, repo),
    ]
    assert list_workspaces(tmp_path / "none") == []


# --- concurrency -------------------------------------------------------------------------------------

RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from omx.engine.settings import WorktreeSettings
    from omx.engine.workspaces import prepare_workspace
    repo, root, key, go = sys.argv[1:5]
    deadline = time.monotonic() + 30
    while not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    ws = prepare_workspace(Path(repo), WorktreeSettings(root=root), "alpha", key)
    print(ws.path, int(ws.created), ws.branch)
    """
)


@pytest.mark.slow
def test_concurrent_workers_prepare_worktrees_safely(repo: Path, task_mode: WorktreeSettings, tmp_path: Path) -> None:
    go = tmp_path / "go"
    keys = [str(i % 4) for i in range(8)]  # every key wanted by two processes at once
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, str(repo), task_mode.root, key, str(go)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for key in keys
    ]
    go.touch()  # the start barrier
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        path, created, ws_branch = out.split()
        results.append((path, created == "1", ws_branch))
    for key in set(keys):
        mine = [r for r in results if r[2] == f"omx/alpha/{key}"]
        assert len(mine) == 2
        assert mine[0][0] == mine[1][0]
        assert sum(created for _, created, _ in mine) == 1  # one made it, the other reused it
        assert branch(Path(mine[0][0])) == f"omx/alpha/{key}"
    assert sorted(worktree_paths(repo)[1:]) == sorted({r[0] for r in results})
