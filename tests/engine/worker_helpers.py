"""A team in a temporary git repository, and ``omx team worker`` processes to run it.

The worker tests drive the installed ``omx`` as real subprocesses against a real repository, a real
state root and a WORKFLOW.md whose runtime is a small bash script (or the real Codex). The scripts
record what they saw (their pid, timestamps, the prompt) into ``rig.out`` — named to them by
``$WL_OUT``, which reaches the agent because it is not an ``OMX_*`` variable.

Run as a program, this module is a *spy worker*: ``python worker_helpers.py spy <token-file> <omx
args>`` runs ``omx`` in-process after wrapping the file source so that every claim token it gets is
appended to ``<token-file>`` (the only way a test can later show that a dead worker's token is refused).

Example::

    rig = make_rig(tmp_path, workers=["worker-1"])
    write_workflow(rig, runtime={"kind": "command", "command": ["bash", "-c", "echo done"]})
    rig.store.create_task(rig.team, "one")
    proc = start_worker(rig, "worker-1", "--until-empty")
    assert proc.wait(60) == 0, proc.output()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
OMX = str(Path(sys.executable).with_name("omx"))
TEAM = "alpha"
PROMPT_BODY = "Task {{ task.id }}: {{ task.subject }}\n\n{{ task.description }}\n"
#: Generous: this machine has two cores shared with other work (load averages above 10 happen).
DEADLINE_S = 60.0


@dataclass
class Rig:
    """Paths and environment of one test team. ``env`` is the worker processes' whole environment."""

    tmp: Path
    repo: Path
    root: Path
    worktrees: Path
    omx_home: Path
    out: Path
    env: dict[str, str]
    team: str = TEAM
    procs: list[WorkerProc] = field(default_factory=list)

    def close(self) -> None:
        """Kill every worker this rig started that is still running (a failed test leaves none behind)."""
        for proc in self.procs:
            proc.kill()

    @property
    def store(self) -> Any:
        from omx.state.filestore import FileStore

        return FileStore(self.root)

    def task(self, task_id: str | int) -> Any:
        return self.store.read_task(self.team, task_id)

    def events(self, *types: str, task_id: str | None = None) -> list[Any]:
        page = self.store.read_events(self.team, limit=100_000, types=list(types) or None, task_id=task_id)
        return list(page.events)

    def lines(self, name: str) -> list[str]:
        path = self.out / name
        return path.read_text().splitlines() if path.exists() else []


def git(cwd: Path, *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def make_rig(tmp: Path, *, workers: Iterable[str] = ("worker-1", "worker-2"), lease_ms: int = 60_000,
             extra_env: dict[str, str] | None = None) -> Rig:
    """A repository with one commit, a team ``alpha`` with ``workers``, and an isolated environment.

    The environment ignores the machine's git configuration, has its own ``OMX_HOME`` (so the
    machine-wide agent slots are this test's alone) and no inherited ``OMX_TEAM_*`` variables.
    """
    from omx.state.filestore import FileStore

    gitconfig = tmp / "gitconfig"
    gitconfig.write_text("[init]\n\tdefaultBranch = main\n[commit]\n\tgpgsign = false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMX_", "GIT_"))}
    env.update(GIT_CONFIG_GLOBAL=str(gitconfig), GIT_CONFIG_NOSYSTEM="1", OMX_HOME=str(tmp / "omx-home"),
               WL_OUT=str(tmp / "out"), PYTHONUNBUFFERED="1")
    env.update(extra_env or {})
    repo = tmp / "project"
    repo.mkdir()
    for args in (("init", "-q", "-b", "main"), ("config", "user.name", "Repo Owner"),
                 ("config", "user.email", "owner@example.invalid")):
        _git_env(repo, env, *args)
    (repo / "README.md").write_text("hello\n")
    _git_env(repo, env, "add", "README.md")
    _git_env(repo, env, "commit", "-q", "-m", "first")
    (tmp / "out").mkdir()
    rig = Rig(tmp=tmp, repo=repo.resolve(), root=tmp / "state", worktrees=tmp / "worktrees",
              omx_home=tmp / "omx-home", out=tmp / "out", env=env)
    FileStore(rig.root).create_team(TEAM, goal="test the worker", workers=list(workers), lease_ms=lease_ms)
    return rig


def _git_env(cwd: Path, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, f"git {' '.join(args)}: {proc.stderr}"
    return proc.stdout.strip()


def write_workflow(rig: Rig, *, runtime: dict[str, Any], agent: dict[str, Any] | None = None,
                   hooks: dict[str, Any] | None = None, body: str = PROMPT_BODY,
                   integration: dict[str, Any] | None = None, mode: str = "task") -> Path:
    """Write and commit ``WORKFLOW.md`` (front matter as JSON, which is YAML) with the worktree root in tmp."""
    front: dict[str, Any] = {"runtime": runtime, "worktree": {"mode": mode, "root": str(rig.worktrees)}}
    if agent:
        front["agent"] = agent
    if hooks:
        front["hooks"] = hooks
    if integration:
        front["integration"] = integration
    path = rig.repo / "WORKFLOW.md"
    path.write_text(f"---\n{json.dumps(front, indent=2)}\n---\n{body}")
    _git_env(rig.repo, rig.env, "add", "WORKFLOW.md")
    _git_env(rig.repo, rig.env, "commit", "-q", "-m", "workflow")
    return path


def bash(script: str) -> list[str]:
    """``runtime.command`` for a bash script (argv: no shell parses the task text, bash runs our script)."""
    return ["bash", "-c", script]


class WorkerProc:
    """One ``omx team worker`` subprocess; its output goes to files (a pipe nobody reads could block it)."""

    def __init__(self, rig: Rig, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.stdout_path = rig.tmp / f"{name}-{time.monotonic_ns()}.out"
        self.stderr_path = self.stdout_path.with_suffix(".err")
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                         cwd=rig.repo)
        self.pid = self.proc.pid

    def wait(self, timeout: float = DEADLINE_S) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} still running after {timeout}s\n{self.output()}") from None

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def output(self) -> str:
        out = self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""
        err = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return f"--- {self.name} stdout ---\n{out}--- {self.name} stderr ---\n{err}"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""


