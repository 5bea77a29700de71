"""Nothing from task data controls the user's terminal (issue 10): real leader, real workers, the real CLI.

Task subjects, a goal, agent summaries, failure reasons, event reasons and worker status fields full of
escape sequences go through ``omx team start`` (progress lines), ``status``, ``events``, ``report`` and a
worker's log. Every byte meant for a person shows them escaped; ``--json`` keeps them exact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from omx.terminal import visible

OMX = str(Path(sys.executable).parent / "omx")
#: Clear the screen, home the cursor, set the title; a C1 CSI; a right-to-left override; rich markup
#: that would print a hyperlink's escape sequence.
EVIL = "\x1b[2J\x1b[H\x1b]0;PWNED\x07 \x9b31m \u202eevil [link=http://x.invalid]click[/link]"
RAW = ("\x1b", "\x07", "\x9b", "\u202e")
AGENT = """\
import os, sys
evil = {evil!r}
if os.environ["OMX_TASK_ID"] == "2":
    sys.stderr.write("broken: " + evil + "\\n")
    sys.exit(3)
print("summary " + evil)
"""


def run(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([OMX, *args], cwd=repo, capture_output=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


def assert_no_raw_controls(output: bytes, where: str) -> str:
    text = output.decode("utf-8")
    found = [c for c in RAW if c in text]
    assert not found, f"{where}: raw {found!r} in {text[-1500:]!r}"
    assert "\r" not in text and "\x00" not in text
    return text


def test_hostile_task_text_is_shown_escaped_everywhere(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OMX_")}
    env.update(OMX_HOME=str(tmp_path / "omx-home"), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@x")
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT.format(evil=EVIL))
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "WORKFLOW.md").write_text(
        "---\nruntime:\n  kind: command\n  command: " + json.dumps([sys.executable, str(agent)]) + "\n"
        f"worktree:\n  root: {tmp_path / 'wt'}\n---\nTask {{{{ task.id }}}}\n")
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-qm", "init"], check=True, env=env)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"tasks": [{"subject": f"one {EVIL}"}, {"subject": f"two {EVIL}"}]}))

    started = run(repo, "team", "start", f"goal {EVIL}", "--workers", "1", "--plan", str(plan), "--team", "evil",
                  env=env)
    assert started.returncode == 1, started.stdout + started.stderr  # task 2 fails on purpose
    progress = assert_no_raw_controls(started.stdout, "team start")
    assert "task 2 FAILED by worker-1" in progress and "\\x1b[2J\\x1b[H\\x1b]0;PWNED\\x07" in progress

    api = ["team", "api", "write-worker-status", "--input", json.dumps(
        {"team_name": "evil", "worker": "worker-1", "state": "idle", "reason": EVIL})]
    assert run(repo, *api, env=env).returncode == 0
    api = ["team", "api", "append-event", "--input", json.dumps({"team_name": "evil", "type": "note", "reason": EVIL})]
    assert run(repo, *api, env=env).returncode == 0

    for args in (("team", "status"), ("team", "events"), ("team", "report")):
        out = run(repo, *args, "--team", "evil", env={**env, "COLUMNS": "300"})
        assert out.returncode == 0, out.stderr
        text = assert_no_raw_controls(out.stdout + out.stderr, " ".join(args))
        assert "\\x1b[2J" in text, f"{args}: the escapes are not shown: {text[-1500:]}"
        assert "PWNED" in text and "[link=http://x.invalid]click[/link]" in text  # shown, not interpreted
    report = run(repo, "team", "report", "--team", "evil", env={**env, "COLUMNS": "300"}).stdout.decode()
    assert visible(f"summary {EVIL}")[:40] in report  # the agent's summary, escaped

    # --json stays exact.
    tasks = json.loads(run(repo, "team", "report", "--team", "evil", "--json", env=env).stdout)["tasks"]
    assert [t["subject"] for t in tasks] == [f"one {EVIL}", f"two {EVIL}"]
    assert tasks[0]["summary"] == f"summary {EVIL}" and EVIL in tasks[1]["error"]
    events = [json.loads(line) for line in run(repo, "team", "events", "--team", "evil", "--json", env=env)
              .stdout.decode().splitlines()]
    assert {"type": "note", "reason": EVIL}.items() <= events[-1].items()
    status = json.loads(run(repo, "team", "status", "--team", "evil", "--json", env=env).stdout)
    assert status["goal"] == f"goal {EVIL}"


def test_a_workers_log_lines_are_escaped(tmp_path: Path) -> None:
    from tests.engine.worker_helpers import make_rig, start_worker, write_workflow

    rig = make_rig(tmp_path, workers=["worker-1"])
    agent = tmp_path / "agent.py"
    agent.write_text(AGENT.format(evil=EVIL))
    write_workflow(rig, runtime={"kind": "command", "command": [sys.executable, str(agent)]})
    rig.store.create_task(rig.team, f"one {EVIL}")
    rig.store.create_task(rig.team, f"two {EVIL}")
    rig.store.send_message(rig.team, "leader-fixed", "worker-1", f"mail {EVIL}")
    try:
        proc = start_worker(rig, "worker-1", "--until-empty")  # -v: every step logged to stderr
        assert proc.wait(60) == 0, proc.output()
    finally:
        rig.close()
    log = proc.stderr()
    assert not [c for c in RAW if c in log], log[-2000:]
    escaped = visible(EVIL)
    assert f"mail: leader-fixed: mail {escaped}" in log  # the mail and the failure are logged, escaped
    assert f"task-2: failed (command exited with status 3; stderr:\\nbroken: {escaped})" in log


def test_the_live_table_shows_worker_fields_escaped(tmp_path: Path) -> None:
    """The live table needs a terminal; rendered here by rich into a buffer, as Live would draw it."""
    import io

    from rich.console import Console

    from omx.state.filestore import FileStore
    from omx.team.leader import Progress

    store = FileStore(tmp_path / "state")
    store.create_team("evil", workers=["worker-1"])
    store.write_status("evil", "worker-1", "working", current_task_id="1", reason=EVIL)
    summary = store.summary("evil")
    summary["workers"][0]["state"] = EVIL  # a status.json written by hand: any text at all
    view = Progress(store, "evil", live=False, on_line=lambda line: None)
    buf = io.StringIO()
    Console(file=buf, width=300, color_system=None, force_terminal=False).print(view._table(summary))
    assert not [c for c in RAW if c in buf.getvalue()], buf.getvalue()
    assert "\\x1b[2J" in buf.getvalue() and "[link=http://x.invalid]" in buf.getvalue()
