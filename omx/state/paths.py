"""Where everything lives under the state root. Names are validated before any path is built."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from omx.state import names


def default_root(cwd: Path | None = None) -> Path:
    """The state root: ``$OMX_TEAM_STATE_ROOT``, else ``<repo>/.omx/state`` (repo = nearest ``.git`` above cwd)."""
    env = os.environ.get("OMX_TEAM_STATE_ROOT")
    if env:
        return Path(env).expanduser().resolve()
    here = (cwd or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / ".git").exists():
            return d / ".omx" / "state"
    return here / ".omx" / "state"


@dataclass(frozen=True)
class TeamPaths:
    """Paths of one team's state. Construct with :meth:`of`, which validates the name."""

    root: Path
    team: str

    @classmethod
    def of(cls, root: Path, team: str) -> TeamPaths:
        return cls(Path(root), names.team_name(team))

    @cached_property
    def dir(self) -> Path:
        return self.root / "team" / self.team

    @cached_property
    def config(self) -> Path:
        return self.dir / "config.json"

    @cached_property
    def tasks(self) -> Path:
        return self.dir / "tasks"

    def task(self, task_id: str) -> Path:
        return _child(self.tasks, f"task-{task_id}.json")

    # The hot path (claim, transition) names files as plain strings: no pathlib object per call.

    @cached_property
    def tasks_s(self) -> str:
        return os.fspath(self.tasks)

    def task_file(self, task_id: str) -> str:
        """:meth:`task` as a ``str``."""
        return f"{self.tasks_s}/task-{task_id}.json"

    @cached_property
    def locks_s(self) -> str:
        return os.fspath(self.locks)

    def task_lock_file(self, task_id: str) -> str:
        """:meth:`task_lock` as a ``str``."""
        return f"{self.locks_s}/task-{task_id}.lock"

    def bucket(self, name: str) -> Path:
        """The ready bucket folder ``name`` (one :class:`Path` per bucket, reused)."""
        return _child(self.ready, name)

    @cached_property
    def ready(self) -> Path:
        """Marker index of claimable tasks: one empty file per task, named by its sort key."""
        return self.dir / "index" / "ready"

    @cached_property
    def waiting(self) -> Path:
        """Marker index of pending tasks whose dependencies are not all completed."""
        return self.dir / "index" / "waiting"

    @cached_property
    def claimed(self) -> Path:
        """Marker index of in-progress tasks, named ``<id>~<leased_until_ms>~<pid>~<host8>``."""
        return self.dir / "index" / "claimed"

    @cached_property
    def ready_s(self) -> str:
        """:attr:`ready` as a ``str`` (marker paths are built as strings on the hot path)."""
        return os.fspath(self.ready)

    @cached_property
    def waiting_s(self) -> str:
        return os.fspath(self.waiting)

    @cached_property
    def claimed_s(self) -> str:
        return os.fspath(self.claimed)

    @cached_property
    def locks(self) -> Path:
        return self.dir / "locks"

    def task_lock(self, task_id: str) -> Path:
        return _child(self.locks, f"task-{task_id}.lock")

    @cached_property
    def team_lock(self) -> Path:
        return self.locks / "team.lock"

    def worker_dir(self, worker: str) -> Path:
        return self.dir / "workers" / names.worker_name(worker)

    def mailbox(self, worker: str) -> Path:
        return self.dir / "mailbox" / names.worker_name(worker)

    @cached_property
    def events_dir(self) -> Path:
        return self.dir / "events"

    @cached_property
    def events(self) -> Path:
        return self.events_dir / "events.ndjson"

    @cached_property
    def events_s(self) -> str:
        return os.fspath(self.events)

    @cached_property
    def config_s(self) -> str:
        return os.fspath(self.config)

    def all_dirs(self) -> list[Path]:
        return [self.tasks, self.ready, self.waiting, self.claimed, self.locks, self.events_dir,
                self.dir / "workers", self.dir / "mailbox"]


@functools.lru_cache(maxsize=4096)
def _child(parent: Path, name: str) -> Path:
    # Task paths are built several times per claim; pathlib joins are costly enough to show in profiles.
    return parent / name
