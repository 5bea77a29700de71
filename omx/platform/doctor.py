"""``omx worker doctor``: everything a platform worker needs, checked in the order it is needed.

Each check says what is wrong and what to do. Levels as in ``omx doctor``: an ``error`` makes the
command exit 1, a ``warning`` or ``info`` does not. Without ``--worker`` every configured worker is
checked (:func:`run_each`): the platform, the login and the workspace once, then each worker's own.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from omx.doctor import Report
from omx.engine.runner import check_runtime
from omx.engine.settings import WorktreeSettings
from omx.engine.workflow import WorkflowError
from omx.engine.workspaces import worktree_root
from omx.errors import OmxError
from omx.platform.auth import auth_path, read_tokens, require_user_token, worker_client
from omx.platform.client import QUICK, PlatformClient
from omx.platform.config import PlatformConfig, WorkerSettings, list_worker_settings, load_platform_config
from omx.platform.errors import PlatformError, PlatformNotFound
from omx.platform.service import load_worker_workflow, platform_for


def run(settings: WorkerSettings | None, *, url: str | None = None) -> Report:
    """All the checks for one worker (``None``: only the platform and the other local configs)."""
    report = Report()
    cfg = _check_platform(report, settings, url)
    client = _check_auth(report, cfg) if cfg else None
    try:
        if client is not None:
            _check_workspace(report, client)
            if settings is not None:
                _check_registration(report, client, settings)
        if settings is not None:
            _check_local(report, settings)
        _check_other_configs(report, client, settings)
    finally:
        if client is not None:
            client.close()
    return report


def run_each(workers: list[WorkerSettings], *, url: str | None = None) -> list[tuple[WorkerSettings | None, Report]]:
    """Every configured worker: the shared checks (platform, login, workspace, unreadable settings) first,
    under ``None``, then one report per worker (its platform when it differs, registration, local setup)."""
    shared = Report()
    cfg = _check_platform(shared, None, url)
    client = _check_auth(shared, cfg) if cfg else None
    out: list[tuple[WorkerSettings | None, Report]] = [(None, shared)]
    try:
        if client is not None:
            _check_workspace(shared, client)
        for path, problem in list_worker_settings()[1]:
            shared.add("stale config", False, f"{path}: unreadable ({problem})", level="warning")
        for settings in workers:
            report = Report()
            mine = _check_platform(report, settings, url, quiet=cfg)
            if mine is not None and cfg is not None and mine.url == cfg.url:
                if client is not None:
                    _check_registration(report, client, settings)
            elif mine is not None:  # registered on a platform of its own: it needs its own login
                own = _check_auth(report, mine)
                if own is not None:
                    with own:
                        _check_registration(report, own, settings)
            _check_local(report, settings)
            out.append((settings, report))
    finally:
        if client is not None:
            client.close()
    return out


def _check_platform(report: Report, settings: WorkerSettings | None, url: str | None, *,
                    quiet: PlatformConfig | None = None) -> PlatformConfig | None:
    """The platform config (for ``settings``' worker), reported — unless it is the same as ``quiet``."""
    try:
        cfg = platform_for(settings, url=url) if settings else load_platform_config(url=url)
        cfg.require_url()
    except OmxError as exc:
        report.add("platform", False, exc.message)
        return None
    if quiet is None or cfg.url != quiet.url:
        report.add("platform", True, f"{cfg.url} (from {cfg.sources.get('url', 'the worker settings')})")
    return cfg


def _check_auth(report: Report, cfg: PlatformConfig) -> PlatformClient | None:
    try:
        require_user_token(cfg)
        tokens = read_tokens(auth_path(cfg))
    except OmxError as exc:
        report.add("auth", False, exc.message)
        return None
    if tokens is None:
        report.add("auth", False, f"not logged in to {cfg.url}: run `omx auth login`")
        return None
    report.add("auth", True, f"OAuth user token in {auth_path(cfg)} (mode 0600)"
               + ("" if tokens.refresh_token else "; no refresh token: log in again when it expires"))
    try:
        return worker_client(cfg, retry=QUICK)  # a doctor that waits a minute for a dead platform helps no one
    except OmxError as exc:
        report.add("auth", False, exc.message)
        return None


def _check_workspace(report: Report, client: PlatformClient) -> None:
    try:
        me = client.me()
        report.add("workspace", True, f"{me.workspace.name or me.workspace.id} as {me.name or me.id}"
                   + (f" <{me.email}>" if me.email else ""))
    except PlatformError as exc:
        report.add("workspace", False, exc.message)


def _check_registration(report: Report, client: PlatformClient, settings: WorkerSettings) -> None:
    try:
        w = client.get_worker(settings.id)
        report.add("registration", True, f"worker {w.name} ({w.id}) for agent {w.agent_id}, last seen "
                   f"{w.last_heartbeat_at or 'never'}")
    except PlatformNotFound:
        report.add("registration", False, f"worker {settings.id} is not registered for this user on the platform: "
                   "`omx worker create` registers a new one; `omx worker configure <id>` binds an existing one")
    except PlatformError as exc:
        report.add("registration", False, exc.message)


def _check_local(report: Report, settings: WorkerSettings) -> None:
    repo = Path(settings.repo)
    proc = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", "HEAD"], capture_output=True,
                          text=True, check=False) if repo.is_dir() else None
    ok = proc is not None and proc.returncode == 0
    report.add("settings", ok, f"{settings.path}: repo {repo}, isolation {settings.isolation}, "
               f"{settings.max_concurrent_runs} run(s) at a time" if ok else
               f"{settings.path}: repo {repo} is not a git repository with a first commit")
    if settings.isolation == "branch" and settings.max_concurrent_runs > 1:
        report.add("settings", False, "isolation 'branch' runs one session at a time in the repository itself; "
                   "max_concurrent_runs > 1 only queues them (use isolation 'task')", level="warning")
    try:
        wf = load_worker_workflow(settings)
        note = f"; {len(wf.warnings)} warning(s): " + " | ".join(wf.warnings) if wf.warnings else ""
        report.add("workflow", True, f"{wf.label}: polls every {wf.settings.polling.poll_interval_ms} ms, runtime "
                   f"{wf.settings.runtime.kind}{note}")
    except WorkflowError as exc:
        report.add("workflow", False, exc.message)
        return
    try:
        root = worktree_root(repo, WorktreeSettings(root=settings.worktree_root))
        writable = os.access(root, os.W_OK)
        report.add("worktree root", writable, f"{root}" + ("" if writable else " is not writable"))
    except OSError as exc:
        report.add("worktree root", False, f"{settings.worktree_root}: {exc}")
    try:
        check_runtime(wf.settings.runtime)
        report.add("codex", True, _runtime_line(wf.settings.runtime.kind, wf.settings.runtime.command))
    except OmxError as exc:
        report.add("codex", False, exc.message)


