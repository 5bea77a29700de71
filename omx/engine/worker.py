"""The worker loop, for any work source: ACK, then mail → claim → run → report, until told to stop.

Signal handlers only set flags (huey's habit); the loop notices. A leader's shutdown request lets the
running work finish (``shutdown_policy="finish"``) or interrupts it (``"interrupt"``); SIGTERM and
SIGINT interrupt — the run is stopped, its claim released, the worktree kept — and a second signal
does the same at once. SIGKILL loses nothing either: the lease expires and another worker takes over.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

from omx.engine.patience import Backoff, describe, is_weather
from omx.engine.runner import Outcome, Runner
from omx.engine.source import WorkSource
from omx.errors import LockTimeout
from omx.terminal import plural

log = logging.getLogger("omx.worker")

#: After a lock of the team's could not be taken within its timeout: how long before the loop tries again.
LOCKED_RETRY_S = 1.0


@dataclass
class WorkerOptions:
    max_concurrent: int = 1
    until_empty: bool = False
    poll_ms: int = 1_000  # how long one acquire may wait; also the shutdown-request latency
    shutdown_policy: str = "finish"  # finish | interrupt (leader's request; signals always interrupt)
    max_tasks: int | None = None
    install_signals: bool = True


@dataclass
class WorkerReport:
    completed: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0
    reason: str = ""

    def add(self, outcome: Outcome) -> None:
        setattr(self, outcome.status, getattr(self, outcome.status) + 1)


class Worker:
    """Drives a :class:`Runner` over a :class:`WorkSource`."""

    def __init__(self, source: WorkSource, runner: Runner, opts: WorkerOptions,
                 interrupt: threading.Event | None = None) -> None:
        self.source = source
        self.runner = runner
        self.opts = opts
        self.stop_reason: str | None = None
        # Set: running work is cancelled. Given by a caller whose PatientSource must stop waiting with it.
        self.interrupt = interrupt or threading.Event()
        self._weather = Backoff()
        self._active: dict[threading.Thread, threading.Event] = {}
        self._lock = threading.Lock()
        self.report = WorkerReport()
        self._started = 0
        self._beat_stop = threading.Event()
        self._idle_due = False

    # --- signals ----------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.stop_reason is not None:
            log.warning("%s again: interrupting now", name)
        self.stop_reason = self.stop_reason or f"received {name}"
        self.interrupt.set()
        for ev in list(self._active.values()):
            ev.set()

    def _install(self) -> dict[int, Any]:
        old: dict[int, Any] = {}
        if self.opts.install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                old[sig] = signal.signal(sig, self._on_signal)
        return old

    # --- loop -------------------------------------------------------------------------------

    def run(self) -> WorkerReport:
        old = self._install()
        beat = threading.Thread(target=self._heartbeat_loop, daemon=True, name="heartbeat")
        try:
            self.source.start()
            log.info("%s: started (pid %d)", getattr(self.source, "name", "worker"), os.getpid())
            beat.start()
            self._loop()
            self._drain()
        finally:
            self.report.reason = self.stop_reason or "stopped"
            # The heartbeat thread must be gone before stop() writes the last beat (alive=False):
            # a beat written after it would say a worker that left is alive.
            self._beat_stop.set()
            if beat.is_alive():
                beat.join(timeout=5)
            try:
                self.source.stop(self.report.reason)
            except Exception as exc:
                if not is_weather(exc):
                    raise
                log.warning("could not record that the worker stopped: %s", describe(exc))
            finally:
                for sig, handler in old.items():
                    signal.signal(sig, handler)
        return self.report

    def _loop(self) -> None:
        while self.stop_reason is None:
            try:
                self._pass()
            except LockTimeout as exc:
                # A process stopped (SIGSTOP, a debugger, a frozen VM) inside a critical section holds a
                # lock of the team's: that is no reason for this worker to leave. It waited out the lock
                # timeout already; it says so and polls again.
                log.warning("the team's state stayed locked: %s; trying again", exc.message)
                self._pause(LOCKED_RETRY_S)
            except Exception as exc:
                if not is_weather(exc):
                    raise
                # A full disk (or EIO) fails every write, claims included; the space usually comes back
                # (issue 10: a team whose workers left stalled for good). Warn, back off, poll again.
                wait = self._weather.take()
                log.warning("the team's state cannot be written: %s; trying again in %gs", describe(exc), wait)
                self._pause(wait)
            else:
                self._weather.reset()

    def _pause(self, seconds: float) -> None:
        """Wait ``seconds``, or less if a signal asks the worker to stop."""
        self.interrupt.wait(seconds)

    def _pass(self) -> None:
        """One pass of the loop: stop, wait for a running task, or claim and start one."""
        self._reap()
        reason = self.source.shutdown_requested()
        if reason is not None:
            self.stop_reason = f"shutdown requested: {reason}"
            log.info("shutdown requested (%s): %s %d running task(s)", reason,
                     "interrupting" if self.opts.shutdown_policy == "interrupt" else "finishing",
                     len(self._active))
            if self.opts.shutdown_policy == "interrupt":
                self.interrupt.set()
                for ev in list(self._active.values()):
                    ev.set()
            return
        read_mail = getattr(self.source, "read_mail", None)
        if read_mail is not None:
            for line in read_mail():
                log.info("mail: %s", line[:500])
        if self.opts.max_tasks is not None and self._started >= self.opts.max_tasks:
            if not self._active:
                self.stop_reason = f"ran {plural(self._started, 'task')} (--max-tasks)"
                return
            self._wait_any()
            return
        if len(self._active) >= self.opts.max_concurrent:
            self._wait_any()
            return
        if self.opts.until_empty and not self._active and not self._idle_due and self.source.drained():
            self.stop_reason = "the team is drained"  # checked first: no poll_ms wait on an empty team
            return
        claimed = self._acquire()
        if claimed is None:
            return
        if self.stop_reason is not None or self.source.shutdown_requested() is not None:
            # A signal or a shutdown request arrived while acquire() waited: give the work back
            # untouched rather than start it (the loop's next pass handles the request).
            self.source.release(claimed, "the worker is stopping")
            return
        self._start(claimed)

    def _acquire(self) -> Any:
        if self._idle_due and not self._active:
            # Just finished: take the next task at once if there is one (no idle/working flip in
            # the status file and the events for every task), else say idle, then wait.
            claimed = self.source.acquire(0)
            if claimed is not None:
                return claimed
            self._idle_due = False
            if self.opts.until_empty and self.source.drained():  # only now: not once per task
                self.stop_reason = "the team is drained"
                return None
            self._set_status("idle", None)
        return self.source.acquire(self.opts.poll_ms)

    def _start(self, claimed: Any) -> None:
        cancel = threading.Event()
        if self.interrupt.is_set():
            cancel.set()
        self._started += 1
        self._set_status("working", claimed)
        log.info("%s: claimed (attempt %d)", claimed.key, claimed.attempt)

        def body() -> None:
            try:
                outcome = self.runner.run(claimed, cancel)
            except Exception as exc:  # a bug in one run must not take the worker down
                if is_weather(exc):
                    # The run could not write what it needed (its prompt, its workspace): the task is not
                    # at fault. Give it back for a later attempt rather than fail it.
                    log.warning("%s: the disk is full or failing (%s); releasing it for a later attempt",
                                claimed.key, describe(exc))
                    outcome = Outcome("released", error=f"could not run: {describe(exc)}")
                    try:
                        self.source.release(claimed, outcome.error or "disk full")
                    except Exception:
                        log.exception("could not release %s", claimed.key)
                    with self._lock:
                        self.report.add(outcome)
                    return
                log.exception("run of %s crashed", claimed.key)
                outcome = Outcome("failed", error=f"internal error: {exc}")
                try:
                    self.source.fail(claimed, outcome.error or "internal error", {})
                except Exception:
                    log.exception("could not report the crash of %s", claimed.key)
            with self._lock:
                self.report.add(outcome)
            log.info("%s: %s%s", claimed.key, outcome.status, f" ({outcome.error})" if outcome.error else "")

        t = threading.Thread(target=body, name=f"run-{claimed.key}", daemon=True)
        with self._lock:
            self._active[t] = cancel
        if self.interrupt.is_set():  # a signal between the check above and here found no event to set
            cancel.set()
        t.start()

    def _wait_any(self, timeout: float = 0.2) -> None:
        for t in list(self._active):
            t.join(timeout=timeout / max(1, len(self._active)))
        self._reap()

    def _reap(self) -> None:
        with self._lock:
            done = [t for t in self._active if not t.is_alive()]
            for t in done:
                del self._active[t]
        if done and not self._active and self.stop_reason is None:
            self._idle_due = True  # written by the loop unless the next task is claimed at once

    def _drain(self) -> None:
        while self._active:
            self._wait_any(0.5)

    def _set_status(self, state: str, claimed: Any) -> None:
        set_status = getattr(self.source, "set_status", None)
        if set_status is None:
            return
        current = None
        if claimed is not None:
            current = str(claimed.variables.get("task", {}).get("id") or claimed.key)
        try:
            set_status(state, current)
        except Exception as exc:  # status is informational
            log.warning("status: %s", exc)

    def _heartbeat_loop(self) -> None:
        every = max(0.2, getattr(self.source, "lease_ms", 30_000) / 3000)
        while self.stop_reason is None or self._active:
            try:
                self.source.heartbeat("working" if self._active else "idle", None, self.runner.turns)
            except Exception as exc:  # retried next tick
                log.warning("heartbeat: %s", exc)
            if self._beat_stop.wait(every):
                return
