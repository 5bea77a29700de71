"""Scale: claim-next with 10,000 pending tasks vs 100; list-tasks and get-summary on 10,000 tasks.

Goals (issue):

* claim-next median latency (library, in-process) with 10,000 pending tasks ≤ 2x that with 100 pending,
  both measured in this run, samples alternating between the two teams;
* ``list-tasks`` and ``get-summary`` on 10,000 tasks under 1 s, through the library and through the CLI
  (a fresh ``omx team api`` process).

Each claim-next sample is followed (untimed) by ``release_claim``, so both teams keep exactly 100 and
10,000 pending tasks and every sample sees the same state. The 10,000 tasks are written with the store's
own task writer and marker indexer, fsync skipped (set-up, not measured; see ``_common.bulk_create_tasks``).
A same-run reference for the listing goals: reading and ``json.loads``-ing the 10,000 task files in a loop.

    .venv/bin/python bench/scale.py [--quick] [--json] [--big 10000] [--small 100]
"""

from __future__ import annotations

import json
import os
import sys
import time

from _common import Report, bulk_create_tasks, cli, f_ms, f_ratio, median, parse_args, pct, temp_root

GOAL_RATIO = 2.0
GOAL_LIST_S = 1.0


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], extra=[
        (("--big",), {"type": int, "default": 10_000}),
        (("--small",), {"type": int, "default": 100}),
    ])
    from omx.state.filestore import FileStore

    claim_samples = 20 if args.quick else 50
    cli_claim_samples = 3 if args.quick else 10
    list_samples = 3 if args.quick else 5
    big_n, small_n = args.big, args.small
    rep = Report("scale", f"Scale: {big_n:,} tasks vs {small_n:,}", args.quick)
    with temp_root() as root:
        store = FileStore(root)
        teams = {"small": small_n, "big": big_n}
        t0 = time.perf_counter()
        for team, n in teams.items():
            store.create_team(team, workers=["worker-1"], lease_ms=3_600_000)
            bulk_create_tasks(store, team, n)
        setup_s = time.perf_counter() - t0
        pid = os.getpid()

        def claim_release(team: str) -> tuple[float, float]:
            t, c = time.perf_counter(), time.process_time()
            r = store.claim_next(team, "worker-1", pid=pid)
            dt, dc = time.perf_counter() - t, time.process_time() - c
            if r is None:
                raise RuntimeError(f"claim_next on {team} found nothing")
            store.release_claim(team, r.task.id, "worker-1", r.token)
            return dt * 1000, dc * 1000

        lat: dict[str, list[float]] = {"small": [], "big": []}
        cpu: dict[str, list[float]] = {"small": [], "big": []}
        for team in teams:  # warm-up: page cache, imports
            claim_release(team)
        for _ in range(claim_samples):
            for team in teams:
                wall, c = claim_release(team)
                lat[team].append(wall)
                cpu[team].append(c)

        cli_lat: dict[str, list[float]] = {"small": [], "big": []}
        for _ in range(cli_claim_samples):
            for team in teams:
                env, dt = cli("claim-next", {"team_name": team, "worker": "worker-1"}, root)
                store.release_claim(team, env["data"]["task"]["id"], "worker-1", env["data"]["claimToken"])
                cli_lat[team].append(dt * 1000)

        # listing 10,000 tasks: the raw-read reference, the library, the CLI — interleaved per round
        p = store.paths("big")
        names = [n for n in os.listdir(p.tasks) if n.endswith(".json")]

        def raw_read() -> None:
            for n in names:
                json.loads((p.tasks / n).read_bytes())

        list_t: dict[str, list[float]] = {k: [] for k in ("raw", "lib list", "lib summary", "cli list", "cli summary")}
        for _ in range(list_samples):
            for key, fn in (("raw", raw_read), ("lib list", lambda: store.list_tasks("big")),
                            ("lib summary", lambda: store.summary("big"))):
                t = time.perf_counter()
                fn()
                list_t[key].append(time.perf_counter() - t)
            env, dt = cli("list-tasks", {"team_name": "big"}, root)
            if env["data"]["count"] != big_n:
                raise RuntimeError(f"list-tasks counted {env['data']['count']}")
            list_t["cli list"].append(dt)
            env, dt = cli("get-summary", {"team_name": "big"}, root)
            if env["data"]["total"] != big_n or env["data"]["counts"]["pending"] != big_n:
                raise RuntimeError(f"get-summary: {env['data']['counts']}")
            list_t["cli summary"].append(dt)

    small, big = median(lat["small"]), median(lat["big"])
    rep.info(f"claim-next, library, {small_n:,} pending (median)", f"{f_ms(small)} (p90 {f_ms(pct(lat['small'], 90))})")
    rep.goal(f"claim-next, library, {big_n:,} pending (median)", f"{f_ms(big)} (p90 {f_ms(pct(lat['big'], 90))})",
             f"<= {GOAL_RATIO:g}x {small_n:,}-task", big / small <= GOAL_RATIO, f_ms(small), f_ratio(big / small))
    rep.info(f"claim-next, library, CPU time, {big_n:,} vs {small_n:,} pending (median)", f_ms(median(cpu["big"])),
             f_ms(median(cpu["small"])), f_ratio(median(cpu["big"]) / median(cpu["small"])))
    cs, cb = median(cli_lat["small"]), median(cli_lat["big"])
    rep.info(f"claim-next, CLI, {big_n:,} vs {small_n:,} pending (median)", f_ms(cb), f_ms(cs), f_ratio(cb / cs))
    raw = median(list_t["raw"]) * 1000
    rep.info(f"reference: read + json.loads of {big_n:,} task files", f_ms(raw))
    labels = {"lib list": "list_tasks, library", "lib summary": "summary, library",
              "cli list": "list-tasks, CLI (fresh process)", "cli summary": "get-summary, CLI (fresh process)"}
    for key, label in labels.items():
        m = median(list_t[key]) * 1000
        rep.goal(f"{label}, {big_n:,} tasks (median)", f_ms(m), f"< {GOAL_LIST_S * 1000:.0f} ms",
                 m < GOAL_LIST_S * 1000, f_ms(raw), f_ratio(m / raw))
    rep.notes.append(f"set-up of {small_n + big_n:,} tasks: {setup_s:.1f} s (store's writer + indexer, no fsync); "
                     f"{claim_samples} library claim-next samples per team (alternating), {cli_claim_samples} CLI, "
                     f"{list_samples} listing rounds")
    rep.data = {"claim_next_ms": lat, "claim_next_cpu_ms": cpu, "cli_claim_next_ms": cli_lat, "listing_s": list_t}
    return rep.emit(args.json)


if __name__ == "__main__":
    sys.exit(main())
