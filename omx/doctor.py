"""``omx doctor``: check the machine and every team's state, and say what is wrong and where."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omx.engine.early import INSTALL_CODEX, PINNED_CODEX  # the version scripts/setup installs and the tests drive
from omx.models import Event, Heartbeat, Message, Record, ShutdownAck, ShutdownRequest, WorkerIdentity, WorkerStatus

WORKER_FILES: dict[str, type[Record]] = {
    "identity.json": WorkerIdentity, "status.json": WorkerStatus, "heartbeat.json": Heartbeat,
    "shutdown-request.json": ShutdownRequest, "shutdown-ack.json": ShutdownAck,
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    #: "ok" for a check that passed; for one that did not, how much it matters: error | warning | info.
    #: Only a failed "error" makes the report (and the exit status) not ok.
    level: str = "error"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "level": self.level, "detail": self.detail}


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok or c.level != "error" for c in self.checks)

    def add(self, name: str, ok: bool, detail: str, level: str = "error") -> None:
        """Record a check; ``level`` is its severity should it fail (a passing check is level "ok")."""
        self.checks.append(Check(name, ok, detail, "ok" if ok else level))


def check_tools(report: Report) -> None:
    git = shutil.which("git")
    report.add("git", git is not None, git or "git not found on PATH (worktrees need it)")
    codex = shutil.which("codex")
    if codex:
        try:
            out = subprocess.run([codex, "--version"], capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            out = f"failed to run: {exc}"
        pinned = out == f"codex-cli {PINNED_CODEX}"
        note = "" if pinned else f" (omx is tested with {PINNED_CODEX}; the app-server protocol changes)"
        report.add("codex", "codex-cli" in out and pinned, f"{codex}: {out}{note}", level="warning")
    else:
        report.add("codex", False, f"codex not found on PATH (the codex runtimes need it): {INSTALL_CODEX}",
                   level="warning")
    from omx import setup

    home = setup.codex_home()
    missing = [n for n in setup.SKILLS if not (home / "skills" / n / "SKILL.md").exists()]
    outdated = [n for n in setup.SKILLS if n not in missing and (home / "skills" / n / "SKILL.md").read_bytes()
                != (setup.skills_source() / n / "SKILL.md").read_bytes()]
    detail = (f"{home / 'skills'}: $team, $swarm, $worker installed" if not (missing or outdated) else
              f"{home / 'skills'}: " + "; ".join(x for x in (f"missing {', '.join(missing)}" if missing else "",
                                                           f"outdated {', '.join(outdated)}" if outdated else "") if x)
              + " — run omx setup")
    report.add("skills", not (missing or outdated), detail, level="warning")
    check_model_account(report)
    tmux = shutil.which("tmux")
    report.add("tmux", tmux is not None, tmux or "tmux not found (only needed for --tmux)", level="info")


def check_model_account(report: Report, env: dict[str, str] | None = None) -> None:
    """Can Codex reach a model: an account (auth.json), a key variable, or a provider's ``env_key``; and,
    for a provider with a ``base_url``, does its host accept a connection (2 s, no request sent)."""
    from urllib.parse import urlsplit

    from omx.engine.envpolicy import active_provider, model_account

    env = dict(os.environ) if env is None else env
    ok, detail = model_account(env)
    report.add("model account", ok, detail, level="warning")
    _, provider = active_provider(env)
    url = provider.get("base_url") if provider else None
    if not isinstance(url, str) or not url:
        return
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        report.add("model endpoint", False, f"{url}: not a URL with a host", level="warning")
        return
    import socket

    try:
        with socket.create_connection((host, port), timeout=2.0):
            pass
    except OSError as exc:
        report.add("model endpoint", False, f"{url}: cannot connect to {host}:{port} ({exc.strerror or exc})",
                   level="warning")
        return
    report.add("model endpoint", True, f"{url}: {host}:{port} accepts connections", level="info")


def check_state(root: Path, report: Report, *, fix: bool = False) -> None:
    from omx import schema
    from omx.state.filestore import FileStore

    if not root.exists():
        report.add("state root", True, f"{root} (no state yet)", level="info")
        return
    report.add("state root", os.access(root, os.W_OK), f"{root}")
    store = FileStore(root)
    for team in store.list_teams():
        p = store.paths(team)
        try:
            store.read_config(team)
        except Exception as exc:
            report.add(f"team {team}: config", False, str(exc))
            continue
        if fix:
            _move_torn_aside(store, team, report)
        bad: list[str] = []
        for path, cls in _state_files(p.dir):
            try:
                schema.validate(cls, json.loads(path.read_bytes()))
            except (ValueError, OSError) as exc:
                bad.append(f"{path}: {exc}")
        bad += _bad_event_lines(p.events)
        report.add(f"team {team}: files", not bad, "all valid" if not bad else "\n".join(bad))
        torn = store.torn_events(team)
        report.add(f"team {team}: event log", not torn, "no torn lines" if not torn else
                   f"{len(torn)} torn line(s) (bytes that are no event, skipped by readers) at byte "
                   + ", ".join(str(t["offset"]) for t in torn[:20]) + " — omx doctor --fix moves them aside",
                   level="error")
        summary = store.summary(team)
        expired = summary["expired_claims"]
        report.add(f"team {team}: claims", not expired,
                   "no stale claims" if not expired else f"expired or orphaned claims on tasks {', '.join(expired)}"
                   " (omx team api reclaim-expired returns them to pending)", level="warning")
        stale = summary["stale_workers"]
        report.add(f"team {team}: workers", not stale, "no stale workers" if not stale else
                   f"stale (no heartbeat for 3 leases, or dead pid): {', '.join(stale)}", level="warning")
        drift = store.index_drift(team)
        if drift["missing"]:
            report.add(f"team {team}: index", fix, "markers missing (tasks hidden from claim-next): "
                       + ", ".join(drift["missing"][:20]) + ("" if fix else " — run omx doctor --fix"),
                       level="error" if not fix else "info")
        elif drift["extra"]:
            report.add(f"team {team}: index", True, f"{len(drift['extra'])} stale markers (readers remove them)",
                       level="info")
        else:
            report.add(f"team {team}: index", True, "consistent with the task files")
        report.add(f"team {team}: locks", True, "kernel locks (flock) die with their holder: none can be stale",
                   level="info")
        _check_temps(p.dir, team, report, fix=fix)
        check_integration(root, store, team, report, fix=fix)
        if fix:
            counts = store.rebuild_index(team)
            report.add(f"team {team}: index", True, f"rebuilt: {counts['added']} added, {counts['removed']} removed",
                       level="info")


def _remove_temps(store: Any, team: str, temps: list[str]) -> list[str]:
    """Delete crash leftovers, but only while none of the team's workers runs and each is over a second old
    (a live writer's temp file exists for a few milliseconds before its rename). Returns what is left."""
    import time

    if any(store.live_worker(team, w) for w in store.read_config(team).worker_names()):
        return temps
    left = []
    for path in temps:
        try:
            if time.time() - os.stat(path).st_mtime >= 1.0:
                os.unlink(path)
                continue
        except FileNotFoundError:
            continue
        left.append(path)
    return left


def check_integration(root: Path, store: Any, team: str, report: Report, *, fix: bool = False) -> None:
    """The team's integration branch, its refs and omx's integration worktree (see
    :func:`omx.engine.integration.diagnose`). Needs the repository: the one that holds ``root``."""
    from omx.engine.integration import IntegrationTarget, default_branch, diagnose
    from omx.engine.workflow import load_workflow
    from omx.errors import OmxError

    recorded = store.read_config(team).extra.get("integration")
    repo = root.parent.parent if root.parent.name == ".omx" else _toplevel(Path.cwd())
    if repo is None or not (repo / ".git").exists():
        return
    branch = recorded.get("branch") if isinstance(recorded, dict) else None
    try:
        settings = load_workflow(None, repo, compile=False).settings
        target = IntegrationTarget(repo, team, str(branch or settings.integration.branch or default_branch(team)),
                                   "HEAD")
        findings = diagnose(target, settings.worktree, fix=fix)
    except OmxError as exc:
        report.add(f"team {team}: integration", False, exc.message, level="warning")
        return
    for f in findings:
        report.add(f"team {team}: integration", f.ok, f.detail, level=f.level)


def _toplevel(path: Path) -> Path | None:
    out = subprocess.run(["git", "-C", str(path), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    return Path(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


STALE_TEMP_S = 60.0  # a temp file is written and renamed within milliseconds: one this old was left by a crash


def _check_temps(team_dir: Path, team: str, report: Report, *, fix: bool) -> None:
    """Temp files a crash left mid-write. One whose writer (named in it: host and pid) is a process of
    this host that is gone is stale at once; any other, once older than :data:`STALE_TEMP_S` (a live
    write renames its temp file within milliseconds)."""
    import re
    import time

    from omx.pids import pid_alive
    from omx.state.atomic import writer_tag

    here = writer_tag().split("-", 1)[0]
    now = time.time()
    limit = STALE_TEMP_S
    stale: list[Path] = []
    young: list[Path] = []
    for x in sorted(team_dir.rglob(".*.tmp")):
        m = re.search(r"\.([0-9a-f]{8})-(\d+)\.tmp$", x.name)
        if m and m.group(1) == here and not pid_alive(int(m.group(2))):
            stale.append(x)  # its writer died mid-write
            continue
        try:
            (stale if now - x.lstat().st_mtime > limit else young).append(x)
        except FileNotFoundError:
            continue  # renamed into place meanwhile
    note = f"; {len(young)} being written now (younger than {limit:g} s), left alone" if young else ""
    name = f"team {team}: temp files"
    if fix and stale:
        deleted: list[Path] = []
        for x in stale:
            try:
                x.unlink()
                deleted.append(x)
            except FileNotFoundError:
                continue
        report.add(name, True, f"deleted {len(deleted)} left by a crash mid-write: "
                   + ", ".join(str(x) for x in deleted) + note, level="info")
    elif stale:
        report.add(name, False, "left by a crash mid-write (safe to delete; omx doctor --fix deletes them): "
                   + ", ".join(str(x) for x in stale) + note, level="warning")
    elif young:
        report.add(name, True, note[2:], level="info")
    else:
        report.add(name, True, "none")


def _move_torn_aside(store: Any, team: str, report: Report) -> None:
    from omx.errors import OmxError

    try:
        moved = store.move_torn_aside(team)
    except OmxError as exc:
        report.add(f"team {team}: event log", False, f"could not move torn lines aside: {exc.message}")
        return
    if moved["moved"]:
        report.add(f"team {team}: event log", True, f"moved {moved['moved']} torn line(s) ({moved['bytes']} bytes) "
                   f"to {moved['side_file']}; blanked in place, so cursors stay valid", level="info")


def _state_files(team_dir: Path) -> list[tuple[Path, type[Record]]]:
    from omx.models import Task, TeamConfig

    out: list[tuple[Path, type[Record]]] = [(team_dir / "config.json", TeamConfig)]
    out += [(f, Task) for f in sorted((team_dir / "tasks").glob("task-*.json"))]
    out += [(f, Message) for f in sorted((team_dir / "mailbox").glob("*/*.json")) if not f.name.startswith(".")]
    for wdir in sorted((team_dir / "workers").glob("*")):
        out += [(wdir / name, cls) for name, cls in WORKER_FILES.items() if (wdir / name).exists()]
    return out


def _bad_event_lines(path: Path) -> list[str]:
    from omx import schema
    from omx.state.events import split_torn

    bad: list[str] = []
    try:
        with open(path, "rb") as f:
            for n, line in enumerate(f, start=1):
                torn, data = split_torn(line)
                if torn or data is None:
                    continue  # torn bytes are the event log check's; a blank line is one moved aside
                try:
                    schema.validate(Event, data)
                except ValueError as exc:
                    bad.append(f"{path}:{n}: {exc}")
    except FileNotFoundError:
        pass
    return bad


def run(root: Path, *, fix: bool = False) -> Report:
    report = Report()
    check_tools(report)
    check_state(root, report, fix=fix)
    return report
