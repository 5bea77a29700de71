"""Integration: a team's finished tasks come together on one branch.

Each team has an integration branch (``omx/<team>/integration`` unless WORKFLOW.md's
``integration.branch`` says otherwise), made from the base ref when the team starts. A task whose attempt
ends with commits is merged into it *before* the task becomes ``completed``, and every new task worktree
starts from its tip, so a dependent task always holds the code of the tasks it depends on.

Everything here is git plumbing — ``merge-tree --write-tree``, ``commit-tree``, and one ``update-ref``
transaction that names the expected old value — so the user's checkout, index and HEAD are never
touched. Merges into one team's branch are serialized by a kernel lock
(``<repo>/.omx/locks/integration-<team>.lock``), which dies with its holder; the compare-and-swap in
``update-ref`` catches anybody else who moves the branch meanwhile, and the merge is then redone on the
new tip. Two tasks finishing at once can never lose a merge.

Exactly once: the transaction that moves the branch also creates ``refs/omx/<team>/integrated/<key>``
pointing at the merge commit. A retried or reclaimed attempt finds that ref and reports the earlier
merge instead of merging (or running the agent) again. A worker killed before the transaction leaves
only unreachable objects behind; killed after it, the ref says the task is in.

Example:
    >>> target = IntegrationTarget(repo, "alpha", default_branch("alpha"), "main")  # doctest: +SKIP
    >>> ensure_branch(target)  # doctest: +SKIP
    '3f2c...'
    >>> integrate(target, "task-7", head, "omx: integrate task-7", author="worker-1").status  # doctest: +SKIP
    'merged'
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omx.engine.settings import WorktreeSettings
from omx.engine.workspaces import (
    _GIT_ENV_DROP,
    WORKTREES_LOCK_S,
    WorkspaceDirty,
    WorkspaceError,
    WorkspaceUnsafe,
    _dirty,
    _git,
    _lock_dir,
    _merge_in_progress,
    _read_worktree,
    _registered,
    _rev,
    commit_leftovers,
    remove_workspace,
    sanitize_key,
    workspace_path,
)
from omx.errors import Refused
from omx.state.locks import locked
from omx.terminal import plural

#: Seconds to wait for another worker's merge (a ``verify`` run is inside it: this is generous).
INTEGRATION_LOCK_S = 3600.0
#: A ref lock file older than this, found while we hold the integration lock, was left by a killed git.
STALE_REF_LOCK_S = 5.0
#: The verification worktree's key under the team's worktree folder (task keys are ``task-<id>``).
VERIFY_KEY = "integration"
_ZERO = "0" * 40
_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
_MARKER = re.compile(rb"^(?:<{7}|>{7})(?: |$)", re.MULTILINE)
_CAS_TRIES = 8

Status = Literal["merged", "already", "conflict", "verify_failed"]


def default_branch(team: str) -> str:
    """``omx/<team>/integration``: beside the team's task branches ``omx/<team>/task-<id>``."""
    return f"omx/{sanitize_key(team)}/integration"


@dataclass(frozen=True)
class IntegrationTarget:
    """One team's integration branch in one repository."""

    repo: Path
    team: str
    branch: str
    base: str  # the ref the branch is made from when it does not exist yet

    @property
    def ref(self) -> str:
        return f"refs/heads/{self.branch}"

    def marker(self, key: str) -> str:
        """The ref that says task ``key`` is integrated (it points at the merge commit)."""
        return f"refs/omx/{sanitize_key(self.team)}/integrated/{sanitize_key(key)}"


@dataclass
class IntegrationResult:
    """What :func:`integrate` did. ``commit`` is the integration commit that contains the task."""

    status: Status
    commit: str | None = None
    previous: str | None = None  # the branch tip the task was merged onto
    paths: list[str] = field(default_factory=list)  # conflicted paths
    output: str = ""  # the verification's output tail, when it failed
    files: list[str] = field(default_factory=list)  # what the merge added to the branch
    verify_ms: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("merged", "already")

    def to_dict(self, branch: str) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "branch": branch, "commit": self.commit}
        if self.previous:
            out["previous"] = self.previous
        if self.files:
            out["files"] = self.files[:200]
        if self.paths:
            out["paths"] = self.paths[:200]
        if self.output:
            out["output"] = self.output
        if self.verify_ms is not None:
            out["verify_ms"] = self.verify_ms
        return out


