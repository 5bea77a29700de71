"""Workspace hooks: the shell scripts WORKFLOW.md runs around each task.

The scripts are trusted (they come from WORKFLOW.md); the task is not. So a script runs as
``bash -c <script>`` exactly as written, in the workspace, and task facts reach it only as ``OMX_*``
environment variables and as a JSON file named by ``$OMX_HOOK_CONTEXT`` — never spliced into the
command line. A script that quotes its variables (``"$OMX_TASK_SUBJECT"``) is safe whatever the
subject says.

Each hook runs in its own process group; at its timeout the whole group is killed (TERM, a short
grace, then KILL), so a hook's background children do not outlive it. Output goes to temporary files
and only a bounded tail is kept, for logs.

Failure semantics (:class:`HookRunner`): ``afterCreate`` failing aborts the workspace (the caller
removes it: see ``prepare_workspace(on_create=...)``), ``beforeRun`` failing fails the attempt — both
raise :class:`HookFailed`; ``afterRun`` and ``beforeRemove`` failures are logged and ignored.

Example:
    >>> ctx = HookContext(team="alpha", worker="worker-1", task_id="7", task_subject="Fix it", attempt=1)
    >>> runner = HookRunner(settings.hooks)  # doctest: +SKIP
    >>> runner.before_run(workspace.path, ctx)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omx.engine.envpolicy import EnvSplit, split_env
from omx.engine.runtimes import lifeline
from omx.engine.settings import HookSettings
from omx.errors import InvalidInput, OmxError
from omx.state import atomic

HookName = Literal["afterCreate", "beforeRun", "afterRun", "beforeRemove"]
TAIL_BYTES = 4096
KILL_GRACE_S = 2.0
_ENV_NAME = re.compile(r"OMX_[A-Z0-9_]+")
log = logging.getLogger("omx.engine.hooks")


class HookFailed(OmxError):
    """Raised when an ``afterCreate`` or ``beforeRun`` hook exits non-zero or times out."""

    code = "hook_failed"

    def __init__(self, message: str, result: HookResult) -> None:
        super().__init__(message, hook=result.name, exit_code=result.exit_code, timed_out=result.timed_out)
        self.result = result


@dataclass(frozen=True)
class HookResult:
    """What a hook did. ``ran`` is false when no script is configured (which counts as success)."""

    name: str
    ran: bool
    exit_code: int | None = None
    timed_out: bool = False
    duration_ms: int = 0
    stdout_tail: str = ""
    stderr_tail: str = ""
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        """True when the hook was not configured, or exited 0 within its timeout and was not cancelled."""
        return not self.ran or (self.exit_code == 0 and not self.timed_out and not self.cancelled)

    def describe(self) -> str:
        """One line for logs and errors: how it ended, plus the last line of stderr."""
        if not self.ran:
            return f"hook {self.name}: not configured"
        how = "was cancelled" if self.cancelled else "timed out" if self.timed_out else f"exited {self.exit_code}"
        last = self.stderr_tail.strip().splitlines()[-1:] or self.stdout_tail.strip().splitlines()[-1:]
        return f"hook {self.name} {how} after {self.duration_ms} ms" + (f": {last[0][:300]}" if last else "")


@dataclass(frozen=True)
class HookContext:
    """The facts a hook may read. Strings here may be untrusted: they travel as data only.

    ``extra`` adds more ``OMX_*`` variables (names checked) to both the environment and the JSON.
    """

    team: str
    worker: str
    task_id: str
    task_subject: str = ""
    attempt: int = 1
    branch: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The ``OMX_*`` variables (``OMX_WORKSPACE`` and ``OMX_HOOK*`` are added by :func:`run_hook`)."""
        out = {
            "OMX_TEAM": self.team,
            "OMX_WORKER": self.worker,
            "OMX_TASK_ID": self.task_id,
            "OMX_TASK_SUBJECT": self.task_subject,
            "OMX_ATTEMPT": str(self.attempt),
        }
        if self.branch:
            out["OMX_BRANCH"] = self.branch
        out.update(self.extra)
        return out

    def facts(self) -> dict[str, Any]:
        """The same facts for the JSON context file, with readable keys."""
        out: dict[str, Any] = {
            "team": self.team,
            "worker": self.worker,
            "task_id": self.task_id,
            "task_subject": self.task_subject,
            "attempt": self.attempt,
            "branch": self.branch,
        }
        out.update({k.removeprefix("OMX_").lower(): v for k, v in self.extra.items()})
        return out


