"""The runtime interface: run one agent turn in a directory, report events, return a result.

A runtime is synchronous and thread-friendly: :meth:`Runtime.run` blocks the calling thread for one
turn, calls ``on_event`` on that same thread (never from a reader thread), and returns a
:class:`RunResult` for every outcome of the agent: completed, failed, interrupted, timed out or stalled.
It raises only for programming errors, or when ``on_event`` raises (after the child is stopped).
Another thread may set ``cancel`` at any time; the run then interrupts the agent and returns promptly
with status ``"interrupted"``. No child process outlives :meth:`Runtime.run` — except the servers of
:class:`~omx.engine.runtimes.app_server.AppServerPool`, a worker's long-lived ``codex app-server``
processes, which its ``close()`` stops.

Example::

    from omx.engine.runtimes import RunRequest, make_runtime
    from omx.engine.settings import RuntimeSettings

    settings = RuntimeSettings(kind="codex-app-server", stallTimeoutMs=120_000)
    runtime = make_runtime(settings)
    result = runtime.run(
        RunRequest(prompt="Fix the failing test", cwd=worktree, env=agent_env, settings=settings),
        on_event=lambda event: print(event.kind, event.data),
        cancel=threading.Event(),
    )
    if result.status == "completed":
        print(result.summary, result.tokens["total"])

Event kinds (``RuntimeEvent.kind``) and their ``data``:

=============  ====================================================================================
``started``    the turn began: ``pid``, and ``thread_id`` / ``turn_id`` when the runtime has them
``command``    a shell command: ``phase`` (started|completed), ``command``, ``cwd``, ``exit_code``,
               ``status``, ``output`` (a bounded tail)
``message``    an agent message: ``text``
``file_change``  files the agent changed: ``changes`` [{``path``, ``kind``}], ``status``
``tokens``     running totals: ``input``, ``output``, ``total`` (and ``last`` when known)
``approval``   an approval request and how omx answered it: ``method``, ``decision``, ``command`` …
``warning``    a warning from the agent runtime: ``message``
``error``      an error reported by the agent runtime: ``message``, ``will_retry``
``log``        a line of output or a protocol note: ``stream``, ``text``
=============  ====================================================================================
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from omx.engine.early import agent_env as agent_env  # re-exported: the runtimes' callers import it from here
from omx.errors import InvalidInput

if TYPE_CHECKING:
    from omx.engine.settings import RuntimeSettings

RunStatus = Literal["completed", "failed", "interrupted", "timeout", "stalled"]
EventKind = Literal["started", "command", "message", "file_change", "tokens", "approval", "warning", "error", "log"]
EVENT_KINDS: tuple[str, ...] = (
    "started",
    "command",
    "message",
    "file_change",
    "tokens",
    "approval",
    "warning",
    "error",
    "log",
)

#: Seconds a run waits for the agent to wind down after an interrupt before killing it.
DEFAULT_KILL_GRACE_S = 5.0
#: Longest summary kept (characters); longer agent messages are cut from the front.
MAX_SUMMARY_CHARS = 20_000


@dataclass
class RunRequest:
    """What to run.

    Attributes:
        prompt: the task text. Untrusted: every runtime passes it as data (a JSON string, stdin,
            a file), never in an argv, a shell string or a path.
        cwd: the directory the agent works in (a worktree).
        env: the child's whole environment; the caller has already removed secrets. ``CODEX_HOME``
            and ``PATH`` in it are honoured.
        settings: the runtime section of the worker settings.
        developer_instructions: trusted extra instructions (from WORKFLOW.md or the agent profile).
        output_schema: a JSON Schema the final message must follow (app-server's ``outputSchema``);
            other runtimes ignore it.
    """

    prompt: str
    cwd: Path
    env: dict[str, str]
    settings: RuntimeSettings
    developer_instructions: str | None = None
    output_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class RuntimeEvent:
    """Something the agent did or said; see the module docstring for the kinds."""

    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """How a run ended.

    Attributes:
        status: ``completed`` | ``failed`` | ``interrupted`` (cancelled) | ``timeout`` (turn timeout) |
            ``stalled`` (no activity for the stall timeout).
        summary: the agent's last message text (for ``command``: its last non-empty stdout line).
        error: why it did not complete, with the tail of the child's stderr where that helps.
        tokens: ``input``, ``output``, ``total`` (0 when unknown).
        duration_ms: wall time of the whole run, spawn to reap.
        thread_id: the Codex thread id, when there is one.
    """

    status: RunStatus
    summary: str | None
    error: str | None
    tokens: dict[str, int]
    duration_ms: int
    thread_id: str | None = None

    @property
    def ok(self) -> bool:
        """True when the status is ``completed``."""
        return self.status == "completed"


EventSink = Callable[[RuntimeEvent], None]


class Runtime(Protocol):
    """Runs one agent turn; see the module docstring for the contract."""

    def run(self, req: RunRequest, on_event: EventSink, cancel: threading.Event) -> RunResult:
        """Run ``req`` to the end of one turn and return how it ended.

        Args:
            req: the prompt, directory, environment and settings.
            on_event: called on the calling thread for each :class:`RuntimeEvent`.
            cancel: set it (from any thread) to interrupt the run; the result is ``interrupted``.
        """
        ...


def empty_tokens() -> dict[str, int]:
    """``{"input": 0, "output": 0, "total": 0}``."""
    return {"input": 0, "output": 0, "total": 0}


def bounded(text: str, limit: int = MAX_SUMMARY_CHARS) -> str:
    """``text`` cut to its last ``limit`` characters (marked with a leading ellipsis when cut)."""
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def make_runtime(settings: RuntimeSettings) -> Runtime:
    """The runtime for ``settings.kind``.

    Args:
        settings: the runtime settings; ``command`` is required for kind ``command``.

    Returns:
        A :class:`Runtime` (``AppServerRuntime``, ``ExecRuntime`` or ``CommandRuntime``).

    Raises:
        InvalidInput: for kind ``command`` without a ``command``.
    """
    if settings.kind == "codex-app-server":
        from omx.engine.runtimes.app_server import AppServerRuntime

        return AppServerRuntime()
    if settings.kind == "codex-exec":
        from omx.engine.runtimes.exec import ExecRuntime

        return ExecRuntime()
    from omx.engine.runtimes.command import CommandRuntime

    if not settings.command:
        raise InvalidInput("runtime.command is required when runtime.kind is 'command'", kind=settings.kind)
    return CommandRuntime()