def check_branch_name(repo: Path, branch: str) -> str:
    """``branch`` if git accepts it as a branch name; else :class:`WorkspaceUnsafe`."""
    if not branch or branch.startswith("-") or "\0" in branch:
        raise WorkspaceUnsafe(f"integration.branch {branch!r} is not a valid branch name")
    proc = _git(repo, "check-ref-format", "--branch", branch, check=False)
    if proc.returncode != 0 or proc.stdout.strip() != branch:
        raise WorkspaceUnsafe(f"integration.branch {branch!r} is not a valid branch name")
    return branch


def read_refs(repo: Path, *refs: str) -> dict[str, str]:
    """``{ref: commit}`` for those of ``refs`` that exist (one git call)."""
    proc = _git(repo, "for-each-ref", "--format=%(refname) %(objectname)", *refs)
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        name, _, sha = line.partition(" ")
        if name in refs:
            out[name] = sha
    return out


def ensure_branch(target: IntegrationTarget) -> str:
    """The integration branch's tip; the branch is created from ``target.base`` when missing."""
    found = read_refs(target.repo, target.ref).get(target.ref)
    if found:
        return found
    base = _rev(target.repo, target.base)
    # Old value zero: create only if absent, so two workers creating it at once agree on one tip.
    proc = _git(target.repo, "update-ref", "-m", "omx: integration branch", target.ref, base, _ZERO, check=False)
    if proc.returncode != 0:
        found = read_refs(target.repo, target.ref).get(target.ref)
        if not found:
            raise WorkspaceError(f"cannot create {target.branch}: {proc.stderr.strip()[-500:]}")
        return found
    return base


def integrated_commit(target: IntegrationTarget, key: str) -> str | None:
    """The merge commit that brought task ``key`` in, or ``None`` when it is not integrated."""
    return read_refs(target.repo, target.marker(key)).get(target.marker(key))


def is_ancestor(repo: Path, older: str, newer: str) -> bool:
    return _git(repo, "merge-base", "--is-ancestor", older, newer, check=False).returncode == 0


def markers_in_commit(repo: Path, commit: str, paths: list[str]) -> list[str]:
    """Those of ``paths`` that hold a conflict marker line in ``commit``'s tree (``git grep``, no checkout)."""
    if not paths:
        return []
    proc = _git(repo, "grep", "-l", "-z", "-E", "^(<<<<<<<|>>>>>>>)( |$)", commit, "--", *paths, check=False)
    prefix = f"{commit}:"
    return [p.removeprefix(prefix) for p in proc.stdout.split("\0") if p]


def merge_tip_into(ws_path: Path, tip: str, author: str) -> list[str]:
    """Bring the integration ``tip`` into the task checkout at ``ws_path`` (a retried task's branch).

    Returns the conflicted paths: their files keep git's conflict markers for the agent to resolve, and
    the merge stays in progress so that the next commit concludes it. A merge already in progress (an
    earlier attempt's, not yet concluded) is left as it is.
    """
    if _merge_in_progress(ws_path):
        return _unmerged(ws_path)
    if is_ancestor(ws_path, tip, "HEAD"):
        return []
    commit_leftovers(ws_path, author)  # a killed attempt's uncommitted work: kept, and out of the merge's way
    env = _ident_env(author)
    proc = _git(ws_path, "merge", "--no-ff", "--no-edit", "-q", "-m", "omx: bring in the integration branch", tip,
                env=env, check=False)
    if proc.returncode == 0:
        return []
    paths = _unmerged(ws_path)
    if not paths:
        raise WorkspaceError(f"git merge of the integration branch failed in {ws_path}: {proc.stderr.strip()[-500:]}")
    return paths


