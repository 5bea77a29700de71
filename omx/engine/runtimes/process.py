"""One agent child process: spawned in its own process group, read by threads, always reaped.

Every runtime talks to its child the same way. :class:`ChildProcess` starts it (an argv list, never a
shell string) as the leader of a new session, so the child and everything it starts can be signalled
as one group; a reader thread turns stdout into :class:`Output` items on a queue; stderr goes to the
same queue and to a bounded ring buffer whose tail is quoted in errors. :meth:`ChildProcess.stop`
closes stdin, waits a moment, then sends SIGTERM and SIGKILL to the group, and reaps the child: call it
in a ``finally`` and no process outlives the run.

:class:`Watchdog` holds the run's clocks (turn deadline, stall timer) for the loops that read the queue.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from omx.engine.early import popen
from omx.engine.runtimes import lifeline
from omx.pids import pid_alive as pid_alive  # re-exported: runtimes and their tests use it from here

#: The longest stdout line kept whole; the rest of a longer line is dropped (and said so).
MAX_LINE_BYTES = 16 * 1024 * 1024
#: How much stderr is remembered (lines, and characters per line) for error messages.
STDERR_LINES = 200
STDERR_LINE_CHARS = 2000
#: How often the read loops wake up to look at the cancel flag and the clocks.
POLL_S = 0.05


@dataclass(frozen=True)
class Output:
    """One item from the child: a line of stdout or stderr, or the end of stdout.

    ``stream`` is ``"stdout"``, ``"stderr"`` or ``"eof"`` (stdout closed: the child exited or is
    exiting). ``truncated`` is true when the line was longer than :data:`MAX_LINE_BYTES`.
    """

    stream: Literal["stdout", "stderr", "eof"]
    text: str = ""
    truncated: bool = False


class SpawnError(Exception):
    """Raised when the child cannot be started (no such program, not executable, bad cwd)."""


class ChildProcess:
    """A child process with line-oriented, thread-fed stdout and a bounded stderr tail.

    Args:
        argv: the program and its arguments (a list: nothing is parsed by a shell).
        cwd: the working directory.
        env: the child's whole environment.
        stdin_data: written to stdin by a thread (so a child that never reads cannot block us), then
            stdin is closed. ``None`` keeps stdin open for :meth:`send`.
        proc: a child already started by :func:`omx.engine.early.popen` with these ``argv``, ``cwd``
            and ``env`` (the worker's head start on Codex), adopted instead of starting one.

    Raises:
        SpawnError: if the program cannot be started.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str | Path,
        env: Mapping[str, str],
        stdin_data: bytes | None = None,
        proc: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.argv = list(argv)
        self.queue: queue.Queue[Output] = queue.Queue()
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._send_lock = threading.Lock()
        if proc is None:
            try:
                proc = popen(self.argv, cwd=cwd, env=env)  # its own session, tracked by the lifeline
            except OSError as exc:
                raise SpawnError(f"cannot start {self.argv[0]!r}: {exc.strerror or exc}") from exc
        self.proc = proc
        self.pid = proc.pid
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), daemon=True),
        ]
        self._feeder: threading.Thread | None = None
        if stdin_data is not None:
            self._feeder = threading.Thread(target=self._feed, args=(self.proc.stdin, stdin_data), daemon=True)
            self._threads.append(self._feeder)
        for thread in self._threads:
            thread.name = f"omx-child-{self.pid}-{thread.name}"
            thread.start()

    # --- reading ---------------------------------------------------------------------------------

    def _read_stdout(self, stream: IO[bytes]) -> None:
        try:
            while True:
                line = stream.readline(MAX_LINE_BYTES)
                if not line:
                    break
                truncated = False
                if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
                    truncated = True
                    while (rest := stream.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                        pass  # drop the rest of the overlong line, keep reading after it
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                self.queue.put(Output("stdout", text, truncated))
        except (OSError, ValueError):
            pass  # the pipe was closed under us by stop(): that is the end of stdout too
        finally:
            self.queue.put(Output("eof"))

    def _read_stderr(self, stream: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for raw in stream:
                text = raw.decode("utf-8", "replace").rstrip("\r\n")[:STDERR_LINE_CHARS]
                self._stderr.append(text)
                self.queue.put(Output("stderr", text))

    @staticmethod
    def _feed(stream: IO[bytes], data: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):  # a child that exits without reading: fine
            stream.write(data)
            stream.flush()
        with contextlib.suppress(OSError, ValueError):
            stream.close()

    def get(self, timeout: float) -> Output | None:
        """The next output item, or ``None`` after ``timeout`` seconds of nothing."""
        try:
            return self.queue.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def drain(self, timeout: float = 1.0) -> list[Output]:
        """After the child exited: let the readers finish (up to ``timeout``), return what is queued."""
        until = time.monotonic() + timeout
        for thread in self._threads[:2]:
            thread.join(timeout=max(0.0, until - time.monotonic()))
        items = []
        while True:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                return items

    def stderr_tail(self, max_chars: int = 4000) -> str:
        """The last lines of stderr, at most ``max_chars`` characters."""
        return "\n".join(self._stderr)[-max_chars:]

    # --- writing ---------------------------------------------------------------------------------

    def send(self, line: str) -> bool:
        """Write one line (a newline is added) to stdin; ``False`` if the child no longer reads."""
        return self.write(line.encode("utf-8") + b"\n")

    def write(self, data: bytes) -> bool:
        """Write ``data`` to stdin as it is; ``False`` if the child no longer reads."""
        stdin = self.proc.stdin
        if stdin is None:
            return False
        with self._send_lock:
            try:
                stdin.write(data)
                stdin.flush()
            except (OSError, ValueError):
                return False
        return True

    # --- ending ----------------------------------------------------------------------------------

    def poll(self) -> int | None:
        """The exit status if the child has exited (negative: killed by that signal), else ``None``."""
        return self.proc.poll()

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for the child to exit; its status, or ``None``."""
        try:
            return self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the child's whole process group (quietly if it is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def terminate(self, grace_s: float) -> int | None:
        """SIGTERM to the group, then SIGKILL if the child is still there after ``grace_s``."""
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            if self.wait(grace_s) is None:
                self.signal_group(signal.SIGKILL)
                self.wait(5.0)
        return self.proc.poll()

    def close_stdin(self) -> None:
        """Close the child's stdin and leave it be: for a child that exits at end of input, when the
        worker itself is about to exit — the lifeline then ends it if it has not gone on its own."""
        feeding = self._feeder is not None and self._feeder.is_alive()
        if self.proc.stdin is not None and not feeding:
            with self._send_lock, contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()

    def stop(self, *, close_wait_s: float = 1.0, grace_s: float = 2.0) -> int | None:
        """End the child on every path: close stdin, wait ``close_wait_s``, terminate, kill, reap.

        Also sweeps the process group with SIGKILL once the leader is gone, so helpers the child
        started in its group (a shell command, a server it forked) do not linger. Idempotent.
        """
        # A feeder blocked on a full pipe holds the stream's lock: leave stdin to it (the kill below
        # breaks the pipe and ends it) rather than block here on close().
        feeding = self._feeder is not None and self._feeder.is_alive()
        if self.proc.stdin is not None and not feeding:
            with self._send_lock, contextlib.suppress(OSError, ValueError):
                self.proc.stdin.close()
        if self.wait(close_wait_s) is None:
            self.terminate(grace_s)
        self.signal_group(signal.SIGKILL)
        if self.proc.poll() is not None:
            lifeline.untrack(self.pid)
        for thread in self._threads:
            thread.join(timeout=1.0)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()
        return self.proc.poll()


Stop = Literal["interrupted", "timeout", "stalled"]


def drive(
    child: ChildProcess,
    watch: Watchdog,
    cancel: threading.Event,
    handle: Callable[[Output], None],
    *,
    stderr_is_activity: bool = False,
) -> Stop | None:
    """Feed ``handle`` every line until the child exits; ``None`` then, else why we stopped waiting.

    Checks ``cancel`` and the watchdog every :data:`POLL_S` at most. Stdout lines (and stderr lines
    when ``stderr_is_activity``) restart the stall timer. On exit, lines still in flight are handed
    over before returning. The caller terminates the child on a non-``None`` answer.
    """
    eof = quiet = False
    while True:
        if cancel.is_set():
            return "interrupted"
        if (expired := watch.expired()) is not None:
            return expired
        # Done when the child exited and stdout ended, or went quiet: a background process it left
        # holding the pipe must not keep us waiting for an EOF that never comes.
        if (eof or quiet) and child.poll() is not None:
            for late in child.drain():
                if late.stream != "eof":
                    handle(late)
            return None
        output = child.get(watch.wait_s())
        quiet = output is None
        if output is None:
            continue
        if output.stream == "eof":
            eof = True
            continue
        if output.stream == "stdout" or stderr_is_activity:
            watch.touch()
        handle(output)


class Watchdog:
    """The clocks of one run: a hard deadline and a stall timer (no activity for ``stall_ms``).

    Args:
        turn_timeout_ms: the whole turn's budget, from :meth:`start_turn` (or construction).
        stall_timeout_ms: longest silence allowed; 0 disables the stall check.
    """

    def __init__(self, turn_timeout_ms: int, stall_timeout_ms: int) -> None:
        self.started = time.monotonic()
        self.turn_timeout_s = turn_timeout_ms / 1000
        self.stall_s = stall_timeout_ms / 1000
        self.deadline = self.started + self.turn_timeout_s
        self.last_activity = self.started

    def start_turn(self) -> None:
        """Restart both clocks (the turn begins now)."""
        now = time.monotonic()
        self.deadline = now + self.turn_timeout_s
        self.last_activity = now

    def touch(self) -> None:
        """Something happened: the stall timer starts over."""
        self.last_activity = time.monotonic()

    def expired(self) -> Literal["timeout", "stalled"] | None:
        """``"timeout"`` past the deadline, ``"stalled"`` after too long a silence, else ``None``."""
        now = time.monotonic()
        if now >= self.deadline:
            return "timeout"
        if self.stall_s > 0 and now - self.last_activity >= self.stall_s:
            return "stalled"
        return None

    def wait_s(self) -> float:
        """How long a read may block before a clock needs looking at (at most :data:`POLL_S`)."""
        now = time.monotonic()
        limit = self.deadline - now
        if self.stall_s > 0:
            limit = min(limit, self.last_activity + self.stall_s - now)
        return max(0.0, min(POLL_S, limit))

    def elapsed_ms(self) -> int:
        """Milliseconds since construction."""
        return int((time.monotonic() - self.started) * 1000)
