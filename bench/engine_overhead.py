"""Engine overhead: one task through ``omx team worker --until-empty`` vs the same Codex turn driven directly.

Every variant runs the real ``codex app-server`` against the same fake model on 127.0.0.1 (one shell
call, then a final message), in interleaved rounds in a shuffled order, so that noise on this shared
machine hits all alike:

* ``omx worker``: ``omx team worker --until-empty`` as a fresh process, one pending task: process start,
  startup ACK, claim, ``git worktree add``, prompt, the turn, commit, transition, shutdown.
* ``omx worker, 4 tasks``: the same process with four tasks: the difference to one task, per task, is the
  steady-state cost of a task in a worker that is already running (what a long-lived worker pays).
* ``omx worker, in-process (profiled)``: ``run_team_worker()`` called in this process, with timers around
  each phase: the worker without its process start.
* ``runtime, in-process``: ``AppServerRuntime().run()`` from this process in a plain directory (no store,
  no worktree, no process start of our own): the turn and nothing else.
* ``runtime, fresh process``: the same call from a fresh ``python`` process (adds interpreter start and
  the engine's imports: what any Python driver of Codex pays).
* ``bare JSON-RPC client``: a 40-line hand-written client in this process (the floor of talking to
  ``codex app-server`` at all).

Goal (issue): median(omx worker) / median(runtime, in-process) <= 1.2. A profile of an in-process worker
run (timers wrapped around each phase) and the CLI's start-up cost say where the rest of the time goes.

The worker keeps one ``codex app-server`` for all its tasks and starts it right after parsing its
arguments, before it imports the engine (``omx.engine.early``), so Codex's own start-up overlaps the
rest of the worker's (imports, WORKFLOW.md, startup ACK, claim, worktree): the per-task figure has no
server start at all, the one-task figure pays the worker's start-up before that spawn (interpreter,
``omx.cli.team_worker``, ``omx.engine.early``). The in-process profile has no head start (its
imports are done): there the pool spawns the server itself.

omx's modules are byte-compiled first (``compileall``), as pip does when it installs omx: with
``PYTHONDONTWRITEBYTECODE=1`` in the environment (as on the machines these benchmarks run on) every
fresh worker would otherwise compile omx's source again (~50-100 ms), while its dependencies are
compiled. ``--no-compile`` measures without.

    .venv/bin/python bench/engine_overhead.py [--quick] [--json] [--samples N] [--no-compile]
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import OMX, PY, REPO, Report, f_ms, f_ratio, median, parse_args, pct

GOAL_RATIO = 1.2
BATCH = 4  # tasks in the steady-state variant
WARMUP_ROUNDS = 1
CODEX = REPO / ".tools" / "codex" / "node_modules" / ".bin" / "codex"
PROMPT = "Create out.txt with the letter x in it."

DIRECT_SCRIPT = """
import sys, threading, json
from pathlib import Path
from omx.engine.runtimes.app_server import AppServerRuntime
from omx.engine.runtimes.base import RunRequest
from omx.engine.settings import RuntimeSettings
import os
settings = RuntimeSettings(kind="codex-app-server")
r = AppServerRuntime().run(RunRequest(sys.argv[2], Path(sys.argv[1]), dict(os.environ), settings),
                           lambda e: None, threading.Event())
