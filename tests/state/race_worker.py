"""A worker process for the race and crash tests: ``python race_worker.py <mode> '<json config>'``.

Each mode is one role a real process plays against a shared state root: a claim loop (through the
library or the installed ``omx`` CLI), a task creator, a holder that claims and then sleeps until it
is SIGKILLed, a renewing holder, a hammer that keeps trying to steal. Every process:

* writes ``<ready>`` once imported and waits for ``<go>`` to appear (the start barrier), when given;
* appends one JSON line per operation to its own ``<log>``, flushed at once, with ``time.time_ns()``
  stamps (the system clock, shared by every process on the host) taken around each call;
* records failures as ``{"op": "error", ...}`` lines instead of dying, so the test sees them.

The log format is what :mod:`tests.state.invariants` reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omx.clock import FakeClock
from omx.errors import OmxError
from omx.state.filestore import FileStore

BARRIER_TIMEOUT_S = 120.0
#: The installed CLI next to the interpreter running us (the project's venv).
OMX_BIN = str(Path(sys.executable).parent / "omx")


class Log:
    def __init__(self, path: str | None) -> None:
        self.f = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - lives as long as the process

    def write(self, **rec: Any) -> None:
        if self.f is None:
            return
        rec.setdefault("pid", os.getpid())
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def barrier(cfg: dict[str, Any]) -> None:
    """Say we are ready, then wait for the go-file (polling: no watcher start-up skew)."""
    if cfg.get("ready"):
        Path(cfg["ready"]).write_text(str(os.getpid()))
    go = cfg.get("go")
    if not go:
        return
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("race_worker: no go-file within the barrier timeout")
        time.sleep(0.002)


def write_atomically(path: str, text: str) -> None:
    tmp = f"{path}.part"
    Path(tmp).write_text(text)
    os.replace(tmp, path)


# --- the omx CLI as a client ---------------------------------------------------------------------


def cli(cfg: dict[str, Any], op: str, **payload: Any) -> tuple[int, dict[str, Any]]:
    argv = [cfg.get("omx") or OMX_BIN, "team", "api", op, "--root", cfg["root"], "--input", json.dumps(payload)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    try:
        env = json.loads(proc.stdout)
    except ValueError:
        env = {"ok": False, "error": {"code": "unparseable", "message": proc.stdout + proc.stderr}}
    return proc.returncode, env


# --- modes ---------------------------------------------------------------------------------------


def mode_loop(cfg: dict[str, Any]) -> None:
    """claim-next -> transition completed, until claim-next finds nothing."""
    log = Log(cfg["log"])
    team, worker, via = cfg["team"], cfg["worker"], cfg["via"]
    store = FileStore(cfg["root"])
    barrier(cfg)
    while True:
        t0 = time.time_ns()
        if via == "lib":
            try:
                r = store.claim_next(team, worker)
            except OmxError as exc:
                log.write(op="error", call="claim-next", code=exc.code, message=exc.message, t_ns=time.time_ns())
                continue
            task = r.task.to_dict() if r else None
            token = r.token if r else None
        else:
            rc, env = cli(cfg, "claim-next", team_name=team, worker=worker)
            if rc != 0 or not env.get("ok"):
                log.write(op="error", call="claim-next", rc=rc, code=env.get("error", {}).get("code"),
                          message=env.get("error", {}).get("message"), t_ns=time.time_ns())
                continue
            task, token = env["data"]["task"], env["data"]["claimToken"]
        t1 = time.time_ns()
        if task is None:
            log.write(op="empty", t_call_ns=t0, t_ret_ns=t1)
            return
        assert token is not None
        tid = task["id"]
        log.write(op="claim", task=tid, worker=worker, token_sha256=sha(token), version=task["version"],
                  attempts=task["attempts"], t_call_ns=t0, t_ret_ns=t1)
        result = {"worker": worker, "pid": os.getpid()}
        t2 = time.time_ns()
        if via == "lib":
            try:
                done = store.transition_task(team, tid, worker, token, "completed", result=result).to_dict()
            except OmxError as exc:
                log.write(op="error", call="transition", task=tid, code=exc.code, message=exc.message,
                          t_ns=time.time_ns())
                continue
        else:
            rc, env = cli(cfg, "transition-task-status", team_name=team, task_id=tid, worker=worker,
                          claim_token=token, to="completed", result=result)
            if rc != 0 or not env.get("ok"):
                log.write(op="error", call="transition", task=tid, rc=rc, code=env.get("error", {}).get("code"),
                          message=env.get("error", {}).get("message"), t_ns=time.time_ns())
                continue
            done = env["data"]["task"]
        t3 = time.time_ns()
        log.write(op="complete", task=tid, worker=worker, token_sha256=sha(token), version=done["version"],
                  status=done["status"], t_call_ns=t2, t_ret_ns=t3)


def mode_create(cfg: dict[str, Any]) -> None:
    """Create ``count`` tasks with subjects ``<tag>-<i>``."""
    log = Log(cfg["log"])
    team, tag, via = cfg["team"], cfg["tag"], cfg["via"]
    store = FileStore(cfg["root"])
    barrier(cfg)
    for i in range(cfg["count"]):
        subject = f"{tag}-{i}"
        t0 = time.time_ns()
        if via == "lib":
            try:
                tid = store.create_task(team, subject).id
            except OmxError as exc:
                log.write(op="error", call="create-task", code=exc.code, message=exc.message)
                continue
        else:
            rc, env = cli(cfg, "create-task", team_name=team, subject=subject)
            if rc != 0 or not env.get("ok"):
                log.write(op="error", call="create-task", rc=rc, code=env.get("error", {}).get("code"))
                continue
            tid = env["data"]["task"]["id"]
        log.write(op="create", task=tid, subject=subject, t_call_ns=t0, t_ret_ns=time.time_ns())


def mode_hold(cfg: dict[str, Any]) -> None:
    """Claim one task (library with our pid, or CLI without one), publish the token, sleep until killed."""
    team, worker, tid = cfg["team"], cfg["worker"], cfg["task"]
    if cfg["via"] == "lib":
        r = FileStore(cfg["root"]).claim_task(team, tid, worker, pid=os.getpid())
        task, token = r.task.to_dict(), r.token
    else:
        rc, env = cli(cfg, "claim-task", team_name=team, task_id=tid, worker=worker)
        if rc != 0:
            sys.exit(f"race_worker hold: claim failed: {env}")
        task, token = env["data"]["task"], env["data"]["claimToken"]
    write_atomically(cfg["out"], json.dumps({"token": token, "task": task, "pid": os.getpid()}))
    while True:  # the test SIGKILLs us here
        time.sleep(3600)


def mode_claim_fake_clock(cfg: dict[str, Any]) -> None:
    """Claim one task with a store whose clock is frozen at ``clock_ms`` (predictable marker names)."""
    store = FileStore(cfg["root"], clock=FakeClock(cfg["clock_ms"]))
    store.claim_task(cfg["team"], cfg["task"], cfg["worker"])


def mode_renew(cfg: dict[str, Any]) -> None:
    """Claim a task with our pid, renew every ``renew_ms`` for ``hold_ms``, then complete it."""
    log = Log(cfg["log"])
    team, worker, tid = cfg["team"], cfg["worker"], cfg["task"]
    store = FileStore(cfg["root"])
    r = store.claim_task(team, tid, worker, pid=os.getpid())
    t_claim = time.monotonic()
    assert r.task.claim is not None
    log.write(op="claim", task=tid, version=r.task.version, leased_until=r.task.claim.leased_until,
              t_ret_ns=time.time_ns())
    Path(cfg["go"]).touch()  # the hammers start now
    token = r.token
    step = cfg["renew_ms"] / 1000
    n = 1
    # Renew on a fixed schedule from the claim (not "sleep after each renew"), so jitter never accumulates.
    while n * cfg["renew_ms"] <= cfg["hold_ms"]:  # integers: 12 * 0.4 > 4.8 in floating point
        delay = t_claim + n * step - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.time_ns()
        try:
            task = store.renew_claim(team, tid, worker, token)
        except OmxError as exc:
            log.write(op="error", call="renew", code=exc.code, message=exc.message, t_call_ns=t0)
            break
        log.write(op="renew", version=task.version, leased_until=task.claim.leased_until if task.claim else None,
                  t_call_ns=t0, t_ret_ns=time.time_ns())
        n += 1
    t0 = time.time_ns()
    try:
        done = store.transition_task(team, tid, worker, token, "completed", result={"renewals": n - 1})
        log.write(op="complete", version=done.version, status=done.status, t_call_ns=t0, t_ret_ns=time.time_ns())
    except OmxError as exc:
        log.write(op="error", call="transition", code=exc.code, message=exc.message, t_call_ns=t0)
    Path(cfg["stop"]).touch()


def mode_hammer(cfg: dict[str, Any]) -> None:
    """Keep trying to take work (claim-next, and claim-task on ``task``) until ``stop`` appears."""
    # Hammers run at lower CPU priority: on a 2-core machine, eight busy loops would otherwise starve
    # the renewer, and a worker that cannot run is not "a live worker that keeps renewing".
    os.nice(cfg.get("nice", 10))
    log = Log(cfg["log"])
    team, worker, tid = cfg["team"], cfg["worker"], cfg["task"]
    store = FileStore(cfg["root"])
    barrier(cfg)
    attempts = conflicts = 0
    while not os.path.exists(cfg["stop"]):
        t0 = time.time_ns()
        try:
            r = store.claim_next(team, worker)
            if r is not None:
                log.write(op="claim", call="claim-next", task=r.task.id, version=r.task.version, t_call_ns=t0,
                          t_ret_ns=time.time_ns())
        except OmxError as exc:
            log.write(op="error", call="claim-next", code=exc.code, message=exc.message, t_call_ns=t0)
        attempts += 1
        t0 = time.time_ns()
        try:
            r = store.claim_task(team, tid, worker)
            log.write(op="claim", call="claim-task", task=r.task.id, version=r.task.version, t_call_ns=t0,
                      t_ret_ns=time.time_ns())
        except OmxError as exc:
            if exc.code in ("claim_conflict", "already_terminal"):
                conflicts += 1
            else:
                log.write(op="error", call="claim-task", code=exc.code, message=exc.message, t_call_ns=t0)
        attempts += 1
        time.sleep(0.002)
    log.write(op="summary", attempts=attempts, conflicts=conflicts)


MODES = {
    "loop": mode_loop,
    "create": mode_create,
    "hold": mode_hold,
    "claim-fake-clock": mode_claim_fake_clock,
    "renew": mode_renew,
    "hammer": mode_hammer,
}

if __name__ == "__main__":
    MODES[sys.argv[1]](json.loads(sys.argv[2]))
