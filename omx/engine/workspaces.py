"""Where an agent works: a git worktree per task, a branch per task in the repo, or the repo as is.

Modes (``worktree.mode`` in WORKFLOW.md):

* ``task`` — one ``git worktree`` per task at ``<root>/<repo>-<hash>/<team>/<key>`` on branch
  ``omx/<team>/<key>``, created from the base ref and reused on retry.
* ``branch`` — the repository itself, a branch per task, one run at a time (a file lock held from
  :func:`prepare_workspace` to :func:`release_workspace`); the original branch is restored after.
* ``repository`` — the repository as it is.

Task text never reaches a shell or a path unchecked: git runs from argv lists with ``--`` before
paths, keys are sanitized to ``[A-Za-z0-9._-]`` (plus a hash of the original when anything changed),
and a path that would leave the worktree root is refused. ``.omx/`` (omx's own state) is never
committed.

Example:
    >>> ws = prepare_workspace(repo, settings.worktree, "alpha", "7")  # doctest: +SKIP
    >>> commit_changes(ws, "Fix the parser", "worker-1", "worker-1@omx.invalid")  # doctest: +SKIP
    '3f2c...'
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from omx.engine.settings import WorktreeSettings
from omx.errors import InvalidInput, LockTimeout, OmxError, Refused
from omx.state.atomic import ignore_in_git
from omx.state.locks import locked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from filelock import FileLock

WorkspaceMode = Literal["task", "branch", "repository"]
# The worktrees lock is the store's flock (filelock's Unix lock without its per-call work; filelock
# itself where there is no fcntl): a task-mode worker then does not import filelock (~30 ms of CPU
# while its Codex server starts). A kernel lock dies with its process: a crashed worker never wedges
# the repo.
WORKTREES_LOCK_S = 120  # git worktree add/remove of one repo, one at a time
OMX_DIR = ".omx"  # omx's state inside a repository: never committed, never "dirty"
_STATUS_SCOPE = ("--", ".", f":(exclude){OMX_DIR}")
_GIT_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR",
                 "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE")
_KEY_MAX = 80


class WorkspaceError(OmxError):
    """Raised when git cannot prepare, commit or remove a workspace (carries git's message)."""

    code = "workspace_error"


class WorkspaceUnsafe(InvalidInput):
    """Raised when a workspace path would be the root, leave it, or pass through an escaping symlink."""

    code = "workspace_unsafe"


class WorkspaceDirty(Refused):
    """Raised when a shared checkout has uncommitted changes that a branch switch would carry along."""

    code = "workspace_dirty"


@dataclass
class Workspace:
    """A prepared workspace. ``created`` is true when this call made it (run ``afterCreate`` then)."""

    path: Path
    branch: str | None
    mode: WorkspaceMode
    created: bool
    base_commit: str
    repo: Path
    key: str = ""
    restore_ref: str | None = None  # branch mode: checked out again by release_workspace
    new_branch: bool = False  # this call created the branch (else it came from an earlier attempt)
    _lock: FileLock | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class WorkspaceInfo:
    """A task worktree found on disk by :func:`list_workspaces`."""

    path: Path
    repo: Path | None
    team: str
    key: str
    branch: str | None


def sanitize_key(key: str) -> str:
    """A path- and ref-safe form of ``key``: ``[A-Za-z0-9._-]``, hashed suffix when anything changed.

    >>> sanitize_key("task-7")
    'task-7'
    >>> sanitize_key("../x")[:5], len(sanitize_key("../x"))
    ('_._x-', 13)
    """
    if not key:
        raise WorkspaceUnsafe("a workspace key must not be empty")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", key)[:_KEY_MAX]
    safe = re.sub(r"\.(?=\.)", "_", safe)  # no '..': not a path component, not in a git ref
    if safe[0] in ".-":
        safe = "_" + safe[1:]
    if safe.endswith((".", ".lock")):
        safe += "_"
    if safe != key:
        safe = f"{safe}-{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return safe


def worktree_root(repo: Path, settings: WorktreeSettings) -> Path:
    """The resolved worktree root (``~`` and ``$VARS`` expanded; relative to ``repo``); created."""
    root = Path(os.path.expandvars(os.path.expanduser(settings.root)))
    if not root.is_absolute():
        root = repo / root
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def workspace_path(repo: Path, settings: WorktreeSettings, team: str, key: str) -> Path:
    """Where the task worktree for ``team``/``key`` lives; raise :class:`WorkspaceUnsafe` if unsafe."""
    repo = repo.resolve()
    root = worktree_root(repo, settings)
    digest = hashlib.sha256(str(repo).encode()).hexdigest()[:8]
    return _inside(root, f"{sanitize_key(repo.name)}-{digest}", sanitize_key(team), sanitize_key(key))


def prepare_workspace(
    repo: Path,
    settings: WorktreeSettings,
    team: str,
    key: str,
    *,
    on_create: Callable[[Workspace], object] | None = None,
    lock_timeout: float | None = None,
    base: str | None = None,
) -> Workspace:
    """Make (or reuse) the workspace for one task; see the module doc for the modes.

    Args:
        base: the commit a new task branch starts from (a team's integration tip); default
            ``settings.base_ref``, else HEAD.
        on_create: called with the workspace when this call created it (the ``afterCreate`` hook);
            if it raises, the new worktree (or branch) is removed and the error propagates.
        lock_timeout: branch mode only: seconds to wait for the repository (``None``: wait).

    Raises:
        WorkspaceUnsafe, WorkspaceDirty, WorkspaceError, LockTimeout.
    """
    repo = _toplevel(repo)
    if settings.mode == "repository":
        branch, head = _branch_and_head(repo)
        return Workspace(repo, branch, "repository", False, head, repo, key)
    safe_key = sanitize_key(key)
    branch = f"omx/{sanitize_key(team)}/{safe_key}"
    if settings.mode == "branch":
        return _prepare_branch(repo, settings, branch, safe_key, on_create, lock_timeout, base)
    path = workspace_path(repo, settings, team, key)
    with locked(_lock_dir(repo) / "worktrees.lock", WORKTREES_LOCK_S):
        ws = _prepare_worktree(repo, settings, path, branch, safe_key, base)
    if ws.created and on_create is not None:
        try:
            on_create(ws)
        except BaseException:
            remove_workspace(ws.path, repo=repo, delete_branch=ws.new_branch)
            raise
    return ws


def release_workspace(ws: Workspace, *, discard: bool = False) -> None:
    """End a run: in branch mode, check the original branch out again and release the repository.

    Args:
        discard: throw away uncommitted changes first (``.omx/`` and ignored files are kept), e.g.
            after a failed attempt whose work should not be committed.

    Raises:
        WorkspaceDirty: the run left uncommitted changes and ``discard`` is false (the lock is
            released all the same, and the checkout stays on the task branch).
    """
    if ws.mode != "branch" or ws._lock is None:
        return
    try:
        if discard:
            _discard(ws.path)
        if _dirty(ws.path):
            raise WorkspaceDirty(
                f"{ws.path}: uncommitted changes left on {ws.branch}; not switching back to {ws.restore_ref}",
                path=str(ws.path),
            )
        if ws.restore_ref:
            _checkout(ws.path, ws.restore_ref)
    finally:
        ws._lock.release()
        ws._lock = None


@contextmanager
def open_workspace(
    repo: Path,
    settings: WorktreeSettings,
    team: str,
    key: str,
    *,
    on_create: Callable[[Workspace], object] | None = None,
    lock_timeout: float | None = None,
) -> Iterator[Workspace]:
    """:func:`prepare_workspace` for the ``with`` body, then :func:`release_workspace`."""
    ws = prepare_workspace(repo, settings, team, key, on_create=on_create, lock_timeout=lock_timeout)
    try:
        yield ws
    finally:
        release_workspace(ws)


def commit_changes(ws: Workspace, message: str, author_name: str, author_email: str) -> str | None:
    """Commit everything the agent left (untracked files too, never ``.omx/``) on the task branch.

    The message goes to git on stdin and the author through the environment: no task text is ever
    parsed as an option or by a shell. Returns the new commit's sha, or ``None`` when nothing changed.
    """
    if ws.branch and ws.mode != "repository":
        found = _head_from_files(ws.path)  # git's files, else git: one spawn fewer per task
        current = found[0] if found is not None else _current_branch(ws.path)
        if current != ws.branch:
            raise WorkspaceError(f"{ws.path}: HEAD is {current or 'detached'}, not the task branch {ws.branch}")
    if not _dirty(ws.path) and not _merge_in_progress(ws.path):
        return None
    _git(ws.path, "add", "-A", *_STATUS_SCOPE)
    ident = {"NAME": _ident(author_name), "EMAIL": _ident(author_email)}
    env = {f"GIT_{who}_{k}": v for who in ("AUTHOR", "COMMITTER") for k, v in ident.items()}
    text = message.replace("\0", "").strip() or "omx: task changes"
    _git(ws.path, "commit", "-q", "--cleanup=whitespace", "-F", "-", stdin=text + "\n", env=env)
    found = _head_from_files(ws.path)
    return found[1] if found is not None else _rev(ws.path, "HEAD")


def remove_workspace(
    path: Path, *, repo: Path | None = None, root: Path | None = None, delete_branch: bool = False
) -> None:
    """Remove a task worktree (uncommitted work in it is lost) and optionally its ``omx/`` branch.

    Only linked worktrees are removed, never a main checkout. With ``root``, ``path`` must be
    inside it. A directory that already vanished is pruned from git's list when ``repo`` is given.
    """
    path = Path(os.path.abspath(path))
    if root is not None:
        rel = path.relative_to(root.resolve()) if path.is_relative_to(root.resolve()) else None
        if rel is None or not rel.parts:
            raise WorkspaceUnsafe(f"{path} is not inside the worktree root {root}")
    if path.is_symlink():
        raise WorkspaceUnsafe(f"{path} is a symlink, not a worktree")
    info = _read_worktree(path) if path.exists() else None
    if path.exists() and info is None:
        raise WorkspaceUnsafe(f"{path} is not a linked git worktree; refusing to remove it")
    owner = repo or (info.repo if info else None)
    if owner is None:
        return
    with locked(_lock_dir(owner) / "worktrees.lock", WORKTREES_LOCK_S):
        branch = info.branch if info else _registered(owner).get(str(path))
        _git(owner, "worktree", "remove", "--force", "--", str(path), check=path.exists())
        _git(owner, "worktree", "prune")
        if delete_branch and branch and branch.startswith("omx/"):
            _git(owner, "branch", "-D", "--", branch, check=False)


def list_workspaces(root: Path) -> list[WorkspaceInfo]:
    """Every task worktree under ``root`` (``<root>/<repo>/<team>/<key>``), sorted by path."""
    out: list[WorkspaceInfo] = []
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*/*/*")):
        info = _read_worktree(path) if path.is_dir() and not path.is_symlink() else None
        if info is not None:
            out.append(WorkspaceInfo(path, info.repo, path.parent.name, path.name, info.branch))
    return out


# --- the modes ---------------------------------------------------------------------------------


def _prepare_worktree(
    repo: Path, settings: WorktreeSettings, path: Path, branch: str, key: str, start: str | None
) -> Workspace:
    registered = _registered(repo)
    base = start or _rev(repo, settings.base_ref or "HEAD")
    if path.exists():
        if str(path) in registered and _toplevel_or_none(path) == path:
            _clear_index_lock(path)
            if _current_branch(path) != branch:
                _checkout(path, branch)
            return Workspace(path, branch, "task", False, _merge_base(path, base), repo, key)
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        else:
            raise WorkspaceError(f"{path} exists but is not a worktree of {repo}; move it away", path=str(path))
    if str(path) in registered:  # the directory vanished; git still lists it
        _git(repo, "worktree", "prune")
    path.parent.mkdir(parents=True, exist_ok=True)
    if _branch_exists(repo, branch):
        _git(repo, "worktree", "add", "--", str(path), branch)
        return Workspace(path, branch, "task", True, _merge_base(path, base), repo, key)
    _git(repo, "worktree", "add", "-b", branch, "--", str(path), base)
    return Workspace(path, branch, "task", True, base, repo, key, new_branch=True)


def _prepare_branch(
    repo: Path,
    settings: WorktreeSettings,
    branch: str,
    key: str,
    on_create: Callable[[Workspace], object] | None,
    lock_timeout: float | None,
    start: str | None,
) -> Workspace:
    from filelock import FileLock  # here: task mode (the default) need not import it
    from filelock import Timeout as _FileLockTimeout

    lock = FileLock(str(_lock_dir(repo) / "branch-mode.lock"), is_singleton=False)
    try:
        lock.acquire(timeout=-1 if lock_timeout is None else lock_timeout, poll_interval=0.05)
    except _FileLockTimeout:
        raise LockTimeout(f"{repo} is busy with another branch-mode run", path=str(repo)) from None
    try:
        if _dirty(repo):
            raise WorkspaceDirty(f"{repo} has uncommitted changes; branch mode needs a clean checkout")
        restore = _current_branch(repo) or _rev(repo, "HEAD")
        base = start or _rev(repo, settings.base_ref or "HEAD")
        if _branch_exists(repo, branch):
            _git(repo, "checkout", "-q", branch)
            ws = Workspace(repo, branch, "branch", False, _merge_base(repo, base), repo, key, restore)
        else:
            _git(repo, "checkout", "-q", "-b", branch, base)
            ws = Workspace(repo, branch, "branch", True, base, repo, key, restore, new_branch=True)
        ws._lock = lock
        if ws.created and on_create is not None:
            try:
                on_create(ws)
            except BaseException:
                _discard(repo)  # the checkout was clean before: only the hook's changes go
                _checkout(repo, restore)
                if ws.new_branch:
                    _git(repo, "branch", "-D", "--", branch, check=False)
                raise
        return ws
    except BaseException:
        lock.release()
        raise


# --- git ---------------------------------------------------------------------------------------


def _git(
    cwd: Path, *args: str, check: bool = True, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
    full_env.update(GIT_TERMINAL_PROMPT="0", **(env or {}))
    proc = subprocess.run(
        ["git", "-C", str(cwd), *args], input=stdin, capture_output=True, env=full_env,
        text=True, encoding="utf-8", errors="surrogateescape", check=False,
    )
    if check and proc.returncode != 0:
        err = (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        raise WorkspaceError(f"git {' '.join(args[:2])} failed in {cwd}: {err}", cwd=str(cwd))
    return proc


def _toplevel(path: Path) -> Path:
    top = _toplevel_cached(str(path))
    if top is None:
        raise WorkspaceError(f"{path} is not inside a git repository", path=str(path))
    return top


@functools.lru_cache(maxsize=64)
def _toplevel_cached(path: str) -> Path | None:
    # A repository's top level does not move under a running worker: one `git rev-parse` per path.
    return _toplevel_or_none(Path(path))


def _toplevel_or_none(path: Path) -> Path | None:
    proc = _git(path, "rev-parse", "--show-toplevel", check=False) if path.is_dir() else None
    return Path(proc.stdout.strip()).resolve() if proc is not None and proc.returncode == 0 else None


def _branch_exists(cwd: Path, branch: str) -> bool:
    return _git(cwd, "show-ref", "--verify", "--quiet", f"refs/heads/{branch}", check=False).returncode == 0


def _merge_base(cwd: Path, base: str) -> str:
    return _git(cwd, "merge-base", base, "HEAD", check=False).stdout.strip() or base


def _rev(cwd: Path, ref: str) -> str:
    proc = _git(cwd, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False)
    if proc.returncode != 0:
        raise WorkspaceError(f"{cwd}: {ref!r} is not a commit (a repository needs a first commit)", ref=ref)
    return proc.stdout.strip()


def _branch_and_head(cwd: Path) -> tuple[str | None, str]:
    """The checked-out branch (None when detached) and HEAD's commit: from git's files, else one git call."""
    found = _head_from_files(cwd)
    if found is not None:
        return found
    proc = _git(cwd, "rev-parse", "HEAD", "--abbrev-ref", "HEAD", check=False)  # the option applies after it
    lines = proc.stdout.split()
    if proc.returncode != 0 or len(lines) != 2:
        return _current_branch(cwd), _rev(cwd, "HEAD")  # no commit yet, or an odd state: the careful way
    return (None if lines[1] == "HEAD" else lines[1]), lines[0]


_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")


def _head_from_files(top: Path) -> tuple[str | None, str] | None:
    """Branch and HEAD commit of the checkout at ``top`` read from ``.git`` without running git.

    Only the plain cases: a ``.git`` directory or ``gitdir:`` file, files-backend refs (loose or in
    ``packed-refs``). Anything else (reftable, a symbolic ref to a non-branch, an unborn branch, an
    odd file) answers ``None`` and the caller asks git. A spawn of git costs a few ms; the run loop
    asks this once per task.
    """
    try:
        dotgit = top / ".git"
        if dotgit.is_dir():
            gitdir = common = dotgit
        else:
            text = dotgit.read_text(encoding="utf-8").strip()
            if not text.startswith("gitdir:"):
                return None
            gitdir = (top / text[len("gitdir:"):].strip()).resolve()
            common_file = gitdir / "commondir"
            common = (gitdir / common_file.read_text(encoding="utf-8").strip()).resolve() \
                if common_file.exists() else gitdir
        if (common / "reftable").exists():
            return None
        head = (gitdir / "HEAD").read_text(encoding="utf-8").strip()
        if _SHA.fullmatch(head):
            return None, head
        if not head.startswith("ref: refs/heads/"):
            return None
        ref = head[len("ref: "):]
        loose = common / ref
        if loose.is_file():
            sha = loose.read_text(encoding="utf-8").strip()
            return (ref[len("refs/heads/"):], sha) if _SHA.fullmatch(sha) else None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text(encoding="utf-8").splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and _SHA.fullmatch(sha):
                    return ref[len("refs/heads/"):], sha
        return None
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _current_branch(cwd: Path) -> str | None:
    proc = _git(cwd, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def _checkout(cwd: Path, ref: str) -> None:
    if _branch_exists(cwd, ref):
        _git(cwd, "checkout", "-q", ref)
    else:
        _git(cwd, "checkout", "-q", "--detach", _rev(cwd, ref))


def _dirty(cwd: Path) -> bool:
    # No optional locks: a status that refreshed the index would take index.lock, which a commit in
    # the same checkout (repository mode: every worker) may hold at that moment.
    return bool(_git(cwd, "status", "--porcelain", "-z", "--untracked-files=all", *_STATUS_SCOPE,
                     env={"GIT_OPTIONAL_LOCKS": "0"}).stdout)


def _clear_index_lock(path: Path) -> None:
    """A task worktree reused by a new claim: an ``index.lock`` in it was left by a git killed with an
    earlier attempt (the claim is ours now, and a takeover on this host ended the old attempt's
    processes), and would make every git command here fail."""
    gitdir = Path(_git(path, "rev-parse", "--absolute-git-dir").stdout.strip())
    lock = gitdir / "index.lock"
    if lock.exists():
        lock.unlink(missing_ok=True)


def commit_leftovers(path: Path, author: str) -> str | None:
    """Commit what an interrupted attempt left uncommitted in a task worktree (never ``.omx/``), so
    that nothing is lost and a merge can go ahead; the new commit's sha, or None when clean."""
    if not _dirty(path):
        return None
    _git(path, "add", "-A", *_STATUS_SCOPE)
    ident = {"NAME": _ident(author), "EMAIL": _ident(author) + "@omx.invalid"}
    env = {f"GIT_{who}_{k}": v for who in ("AUTHOR", "COMMITTER") for k, v in ident.items()}
    _git(path, "commit", "-q", "--no-verify", "-m", "omx: work left by an interrupted attempt", env=env)
    return _rev(path, "HEAD")


def _merge_in_progress(cwd: Path) -> bool:
    """A merge waits to be concluded (``MERGE_HEAD``): the next commit must be made even with no diff."""
    dotgit = cwd / ".git"
    try:
        if dotgit.is_dir():
            return (dotgit / "MERGE_HEAD").exists()
        text = dotgit.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    if text.startswith("gitdir:"):
        return ((cwd / text[len("gitdir:"):].strip()) / "MERGE_HEAD").exists()
    proc = _git(cwd, "rev-parse", "-q", "--verify", "MERGE_HEAD", check=False)
    return proc.returncode == 0


def _discard(cwd: Path) -> None:
    _git(cwd, "reset", "-q", "--hard")
    _git(cwd, "clean", "-q", "-fd", *_STATUS_SCOPE)


def _registered(repo: Path) -> dict[str, str | None]:
    """git's worktree list: path -> branch (``None`` when detached)."""
    out: dict[str, str | None] = {}
    current = None
    for line in _git(repo, "worktree", "list", "--porcelain").stdout.splitlines():
        if line.startswith("worktree "):
            current = line[len("worktree "):]
            out[current] = None
        elif line.startswith("branch refs/heads/") and current is not None:
            out[current] = line[len("branch refs/heads/"):]
    return out


@dataclass(frozen=True)
class _WorktreeFiles:
    repo: Path | None
    branch: str | None


def _read_worktree(path: Path) -> _WorktreeFiles | None:
    """Read a linked worktree's ``.git`` file and git dir without running git; ``None`` if not one."""
    try:
        text = (path / ".git").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):  # a directory (a main checkout), or no .git at all
        return None
    if not text.startswith("gitdir:"):
        return None
    gitdir = (path / text[len("gitdir:"):].strip()).resolve()
    if gitdir.parent.name != "worktrees":
        return None
    try:
        head = (gitdir / "HEAD").read_text(encoding="utf-8").strip()
        common = (gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()).resolve()
    except (OSError, UnicodeDecodeError):
        return None
    branch = head[len("ref: refs/heads/"):] if head.startswith("ref: refs/heads/") else None
    return _WorktreeFiles(common.parent if common.name == ".git" else common, branch)


def _inside(root: Path, *parts: str) -> Path:
    candidate = root.joinpath(*parts)
    resolved = candidate.resolve()
    if resolved == root or not resolved.is_relative_to(root) or candidate.is_symlink():
        raise WorkspaceUnsafe(f"workspace path {candidate} escapes the worktree root {root}", path=str(candidate))
    return candidate


def _lock_dir(repo: Path) -> Path:
    d = repo / OMX_DIR / "locks"
    d.mkdir(parents=True, exist_ok=True)
    ignore_in_git(repo / OMX_DIR)
    return d


def _ident(value: str) -> str:
    return re.sub(r"[\0\n<>]", " ", value).strip() or "omx"