def start_worker(rig: Rig, name: str, *flags: str, env: dict[str, str] | None = None,
                 spy_tokens: Path | None = None, poll_ms: int = 100, by_env: bool = False) -> WorkerProc:
    """Start ``omx team worker --team alpha --name <name> --root … --repo …`` (``-v``: logs on stderr).

    ``by_env``: name the worker and the state root the way a leader's pane does instead, with
    ``OMX_TEAM_WORKER=alpha/<name>`` and ``OMX_TEAM_STATE_ROOT``.
    """
    full_env = {**rig.env, **(env or {})}
    args = ["team", "worker", "--repo", str(rig.repo), "--poll-ms", str(poll_ms), "-v", *flags]
    if by_env:
        full_env.update(OMX_TEAM_WORKER=f"{rig.team}/{name}", OMX_TEAM_STATE_ROOT=str(rig.root))
    else:
        args[2:2] = ["--team", rig.team, "--name", name, "--root", str(rig.root)]
    argv = [sys.executable, __file__, "spy", str(spy_tokens), *args] if spy_tokens else [OMX, *args]
    proc = WorkerProc(rig, name, argv, full_env)
    rig.procs.append(proc)
    return proc


def wait_until(predicate: Callable[[], Any], timeout: float = DEADLINE_S, what: str = "condition",
               proc: WorkerProc | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail naming ``what`` after ``timeout``.

    With ``proc``, fail at once (with its output) if that worker exits first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            value = predicate()
            if value:
                return value
            raise AssertionError(f"{proc.name} exited ({proc.proc.returncode}) before {what}\n{proc.output()}")
        if time.monotonic() >= deadline:
            extra = f"\n{proc.output()}" if proc else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(0.02)


def hold_for(seconds: float, invariant: Callable[[], Any], what: str) -> int:
    """Check ``invariant`` continuously for ``seconds`` (the passing of time *is* the test); count checks."""
    deadline = time.monotonic() + seconds
    checks = 0
    while time.monotonic() < deadline:
        assert invariant(), f"{what} stopped holding after {checks} checks"
        checks += 1
        time.sleep(0.02)
    return checks


def in_progress_by(rig: Rig, task_id: str, worker: str) -> bool:
    t = rig.task(task_id)
    return t.status == "in_progress" and t.owner == worker


def pid_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (gone, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


class FakeServerLog:
    """What ``fake_pooled_app_server.py`` logged to ``$FAKE_APP_SERVER_LOG`` (``path``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.exists() else []

    def pids(self) -> list[int]:
        """The pids of the fake app-servers started so far, in start order."""
        return [r["pid"] for r in self.records() if "started" in r]

    def got(self, method: str) -> list[dict[str, Any]]:
        """Every ``method`` message the servers received, in order."""
        return [r["got"] for r in self.records() if r.get("got", {}).get("method") == method]


def fake_server_records(rig: Rig) -> list[dict[str, Any]]:
    """What the fake app-servers of ``rig`` logged (``FAKE_APP_SERVER_LOG`` = ``<tmp>/fake.log``)."""
    return FakeServerLog(rig.tmp / "fake.log").records()


def fake_server_pids(rig: Rig) -> list[int]:
    """The pids of the fake app-servers started so far, in start order."""
    return FakeServerLog(rig.tmp / "fake.log").pids()


def kill_quietly(pids: Iterable[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def intervals(lines: Sequence[str]) -> list[tuple[float, float, str]]:
    """``start <t> <tag>`` / ``end <t> <tag>`` lines (written by the agent scripts) as (start, end, tag)."""
    starts: dict[str, float] = {}
    out = []
    for line in lines:
        kind, t, tag = line.split(" ", 2)
        if kind == "start":
            starts[tag] = float(t)
        elif kind == "end":
            out.append((starts.pop(tag), float(t), tag))
    assert not starts, f"runs that never ended: {starts}"
    return sorted(out)


#: Records ``start``/``end`` lines with the task's worktree name; waits for ``$1`` seconds in between.
TIMED_SCRIPT = (
    'tag=$(basename "$PWD"); echo "start $EPOCHREALTIME $tag" >> "$WL_OUT/runs"; '
    'sleep "${WL_SLEEP:-0.3}"; echo "end $EPOCHREALTIME $tag" >> "$WL_OUT/runs"; echo "ran $tag"'
)


# --- the spy worker ------------------------------------------------------------------------------


def _spy(token_file: str, argv: list[str]) -> int:
    """Run ``omx argv`` in this process, appending ``<task id> <token>`` to ``token_file`` at each claim."""
    sys.path.insert(0, str(ROOT))
    from omx.cli import main
    from omx.engine import filesource

    original = filesource.FileTeamSource._claimed

    def claimed(self: Any, r: Any) -> Any:
        with open(token_file, "a", encoding="utf-8") as handle:
            handle.write(f"{r.task.id} {r.token}\n")
            handle.flush()
            os.fsync(handle.fileno())
        return original(self, r)

    filesource.FileTeamSource._claimed = claimed  # type: ignore[method-assign]
    return main(argv)


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "spy":
        sys.exit("usage: worker_helpers.py spy <token-file> <omx arguments>")
    sys.exit(_spy(sys.argv[2], sys.argv[3:]))