sys.exit(0 if r.status == "completed" else 1)
"""


# --- the fake model and Codex's environment --------------------------------------------------------


def brain(request: Any) -> Any:
    from tests.fakes.fake_model import message, shell

    # Appends: every task of a batch changes the file (a task that changes nothing is not integrated).
    return message("done") if request.function_call_outputs() else shell("printf x >> out.txt")


def codex_env(tmp: Path, base_url: str) -> dict[str, str]:
    from tests.fakes.fake_model import write_codex_home

    gitconfig = tmp / "gitconfig"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "CODEX_", "OMX_", "GIT_"))}
    env.update(CODEX_HOME=str(write_codex_home(tmp / "codex-home", base_url)),
               PATH=f"{CODEX.parent}{os.pathsep}{env.get('PATH', '')}", GIT_CONFIG_GLOBAL=str(gitconfig),
               GIT_CONFIG_NOSYSTEM="1", OMX_HOME=str(tmp / "omx-home"))
    return env


def git(cwd: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, env=env)


def team_fixture(d: Path, env: dict[str, str], tasks: int = 1) -> tuple[Path, Path]:
    """A repository with WORKFLOW.md (default runtime, worktrees under ``d``) and a team with ``tasks`` tasks."""
    from omx.state.filestore import FileStore

    repo = d / "repo"
    repo.mkdir(parents=True)
    git(repo, env, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("hello\n")
    front = {"worktree": {"root": str(d / "worktrees")}, "runtime": {"kind": "codex-app-server"}}
    (repo / "WORKFLOW.md").write_text(f"---\n{json.dumps(front)}\n---\n{PROMPT}\n")
    git(repo, env, "add", ".")
    git(repo, env, "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-q", "-m", "first")
    root = d / "state"
    store = FileStore(root)
    store.create_team("bench", workers=["worker-1"])
    for i in range(tasks):
        store.create_task("bench", f"make out.txt ({i + 1})")
    return repo, root


# --- the variants -----------------------------------------------------------------------------------


def run_worker(d: Path, env: dict[str, str], tasks: int = 1) -> float:
    from omx.state.filestore import FileStore

    repo, root = team_fixture(d, env, tasks)
    # Default --poll-ms: what a user gets. The worker must leave as soon as the team is drained.
    argv = [OMX, "team", "worker", "--team", "bench", "--name", "worker-1", "--root", str(root), "--repo", str(repo),
            "--until-empty"]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    store = FileStore(root)
    for i in range(1, tasks + 1):
        task = store.read_task("bench", i)
        if proc.returncode != 0 or task.status != "completed" or not (task.result or {}).get("commit"):
            raise RuntimeError(f"worker run failed ({proc.returncode}, {task.status}, {task.error}): "
                               f"{proc.stderr[-1500:]}")
    return dt


def run_worker_batch(d: Path, env: dict[str, str]) -> float:
    return run_worker(d, env, BATCH)


def run_direct(d: Path, env: dict[str, str]) -> float:
    from omx.engine.runtimes.app_server import AppServerRuntime
    from omx.engine.runtimes.base import RunRequest
    from omx.engine.settings import RuntimeSettings

    d.mkdir(parents=True)
    settings = RuntimeSettings(kind="codex-app-server")
    t0 = time.perf_counter()
    result = AppServerRuntime().run(RunRequest(PROMPT, d, env, settings), lambda e: None, threading.Event())
    dt = time.perf_counter() - t0
    if result.status != "completed" or not (d / "out.txt").exists():
        raise RuntimeError(f"direct run: {result.status} {result.error}")
    return dt


def run_direct_process(d: Path, env: dict[str, str]) -> float:
    d.mkdir(parents=True)
    t0 = time.perf_counter()
    proc = subprocess.run([PY, "-c", DIRECT_SCRIPT, str(d), PROMPT], capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(REPO)})
    dt = time.perf_counter() - t0
    if proc.returncode != 0 or not (d / "out.txt").exists():
        raise RuntimeError(f"direct process run failed: {proc.stderr[-1500:]}")
    return dt


def run_bare(d: Path, env: dict[str, str]) -> float:
    """The least a client can do: spawn, handshake, start a thread and a turn, answer, wait for the end."""
    d.mkdir(parents=True)
    t0 = time.perf_counter()
    p = subprocess.Popen([str(CODEX), "app-server"], cwd=d, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    assert p.stdin is not None
    assert p.stdout is not None

    def send(msg: dict[str, Any]) -> None:
        p.stdin.write(json.dumps(msg).encode() + b"\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]

    def until(pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for line in p.stdout:  # type: ignore[union-attr]
            msg = json.loads(line)
            if "method" in msg and "id" in msg:  # a server request: accept approvals, refuse the rest
                if "requestApproval" in msg["method"]:
                    send({"id": msg["id"], "result": {"decision": "accept"}})
                else:
                    send({"id": msg["id"], "error": {"code": -32601, "message": "unsupported"}})
            elif pred(msg):
                return msg
        raise RuntimeError("codex app-server closed stdout")

    info = {"name": "bare", "title": "bare", "version": "0"}
    send({"method": "initialize", "id": 1, "params": {"clientInfo": info, "capabilities": {"experimentalApi": True}}})
    until(lambda m: m.get("id") == 1)
    send({"method": "initialized", "params": {}})
    send({"method": "thread/start", "id": 2, "params": {"cwd": str(d), "approvalPolicy": "never",
                                                       "sandbox": "workspace-write"}})
    thread = until(lambda m: m.get("id") == 2)["result"]["thread"]["id"]
    send({"method": "turn/start", "id": 3, "params": {"threadId": thread, "input": [{"type": "text", "text": PROMPT}]}})
    done = until(lambda m: m.get("method") == "turn/completed")
    p.stdin.close()
    p.wait()
    dt = time.perf_counter() - t0
    if done["params"]["turn"]["status"] != "completed" or not (d / "out.txt").exists():
        raise RuntimeError(f"bare run: {done}")
    return dt


# --- where the worker's time goes ---------------------------------------------------------------------


@contextlib.contextmanager
def phase_timers() -> Iterator[dict[str, float]]:
    """Wrap the worker's phases (in this process) with timers; yield {phase: seconds} (summed)."""
    from omx.engine import filesource, runner, team_worker
    from omx.engine.runtimes import app_server
    from omx.engine.workflow import Workflow

    spent: dict[str, float] = defaultdict(float)
    targets = [
        (filesource.FileTeamSource, "__init__", "store: open team"),
        (filesource.FileTeamSource, "start", "store: startup ACK, identity, status"),
        (filesource.FileTeamSource, "acquire", "store: claim-next"),
        (filesource.FileTeamSource, "emit", "store: activity events"),
        (filesource.FileTeamSource, "complete", "store: transition to completed"),
        (filesource.FileTeamSource, "set_status", "store: worker status"),
        (filesource.FileTeamSource, "stop", "store: stop (status done, last beat)"),
        (filesource.FileTeamSource, "drained", "store: drained check"),
        (filesource.FileTeamSource, "shutdown_requested", "store: shutdown-request checks"),
        (filesource.FileTeamSource, "read_mail", "store: mailbox reads"),
        (team_worker, "load_workflow", "WORKFLOW.md load (settings)"),
        (team_worker, "start_app_servers", "app-server pool: spawn the first server"),
        (Workflow, "compile", "WORKFLOW.md template compile"),
        (runner, "prepare_workspace", "git worktree add"),
        (runner, "commit_changes", "git commit"),
        (runner, "ensure_branch", "integration: the branch's tip (worktree base)"),
        (runner, "integrate_attempt", "integration: merge into the integration branch"),
        (Workflow, "render", "prompt render"),
        (app_server.AppServerRuntime, "run", "codex turn (runtime.run)"),
        (app_server.AppServerPool, "run", "codex turn (pool.run: waits for the server, thread, turn)"),
        (app_server.AppServerPool, "close", "app-server pool: stop the server"),
    ]
    saved = []
    for owner, name, label in targets:
        original = getattr(owner, name)
        saved.append((owner, name, original))

        def timed(*a: Any, __f: Any = original, __label: str = label, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return __f(*a, **kw)
            finally:
                spent[__label] += time.perf_counter() - t0

        setattr(owner, name, timed)
    try:
        yield spent
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


PROFILES: list[dict[str, float]] = []


def run_worker_in_process(d: Path, env: dict[str, str]) -> float:
    prof = profile_worker(d, env)
    PROFILES.append(prof)
    return prof["total (in-process run_team_worker)"]


def profile_worker(d: Path, env: dict[str, str]) -> dict[str, float]:
    """One in-process worker run with phase timers; also 'total'. The env is applied to os.environ for it."""
    from omx.engine.team_worker import run_team_worker
    from omx.state.filestore import FileStore

    repo, root = team_fixture(d, env)
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        with phase_timers() as spent:
            t0 = time.perf_counter()
            report = run_team_worker(store=FileStore(root), team="bench", worker="worker-1", repo=repo,
                                     until_empty=True, poll_ms=50, install_signals=False)
            spent["total (in-process run_team_worker)"] = time.perf_counter() - t0
    finally:
        os.environ.clear()
        os.environ.update(old)
    if report.completed != 1:
        raise RuntimeError(f"profiled run: {report}")
    return dict(spent)


def process_start(env: dict[str, str], rounds: int) -> dict[str, float]:
    """Median wall time of: bare interpreter; what a worker imports before and after it spawns Codex."""
    commands = {
        "python -c pass": [PY, "-c", "pass"],
        "python: the worker's imports before it spawns the app-server": [
            PY, "-c", "import omx.cli.team_worker, omx.engine.early, omx.engine.runtimes.lifeline"],
        "python: all the worker's imports (+ jinja2, runner, store source, loop)": [
            PY, "-c", "import omx.cli.team_worker, omx.engine.team_worker, omx.engine.runtimes.app_server, yaml, "
                      "jinja2.sandbox, omx.engine.runner, omx.engine.filesource, omx.engine.worker"],
        "omx team worker --help (typer: not on the worker's path)": [OMX, "team", "worker", "--help"],
    }
    out: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(rounds):
        for name, argv in commands.items():
            t0 = time.perf_counter()
            subprocess.run(argv, capture_output=True, env=env, check=True)
            out[name].append(time.perf_counter() - t0)
    return {k: median(v) for k, v in out.items()}


def byte_compile() -> str:
    """Byte-compile the omx package being measured (where ``import omx`` finds it); say where."""
    import omx

    where = Path(omx.__file__).resolve().parent
    subprocess.run([PY, "-m", "compileall", "-q", str(where)], check=True, capture_output=True)
    return str(where)


def main() -> int:
    args = parse_args(__doc__.splitlines()[0], extra=[(("--samples",), {"type": int, "default": None}),
                                                      (("--no-compile",), {"action": "store_true"})])
    samples = args.samples or (5 if args.quick else 9)
    rep = Report("engine_overhead", "Engine overhead: one task through `omx team worker` vs the bare Codex turn",
                 args.quick)
    if not CODEX.exists():
        rep.notes.append(f"skipped: no Codex binary at {CODEX} (run scripts/setup)")
        return rep.emit(args.json)
    from tests.fakes.fake_model import FakeModel

    compiled = None if args.no_compile else byte_compile()
    variants: dict[str, Callable[[Path, dict[str, str]], float]] = {
        "omx worker": run_worker,
        f"omx worker, {BATCH} tasks": run_worker_batch,
        "omx worker, in-process (profiled)": run_worker_in_process,
        "runtime, in-process": run_direct,
        "runtime, fresh process": run_direct_process,
        "bare JSON-RPC client": run_bare,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    tmp = Path(tempfile.mkdtemp(prefix="omx-bench-overhead-"))
    try:
        with FakeModel(fallback=brain) as model:
            env = codex_env(tmp, model.base_url)
            rng = random.Random(20_251_121)
            n = 0
            for rnd in range(WARMUP_ROUNDS + samples):
                order = list(variants)
                rng.shuffle(order)
                for name in order:
                    n += 1
                    dt = variants[name](tmp / f"s{n}", env)
                    if rnd >= WARMUP_ROUNDS:
                        times[name].append(dt * 1000)
                if rnd < WARMUP_ROUNDS:
                    PROFILES.clear()
            profiles = list(PROFILES)
            starts = process_start(env, 3 if args.quick else 5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base = median(times["runtime, in-process"])
    worker = median(times["omx worker"])
    for name in variants:
        m = median(times[name])
        label = f"{name} (median of {len(times[name])})"
        shown = f"{f_ms(m)} (p90 {f_ms(pct(times[name], 90))})"
        if name == "omx worker":
            rep.goal(label, shown, f"<= {GOAL_RATIO}x runtime", m / base <= GOAL_RATIO, f_ms(base), f_ratio(m / base))
        else:
            rep.info(label, shown, f_ms(base), f_ratio(m / base))
    rep.info("omx worker minus runtime, in-process", f_ms(worker - base))
    fresh = median(times["runtime, fresh process"])
    rep.info("omx worker vs runtime, fresh process", f_ms(worker), f_ms(fresh), f_ratio(worker / fresh))
    per_task = (median(times[f"omx worker, {BATCH} tasks"]) - worker) / (BATCH - 1)
    rep.info(f"omx worker: each further task in a running worker ({BATCH} vs 1)", f_ms(per_task), f_ms(base),
             f_ratio(per_task / base))
    phases: dict[str, list[float]] = defaultdict(list)
    for prof in profiles:
        for k, v in prof.items():
            phases[k].append(v * 1000)
    for k in sorted(phases, key=lambda k: -median(phases[k])):
        rep.info(f"  profile: {k}", f_ms(median(phases[k])))
    for k, v in starts.items():
        rep.info(f"  start-up: {k}", f_ms(v * 1000))
    rep.notes.append(f"{samples} interleaved rounds (shuffled order) after {WARMUP_ROUNDS} warm-up round; fresh "
                     "directories every sample; one fake model (127.0.0.1) answering a shell call then a message")
    rep.notes.append(f"omx byte-compiled first ({compiled})" if compiled else
                     "--no-compile: omx's modules as found (with PYTHONDONTWRITEBYTECODE=1, compiled at every start)")
    rep.notes.append("profile: medians of in-process worker runs with timers around each phase (phases overlap: "
                     "the heartbeat and renewal threads run beside them); start-up: fresh processes")
    rep.data = {"samples_ms": {k: [round(x, 1) for x in v] for k, v in times.items()},
                "profile_ms": {k: [round(x, 1) for x in v] for k, v in phases.items()},
                "startup_ms": {k: round(v * 1000, 1) for k, v in starts.items()}}
    return rep.emit(args.json)


if __name__ == "__main__":
    sys.exit(main())