def integrate(
    target: IntegrationTarget,
    key: str,
    head: str,
    message: str,
    *,
    author: str,
    verify: Callable[[Path, str], tuple[bool, str]] | None = None,
    worktree: WorktreeSettings | None = None,
    lock_timeout: float = INTEGRATION_LOCK_S,
) -> IntegrationResult:
    """Merge commit ``head`` (task ``key``'s branch) into the integration branch, exactly once.

    Args:
        message: the merge commit's message (goes to git on stdin: task text is safe here).
        verify: ``verify(path, commit) -> (passed, output tail)`` runs the verification on the merged
            tree, checked out at ``path`` (omx's own integration worktree); the branch moves only when
            it passes.
        worktree: where the integration worktree lives (``worktree.root``); needed with ``verify``.

    Returns the result: ``merged`` or ``already`` (integrated by an earlier attempt) with ``commit``,
    ``conflict`` with ``paths``, or ``verify_failed`` with ``output``; the branch did not move then.

    Raises:
        WorkspaceError: git failed in a way that is not a conflict. LockTimeout.
    """
    repo = target.repo
    marker = target.marker(key)
    with locked(_lock_dir(repo) / f"integration-{sanitize_key(target.team)}.lock", lock_timeout):
        tip = _loose_ref(repo, target.ref)
        for _ in range(_CAS_TRIES):
            if tip is None:
                refs = read_refs(repo, target.ref, marker)
                if marker in refs:
                    return IntegrationResult("already", refs[marker])
                tip = refs.get(target.ref) or ensure_branch(target)
            merged = _merge_commit(repo, tip, head, message, author)
            if isinstance(merged, list):
                return IntegrationResult("conflict", previous=tip, paths=merged)
            verify_ms = None
            if verify is not None:
                t0 = time.monotonic()
                path = prepare_verify_tree(target, worktree or WorktreeSettings(), merged)
                passed, output = verify(path, merged)
                verify_ms = int((time.monotonic() - t0) * 1000)
                if not passed:
                    return IntegrationResult("verify_failed", previous=tip, output=output, verify_ms=verify_ms)
            moves = [f"update {target.ref} {merged} {tip}", f"create {marker} {merged}"]
            if _helpers(repo).transaction(moves):
                return IntegrationResult("merged", merged, previous=tip, verify_ms=verify_ms)
            # Refused (or the helper is gone): the same transaction once more by a git of its own, for
            # git's own message and the cases below.
            proc = _git(repo, "update-ref", "--stdin", stdin="".join(f"{m}\n" for m in moves), check=False)
            if proc.returncode == 0:
                return IntegrationResult("merged", merged, previous=tip, verify_ms=verify_ms)
            if ".lock" in proc.stderr and _clear_stale_ref_locks(repo, (target.ref, marker)):
                tip = None
                continue
            now = read_refs(repo, target.ref, marker)
            if marker in now:  # integrated by an earlier attempt: the transaction's `create` refused
                return IntegrationResult("already", now[marker])
            if now.get(target.ref) == tip:
                raise WorkspaceError(f"cannot move {target.branch}: {proc.stderr.strip()[-500:]}")
            tip = None  # somebody moved the branch meanwhile: merge again onto its new tip
        raise WorkspaceError(f"{target.branch} kept moving under {_CAS_TRIES} merges of {key}; giving up for now")


def _loose_ref(repo: Path, ref: str) -> str | None:
    """The commit a loose ref file names, read without running git (a spawn is ~1/6 of a merge's
    cost); ``None`` when the ref is packed, absent or not plainly stored (reftable): ask git then.

    Correctness never rests on this read: ``update-ref`` compares the old value it is given, so a
    stale answer only costs one more round.
    """
    try:
        text = (_common_dir(str(repo)) / ref).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError, WorkspaceError):
        return None
    return text if _SHA.fullmatch(text) else None


@functools.lru_cache(maxsize=16)
def _common_dir(repo: str) -> Path:
    out = Path(_git(Path(repo), "rev-parse", "--git-common-dir").stdout.strip())
    return out if out.is_absolute() else (Path(repo) / out).resolve()


