"""Is a process alive? One answer for the store (dead claim holders), runtimes and the platform daemon."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live process on this host; a zombie waiting for its reaper counts as gone."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # no /proc here: the signal check is all we have
    return stat.rsplit(b")", 1)[-1].split()[0] not in (b"Z", b"X")


def is_omx_worker(pid: int, team: str | None = None, worker: str | None = None) -> bool:
    """True if ``pid`` is alive and runs ``omx team worker`` (``omx`` in its command line, then ``worker``).

    With ``team`` and ``worker``: as that worker (``--team``/``--name``, else ``OMX_TEAM_WORKER`` in its
    environment), so a pid reused by another team's worker is not taken for this one. What cannot be
    read (no /proc, another user's environment) counts as a match: the safe side for a refusal.
    """
    if not pid_alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return True
    at = next((i for i, a in enumerate(args) if a == b"omx" or a.endswith(b"/omx")), None)
    if at is None or b"worker" not in args[at + 1:]:
        return False
    if team is None or worker is None:
        return True
    got_team, got_name = _option(args, b"--team"), _option(args, b"--name")
    if got_team is None or got_name is None:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except FileNotFoundError:
            return False
        except OSError:
            return True
        value = next((e.partition(b"=")[2] for e in env if e.startswith(b"OMX_TEAM_WORKER=")), b"")
        env_team, _, env_name = value.partition(b"/")
        got_team, got_name = got_team or env_team, got_name or env_name
    return got_team == team.encode() and got_name == worker.encode()


def _option(args: list[bytes], flag: bytes) -> bytes | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + b"="):
            return arg[len(flag) + 1:]
    return None