def run_hook(
    name: str,
    script: str | None,
    workspace_path: Path,
    env_facts: Mapping[str, str],
    facts_json: Mapping[str, Any],
    timeout_ms: int,
    *,
    kill_grace_s: float = KILL_GRACE_S,
    cancel: threading.Event | None = None,
    pass_env: Sequence[str] = (),
) -> HookResult:
    """Run one hook script with ``bash -c`` (``sh`` without bash) in ``workspace_path``.

    Args:
        env_facts: ``OMX_*`` variables for the script (names are checked; NUL bytes are dropped).
        facts_json: written as JSON to a private temporary file named by ``$OMX_HOOK_CONTEXT``.
        timeout_ms: after this the hook's whole process group is killed and ``timed_out`` is set.
        cancel: when set (a shutdown), the hook's process group is killed at once; the result is
            a failure with ``cancelled`` set.
        pass_env: credential-like variables the script gets all the same (``hooks.passEnv``): the
            others are withheld, as from an agent (:func:`hook_env`).

    Returns a :class:`HookResult`; it never raises for the script's own failure.
    """
    if not script or not script.strip():
        return HookResult(name, ran=False)
    env = hook_env(os.environ, pass_env).passed
    for key, value in env_facts.items():
        if not _ENV_NAME.fullmatch(key):
            raise InvalidInput(f"hook variable {key!r} must match OMX_[A-Z0-9_]+", field=key)
        env[key] = str(value).replace("\0", "")
    env["OMX_HOOK"] = name
    env["OMX_WORKSPACE"] = str(workspace_path)
    env = lifeline.tagged(env)  # dies with this worker, even if it is killed before track()
    shell = shutil.which("bash") or shutil.which("sh") or "/bin/sh"
    with tempfile.TemporaryDirectory(prefix="omx-hook-") as tmp:
        context = Path(tmp) / "context.json"
        payload = {"hook": name, "workspace": str(workspace_path), **facts_json}
        atomic.write_bytes(context, json.dumps(payload, ensure_ascii=False, indent=2, default=str).encode(),
                           durable=False)  # whole or DiskFull: a hook never reads half a context
        env["OMX_HOOK_CONTEXT"] = str(context)
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        started = time.monotonic()
        with out_path.open("wb") as out, err_path.open("wb") as err:
            exit_code, timed_out, cancelled = _spawn_and_wait(
                [shell, "-c", script, f"omx-hook-{name}"], workspace_path, env, out, err, timeout_ms, kill_grace_s,
                cancel,
            )
        duration_ms = int((time.monotonic() - started) * 1000)
        return HookResult(name, True, exit_code, timed_out, duration_ms, _tail(out_path), _tail(err_path),
                          cancelled=cancelled)


def hook_env(base: Mapping[str, str], pass_env: Sequence[str] = ()) -> EnvSplit:
    """A hook's inherited environment: the worker's minus ``OMX_HOOK*`` (set afresh per hook) and every
    credential-like name not in ``pass_env`` (the rule of :mod:`omx.engine.envpolicy`). Unlike an agent,
    a hook keeps omx's other ``OMX_*`` variables: it is the workflow's own trusted script."""
    return split_env({k: v for k, v in base.items() if not k.startswith("OMX_HOOK")}, allow=pass_env, drop_own=False)


