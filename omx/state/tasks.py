"""Teams and tasks: create, read, list, update, and dependency rules."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from omx.errors import (
    AlreadyTerminal,
    CorruptState,
    DependencyError,
    InvalidInput,
    NotEmpty,
    TaskNotFound,
    TeamExists,
    WorkerNotFound,
)
from omx.models import TERMINAL, Task, TeamConfig, WorkerInfo
from omx.state import atomic, modes, names
from omx.state.base import PRIORITY_LIMIT, StoreBase, key_task_id, sort_key
from omx.state.locks import locked
from omx.state.paths import TeamPaths

UPDATABLE = frozenset({"subject", "description", "depends_on", "priority", "role", "files"})
MAX_SUBJECT = 500
MAX_DESCRIPTION = 200_000


@dataclass
class TaskList:
    """What :meth:`TaskOps.list_tasks` returns: the tasks, each task's unmet dependencies, corrupt files."""

    tasks: list[Task] = field(default_factory=list)
    blocked_by: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    corrupt: list[dict[str, str]] = field(default_factory=list)


class TaskOps(StoreBase):
    """Team and task records."""

    # --- teams ------------------------------------------------------------------------------

    def create_team(
        self, name: str, *, goal: str = "", workers: Iterable[str | WorkerInfo] = (), lease_ms: int = 60_000,
        extra: dict[str, Any] | None = None, shared_group: bool = False,
    ) -> TeamConfig:
        """Create a team. Workers are names (``worker-1`` …) or :class:`WorkerInfo`.

        ``extra``: more top-level keys for ``config.json`` (the leader's ``integration`` settings).
        Its files are 0600 and its folders 0700 whatever the umask (task text and results can hold
        private code); ``shared_group``: 0660 and 0770, for a team several accounts of one group work on.

        >>> store.create_team("alpha", goal="ship it", workers=["worker-1", "worker-2"])  # doctest: +SKIP
        """
        p = TeamPaths.of(self.root, name)
        infos: list[WorkerInfo] = []
        for i, w in enumerate(workers, start=1):
            info = w if isinstance(w, WorkerInfo) else WorkerInfo(name=w, index=i)
            names.worker_name(info.name, allow_leader=False)
            infos.append(info)
        if len({w.name for w in infos}) != len(infos):
            raise InvalidInput("worker names must be unique", field="workers")
        if not isinstance(lease_ms, int) or lease_ms < 1:
            raise InvalidInput("lease_ms must be a positive integer", field="lease_ms")
        if not isinstance(shared_group, bool):
            raise InvalidInput("shared_group must be true or false", field="shared_group")
        fmode, dmode = modes.files(shared_group), modes.dirs(shared_group)
        modes.make_dirs(p.dir.parent, dmode)  # folders that exist already keep their mode
        if self.root.parent.name == ".omx":  # the default <repo>/.omx/state: keep it out of `git status`
            atomic.ignore_in_git(self.root.parent)
        try:
            os.mkdir(p.dir, dmode)
            if modes.needs_chmod(dmode):
                os.chmod(p.dir, dmode)
        except FileExistsError:
            if p.config.exists():
                raise TeamExists(f"team {name!r} already exists", team=name) from None
        for d in p.all_dirs():
            modes.make_dirs(d, dmode)
        with locked(p.team_lock):
            if p.config.exists():
                raise TeamExists(f"team {name!r} already exists", team=name)
            for w in infos:
                modes.make_dirs(p.worker_dir(w.name), dmode)
                modes.make_dirs(p.mailbox(w.name), dmode)
            modes.make_dirs(p.mailbox(names.LEADER), dmode)
            _, at = self.now()
            cfg = TeamConfig(name=name, goal=goal, workers=infos, lease_ms=lease_ms, created_at=at,
                             shared_group=shared_group)
            if extra:
                cfg.extra = {k: v for k, v in extra.items() if k not in TeamConfig.__dataclass_fields__}
            self._fmodes[p.team] = fmode
            atomic.write_json(p.config, cfg.to_dict(), mode=fmode)
            self._emit(p, "team_created", data={"workers": [w.name for w in infos], "lease_ms": lease_ms})
        return cfg

    def list_teams(self) -> list[str]:
        base = self.root / "team"
        if not base.is_dir():
            return []
        return sorted(d for d in os.listdir(base) if names.TEAM_RE.fullmatch(d) and (base / d / "config.json").exists())

    def require_member(self, cfg: TeamConfig, worker: str, *, allow_leader: bool = False) -> str:
        names.worker_name(worker)
        if worker == names.LEADER and allow_leader:
            return worker
        if worker not in cfg.worker_names():
            raise WorkerNotFound(f"{worker!r} is not a worker of team {cfg.name!r}", team=cfg.name, worker=worker)
        return worker

    def cleanup(self, team: str, *, force: bool = False) -> dict[str, Any]:
        """Delete the team's state. Refuses while tasks are in progress unless ``force``."""
        p = self.paths(team)
        with locked(p.team_lock):
            busy = [n.split("~")[0] for n in os.listdir(p.claimed)]
            if busy and not force:
                raise NotEmpty(f"tasks still in progress: {', '.join(sorted(busy, key=int))}", in_progress=busy)
            shutil.rmtree(p.dir)
        self._fmodes.pop(p.team, None)  # a team of that name created later may differ
        return {"team": team, "removed": True}

    # --- tasks ------------------------------------------------------------------------------

    def create_task(
        self,
        team: str,
        subject: str,
        description: str = "",
        *,
        depends_on: Iterable[str | int] = (),
        priority: int = 0,
        role: str | None = None,
        files: Iterable[str] = (),
        owner: str | None = None,
    ) -> Task:
        """Create a pending task with the next id (never reused). ``owner`` pre-assigns it."""
        p = self.paths(team)
        _check_text(subject, description)
        prio = _check_priority(priority)
        deps = _normalise_deps(depends_on)
        with locked(p.team_lock):
            cfg = self._load_config(p)
            if owner is not None:
                self.require_member(cfg, owner)
            for dep in deps:
                if not p.task(dep).exists():
                    raise DependencyError(f"depends_on names unknown task {dep}", task_id=dep)
            tid = str(cfg.next_task_id)
            cfg.next_task_id += 1
            atomic.write_json(p.config, cfg.to_dict(), mode=self._fmode(p))
            _, at = self.now()
            task = Task(
                id=tid, subject=subject, description=description, created_at=at, updated_at=at,
                depends_on=deps, priority=prio, role=role, files=list(files), owner=owner,
            )
            with locked(p.task_lock(tid)):
                self._commit(p, None, task)
                self._emit(p, "task_created", task_id=tid, worker=owner, data={"subject": subject[:200]})
        self._promote_if_ready(p, [tid])  # its dependencies may have completed meanwhile
        return task

    def read_task(self, team: str, task_id: str | int) -> Task:
        return self._load_task(self.paths(team), names.task_id(task_id))

    def list_tasks(self, team: str, *, status: str | None = None, owner: str | None = None) -> TaskList:
        """Every readable task (filtered), unmet dependencies per task, and corrupt files with their paths."""
        p = self.paths(team)
        out = TaskList()
        by_id: dict[str, Task] = {}
        for tid in self.list_task_ids(p):
            try:
                by_id[tid] = self._load_task(p, tid)
            except CorruptState as exc:
                out.corrupt.append({"path": str(p.task(tid)), "error": exc.message})
            except TaskNotFound:
                continue
        for tid, task in by_id.items():
            unmet = [
                {"id": d, "status": by_id[d].status if d in by_id else None}
                for d in task.depends_on
                if d not in by_id or by_id[d].status != "completed"
            ]
            if unmet and task.status == "pending":
                out.blocked_by[tid] = unmet
            # "blocked" matches a pending task that waits on dependencies, as well as a stored status.
            if status is not None and task.status != status and not (status == "blocked" and tid in out.blocked_by):
                continue
            if owner is not None and task.owner != owner:
                continue
            out.tasks.append(task)
        return out

    def update_task(
        self, team: str, task_id: str | int, changes: dict[str, Any], *, expected_version: int | None = None
    ) -> Task:
        """Change metadata (subject, description, depends_on, priority, role, files) — never status or claim."""
        p = self.paths(team)
        tid = names.task_id(task_id)
        bad = sorted(set(changes) - UPDATABLE)
        if bad:
            raise InvalidInput(f"update-task cannot change {', '.join(bad)} (only {', '.join(sorted(UPDATABLE))})")
        if "subject" in changes or "description" in changes:
            _check_text(changes.get("subject", "x"), changes.get("description", ""))
        if "priority" in changes:
            changes["priority"] = _check_priority(changes["priority"])
        if "depends_on" in changes:
            changes["depends_on"] = _normalise_deps(changes["depends_on"])
        # Dependency edits take the team lock so that two concurrent edits cannot close a cycle.
        with locked(p.team_lock) if "depends_on" in changes else _nullcontext(), locked(p.task_lock(tid)):
            old = self._load_task(p, tid)
            if expected_version is not None and old.version != expected_version:
                from omx.errors import VersionConflict

                raise VersionConflict(
                    f"task {tid} is at version {old.version}, not {expected_version}",
                    task_id=tid, version=old.version,
                )
            if "depends_on" in changes:
                if old.status in TERMINAL or old.status == "in_progress":
                    raise AlreadyTerminal(f"task {tid} is {old.status}; its dependencies can no longer change")
                self._check_deps(p, tid, changes["depends_on"])
            _, at = self.now()
            try:
                new = Task.from_dict({**old.to_dict(), **changes, "version": old.version + 1, "updated_at": at})
            except ValueError as exc:
                raise InvalidInput(f"update-task: {exc}") from None
            self._commit(p, old, new)
            self._emit(p, "task_updated", task_id=tid, data={"fields": sorted(changes)})
        self._promote_if_ready(p, [tid])
        return new

    def assign_task(self, team: str, task_id: str | int, owner: str | None) -> Task:
        """Pre-assign a pending task to ``owner`` (or to nobody): the leader's way to move queued work."""
        p = self.paths(team)
        tid = names.task_id(task_id)
        if owner is not None:
            self.require_member(self._load_config(p), owner)
        with locked(p.task_lock(tid)):
            old = self._load_task(p, tid)
            if old.status != "pending":
                from omx.errors import InvalidTransition

                raise InvalidTransition(f"task {tid} is {old.status}; only pending tasks can be reassigned")
            _, at = self.now()
            new = old.replace(owner=owner, version=old.version + 1, updated_at=at)
            self._commit(p, old, new)
            self._emit(p, "task_assigned", task_id=tid, worker=owner)
        return new

    def retry_task(self, team: str, task_id: str | int) -> Task:
        """Send a failed task back to ``pending``, claimable by anyone, so that its dependents can run.

        Its attempts and history stay; its last ``result`` and ``error`` move to ``result.previous``
        (and into the ``task_retried`` event). A task that is not failed is refused.

        Example::

            store.retry_task("alpha", "4")   # failed -> pending; task 5 (after 4) waits on it again
        """
        from omx.errors import InvalidTransition

        p = self.paths(team)
        tid = names.task_id(task_id)
        with locked(p.task_lock(tid)):
            old = self._load_task(p, tid)
            if old.status != "failed":
                raise InvalidTransition(f"task {tid} is {old.status}; only a failed task can be retried",
                                        task_id=tid, status=old.status)
            _, at = self.now()
            previous = {"result": old.result, "error": old.error, "completed_at": old.completed_at,
                        "owner": old.owner}
            new = old.replace(status="pending", claim=None, owner=None, result={"previous": previous}, error=None,
                              completed_at=None, version=old.version + 1, updated_at=at)
            self._commit(p, old, new)  # pending again: its ready (or waiting) marker is made here
            self._emit(p, "task_retried", task_id=tid, worker=old.owner, reason=old.error,
                       data={"attempts": old.attempts})
        return new

    def _check_deps(self, p: TeamPaths, tid: str, deps: list[str]) -> None:
        if tid in deps:
            raise DependencyError(f"task {tid} cannot depend on itself", task_id=tid)
        for dep in deps:
            if not p.task(dep).exists():
                raise DependencyError(f"depends_on names unknown task {dep}", task_id=dep)
        # Walk the graph from the new dependencies; reaching tid again means a cycle.
        seen: set[str] = set()
        stack = list(deps)
        while stack:
            cur = stack.pop()
            if cur == tid:
                raise DependencyError(f"depends_on would make a cycle through task {tid}", task_id=tid)
            if cur in seen:
                continue
            seen.add(cur)
            try:
                stack.extend(self._load_task(p, cur).depends_on)
            except (TaskNotFound, CorruptState):
                continue

    def _promote_if_ready(
        self, p: TeamPaths, tids: Iterable[str] | None = None, *, completed: str | None = None
    ) -> list[str]:
        """Move waiting tasks whose dependencies are now all completed into the ready index.

        ``tids`` None means every waiting task; ``completed`` narrows that to the ones that depend on it.
        A lock-free look filters first, so a completion costs one directory listing when nothing waits on it.
        Waiting markers that no longer match their task are removed on the way.
        """
        found: list[tuple[str | None, str]]
        if tids is None:
            found = []
            for marker in os.listdir(p.waiting):
                try:
                    found.append((marker, key_task_id(marker)))
                except ValueError:
                    continue
        else:
            found = [(None, tid) for tid in tids]
        promoted = []
        for name, tid in found:
            raw = self._raw_task(p, tid)
            if raw is not None and raw.get("status") == "pending":
                deps = raw.get("depends_on") or []
                if completed is not None and completed not in deps:
                    continue
                if any(self._task_status(p, str(d)) != "completed" for d in deps):
                    continue
            with locked(p.task_lock(tid)):
                try:
                    task: Task | None = self._load_task(p, tid)
                except (TaskNotFound, CorruptState):
                    task = None
                if task is not None and task.status == "pending" and not self.unmet_dependencies(p, task):
                    self._ensure_markers(p, task)
                    promoted.append(tid)
                if name is not None:
                    self._heal_marker(p, p.waiting_s, name, task)
                elif task is not None:
                    self._heal_marker(p, p.waiting_s, sort_key(task), task)
        return promoted


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _check_text(subject: object, description: object) -> None:
    if not isinstance(subject, str) or not subject.strip():
        raise InvalidInput("subject must be a non-empty string", field="subject")
    if len(subject) > MAX_SUBJECT:
        raise InvalidInput(f"subject is longer than {MAX_SUBJECT} characters", field="subject")
    if not isinstance(description, str):
        raise InvalidInput("description must be a string", field="description")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(f"description is longer than {MAX_DESCRIPTION} characters", field="description")
    if "\x00" in subject or "\x00" in description:
        raise InvalidInput("task text may not contain NUL characters")


def _check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > PRIORITY_LIMIT:
        raise InvalidInput(f"priority must be an integer between -{PRIORITY_LIMIT} and {PRIORITY_LIMIT}")
    return priority


def _normalise_deps(deps: object) -> list[str]:
    if isinstance(deps, (str, bytes)) or not isinstance(deps, Iterable):
        raise InvalidInput("depends_on must be a list of task ids", field="depends_on")
    out: list[str] = []
    for d in deps:
        tid = names.task_id(d)
        if tid not in out:
            out.append(tid)
    return out
