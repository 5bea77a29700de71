"""The ``command`` runtime: any program as the agent, for other agents, scripts and tests.

``runtime.command`` is an argv list, run as is (no shell) in the request's ``cwd`` with the request's
env plus ``OMX_PROMPT_FILE``: the path of a private temporary file (mode 0600) holding the prompt. The
prompt is also written to the program's stdin (then stdin is closed). Developer instructions, when
given, are in the file named by ``OMX_DEVELOPER_INSTRUCTIONS_FILE``. The files are removed after the
run.

Each output line is a ``log`` event. Exit status 0 is ``completed``, with the last non-empty stdout
line as the summary; any other status is ``failed`` with the tail of stderr. Cancel and the turn
timeout terminate the process group (SIGTERM, then SIGKILL after the grace period); so does the stall
timeout, which here counts silence on both stdout and stderr.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

from omx.engine.runtimes.base import (
    DEFAULT_KILL_GRACE_S,
    EventSink,
    RunRequest,
    RunResult,
    RunStatus,
    RuntimeEvent,
    empty_tokens,
)
from omx.engine.runtimes.process import ChildProcess, Output, SpawnError, Watchdog, drive

PROMPT_FILE_ENV = "OMX_PROMPT_FILE"
INSTRUCTIONS_FILE_ENV = "OMX_DEVELOPER_INSTRUCTIONS_FILE"
#: Longest summary line kept (characters).
MAX_SUMMARY_LINE = 4000
#: Longest line in a ``log`` event (characters).
MAX_LOG_LINE = 2000


class CommandRuntime:
    """Runs ``runtime.command`` as the agent; see the module docstring.

    Args:
        kill_grace_s: between SIGTERM and SIGKILL when a run is cancelled or times out.
    """

    def __init__(self, *, kill_grace_s: float = DEFAULT_KILL_GRACE_S) -> None:
        self.kill_grace_s = kill_grace_s

    def run(self, req: RunRequest, on_event: EventSink, cancel: threading.Event) -> RunResult:
        """Run the command once; see :class:`omx.engine.runtimes.base.Runtime`."""
        watch = Watchdog(req.settings.turn_timeout_ms, req.settings.stall_timeout_ms)
        argv = list(req.settings.command or [])
        if not argv:
            return RunResult("failed", None, "runtime.command is empty", empty_tokens(), watch.elapsed_ms())
        scratch = Path(tempfile.mkdtemp(prefix="omx-prompt-"))  # mkdtemp: 0700, ours alone
        try:
            env = dict(req.env)
            env[PROMPT_FILE_ENV] = str(_private_file(scratch / "prompt.md", req.prompt))
            env.pop(INSTRUCTIONS_FILE_ENV, None)  # never a stale one from our own environment
            if req.developer_instructions:
                path = _private_file(scratch / "developer-instructions.md", req.developer_instructions)
                env[INSTRUCTIONS_FILE_ENV] = str(path)
            return self._run(argv, req, env, on_event, cancel, watch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _run(
        self,
        argv: list[str],
        req: RunRequest,
        env: dict[str, str],
        on_event: EventSink,
        cancel: threading.Event,
        watch: Watchdog,
    ) -> RunResult:
        try:
            child = ChildProcess(argv, cwd=req.cwd, env=env, stdin_data=req.prompt.encode())
        except SpawnError as exc:
            return RunResult("failed", None, str(exc), empty_tokens(), watch.elapsed_ms())
        last_line: list[str] = []

        def handle(output: Output) -> None:
            if output.stream == "stdout" and output.text.strip():
                last_line[:] = [output.text.strip()[:MAX_SUMMARY_LINE]]
            on_event(RuntimeEvent("log", {"stream": output.stream, "text": output.text[:MAX_LOG_LINE]}))

        try:
            on_event(RuntimeEvent("started", {"pid": child.pid, "thread_id": None, "turn_id": None}))
            stopped = drive(child, watch, cancel, handle, stderr_is_activity=True)
            status: RunStatus
            error: str | None
            if stopped is not None:
                child.terminate(self.kill_grace_s)
                status, error = stopped, _stop_message(stopped, req)
            else:
                code = child.poll()
                status, error = ("completed", None) if code == 0 else ("failed", _exit_message(code, child))
        finally:
            child.stop(close_wait_s=0.0, grace_s=self.kill_grace_s)
        summary = last_line[0] if last_line else None
        return RunResult(status, summary, error, empty_tokens(), watch.elapsed_ms())


def _private_file(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _exit_message(code: int | None, child: ChildProcess) -> str:
    if code is not None and code < 0:
        how = f"was killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() else f"exited {code}"
    else:
        how = f"exited with status {code}"
    tail = child.stderr_tail()
    return f"command {how}" + (f"; stderr:\n{tail}" if tail else "")


def _stop_message(stopped: str, req: RunRequest) -> str:
    if stopped == "interrupted":
        return "cancelled"
    if stopped == "timeout":
        return f"the command did not finish within {req.settings.turn_timeout_ms} ms"
    return f"the command printed nothing for {req.settings.stall_timeout_ms} ms"