def _runtime_line(kind: str, command: list[str] | None) -> str:
    if command:
        return f"runtime {kind}: {' '.join(command)}"
    from omx.engine.runner import agent_env
    from omx.engine.runtimes.codex_common import find_codex

    codex = find_codex(agent_env())
    try:
        version = subprocess.run([str(codex), "--version"], capture_output=True, text=True, timeout=20,
                                 check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        version = f"(could not run it: {exc})"
    return f"runtime {kind}: {codex} {version}"


def _check_other_configs(report: Report, client: PlatformClient | None, settings: WorkerSettings | None) -> None:
    good, bad = list_worker_settings()
    for path, problem in bad:
        report.add("stale config", False, f"{path}: unreadable ({problem})", level="warning")
    for other in good:
        if settings is not None and other.id == settings.id:
            continue
        if not Path(other.repo).is_dir():
            report.add("stale config", False, f"{other.path}: its repository {other.repo} is gone", level="warning")
            continue
        if client is None:
            continue
        try:
            client.get_worker(other.id)
        except PlatformNotFound:
            report.add("stale config", False, f"{other.path}: worker {other.id} no longer exists on the platform "
                       "(delete the file, or `omx worker configure` it to another worker)", level="warning")
        except PlatformError:
            pass  # already reported by the checks above
