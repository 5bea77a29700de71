"""The worker's head start on Codex: ``codex app-server`` spawned before the rest of omx is imported.

A fresh worker's first task waits on Codex's own start-up (its launcher, then the server) more than on
anything of omx's. The sooner the server is spawned, the more of that start-up overlaps the worker's
own (imports, WORKFLOW.md, the startup ACK, the claim, the worktree). So ``omx team worker`` calls
:func:`start` right after parsing its arguments, when only the interpreter, this module, ``subprocess``
and the lifeline are loaded (~30 ms into the process instead of ~80-100 ms), and the engine later
adopts the running server into its pool (:meth:`~omx.engine.runtimes.app_server.AppServerPool.adopt`).

This module also holds what that spawn must share with the engine so that both compute the same
server, and which must therefore load without the engine: the agent's environment
(:func:`agent_env`, whose rule lives in :mod:`omx.engine.envpolicy`), finding ``codex`` (:func:`which`),
the server's argv (:func:`app_server_argv`), the ``initialize`` handshake (:func:`handshake`), the
YAML-free guess that WORKFLOW.md runs the default runtime (:func:`runs_codex_app_server`) and the one
``Popen`` every agent child is started with (:func:`popen`). Its imports are the interpreter's own plus
``subprocess`` and the small env policy; ``re`` only for the guess, ``tomllib`` only when a Codex config
names a provider's variables.

A guess that turns out wrong once the settings are parsed (another runtime, a different argv or
environment) only costs a server started for nothing: the pool stops it, and starts the right one.
"""

from __future__ import annotations

import os
import subprocess

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from omx.engine.settings import RuntimeSettings

#: Codex options every omx run passes. Codex runs shell commands in a login shell by default, and a
#: distribution's /etc/profile resets PATH: the agent would lose the worker's PATH (the venv's
#: ``omx``, the project's tools).
KEEP_PATH = ["-c", "allow_login_shell=false"]
WORKFLOW_FILE = "WORKFLOW.md"
#: The ``initialize`` request's id on every app-server omx starts.
INIT_ID = 1


def agent_env(base: Mapping[str, str] | None = None, *, runtime: RuntimeSettings | None = None) -> dict[str, str]:
    """The agent's environment: the worker's, minus omx's own names and every credential it does not need.

    Passed on purpose: Codex's model keys, the variables the active Codex model provider reads (from
    ``$CODEX_HOME/config.toml`` and ``runtime.command``'s ``-c`` options) and ``runtime.passEnv``.
    See :mod:`omx.engine.envpolicy` for the rule.
    """
    from omx.engine import envpolicy

    env = os.environ if base is None else base
    command = runtime.command if runtime is not None else None
    allow = envpolicy.agent_allowed(env, command, runtime.pass_env if runtime is not None else ())
    return envpolicy.split_env(env, allow=allow).passed


def which(program: str, path: str | None) -> str | None:
    """``program`` on ``path`` (``os.pathsep``-separated; ``None``: the default search path), as
    :func:`shutil.which` finds it on POSIX: the first executable regular file."""
    if os.sep in program:
        return program if _executable(program) else None
    dirs = (path if path is not None else os.defpath).split(os.pathsep)
    seen = set()
    for d in dirs:
        if d in seen:
            continue
        seen.add(d)
        candidate = os.path.join(d, program)
        if _executable(candidate):
            return candidate
    return None


def _executable(path: str) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


#: The Codex CLI version omx is tested with (scripts/setup installs it; keep the two in step).
PINNED_CODEX = "0.169.0"
#: How to install it, for every "codex not found" message (a wheel user has no scripts/setup).
INSTALL_CODEX = f"npm install -g @openai/codex@{PINNED_CODEX}"


def find_codex(env: Mapping[str, str]) -> str | None:
    """The ``codex`` executable on the ``PATH`` of ``env`` (the agent's env, not ours), or ``None``."""
    return which("codex", env.get("PATH"))


def app_server_argv(env: Mapping[str, str]) -> list[str] | None:
    """``codex app-server`` as omx runs it by default, from ``env``'s PATH (``None``: no codex)."""
    codex = find_codex(env)
    return [codex, "app-server", *KEEP_PATH] if codex is not None else None