class HookRunner:
    """The four hooks of one WORKFLOW.md, with their failure semantics.

    ``after_create`` and ``before_run`` raise :class:`HookFailed` when the hook fails; ``after_run``
    and ``before_remove`` log the failure and return the result.
    """

    def __init__(self, settings: HookSettings, *, logger: logging.Logger | None = None) -> None:
        self.settings = settings
        self.log = logger or log

    def run(self, name: HookName, workspace_path: Path, ctx: HookContext,
            cancel: threading.Event | None = None) -> HookResult:
        """Run hook ``name`` (camelCase, as in WORKFLOW.md) without applying any semantics."""
        script = {
            "afterCreate": self.settings.after_create,
            "beforeRun": self.settings.before_run,
            "afterRun": self.settings.after_run,
            "beforeRemove": self.settings.before_remove,
        }[name]
        result = run_hook(name, script, workspace_path, ctx.env(), ctx.facts(), self.settings.timeout_ms,
                          cancel=cancel, pass_env=self.settings.pass_env)
        if result.ran:
            self.log.log(logging.INFO if result.ok else logging.WARNING, "%s (%s)", result.describe(), workspace_path)
        return result

    def after_create(self, workspace_path: Path, ctx: HookContext, cancel: threading.Event | None = None) -> HookResult:
        """Run ``afterCreate``; raise :class:`HookFailed` so that the new workspace is abandoned."""
        return self._must_pass("afterCreate", workspace_path, ctx, cancel)

    def before_run(self, workspace_path: Path, ctx: HookContext, cancel: threading.Event | None = None) -> HookResult:
        """Run ``beforeRun``; raise :class:`HookFailed` so that the attempt fails."""
        return self._must_pass("beforeRun", workspace_path, ctx, cancel)

    def after_run(self, workspace_path: Path, ctx: HookContext, cancel: threading.Event | None = None) -> HookResult:
        """Run ``afterRun``; a failure is logged and ignored."""
        return self.run("afterRun", workspace_path, ctx, cancel)

    def before_remove(self, workspace_path: Path, ctx: HookContext,
                      cancel: threading.Event | None = None) -> HookResult:
        """Run ``beforeRemove``; a failure is logged and ignored (the workspace is removed anyway)."""
        return self.run("beforeRemove", workspace_path, ctx, cancel)

    def _must_pass(self, name: HookName, workspace_path: Path, ctx: HookContext,
                   cancel: threading.Event | None = None) -> HookResult:
        result = self.run(name, workspace_path, ctx, cancel)
        if not result.ok:
            raise HookFailed(result.describe(), result)
        return result


def _spawn_and_wait(
    argv: list[str], cwd: Path, env: dict[str, str], out: Any, err: Any, timeout_ms: int, grace_s: float,
    cancel: threading.Event | None = None,
) -> tuple[int | None, bool, bool]:
    """``(exit code, timed out, cancelled)``."""
    try:
        # A new session makes the hook a process-group leader, so its children can be killed with it;
        # the lifeline stops it if the worker itself is killed.
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True, preexec_fn=lifeline.preexec_fn(),
        )
    except OSError as exc:
        err.write(f"omx: cannot start hook in {cwd}: {exc}\n".encode())
        return 127, False, False
    lifeline.track(proc.pid)  # killed with its group if the worker dies while it runs
    try:
        return _wait_hook(proc, timeout_ms, grace_s, cancel)
    finally:
        lifeline.untrack(proc.pid)


def _wait_hook(
    proc: subprocess.Popen[bytes], timeout_ms: int, grace_s: float, cancel: threading.Event | None
) -> tuple[int | None, bool, bool]:
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        while True:
            step = max(0.0, min(0.1, deadline - time.monotonic()))
            try:
                return proc.wait(timeout=step), False, False
            except subprocess.TimeoutExpired:
                if cancel is not None and cancel.is_set():
                    _kill_group(proc, min(grace_s, 1.0))
                    return proc.returncode, False, True
                if time.monotonic() >= deadline:
                    _kill_group(proc, grace_s)
                    return proc.returncode, True, False
    except BaseException:  # KeyboardInterrupt, a shutdown signal: leave nothing running
        _kill_group(proc, 0)
        raise


def _kill_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    # TERM first, then KILL even if the leader left in time: its children may have ignored TERM.
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the group is empty
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            pass
    proc.wait()


def _tail(path: Path) -> str:
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - TAIL_BYTES))
        data = f.read()
    text = data.decode("utf-8", errors="replace")
    return ("…" + text) if size > TAIL_BYTES else text
