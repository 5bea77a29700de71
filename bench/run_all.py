"""Run every benchmark in ``bench/`` and print one markdown table (for the README) and PASS/FAIL.

Each benchmark runs as its own process with ``--json``, one after another (never in parallel: they
would measure each other). ``--quick`` passes ``--quick`` on (about a minute in all); the full run keeps
to about five minutes by shortening the one slow part, the CLI loop of claim_throughput (8 x 10 tasks
instead of the issue's 8 x 500: the rate is set by process start-up, which 80 tasks show as well;
``bench/claim_throughput.py`` alone runs the full 8 x 500).

    .venv/bin/python bench/run_all.py [--quick] [--json] [--only NAME ...] [--out FILE]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from _common import BENCH_DIR, PY, Line, parse_args, table

BENCHMARKS: dict[str, list[str]] = {
    "cli_latency": [],
    "claim_throughput": [],
    "scale": [],
    "crash_recovery": [],
    "wakeup": [],
}
FULL_EXTRA = {"claim_throughput": ["--cli-tasks-per-proc", "10"]}


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], extra=[
        (("--only",), {"nargs": "+", "choices": list(BENCHMARKS), "help": "run only these"}),
        (("--out",), {"help": "also write the combined JSON here"}),
    ])
    names = args.only or list(BENCHMARKS)
    reports = []
    t0 = time.perf_counter()
    for name in names:
        argv = [PY, str(BENCH_DIR / f"{name}.py"), "--json", *(["--quick"] if args.quick else FULL_EXTRA.get(name, []))]
        print(f"running {' '.join(Path(a).name if a.endswith('.py') else a for a in argv[1:])} ...",
              file=sys.stderr, flush=True)
        started = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        try:
            rep = json.loads(proc.stdout)
        except json.JSONDecodeError:
            rep = {"benchmark": name, "passed": False, "lines": [], "notes": [],
                   "error": f"exit {proc.returncode}: {proc.stderr[-3000:]}"}
        rep["wall_s"] = round(time.perf_counter() - started, 1)
        print(f"  {name}: {'PASS' if rep.get('passed') else 'FAIL'} in {rep['wall_s']} s", file=sys.stderr, flush=True)
        reports.append(rep)
    total = time.perf_counter() - t0
    combined = {"quick": args.quick, "seconds": round(total, 1), "passed": all(r.get("passed") for r in reports),
                "reports": reports}
    if args.out:
        Path(args.out).write_text(json.dumps(combined, indent=2))
    if args.json:
        print(json.dumps(combined, indent=2))
    else:
        lines, prefix = [], []
        for r in reports:
            for d in r.get("lines", []):
                lines.append(Line(**d))
                prefix.append(r["benchmark"])
            if r.get("error"):
                lines.append(Line("error", r["error"].splitlines()[-1] if r["error"] else "", passed=False))
                prefix.append(r["benchmark"])
        print(table(lines, prefix=prefix))
        print()
        for r in reports:
            for n in r.get("notes", []):
                print(f"- {r['benchmark']}: {n}")
        loads = {r["benchmark"]: r.get("loadavg", ["?"])[0] for r in reports}
        print(f"code measured: {reports[0].get('code', 'unknown') if reports else 'unknown'}")
        print(f"\n{'PASS' if combined['passed'] else 'FAIL'}: "
              f"{sum(1 for x in lines if x.passed)} of {sum(1 for x in lines if x.passed is not None)} goals met "
              f"in {total:.0f} s{' (--quick)' if args.quick else ''}; 1-minute load average after each: {loads}")
    return 0 if combined["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