def handshake(version: str) -> bytes:
    """The ``initialize`` request (id :data:`INIT_ID`) and ``initialized`` notification, as sent.

    Written by hand rather than with :mod:`json` (not loaded yet when the head start runs):
    ``version`` is omx's own version string, plain ASCII with no quotes or backslashes.
    """
    if not version.isascii() or any(c in version for c in '"\\') or not version.isprintable():
        raise ValueError(f"unexpected version string {version!r}")
    info = f'{{"name": "omx", "title": "omx", "version": "{version}"}}'
    init = f'{{"clientInfo": {info}, "capabilities": {{"experimentalApi": true}}}}'
    return (f'{{"method": "initialize", "id": {INIT_ID}, "params": {init}}}\n'
            f'{{"method": "initialized", "params": {{}}}}\n').encode()


def popen(argv: Sequence[str], *, cwd: str | Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start an agent child: stdio on pipes, the leader of a new session (one ``killpg`` reaches all
    it starts), tracked by the lifeline so it dies with this worker. Raises :class:`OSError`."""
    from omx.engine.runtimes import lifeline

    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=lifeline.tagged(env),  # the keeper knows this child by its tag before it exists
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
        preexec_fn=lifeline.preexec_fn(),  # dies with the worker; None (a vfork) with the keeper
    )
    lifeline.track(proc.pid)  # its group is killed if this worker dies before it is reaped
    return proc


class EarlyServer:
    """A ``codex app-server`` started by :func:`start`, its handshake sent, waiting to be adopted.

    ``argv`` and ``env`` are what it was started with (the pool keeps it only for tasks that would
    start the same server). Whoever does not adopt it (:meth:`take`) calls :meth:`discard`.
    """

    def __init__(self, argv: list[str], env: dict[str, str], cwd: str, proc: subprocess.Popen[bytes]) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.proc = proc
        self.taken = False  # adopted or discarded: someone else's (or nobody's) to stop now

    def take(self) -> subprocess.Popen[bytes]:
        """The process, for the one who adopts it (once)."""
        if self.taken:
            raise RuntimeError("this server was adopted or discarded already")
        self.taken = True
        return self.proc

    def discard(self) -> None:
        """Not needed after all: stop and reap it (end of input first: Codex exits on its own).
        Nothing to do once it was adopted."""
        if self.taken:
            return
        self.taken = True
        from omx.engine.runtimes.process import ChildProcess

        ChildProcess(self.argv, cwd=self.cwd, env=self.env, proc=self.proc).stop(close_wait_s=1.0, grace_s=2.0)


def start(repo: str | Path, workflow: str | Path | None, version: str) -> EarlyServer | None:
    """Spawn the default ``codex app-server`` for a worker in ``repo`` now, if WORKFLOW.md plainly runs
    it and ``codex`` is on the agent's PATH; ``None`` otherwise (or if it cannot be started: the first
    task then says why). ``version``: omx's, for the handshake."""
    cwd = os.path.realpath(os.path.expanduser(repo))
    if not runs_codex_app_server(workflow, cwd):
        return None
    env = agent_env()
    argv = app_server_argv(env)
    if argv is None or not os.path.isabs(argv[0]):
        return None  # no codex, or one looked up relative to each task's worktree: not shareable
    try:
        proc = popen(argv, cwd=cwd, env=env)
    except (OSError, ValueError):
        return None
    server = EarlyServer(argv, env, cwd, proc)
    try:
        assert proc.stdin is not None
        proc.stdin.write(handshake(version))
        proc.stdin.flush()
    except (OSError, ValueError):
        server.discard()  # died at once: the pool starts its own, and reports what goes wrong
        return None
    return server


def runs_codex_app_server(path: str | Path | None, repo: str | Path) -> bool:
    """A guess, without YAML, that the workflow runs the default ``codex app-server`` (no ``command``).

    For a worker that wants to start Codex before it has parsed WORKFLOW.md: true when the front
    matter, comments aside, names no runtime command, no other kind and no Symphony ``codex``
    section. A wrong guess costs a server started for nothing, never a wrong one: the parsed settings
    decide what runs.
    """
    if path is None:
        path = os.path.join(repo, WORKFLOW_FILE)
        if not os.path.isfile(path):
            return True  # the built-in default
    try:
        with open(os.path.expanduser(path), encoding="utf-8-sig") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        return False
    lines = text.splitlines()
    if not lines or lines[0].rstrip() != "---":
        return True  # no front matter: default settings
    end = next((i for i, line in enumerate(lines[1:], 1) if line.rstrip() in ("---", "...")), len(lines))
    import re

    front = re.sub(r"(?:^|\s)#.*", "", "\n".join(lines[1:end]))
    if re.search(r"command|codex-exec|\bcodex['\"]?\s*:", front):
        return False
    return all(kind == "codex-app-server" for kind in re.findall(r"\bkind['\"]?\s*:\s*['\"]?([\w-]*)", front))
