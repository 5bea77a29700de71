"""CLI latency: ``omx team api claim-task`` and ``read-task`` as fresh processes.

Goal (issue): the median of each is at most 1.5x the floor, ``python -c "import pydantic, filelock"`` run
by the same interpreter (the venv's), measured in the same run. The commands are run in interleaved
rounds, in a shuffled order each round, so that noise from other work on the machine hits all alike.

The goal is judged in the environment as it is. When omx's modules have no bytecode cache there (an
editable install under ``PYTHONDONTWRITEBYTECODE=1``: every ``omx`` process compiles omx from source),
the same commands are also timed with a bytecode cache in a temp dir (``PYTHONPYCACHEPREFIX``), as an
installed omx would run; those lines are informational (not with ``--quick``).

    .venv/bin/python bench/cli_latency.py [--quick] [--json] [--samples N]
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable

from _common import (
    PY,
    Report,
    bulk_create_tasks,
    bytecode_cache_env,
    cli_argv,
    f_ms,
    f_ratio,
    median,
    omx_bytecode_cached,
    parse_args,
    pct,
    temp_root,
    timed_run,
)

GOAL_RATIO = 1.5
OMC_REFERENCE_MS = 256  # oh-my-codex, per call, on this kind of machine (quoted, not measured here)
WARMUP_ROUNDS = 2
FLOOR = [PY, "-c", "import pydantic, filelock"]


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], extra=[(("--samples",), {"type": int, "default": None})])
    samples = args.samples or (15 if args.quick else 30)
    from omx.state.filestore import FileStore

    cached_already = omx_bytecode_cached()
    rep = Report("cli_latency", "CLI latency: `omx team api` as a fresh process vs the import floor", args.quick)
    with temp_root() as root:
        store = FileStore(root)
        store.create_team("bench", workers=["worker-1", "worker-2"], lease_ms=3_600_000)
        n = samples + WARMUP_ROUNDS
        claim_ids = bulk_create_tasks(store, "bench", 2 * n, "claim me")
        read_id = store.create_task("bench", "read me", "a task to read").id

        def claim(worker: str, offset: int) -> Callable[[int], list[str]]:
            return lambda i: cli_argv("claim-task", {"team_name": "bench", "task_id": claim_ids[offset + i],
                                                     "worker": worker}, root)

        def read(i: int) -> list[str]:
            return cli_argv("read-task", {"team_name": "bench", "task_id": read_id}, root)

        cache_env = bytecode_cache_env(root / "pycache")
        commands: dict[str, tuple[Callable[[int], list[str]], dict[str, str] | None]] = {
            "floor": (lambda i: FLOOR, None),
            "claim-task": (claim("worker-1", 0), None),
            "read-task": (read, None),
        }
        if not args.quick:
            commands["python -c pass"] = (lambda i: [PY, "-c", "pass"], None)
        if not cached_already and not args.quick:
            commands |= {
                "floor, bytecode cache": (lambda i: FLOOR, cache_env),
                "claim-task, bytecode cache": (claim("worker-2", n), cache_env),
                "read-task, bytecode cache": (read, cache_env),
            }
        times: dict[str, list[float]] = {k: [] for k in commands}
        rng = random.Random(20_240_601)
        for rnd in range(n):
            order = list(commands)
            rng.shuffle(order)
            for name in order:
                argv, env = commands[name]
                dt = timed_run(argv(rnd), env) * 1000
                if rnd >= WARMUP_ROUNDS:
                    times[name].append(dt)
        # every claim must have succeeded (timed_run checks the exit status; the task must be ours now)
        used = claim_ids[: 2 * n if "claim-task, bytecode cache" in commands else n]
        owners = {store.read_task("bench", t).owner for t in used}
        if not owners <= {"worker-1", "worker-2"}:
            raise RuntimeError(f"some claims did not land: owners {owners}")

    def p90(name: str) -> str:
        return f"(p90 {f_ms(pct(times[name], 90))})"

    floor = median(times["floor"])
    rep.info("floor: python -c 'import pydantic, filelock'", f"{f_ms(floor)} {p90('floor')}")
    if "python -c pass" in times:
        bare = median(times["python -c pass"])
        rep.info("bare interpreter: python -c pass", f"{f_ms(bare)} {p90('python -c pass')}", f_ms(floor),
                 f_ratio(bare / floor))
    for name in ("claim-task", "read-task"):
        m = median(times[name])
        paired = median([a / b for a, b in zip(times[name], times["floor"], strict=True)])
        rep.goal(f"omx team api {name} (median)", f"{f_ms(m)} {p90(name)}", f"<= {GOAL_RATIO}x floor",
                 m / floor <= GOAL_RATIO, f_ms(floor), f_ratio(m / floor))
        rep.info(f"  {name}: median of per-round ratios to floor", f_ratio(paired))
        rep.info(f"  {name} vs oh-my-codex (~{OMC_REFERENCE_MS} ms, quoted, not measured)", f_ms(m),
                 f"{OMC_REFERENCE_MS} ms", f_ratio(m / OMC_REFERENCE_MS))
    if "floor, bytecode cache" in times:
        cfloor = median(times["floor, bytecode cache"])
        rep.info("floor, bytecode cache", f"{f_ms(cfloor)} {p90('floor, bytecode cache')}")
        for name in ("claim-task", "read-task"):
            key = f"{name}, bytecode cache"
            m = median(times[key])
            rep.info(f"omx team api {key} (median)", f"{f_ms(m)} {p90(key)}", f_ms(cfloor), f_ratio(m / cfloor))
        rep.notes.append("omx has no bytecode cache here (PYTHONDONTWRITEBYTECODE="
                         f"{os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}, editable install): the goal lines "
                         "compile omx from source in every process; the 'bytecode cache' lines use PYTHONPYCACHEPREFIX")
    rep.notes.append(f"{samples} interleaved rounds (shuffled order) after {WARMUP_ROUNDS} warm-up rounds; "
                     f"wall time of subprocess.run from the benchmark process; interpreter {PY}")
    rep.data = {"samples_ms": {k: [round(x, 2) for x in v] for k, v in times.items()}}
    return rep.emit(args.json)


if __name__ == "__main__":
    sys.exit(main())
