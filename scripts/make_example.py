#!/usr/bin/env python3
"""Generate ``.omx.example/state``: a realistic team state tree, written by the real file store.

The tree is what ``omx.state.FileStore`` itself writes while a scripted team of three workers plays
out a short scenario (team ``demo-calc``, seven tasks), driven by a :class:`omx.clock.FakeClock`.
Nothing is written by hand, so the example is exactly what a user finds under ``.omx/state``.

Snapshot (09:01:50 UTC on 2025-06-02, two minutes into the run):

====  ==============================  ===========  =========================================
task  subject                         shown as     why
====  ==============================  ===========  =========================================
1     Write the tokenizer             completed    worker-1; result has branch, commit, tokens
2     Write the parser                in_progress  worker-2 holds a live-looking 60 s lease
3     Add the evaluator               blocked      waits on task 2 (in progress)
4     Support the ** operator         failed       worker-3 gave up; ``error`` says why
5     Document the ** operator        blocked      waits on task 4, which *failed*
6     Write the README usage section  pending      ready for anyone
7     Add a console entry point       pending      ready, pre-assigned to worker-1
====  ==============================  ===========  =========================================

worker-3 was then asked to shut down and acknowledged it. Mailboxes: the three startup ACKs and a
note in ``leader-fixed`` (all read), a read message to worker-2, an unread one to worker-1.

Deterministic output: the clock is fake, the host and pids are fixed, and ``secrets.token_hex`` and
``omx.state.atomic.random_hex8`` (event and message ids, claim tokens, temp-file names) are replaced by
a seeded generator *inside this process only* — never do that in real use (see :func:`deterministic`).

Lock files are kept (empty, as the store leaves them: lock files are never deleted), so ``locks/``
exists in a checkout and write commands work on a copy.
Two things the store writes are left out: the ``*`` ``.gitignore`` it puts at the state root (it would
hide the example from git) and empty directories (git cannot keep them; the store recreates them).

Usage::

    .venv/bin/python scripts/make_example.py               # rewrite .omx.example/state
    .venv/bin/python scripts/make_example.py --out /tmp/x  # write /tmp/x/state instead
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a plain script from anywhere
    sys.path.insert(0, str(REPO))

from omx.clock import FakeClock, parse_iso  # noqa: E402
from omx.state import atomic, claims  # noqa: E402
from omx.state.base import host_tag  # noqa: E402
from omx.state.filestore import FileStore  # noqa: E402

TEAM = "demo-calc"
START = "2025-06-02T09:00:00.000Z"
HOST = "devbox-01"
SEED = 20250602
PIDS = {"worker-1": 41870, "worker-2": 41872, "worker-3": 41874}
LEADER = "leader-fixed"


@contextlib.contextmanager
def deterministic(seed: int) -> Iterator[None]:
    """Seeded ``secrets.token_hex``, and the scenario's worker pids count as alive (this process only).

    The pids matter because a claim whose holder pid is dead *on the same host* may be taken over at
    once; the scenario's workers are pretend processes on a pretend host, alive while it plays.
    """
    rng = random.Random(seed)

    def token_hex(nbytes: int | None = None) -> str:
        n = 32 if nbytes is None else nbytes
        return rng.getrandbits(8 * n).to_bytes(n, "big").hex() if n else ""

    def pid_alive(pid: int) -> bool:
        return pid in PIDS.values()

    patches: dict[tuple[ModuleType, str], object] = {(secrets, "token_hex"): token_hex,
                                                     (atomic, "random_hex8"): lambda: token_hex(4),
                                                     (claims, "pid_alive"): pid_alive}
    saved = {(module, name): getattr(module, name) for module, name in patches}
    for (module, name), value in patches.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for (module, name), value in saved.items():
            setattr(module, name, value)


class Scenario:
    """The store, its fake clock, and a few helpers that read like the story."""

    def __init__(self, root: Path) -> None:
        self.clock = FakeClock(parse_iso(START))
        self.store = FileStore(root, clock=self.clock)
        # A fixed host, so claims and identities read the same on every machine.
        self.store.host = HOST
        self.store.host_tag = host_tag(HOST)

    def at(self, offset_ms: int) -> None:
        """Move the clock to ``START + offset_ms`` (never backwards)."""
        target = parse_iso(START) + offset_ms
        if target < self.clock.t:
            raise RuntimeError(f"the scenario's clock would go back to {offset_ms} ms")
        self.clock.t = target

    def start_worker(self, worker: str, index: int) -> str:
        """A worker comes up: identity, idle, first heartbeat, startup ACK to the leader."""
        s = self.store
        s.write_identity(TEAM, worker, index=index, role="implementer", pid=PIDS[worker], host=HOST,
                         worktree=f"/home/dev/.omx/worktrees/{TEAM}/{worker}")
        self.clock.advance(40)
        s.write_status(TEAM, worker, "idle")
        s.update_heartbeat(TEAM, worker, pid=PIDS[worker], turn_count=0)
        self.clock.advance(60)
        return s.send_message(TEAM, worker, LEADER, f"ACK: {worker} initialized").message_id

    def claim(self, worker: str) -> tuple[str, str]:
        """claim-next, then status working; returns (task id, token)."""
        got = self.store.claim_next(TEAM, worker, pid=PIDS[worker])
        if got is None:
            raise RuntimeError(f"{worker} found nothing to claim")
        self.clock.advance(30)
        self.store.write_status(TEAM, worker, "working", current_task_id=got.task.id)
        return got.task.id, got.token

    def beat(self, worker: str, turns: int, *, alive: bool = True) -> None:
        self.store.update_heartbeat(TEAM, worker, pid=PIDS[worker], turn_count=turns, alive=alive)


class Spec(NamedTuple):
    subject: str
    description: str
    files: tuple[str, ...]
    priority: int = 0
    depends_on: tuple[str, ...] = ()
    owner: str | None = None


TASKS: list[Spec] = [
    Spec("Write the tokenizer",
         "Split an expression such as `2 * (3 + 4.5)` into number, operator and parenthesis tokens in "
         "calc/tokens.py. Reject anything else with a CalcSyntaxError naming the column.",
         ("calc/tokens.py", "tests/test_tokens.py"), priority=10),
    Spec("Write the parser",
         "Precedence-climbing parser from tokens to an AST of frozen dataclasses (Num, BinOp, Neg). "
         "Usual precedence; parentheses; unary minus.",
         ("calc/parser.py", "tests/test_parser.py"), priority=5, depends_on=("1",)),
    Spec("Add the evaluator", "Evaluate the AST with exact Fractions; division by zero raises CalcError.",
         ("calc/evaluate.py", "tests/test_evaluate.py"), depends_on=("2",)),
    Spec("Support the ** operator", "Add right-associative exponentiation: 2 ** 3 ** 2 == 512.",
         ("calc/tokens.py", "tests/test_pow.py"), priority=3),
    Spec("Document the ** operator",
         "Add ** to the operator table in README.md with its precedence and associativity.",
         ("README.md",), depends_on=("4",)),
    Spec("Write the README usage section", "Installation, `calc '1 + 2'`, `python -m calc`, exit codes.",
         ("README.md",)),
    Spec("Add a console entry point", "A `calc` console script that reads an expression from argv or stdin.",
         ("pyproject.toml", "calc/__main__.py"), priority=1, depends_on=("1",), owner="worker-1"),
]


def play(root: Path) -> None:
    """Run the scenario against a fresh state root."""
    sc = Scenario(root)
    s = sc.store
    s.create_team(TEAM, goal="Build calc: a small calculator library with a command line and tests",
                  workers=["worker-1", "worker-2", "worker-3"], lease_ms=60_000)

    sc.at(2_000)  # the leader writes the plan
    for spec in TASKS:
        s.create_task(TEAM, spec.subject, spec.description, depends_on=spec.depends_on, priority=spec.priority,
                      files=spec.files, owner=spec.owner)
        sc.clock.advance(150)

    sc.at(5_000)  # worker-1 and worker-3 start; worker-2's worktree takes longer to set up
    ack1 = sc.start_worker("worker-1", 1)
    sc.at(5_400)
    ack3 = sc.start_worker("worker-3", 3)
    sc.at(6_000)
    t1, tok1 = sc.claim("worker-1")  # task 1 (priority 10)
    sc.at(6_300)
    t4, tok4 = sc.claim("worker-3")  # task 4 (priority 3); 7 waits on 1, and 6 has priority 0
    sc.at(7_000)
    s.mark_delivered(TEAM, LEADER, ack1)
    s.mark_delivered(TEAM, LEADER, ack3)

    for n, ms in enumerate((26_000, 46_000), start=1):  # lease renewals every lease/3
        sc.at(ms)
        s.renew_claim(TEAM, t1, "worker-1", tok1)
        sc.beat("worker-1", n)
        sc.clock.advance(200)
        s.renew_claim(TEAM, t4, "worker-3", tok4)
        sc.beat("worker-3", n)

    sc.at(58_000)  # worker-2 comes up while task 1 finishes
    ack2 = sc.start_worker("worker-2", 2)
    sc.at(60_000)
    s.mark_delivered(TEAM, LEADER, ack2)

    sc.at(61_900)
    s.transition_task(TEAM, t1, "worker-1", tok1, "completed", result={
        "summary": "Added calc/tokens.py: a regex tokenizer for numbers, + - * / and parentheses, with "
                   "CalcSyntaxError(column). 14 tests in tests/test_tokens.py pass.",
        "branch": f"omx/{TEAM}/task-1", "commit": "3f1c2a9e5b7d4c6a8e0f1b2d3c4a5e6f7a8b9c0d",
        "tokens": {"input": 48_210, "output": 6_120, "total": 54_330}, "duration_ms": 55_840,
    })
    sc.at(62_100)
    t2, tok2 = sc.claim("worker-2")  # task 2 is ready now (priority 5); 7 belongs to worker-1
    sc.at(62_500)
    s.write_status(TEAM, "worker-1", "idle")
    sc.beat("worker-1", 3)

    sc.at(65_000)
    m2 = s.send_message(TEAM, LEADER, "worker-2",
                        "Parser: keep the AST nodes frozen dataclasses; the evaluator (task 3) relies on it.")
    sc.at(66_000)
    s.mark_notified(TEAM, "worker-2", m2.message_id)
    s.mark_delivered(TEAM, "worker-2", m2.message_id)

    sc.at(80_400)
    s.transition_task(TEAM, t4, "worker-3", tok4, "failed",
                      error="tests/test_pow.py: 2 of 9 tests fail: 2 ** 3 ** 2 gives 64, not 512. Right "
                            "associativity needs the precedence climbing of task 2's parser, which is not merged.",
                      result={"branch": f"omx/{TEAM}/task-4",
                              "tokens": {"input": 61_877, "output": 9_402, "total": 71_279},
                              "duration_ms": 74_100})
    sc.clock.advance(100)
    s.write_status(TEAM, "worker-3", "idle")
    sc.clock.advance(200)
    note = s.send_message(TEAM, "worker-3", LEADER,
                          "task 4: failed, ** needs the new parser; suggest re-planning it after task 2.")

    sc.at(82_000)
    s.renew_claim(TEAM, t2, "worker-2", tok2)
    sc.beat("worker-2", 5)

    sc.at(84_000)
    s.mark_delivered(TEAM, LEADER, note.message_id)
    sc.at(85_000)
    s.write_shutdown_request(TEAM, "worker-3", LEADER, reason="task 4 failed; the leader re-plans the ** work")
    sc.at(86_000)
    s.write_shutdown_ack(TEAM, "worker-3", "accept", reason="no task held")
    sc.clock.advance(50)
    s.write_status(TEAM, "worker-3", "done", reason="shutdown requested by leader-fixed")
    sc.beat("worker-3", 2, alive=False)

    sc.at(100_000)
    m1 = s.send_message(TEAM, LEADER, "worker-1",
                        "Task 7 (the console entry point) is yours; then take the README (task 6).")
    sc.at(100_500)
    s.mark_notified(TEAM, "worker-1", m1.message_id)  # told, not read yet: the snapshot is taken here
    sc.at(102_000)
    s.renew_claim(TEAM, t2, "worker-2", tok2)
    sc.beat("worker-2", 7)
    sc.at(105_000)
    sc.beat("worker-1", 3)
    sc.at(108_000)
    sc.beat("worker-2", 8)


def prune_empty_dirs(top: Path) -> None:
    """Remove empty directories bottom-up (git cannot keep them, so the example must not need them)."""
    for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
        d = Path(dirpath)
        if d != top and not any(d.iterdir()):
            d.rmdir()


def generate(out: Path) -> Path:
    """Write the example tree to ``out/state`` (replacing it) and return that path."""
    with tempfile.TemporaryDirectory(prefix="omx-example-") as tmp:
        root = Path(tmp) / "state"
        with deterministic(SEED):
            play(root)
        # The store keeps its own state out of git with a "*" .gitignore at the root; the example is
        # the one state tree that *is* committed, so it goes.
        (root / ".gitignore").unlink(missing_ok=True)
        prune_empty_dirs(root)
        dest = out / "state"
        if dest.exists():
            shutil.rmtree(dest)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copytree(root, dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO / ".omx.example",
                        help="write <OUT>/state (default: .omx.example in the repository)")
    args = parser.parse_args(argv)
    dest = generate(args.out)
    files = sum(1 for p in dest.rglob("*") if p.is_file())
    print(f"wrote {files} files under {dest}")
    print(f"look at it: omx team status --root {dest} --team {TEAM}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
