"""What every part of the file store shares: the root, the clock, task I/O and the marker index.

The marker index makes ``claim-next`` cheap without trusting anything but the task files:

* ``index/ready/<sortkey>``   — an empty file per pending task whose dependencies are completed;
* ``index/waiting/<sortkey>`` — an empty file per pending task still waiting on dependencies;
* ``index/claimed/<id>~<leased_until_ms>~<pid>~<host8>`` — an empty file per in-progress task, so
  expired or orphaned claims are found from a directory listing, without opening task files.

Markers are changed only while holding the task's lock, right after the task file. A marker that
disagrees with its task file (a crash between the two writes) is healed by the next reader that
opens the task under its lock, and :meth:`StoreBase.rebuild_index` rebuilds the lot from ``tasks/``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omx.clock import SYSTEM_CLOCK, Clock, iso, parse_iso
from omx.errors import CorruptState, DiskFull, TaskNotFound, TeamNotFound, disk_full
from omx.models import Task, TeamConfig
from omx.state import atomic, modes
from omx.state.encode import event_line, task_bytes
from omx.state.fds import KeptFds, linked
from omx.state.names import task_id as parse_task_id
from omx.state.paths import TeamPaths

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

PRIORITY_LIMIT = 100_000_000
_SORT_BASE = 1_000_000_000


def sort_key(task: Task) -> str:
    """Markers sort by priority (higher first), then id (lower first)."""
    prio = max(-PRIORITY_LIMIT, min(PRIORITY_LIMIT, task.priority))
    return f"{_SORT_BASE - prio:010d}-{int(task.id):012d}"


def key_task_id(name: str) -> str:
    return str(int(name.rpartition("-")[2]))


def ready_bucket(key: str) -> str:
    """``ready/`` is split into buckets of one priority and 100 ids (``<prio>-<id // 100>``).

    Bucket names sort like the keys inside them, so claim-next lists the bucket names and then only
    the first non-empty bucket: ~100 names instead of every pending task (10,000 pending: ~100
    buckets of ~100, two short listings instead of one of 10,000).
    """
    return key[:21]


BUCKET_LEN = 21
KEY_LEN = 23


def migrate_ready(p: TeamPaths, entries: list[str]) -> None:
    """Move ready markers that are not in their bucket (state from an older omx) to where they belong.

    Before buckets, markers sat directly in ``ready/`` (23-character names); an earlier layout used
    1000-id buckets (20-character folder names). A rename is all it takes, and doing it twice is
    harmless: a marker is an empty file whose name says everything.
    """
    for entry in entries:
        if len(entry) == BUCKET_LEN:
            continue
        src = p.ready / entry
        names = [entry] if len(entry) == KEY_LEN and src.is_file() else None
        if names is None:
            try:
                names = os.listdir(src)
            except (FileNotFoundError, NotADirectoryError):
                continue
        for name in names:
            if len(name) != KEY_LEN:
                continue
            dest = ready_marker(p, name)
            modes.make_dirs(dest.parent, modes.dir_for(modes.mode_of(p.ready) & 0o666))
            with contextlib.suppress(FileNotFoundError):
                os.replace(src if src.is_file() else src / name, dest)
        if src.is_dir():
            with contextlib.suppress(OSError):
                os.rmdir(src)


def ready_marker(p: TeamPaths, key: str) -> Path:
    """Where the ready marker of sort key ``key`` lives."""
    return p.ready / ready_bucket(key) / key


@functools.lru_cache(maxsize=64)
def host_tag(host: str) -> str:
    return hashlib.sha256(host.encode()).hexdigest()[:8]


_lease_ms: dict[str, int] = {}  # lease ends written or parsed lately: text -> what parse_iso gives for it


def lease_end_ms(leased_until: str) -> int:
    """``parse_iso(leased_until)``, remembered: a lease is read for its marker at the claim and at its end."""
    ms = _lease_ms.get(leased_until)
    if ms is None:
        ms = parse_iso(leased_until)
        _keep_lease(leased_until, ms)
    return ms


def lease_text(end_ms: int) -> str:
    """The ``leased_until`` text of a lease ending at ``end_ms`` (``iso``'s), already known to :func:`lease_end_ms`.

    What ``parse_iso`` returns for it is computed with parse_iso's own arithmetic (``datetime.timestamp``
    divides the exact microseconds by 10**6, then the seconds are multiplied by 1000 and truncated),
    so every process names the claimed marker alike whether it parsed the text or wrote it.
    """
    text = fast_iso(end_ms)
    _keep_lease(text, int(end_ms * 1000 / 1_000_000 * 1000))
    return text


def _keep_lease(text: str, ms: int) -> None:
    if len(_lease_ms) >= 256:
        _lease_ms.clear()
    _lease_ms[text] = ms


_iso_seconds: dict[int, str] = {}  # whole seconds fast_iso formatted lately -> "...HH:MM:SS."


def fast_iso(ms: int) -> str:
    """:func:`omx.clock.iso`, formatting each second once.

    A claim stamps "now" a few times and its lease end once, two different seconds: so a few seconds
    are kept, not one (one alternated between the two and formatted both on every claim).
    """
    sec = ms // 1000
    text = _iso_seconds.get(sec)
    if text is None:
        text = iso(ms - ms % 1000)[:-4]
        if len(_iso_seconds) >= 16:
            _iso_seconds.clear()
        _iso_seconds[sec] = text
    return f"{text}{ms % 1000:03d}Z"


_MARKER_FLAGS = os.O_CREAT | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)


def _touch(path: str | Path, mode: int = modes.FILE) -> None:
    # A reader may remove an empty ready bucket between our mkdir and our open: try again. The mode is
    # the team's file mode: a marker's inode may become a task file (atomic._adopt).
    for _ in range(100):
        try:
            _make_marker(path, mode)
            return
        except FileNotFoundError:
            modes.make_dirs(os.path.dirname(os.fspath(path)), modes.dir_for(mode))
    _make_marker(path, mode)


def _make_marker(path: str | Path, mode: int) -> None:
    try:
        fd = os.open(path, _MARKER_FLAGS, mode)
    except OSError as exc:
        raise disk_full(exc, os.fspath(path)) or exc from None
    try:
        if modes.needs_chmod(mode):
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _link(src: str, dest: str) -> bool:
    """Make marker ``dest`` a second name of marker ``src``; False if that cannot be done (then touch it).

    A marker is an empty file whose name says everything, so the new one may share the old one's inode:
    a hard link allocates no inode. That matters on ext4 without a journal, where every new inode first
    scans past the inodes freed in the last minute or more (a busy team frees thousands) — a claim's
    marker used to cost more CPU than its two durable writes.
    """
    try:
        os.link(src, dest)
    except FileExistsError:
        return True  # already there: as good as made
    except (OSError, NotImplementedError):
        return False  # src gone (healed, or a crash), bucket removed, or no hard links here
    return True


def _unlink(path: str | Path) -> None:
    try:  # not contextlib.suppress: two markers a claim, and its object costs more than the check
        os.unlink(path)
    except FileNotFoundError:
        pass


_SEEN_MAX = 64  # task files whose last known content a store keeps parsed
_SEEN_MAX_BYTES = 1 << 16

_event_fds = KeptFds(8)  # events.ndjson of the teams used lately, open for appending
_APPEND_FLAGS = os.O_RDWR | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)  # RDWR: the tail is read back (_open_events)


_EVENTS_LOCK_TIMEOUT_S = 30.0
_UNWRITTEN_MAX = 10_000  # event lines a store keeps while the disk is full (~3 MB); later ones are dropped


def _flocked(fd: int, path: str) -> None:
    """``flock(fd, LOCK_EX)``, polling up to the state locks' timeout (:class:`~omx.errors.LockTimeout` then)."""
    if fcntl is None:  # pragma: no cover - not POSIX: appends are not serialised there
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    import time

    from omx.errors import LockTimeout

    # Held for one write (microseconds) by every store call that changes something: a wait is usually
    # for one other appender, so the polling starts at 50 µs rather than the task locks' 1 ms.
    deadline = time.monotonic() + _EVENTS_LOCK_TIMEOUT_S
    delay = 0.00005
    while True:
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockTimeout(f"could not lock {path} within {_EVENTS_LOCK_TIMEOUT_S:g}s", path=path) from None


def _unflock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _append_line(fd: int, line: bytes, path: str, *, locked: bool = False) -> None:
    """Append ``line`` whole to the log open on ``fd`` (``O_APPEND``), or leave the log as it was and raise.

    Appenders take the log's own ``flock`` (on the open file: no lock file, no extra open). One
    ``write`` usually writes it all; on a full disk or at the file size limit it may write part of it,
    and the part would glue the next event onto a torn line (both lost to readers). So a write that
    cannot finish is undone: the log is truncated back to its size before it, under the lock, so that
    no other appender's line is cut, and :class:`~omx.errors.DiskFull` names the log. Readers take no
    lock: a line without its newline is one still being written, read next time.
    """
    if not locked:
        _flocked(fd, path)
    try:
        written = 0
        try:
            written = os.write(fd, line)
            while written < len(line):
                more = os.write(fd, memoryview(line)[written:])
                if more <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                written += more
        except BaseException as exc:
            if written:
                # Under the lock the log's tail is ours: its size less what we wrote is where it was.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, os.fstat(fd).st_size - written)
            if isinstance(exc, OSError):
                raise disk_full(exc, path) or exc from None
            raise
    finally:
        if not locked:
            _unflock(fd)


class StoreBase:
    """Root, clock, host identity, and the helpers every store operation uses."""

    def __init__(self, root: Path | str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.root = Path(root)
        self.clock = clock
        self.host = socket.gethostname()
        self.host_tag = host_tag(self.host)
        self._config_cache: dict[str, tuple[tuple[int, int, int], TeamConfig]] = {}
        self._paths_cache: dict[str, TeamPaths] = {}
        self._spread_until: dict[str, float] = {}  # team -> when claim-next stops spreading (claims.py)
        self._seen: dict[str, tuple[bytes, Any, Task | None]] = {}  # task file -> what it held (_remember)
        self._rosters: dict[str, tuple[TeamConfig, dict[str, int]]] = {}  # team -> (config, worker -> index)
        self._fmodes: dict[str, int] = {}  # team -> its files' mode (omx.state.modes; set at creation)
        self.warnings: list[str] = []  # what went wrong without failing a call (events a full disk refused)
        self._unwritten: dict[str, list[bytes]] = {}  # team -> event lines a full disk refused, oldest first

    # --- teams ------------------------------------------------------------------------------

    def _team_paths(self, team: str) -> TeamPaths:
        # One TeamPaths per team and store: its paths are built once, not on every call.
        p = self._paths_cache.get(team) if type(team) is str else None
        if p is None:
            p = TeamPaths.of(self.root, team)
            if len(self._paths_cache) < 1024:
                self._paths_cache[team] = p
        return p

    def paths(self, team: str) -> TeamPaths:
        """Validated paths of an existing team (:class:`TeamNotFound` otherwise)."""
        p = self._team_paths(team)
        try:
            os.stat(p.config_s)  # os.path.exists, minus a Python frame (every transition asks)
        except (OSError, ValueError):
            raise TeamNotFound(f"no team {team!r} under {self.root}", team=team) from None
        return p

    def _team(self, team: str) -> tuple[TeamPaths, TeamConfig]:
        """:meth:`paths` and the config with one ``stat``; the config is shared: do not change it."""
        p = self._team_paths(team)
        try:
            return p, self._load_config(p, copy=False)
        except FileNotFoundError:
            raise TeamNotFound(f"no team {team!r} under {self.root}", team=team) from None

    def _roster(self, p: TeamPaths, cfg: TeamConfig) -> dict[str, int]:
        """The team's workers and their indexes, for a config from :meth:`_team` (kept while it is the same object)."""
        kept = self._rosters.get(p.team)
        if kept is None or kept[0] is not cfg:
            kept = (cfg, {name: i for i, name in enumerate(cfg.worker_names())})
            self._rosters[p.team] = kept
        return kept[1]

    def read_config(self, team: str) -> TeamConfig:
        """The team's ``config.json``."""
        p = self.paths(team)
        return self._load_config(p)

    def _load_config(self, p: TeamPaths, *, copy: bool = True) -> TeamConfig:
        # config.json changes rarely (team creation, each create-task): reuse the parsed copy while
        # the file's identity (inode, size, mtime) is unchanged — a stat instead of read + parse.
        # ``copy=False`` hands out the cached object itself, for callers that only read it.
        st = os.stat(p.config_s)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._config_cache.get(p.team)
        if cached is not None and cached[0] == key:
            return cached[1].replace() if copy else cached[1]
        cfg = self._parse_config(p)
        self._config_cache[p.team] = (key, cfg)
        return cfg.replace() if copy else cfg

    def _parse_config(self, p: TeamPaths) -> TeamConfig:
        data = atomic.read_json(p.config)
        try:
            cfg: TeamConfig = TeamConfig.from_dict(data)
        except ValueError as exc:
            raise CorruptState(f"{p.config}: invalid team config ({exc})", path=str(p.config)) from None
        return cfg

    def file_mode(self, team: str) -> int:
        """The mode of the team's files (0600; 0660 for a ``shared_group`` team): for files made beside the state."""
        return self._fmode(self.paths(team))

    def _fmode(self, p: TeamPaths) -> int:
        """The team's file mode: 0600, or 0660 for a ``shared_group`` team (its folders: :func:`modes.dir_for`)."""
        mode = self._fmodes.get(p.team)
        if mode is None:
            try:
                shared = self._load_config(p, copy=False).shared_group
            except (OSError, CorruptState):
                return modes.FILE  # not remembered: the next call reads the config again
            mode = self._fmodes[p.team] = modes.files(shared)
        return mode

    def now(self) -> tuple[int, str]:
        ms = self.clock.now_ms()
        return ms, fast_iso(ms)

    # --- tasks ------------------------------------------------------------------------------

    def _load_task(self, p: TeamPaths, tid: str, *, shared: bool = False) -> Task:
        """Task ``tid`` as its file holds it now (:class:`TaskNotFound`, :class:`CorruptState`).

        ``shared``: the claim path's own reads (a claim reads its task under the lock, its completion
        reads what the claim wrote). Their parse is kept with the file's bytes (:meth:`_remember`), so
        reading a file that still holds exactly those bytes costs a read and a comparison, not a parse,
        and they get the kept record itself: only for a caller that changes nothing in it and hands out
        nothing that shares its lists until it has written the task again (:meth:`_save_task` replaces
        the kept record). Other callers get a record of their own and keep nothing (``list_tasks``
        reads every task once).
        """
        path = p.task_file(tid)
        try:
            raw = atomic.read_bytes(path)
        except FileNotFoundError:
            raise TaskNotFound(f"no task {tid} in team {p.team!r}", team=p.team, task_id=tid) from None
        data = None
        seen = self._seen.get(path)
        if seen is not None and seen[0] == raw:
            kept = seen[2]
            if kept is not None:
                if shared:
                    return kept
                copy = kept.json_copy()
                if copy is not None:
                    return copy
            if shared:
                data = seen[1]  # parsed by a lock-free look (_raw_task): private, like the record made of it
        if data is None:
            try:
                data = json.loads(raw)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                raise CorruptState(f"{path}: not valid JSON ({exc})", path=path) from None
        try:
            task: Task = Task.from_dict(data)
        except ValueError as exc:
            raise CorruptState(f"{path}: invalid task ({exc})", path=path) from None
        if task.id != tid:
            raise CorruptState(f"{path}: holds task id {task.id!r}", path=path)
        if shared:
            self._remember(path, raw, data, task)
        return task

    def _save_task(self, p: TeamPaths, task: Task, *, reuse: str | None = None) -> None:
        path = p.task_file(task.id)
        raw = task_bytes(task)
        atomic.write_bytes(path, raw, reuse=reuse, mode=self._fmode(p))
        # Kept only for a task this store just claimed or renewed: its holder, most likely this very
        # process, reads it next to renew, finish or release it. Anything else: forget the old bytes.
        self._remember(path, raw, None, task.json_copy() if task.status == "in_progress" else None)

    def _remember(self, path: str, raw: bytes, data: Any, task: Task | None) -> None:
        """Keep what ``path`` held as ``raw`` parsed to (``data``: the JSON; ``task``: the record; either may be None).

        Used only while the file holds exactly ``raw``: any other writer's rename, or an edit in place,
        changes the bytes. Both are the store's own (callers outside the claim path get copies, see
        :meth:`_load_task`), so what is kept is what was parsed.
        """
        seen = self._seen
        if len(raw) > _SEEN_MAX_BYTES or (data is None and task is None):
            seen.pop(path, None)
            return
        if len(seen) >= _SEEN_MAX and path not in seen:
            seen.clear()
        seen[path] = (raw, data, task)

    def _raw_task(self, p: TeamPaths, tid: str) -> dict[str, Any] | None:
        """A task file as a plain dict from a lock-free read (files are replaced whole); None if unreadable.

        The dict may be the one the store keeps (:meth:`_remember`): read it, never change it.
        """
        path = p.task_file(tid)
        try:
            raw = atomic.read_bytes(path)
        except OSError:
            return None
        seen = self._seen.get(path)
        if seen is not None and seen[0] == raw and seen[1] is not None:
            data = seen[1]
        else:
            try:
                data = json.loads(raw)
            except ValueError:
                return None
            if isinstance(data, dict) and (seen is None or seen[0] != raw):
                self._remember(path, raw, data, None)
        return data if isinstance(data, dict) else None

    def _task_status(self, p: TeamPaths, tid: str) -> str | None:
        """A dependency's status from a lock-free read; None if missing or corrupt."""
        data = self._raw_task(p, tid)
        status = data.get("status") if data else None
        return status if isinstance(status, str) else None

    def unmet_dependencies(self, p: TeamPaths, task: Task) -> list[dict[str, Any]]:
        """Dependencies that are not completed, as ``[{"id", "status"}]`` (status None if missing/corrupt)."""
        out = []
        for dep in task.depends_on:
            st = self._task_status(p, dep)
            if st != "completed":
                out.append({"id": dep, "status": st})
        return out

    def list_task_ids(self, p: TeamPaths) -> list[str]:
        ids = []
        for name in os.listdir(p.tasks):
            if name.startswith("task-") and name.endswith(".json"):
                with contextlib.suppress(Exception):
                    ids.append(parse_task_id(name[:-5]))
        ids.sort(key=int)
        return ids

    # --- marker index (call only while holding the task's lock) ------------------------------

    def _claimed_marker(self, task: Task) -> str | None:
        c = task.claim
        if task.status != "in_progress" or c is None:
            return None
        host = host_tag(c.host) if c.host else "-"
        return f"{task.id}~{lease_end_ms(c.leased_until)}~{c.pid or 0}~{host}"

    def _commit(self, p: TeamPaths, old: Task | None, new: Task) -> None:
        """Write ``new`` and move its markers, crash-safely (call only while holding the task's lock).

        Markers the new state needs are made *before* the file is written and obsolete ones removed
        *after*, so a crash at any point leaves extra markers, never missing ones; extra markers are
        removed by the next locked reader that finds them (:meth:`_heal_marker`).

        Inodes are recycled, because making one is what costs on ext4 without a journal
        (:func:`_link`): a new marker is a hard link to an obsolete one where there is one (claim links
        the ready marker to the claimed name, release links it back, renew to the new lease's name),
        and an obsolete marker left over (a task finishing) is the task file's temp file
        (:func:`omx.state.atomic.write_bytes` ``reuse``). Either way the old name goes only after the
        write, as before.
        """
        want = self._marker_paths(p, new)
        had = self._marker_paths(p, old) if old is not None else ()
        gone = []  # a loop, not a comprehension: that is one more function call in Python 3.11
        for path in had:
            if path not in want:
                gone.append(path)
        spare = gone[0] if gone else None  # an obsolete marker: its inode can serve once more
        for dest in want:
            if spare is not None and dest not in had and _link(spare, dest):
                spare = None  # it now has the new marker's name as well: not a temp file
            else:
                _touch(dest, self._fmode(p))
        # A marker retired with no new one to take its place (a task finishing) becomes the temp file.
        self._save_task(p, new, reuse=spare)
        for path in gone:
            _unlink(path)

    def _marker_paths(self, p: TeamPaths, task: Task) -> tuple[str, ...]:
        """The markers ``task``'s state calls for, as path strings (:meth:`_desired_markers`, for the hot path)."""
        if task.status == "pending":
            key = sort_key(task)
            if task.depends_on and self.unmet_dependencies(p, task):
                return (f"{p.waiting_s}/{key}",)
            return (f"{p.ready_s}/{ready_bucket(key)}/{key}",)
        marker = self._claimed_marker(task)
        return (f"{p.claimed_s}/{marker}",) if marker else ()

    def _ensure_markers(self, p: TeamPaths, task: Task) -> None:
        """Make sure the markers ``task``'s state calls for exist (lock held)."""
        for path in self._marker_paths(p, task):
            _touch(path, self._fmode(p))

    def _heal_marker(self, p: TeamPaths, d: str | Path, name: str, task: Task | None) -> None:
        """Remove marker ``d/name`` if ``task`` (as read under its lock; None = gone) does not call for it."""
        path = f"{d}/{name}"
        if task is None or path not in self._marker_paths(p, task):
            _unlink(path)

    # --- events -----------------------------------------------------------------------------

    def _emit(
        self,
        p: TeamPaths,
        type_: str,
        *,
        worker: str | None = None,
        task_id: str | None = None,
        message_id: str | None = None,
        reason: str | None = None,
        data: dict[str, Any] | None = None,
        now: tuple[int, str] | None = None,
        strict: bool = False,
    ) -> tuple[str, str]:
        """Append one event; returns its ``event_id`` and ``created_at`` (:meth:`append_event` makes the model).

        The line has :class:`Event`'s fields in order, the None ones left out, as
        ``Event(...).to_dict(exclude_none=True)`` gave (:func:`omx.state.encode.event_line`).
        ``now``: the change's own :meth:`now`, when the caller has just taken it.

        Most events record a change already made (a task claimed, a message sent). When the disk is
        too full for the line, that change stands — failing the call would tell the caller that nothing
        happened when it did (a claim whose token is never returned) — and the line is kept in memory
        and written ahead of this store's next event of the team (a worker writes several a task), in
        order; :attr:`warnings` (the API's answer carries them) and the log say so. A process that ends
        first loses the kept lines: the one-shot CLI says so in its answer. ``strict``
        (``append-event``, whose only change is the line): raise :class:`~omx.errors.DiskFull` instead.
        """
        ms, at = now or self.now()
        event_id = f"{ms:013d}-{atomic.random_hex8()}"
        line = event_line(event_id, type_, p.team, at, worker, task_id, message_id, reason, data or {})
        kept = self._unwritten.get(p.team)
        try:
            self._append(p, b"".join((*kept, line)) if kept else line)
        except DiskFull as exc:
            if strict:
                raise
            import logging  # only here: the API's hot path does not load logging

            kept = self._unwritten.setdefault(p.team, [])
            if len(kept) < _UNWRITTEN_MAX:
                kept.append(line)
            msg = (f"event {type_} not recorded yet: {exc.message}; kept by this process and written with its "
                   f"next event ({len(kept)} waiting; lost if the process ends first)")
            del self.warnings[:-99]  # a long-lived worker keeps the latest only
            self.warnings.append(msg)
            logging.getLogger("omx.state").warning("%s", msg)
        else:
            if kept:
                del self._unwritten[p.team]
        return event_id, at

    def _append(self, p: TeamPaths, line: bytes) -> None:
        path = p.events_s
        fd = _event_fds.take(path)
        if fd >= 0 and not linked(fd):
            os.close(fd)
            fd = -1
        if fd < 0:
            fd = self._open_events(p)
        try:
            _append_line(fd, line, path)
        except BaseException:
            os.close(fd)
            raise
        _event_fds.give(path, fd)

    def _open_events(self, p: TeamPaths) -> int:
        """``events.ndjson`` open for appending; made with the team's file mode if it is not there yet."""
        path = p.events_s
        try:
            try:
                fd = os.open(path, _APPEND_FLAGS)  # no O_CREAT while it exists: see locks._open
            except FileNotFoundError:
                fd = modes.create_file(path, _APPEND_FLAGS, self._fmode(p))
        except OSError as exc:
            raise disk_full(exc, path) or exc from None
        # A log that ends inside a line (written by an older omx on a full disk, or cut by a crash of
        # the machine) would glue our first event onto those bytes: end that line first.
        try:
            _flocked(fd, path)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    _append_line(fd, b"\n", path, locked=True)
            finally:
                _unflock(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # --- repair -----------------------------------------------------------------------------

    def _desired_markers(self, p: TeamPaths, task: Task) -> set[tuple[Path, str]]:
        out: set[tuple[Path, str]] = set()
        if task.status == "pending":
            key = sort_key(task)
            if task.depends_on and self.unmet_dependencies(p, task):
                out.add((p.waiting, key))
            else:
                out.add((p.bucket(ready_bucket(key)), key))
        marker = self._claimed_marker(task)
        if marker:
            out.add((p.claimed, marker))
        return out

    def index_drift(self, team: str) -> dict[str, list[str]]:
        """Markers that are ``missing`` or ``extra`` against the task files, without changing anything.

        Extra markers heal by themselves as readers meet them; a missing one hides a task until
        :meth:`rebuild_index` (``omx doctor --fix``) runs. A team that is busy may show passing drift.
        """
        p = self.paths(team)
        want: set[tuple[Path, str]] = set()
        for tid in self.list_task_ids(p):
            try:
                want |= self._desired_markers(p, self._load_task(p, tid))
            except (CorruptState, TaskNotFound):
                continue
        have = set(self._all_markers(p))

        def fmt(pairs: set[tuple[Path, str]]) -> list[str]:
            return sorted(f"{d.relative_to(p.dir / 'index')}/{n}" for d, n in pairs)

        return {"missing": fmt(want - have), "extra": fmt(have - want)}

    def _all_markers(self, p: TeamPaths) -> Iterator[tuple[Path, str]]:
        """Every marker on disk as ``(folder, name)``: the ready buckets, waiting and claimed."""
        for bucket in os.listdir(p.ready):
            try:
                yield from ((p.ready / bucket, n) for n in os.listdir(p.ready / bucket))
            except NotADirectoryError:
                yield p.ready, bucket  # a marker from before buckets: rebuild_index replaces it
            except FileNotFoundError:
                continue
        for d in (p.waiting, p.claimed):
            yield from ((d, n) for n in os.listdir(d))

    def rebuild_index(self, team: str) -> dict[str, int]:
        """Rebuild every marker from the task files (the truth); safe while workers run.

        Returns how many markers were added and removed.
        """
        from omx.state.locks import locked

        p = self.paths(team)
        added = removed = 0
        for tid in self.list_task_ids(p):
            with locked(p.task_lock(tid)):
                try:
                    task = self._load_task(p, tid)
                except (CorruptState, TaskNotFound):
                    continue
                for d, name in self._desired_markers(p, task):
                    if not (d / name).exists():
                        _touch(d / name, self._fmode(p))
                        added += 1
        for d, name in list(self._all_markers(p)):
            try:
                tid = parse_task_id(name.split("~")[0]) if d == p.claimed else key_task_id(name)
            except Exception:
                _unlink(d / name)
                removed += 1
                continue
            with locked(p.task_lock(tid)):
                try:
                    want = self._desired_markers(p, self._load_task(p, tid))
                except (CorruptState, TaskNotFound):
                    want = set()
                if (d, name) not in want and (d / name).exists():
                    _unlink(d / name)
                    removed += 1
        return {"added": added, "removed": removed}