def added_files(repo: Path, before: str, after: str) -> list[str]:
    """The paths that differ between two commits (what a merge brought in)."""
    proc = _git(repo, "diff-tree", "-r", "--name-only", "-z", "--no-commit-id", before, after, check=False)
    return [p for p in proc.stdout.split("\0") if p]


def prepare_verify_tree(target: IntegrationTarget, settings: WorktreeSettings, commit: str) -> Path:
    """omx's own worktree for verification, checked out (detached, clean) at ``commit``.

    Called with the integration lock held: nobody else uses this worktree. Whatever odd state a
    killed run left it in (a stale ``index.lock``, half a checkout, a vanished folder), it is removed
    and made again rather than trusted.
    """
    repo = target.repo
    path = workspace_path(repo, settings, target.team, VERIFY_KEY)
    info = _read_worktree(path) if path.is_dir() else None
    if info is not None and info.repo is not None and info.repo.resolve() == repo.resolve():
        ok = _git(path, "checkout", "-q", "-f", "--detach", commit, check=False).returncode == 0 \
            and _git(path, "clean", "-q", "-ffdx", check=False).returncode == 0
        if ok:
            return path
        remove_workspace(path, repo=repo)
    with locked(_lock_dir(repo) / "worktrees.lock", WORKTREES_LOCK_S):
        if str(path) in _registered(repo):
            _git(repo, "worktree", "prune")
        if path.exists():
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
            else:
                raise WorkspaceError(f"{path} exists but is not omx's integration worktree of {repo}; move it away",
                                     path=str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        _git(repo, "worktree", "add", "-q", "--detach", "--", str(path), commit)
    return path


def land(repo: Path, branch: str, into: str, *, author: str = "omx") -> dict[str, Any]:
    """Bring ``branch`` (the integration branch) into ``into``: a fast-forward when it can, else a merge.

    When ``into`` is checked out (the user's checkout, usually), the checkout is updated through git
    and must be clean; otherwise only the ref moves (plumbing). A merge that would conflict is refused
    before anything changes.

    Raises:
        WorkspaceError: a branch is missing. WorkspaceDirty: the checkout has uncommitted changes.
        Refused: the merge would conflict (the paths are named).
    """
    into_ref = f"refs/heads/{into}"
    refs = read_refs(repo, f"refs/heads/{branch}", into_ref)
    src, old = refs.get(f"refs/heads/{branch}"), refs.get(into_ref)
    if src is None:
        raise WorkspaceError(f"no branch {branch!r} in {repo}: nothing to land", branch=branch)
    if old is None:
        raise WorkspaceError(f"no branch {into!r} in {repo} to land into (pass --into BRANCH)", branch=into)
    out: dict[str, Any] = {"branch": branch, "into": into, "from": old}
    if is_ancestor(repo, src, old):
        return {**out, "mode": "up-to-date", "commit": old}
    checkout = next((Path(p) for p, b in _registered(repo).items() if b == into), None)
    ff = is_ancestor(repo, old, src)
    if not ff:
        conflicts = _merge_commit(repo, old, src, "", author, dry=True)
        if isinstance(conflicts, list):
            raise Refused(f"{into} moved since the team started and now conflicts with {branch} in: "
                          f"{', '.join(conflicts[:20])}; merge by hand (git merge {branch}) and resolve",
                          paths=conflicts)
    message = f"omx: land {branch} into {into}"
    if checkout is not None:
        if _dirty(checkout):
            raise WorkspaceDirty(f"{checkout} (on {into}) has uncommitted changes; commit or stash them, "
                                 "then land again", path=str(checkout))
        args = ("merge", "--ff-only", "-q", src) if ff else ("merge", "--no-ff", "--no-edit", "-q", "-m", message, src)
        _git(checkout, *args, env=_ident_env(author))
        new = _rev(checkout, "HEAD")
    else:
        merged = src if ff else _merge_commit(repo, old, src, message, author)
        assert isinstance(merged, str)
        _git(repo, "update-ref", "-m", message, into_ref, merged, old)
        new = merged
    return {**out, "mode": "fast-forward" if ff else "merge", "commit": new,
            "checkout": str(checkout) if checkout else None}


# --- plumbing ------------------------------------------------------------------------------------


def _merge_commit(repo: Path, tip: str, head: str, message: str, author: str, *, dry: bool = False) -> str | list[str]:
    """The merge commit of ``head`` onto ``tip`` (not on any branch yet), or the conflicted paths."""
    proc = _git(repo, "merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", tip, head, check=False)
    if proc.returncode not in (0, 1):
        raise WorkspaceError(f"git merge-tree failed in {repo}: {proc.stderr.strip()[-500:]}")
    parts = [p for p in proc.stdout.split("\0") if p]
    if not parts:
        raise WorkspaceError(f"git merge-tree gave no tree in {repo}")
    if proc.returncode == 1:
        return sorted(dict.fromkeys(parts[1:])) or ["(unknown)"]
    if dry:
        return parts[0]
    text = message.replace("\0", "").strip() or "omx: integrate"
    made = _helpers(repo).commit(parts[0], (tip, head), text, author)
    if made is not None:
        return made
    return _git(repo, "commit-tree", parts[0], "-p", tip, "-p", head, "-F", "-", stdin=text + "\n",
                env=_ident_env(author)).stdout.strip()


class _GitHelpers:
    """Two long-lived git processes per repository and process, so that a merge costs one git start
    (``merge-tree``) instead of three: ``git update-ref --stdin`` takes transaction after transaction
    (``start`` … ``prepare`` / ``commit``, each answered ``<command>: ok``), and ``git hash-object -t
    commit -w --stdin-paths`` writes commit objects as ``git commit-tree`` would.

    A fast path only: anything unexpected (a refused transaction ends its git, a malformed answer, an
    OSError) returns ``False`` / ``None`` and the caller does the same with a git of its own. Both gits
    exit at end of input, so they end with this process (an unfinished transaction is dropped). Used
    under the team's integration lock, and serialized by a thread lock besides.
    """

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self.lock = threading.Lock()
        self.refs: subprocess.Popen[str] | None = None
        self.objects: subprocess.Popen[str] | None = None
        self.scratch = _lock_dir(repo) / f"commit-{os.getpid()}.txt"

    def _spawn(self, *args: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
        return subprocess.Popen(["git", "-C", str(self.repo), *args], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1, env=env)

    def _ask(self, proc: subprocess.Popen[str], lines: list[str], answers: int) -> list[str] | None:
        assert proc.stdin is not None
        assert proc.stdout is not None
        try:
            proc.stdin.write("".join(f"{line}\n" for line in lines))
            proc.stdin.flush()
            got = [proc.stdout.readline() for _ in range(answers)]
        except (OSError, ValueError):
            return None
        return [g.rstrip("\n") for g in got] if all(g.endswith("\n") for g in got) else None

    def _drop(self, proc: subprocess.Popen[str] | None) -> None:
        if proc is None:
            return
        with contextlib.suppress(OSError, ValueError):
            if proc.stdin is not None:
                proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        with contextlib.suppress(OSError, ValueError):
            if proc.stdout is not None:
                proc.stdout.close()

    def transaction(self, lines: list[str]) -> bool:
        """Apply ``update``/``create`` lines atomically; True when git said ``commit: ok``."""
        with self.lock:
            try:
                if self.refs is None or self.refs.poll() is not None:
                    self._drop(self.refs)
                    self.refs = self._spawn("update-ref", "--stdin")
                got = self._ask(self.refs, ["start", *lines, "prepare", "commit"], 3)
            except OSError:
                got = None
            if got == ["start: ok", "prepare: ok", "commit: ok"]:
                return True
            self._drop(self.refs)  # a refused transaction ends that git: the next call starts another
            self.refs = None
            return False

    def commit(self, tree: str, parents: tuple[str, ...], message: str, author: str) -> str | None:
        """A commit object with ``tree``, ``parents`` and ``message`` by ``author`` (now); its sha or None."""
        ident = _ident_env(author)
        stamp = f"{int(time.time())} +0000"
        head = [f"tree {tree}", *(f"parent {p}" for p in parents),
                f"author {ident['GIT_AUTHOR_NAME']} <{ident['GIT_AUTHOR_EMAIL']}> {stamp}",
                f"committer {ident['GIT_COMMITTER_NAME']} <{ident['GIT_COMMITTER_EMAIL']}> {stamp}"]
        body = "\n".join(head) + "\n\n" + message + "\n"
        with self.lock:
            try:
                self.scratch.write_text(body, encoding="utf-8")
                if self.objects is None or self.objects.poll() is not None:
                    self._drop(self.objects)
                    self.objects = self._spawn("hash-object", "-t", "commit", "-w", "--stdin-paths")
                got = self._ask(self.objects, [str(self.scratch)], 1)
            except OSError:
                got = None
            if got and _SHA.fullmatch(got[0]):
                return got[0]
            self._drop(self.objects)
            self.objects = None
            return None


_HELPERS: dict[tuple[int, str], _GitHelpers] = {}


def _helpers(repo: Path) -> _GitHelpers:
    key = (os.getpid(), str(repo))  # a forked child starts its own
    found = _HELPERS.get(key)
    if found is None:
        found = _HELPERS[key] = _GitHelpers(repo)
    return found


def _ident_env(author: str) -> dict[str, str]:
    name = re.sub(r"[\0\n<>]", " ", author).strip() or "omx"
    email = re.sub(r"[^A-Za-z0-9._-]", "_", name) + "@omx.invalid"
    return {f"GIT_{who}_{k}": v for who in ("AUTHOR", "COMMITTER") for k, v in (("NAME", name), ("EMAIL", email))}


def _unmerged(ws_path: Path) -> list[str]:
    proc = _git(ws_path, "diff", "--name-only", "--diff-filter=U", "-z", check=False)
    return sorted(dict.fromkeys(p for p in proc.stdout.split("\0") if p))


def ref_lock_files(repo: Path, refs: tuple[str, ...]) -> list[Path]:
    """The ``<ref>.lock`` files that exist for ``refs`` (git leaves one behind when it is killed)."""
    common = _common_dir(str(repo))
    return [lock for ref in refs if (lock := common / f"{ref}.lock").exists()]


def _clear_stale_ref_locks(repo: Path, refs: tuple[str, ...]) -> bool:
    """Wait for the ``<ref>.lock`` files of ``refs`` to go, and delete those that stay past
    :data:`STALE_REF_LOCK_S` (a killed git's). We hold the integration lock, so no omx process is
    writing these refs; a user's git would be done within that time. True when the caller may retry."""
    deadline = time.monotonic() + STALE_REF_LOCK_S + 1
    while True:
        locks = ref_lock_files(repo, refs)
        if not locks:
            return True
        for lock in locks:
            try:
                if time.time() - lock.stat().st_mtime > STALE_REF_LOCK_S:
                    os.unlink(lock)
            except FileNotFoundError:
                continue
        if time.monotonic() > deadline:
            return not ref_lock_files(repo, refs)
        time.sleep(0.2)


# --- omx doctor ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One thing ``omx doctor`` says about a team's integration (``level``: error | warning | info)."""

    ok: bool
    detail: str
    level: str = "warning"


def diagnose(target: IntegrationTarget, settings: WorktreeSettings, *, fix: bool = False) -> list[Finding]:
    """Look for an integration branch, ref or worktree left in an odd state; with ``fix``, repair it.

    What a killed git or worker can leave: ``<ref>.lock`` files that make every later ``update-ref``
    fail; an integration worktree whose folder vanished, that holds a stale ``index.lock``, or whose
    folder is no longer a worktree; a missing branch although tasks were integrated into it.
    """
    repo = target.repo
    out: list[Finding] = []
    with locked(_lock_dir(repo) / f"integration-{sanitize_key(target.team)}.lock", 30.0):
        markers = _marker_refs(target)
        refs = read_refs(repo, target.ref)
        tip = refs.get(target.ref)
        locks = ref_lock_files(repo, (target.ref, *markers))
        if locks:
            if fix:
                for lock in locks:
                    lock.unlink(missing_ok=True)
            out.append(Finding(fix, ("removed " if fix else "left by a killed git (blocks every merge; omx doctor "
                                     "--fix removes them): ") + ", ".join(map(str, locks)), "info" if fix else "error"))
        if tip is None and markers:
            newest = _newest(repo, list(markers.values()))
            if fix and newest is not None:
                _git(repo, "update-ref", "-m", "omx doctor: integration branch restored", target.ref, newest, _ZERO)
                out.append(Finding(True, f"{target.branch} was missing; restored at {newest[:10]}, the newest of "
                                   f"{plural(len(markers), 'integrated task')}", "info"))
            else:
                out.append(Finding(False, f"{target.branch} is missing although {plural(len(markers), 'task')} "
                                   f"{'was' if len(markers) == 1 else 'were'} integrated into it"
                                   + (" — omx doctor --fix restores it" if newest else ""),
                                   "error"))
        elif tip is not None:
            lost = [m.rsplit("/", 1)[-1] for m, sha in markers.items() if not is_ancestor(repo, sha, tip)]
            if lost:
                out.append(Finding(False, f"{target.branch} (at {tip[:10]}) no longer holds the merges of "
                                   f"{', '.join(sorted(lost))}: was it reset by hand?", "warning"))
            else:
                out.append(Finding(True, f"{target.branch} at {tip[:10]} holds "
                                   f"{'the' if len(markers) == 1 else 'all'} {plural(len(markers), 'integrated task')}",
                                   "info"))
        out += _diagnose_verify_tree(target, settings, fix=fix)
    return out


def _diagnose_verify_tree(target: IntegrationTarget, settings: WorktreeSettings, *, fix: bool) -> list[Finding]:
    repo = target.repo
    try:
        path = workspace_path(repo, settings, target.team, VERIFY_KEY)
    except (WorkspaceUnsafe, OSError) as exc:
        return [Finding(False, f"integration worktree: {exc}", "warning")]
    registered = str(path) in _registered(repo)
    if not path.exists():
        if registered:
            if fix:
                _git(repo, "worktree", "prune")
            return [Finding(fix, f"integration worktree {path} vanished but git still lists it"
                            + ("; pruned" if fix else " — omx doctor --fix prunes it"), "info" if fix else "warning")]
        return []
    info = _read_worktree(path) if path.is_dir() else None
    if info is None or info.repo is None or info.repo.resolve() != repo.resolve():
        return [Finding(False, f"{path} is not omx's integration worktree of {repo} (omx will not touch it: "
                        "move it away)", "error")]
    gitdir = Path(_git(path, "rev-parse", "--absolute-git-dir", check=False).stdout.strip() or path / ".git")
    if (gitdir / "index.lock").exists():
        if fix:
            remove_workspace(path, repo=repo)
            return [Finding(True, f"integration worktree {path} held a stale index.lock; removed (made again "
                            "when needed)", "info")]
        return [Finding(False, f"integration worktree {path} holds a stale index.lock (a killed git) — "
                        "omx doctor --fix removes the worktree; it is made again when needed", "warning")]
    return []


def _marker_refs(target: IntegrationTarget) -> dict[str, str]:
    prefix = f"refs/omx/{sanitize_key(target.team)}/integrated/"
    proc = _git(target.repo, "for-each-ref", "--format=%(refname) %(objectname)", prefix)
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def _newest(repo: Path, commits: list[str]) -> str | None:
    """The one of ``commits`` that has every other as an ancestor, if there is one."""
    heads = _git(repo, "merge-base", "--independent", *commits, check=False).stdout.split()
    return heads[0] if len(heads) == 1 else None
