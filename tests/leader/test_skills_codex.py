"""The $team, $swarm and $worker skills, as the real Codex sees and uses them (fake model on 127.0.0.1).

(a) ``omx setup --codex-home`` installs the skills where Codex finds them: the model is told about all
    three, with their front-matter descriptions, under "Available skills".
(b) A real Codex session with ``OMX_TEAM_WORKER`` set, driven by a scripted model that plays ``$worker``
    by running the installed SKILL.md's own ``omx team api`` command lines (placeholders filled in from
    what the earlier calls printed): ACK the leader, go idle, claim-next, go working, do the work and
    commit it, complete the task with the claim token, go idle. A skill whose commands are wrong, are
    not valid JSON, or name fields the API refuses fails this test.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from omx.setup import SKILLS, skills_source
from omx.state.filestore import FileStore
from tests.fakes.fake_model import FakeModel, RecordedRequest, Turn, fail, message, shell, write_codex_home
from tests.leader.conftest import OMX, api, run_omx

pytestmark = pytest.mark.codex

#: Codex 0.169's ``exec_command`` returns a session id instead of the output after this long (its default
#: ``yield_time_ms``); a skill command that may block longer loses its answer.
CODEX_SHELL_YIELD_MS = 10_000


def front_matter(name: str) -> dict[str, str]:
    text = (skills_source() / name / "SKILL.md").read_text()
    head = text.split("---\n")[1]
    return dict(line.split(": ", 1) for line in head.strip().splitlines())


def install_skills(home: Path) -> None:
    proc = run_omx("setup", "--codex-home", str(home))
    assert proc.returncode == 0, proc.stderr
    assert all((home / "skills" / name / "SKILL.md").is_file() for name in SKILLS)


def codex_exec(codex: Path, prompt: str, cwd: Path, env: dict[str, str], timeout: float = 50
               ) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    """One ``codex exec --json`` turn; returns the process and its JSON events."""
    argv = [str(codex), "exec", "--json", "--skip-git-repo-check", "--sandbox", "danger-full-access",
            # Without this Codex runs commands in a login shell, and Debian's /etc/profile resets PATH,
            # dropping the virtualenv that holds `omx` (the $worker skill says what to do about it).
            "-c", "allow_login_shell=false", "-"]
    proc = subprocess.run(argv, input=prompt, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, events


def skills_text(request: RecordedRequest) -> str:
    """What Codex told the model about skills: the ``instructions`` and the developer messages.

    (Codex 0.169 sends no top-level ``instructions`` to an unknown model; the skills list is a
    developer message.)
    """
    return "\n".join([request.instructions, *request.developer_texts()])


def test_setup_skills_reach_the_model_under_available_skills(
    tmp_path: Path, fake_model: FakeModel, codex_bin: Path, agent_env: dict[str, str]
) -> None:
    home = write_codex_home(tmp_path / "codex-home", fake_model.base_url)
    install_skills(home)
    fake_model.script(message("Hello."))
    work = tmp_path / "work"
    work.mkdir()

    proc, events = codex_exec(codex_bin, "Say hello.", work, {**agent_env, "CODEX_HOME": str(home)})

    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [e["type"] for e in events][-1] == "turn.completed"
    [request] = fake_model.requests
    text = skills_text(request)
    assert "### Available skills" in text, text[:2000]
    listed = text.split("### Available skills", 1)[1]
    for name in SKILLS:
        meta = front_matter(name)
        assert meta["name"] == name
        line = re.search(rf"^- {name}: (.*)$", listed, re.MULTILINE)
        assert line, f"skill {name} is not listed under Available skills"
        assert line.group(1).startswith(meta["description"]), line.group(1)
        assert f"{name}/SKILL.md" in line.group(1)


_HEREDOC = re.compile(r"omx team api ([a-z-]+) --input - --json <<'JSON'\n(.*?)\nJSON", re.S)


def skill_api_calls() -> list[tuple[str, str, str]]:
    """Every ``omx team api OP`` call in the three skills with its JSON (``--input '<json>'`` or a quoted
    heredoc), as (skill, operation, json text)."""
    calls = []
    for name in SKILLS:
        text = (skills_source() / name / "SKILL.md").read_text()
        calls += [(name, op, js) for op, js in re.findall(r"omx team api ([a-z-]+) --input '([^']*)'", text)]
        calls += [(name, op, js) for op, js in _HEREDOC.findall(text)]
    return calls


def test_every_team_api_call_in_the_skills_is_accepted_as_written() -> None:
    from omx.cli.api import all_operations
    from omx.state.apispec import parse_input

    operations = all_operations()
    calls = skill_api_calls()
    assert {name for name, _, _ in calls} == {"team", "worker"}, "a skill lost (or gained) its api examples"
    assert {"prepare-task-worktree", "finish-task", "update-worker-heartbeat", "read-config"} <= \
        {op for _, op, _ in calls}
    for name, op, js in calls:
        assert op in operations, f"${name}: no operation {op!r}"
        payload = json.loads(js)  # placeholders such as "<id>" are strings where the API wants strings
        spec = operations[op]
        parse_input(op, spec.fields, payload, allow_extra=spec.allow_extra)  # raises InvalidInput by name


def test_the_worker_skill_renews_by_the_lease_and_quotes_free_text() -> None:
    text = (skills_source() / "worker" / "SKILL.md").read_text()
    assert "data.config.lease_ms" in text and "every third of it" in text
    # Every call that carries free text (summary, error, reason, body) is a quoted heredoc: an apostrophe
    # in a summary cannot break it.
    for op, js in re.findall(r"omx team api ([a-z-]+) --input '([^']*)'", text):
        payload = json.loads(js)
        assert not {"summary", "error", "reason"} & set(payload), op
        assert "body" not in payload or payload["body"] == "ACK: ME initialized", op
    assert "OMX_TEAM_WORKER=alpha/worker-2 codex exec '$worker'" in text  # how a session is started


def test_skill_waits_fit_in_one_codex_shell_call() -> None:
    waits = [(name, int(v)) for name, _, js in skill_api_calls()
             for v in re.findall(r'"(?:wait_ms|timeout_ms)":\s*(\d+)', js)]
    assert {name for name, _ in waits} == {"team", "worker"}, "update this test: the skills' waits moved"
    assert all(ms < CODEX_SHELL_YIELD_MS for _, ms in waits), waits


# --- (b) a scripted model plays $worker through the real Codex ----------------------------------


def skill_commands(request: RecordedRequest) -> list[str]:
    """The ``omx team api`` commands of the $worker SKILL.md that Codex injected into the conversation
    (a quoted heredoc command with its JSON line and terminator)."""
    for text in request.user_texts():
        if "<name>worker</name>" in text:
            lines = [line.strip() for line in text.splitlines()]
            out = []
            for i, line in enumerate(lines):
                if line.startswith("omx team api ") and line.endswith("<<'JSON'"):
                    out.append("\n".join(lines[i:i + 3]))
                elif line.startswith("omx team api "):
                    out.append(line)
            return out
    raise AssertionError("Codex did not inject the $worker skill into the conversation")


def api_reply(output: str) -> dict[str, Any]:
    """The ``omx team api`` JSON envelope inside a shell call's output (Codex wraps it in a header)."""
    for line in reversed(output.splitlines()):
        if line.startswith('{"schema_version"'):
            reply: dict[str, Any] = json.loads(line)
            return reply
    raise ValueError(f"no omx team api answer in: {output[-800:]!r}")


def fill(template: str, values: dict[str, Any]) -> str:
    """A skill command with TEAM, ME and the ``<...>`` placeholders filled in, re-quoted for the shell."""
    m = re.fullmatch(r"omx team api ([a-z-]+) --input '(.*)' --json", template)
    here = re.fullmatch(r"omx team api ([a-z-]+) --input - --json <<'JSON'\n(.*)\nJSON", template, re.S)
    assert m or here, f"a skill command is neither --input '<json>' nor a quoted heredoc: {template}"
    op, js = (m or here).groups()  # type: ignore[union-attr]
    payload = json.loads(js)  # the skill's JSON must be valid as written

    def sub(v: Any) -> Any:
        if isinstance(v, list):
            return [x for item in v for x in (values[item] if item in values and isinstance(values[item], list)
                                               else [sub(item)])]
        if isinstance(v, dict):
            return {k: sub(x) for k, x in v.items()}
        if not isinstance(v, str):
            return v
        if v in values:
            return values[v]
        v = re.sub(r"\bTEAM\b", values["TEAM"], v)
        v = re.sub(r"\bME\b", values["ME"], v)
        assert "<" not in v, f"unfilled placeholder {v!r} in {template}"
        return v

    filled = json.dumps(sub(payload))
    if here:
        return f"omx team api {op} --input - --json <<'JSON'\n{filled}\nJSON"
    return f"omx team api {op} --input {shlex.quote(filled)} --json"


class WorkerPlayer:
    """The fake model's side of a $worker session: one shell call per request, decided from the history.

    Each request carries every earlier call's output, so the step is the number of outputs so far.
    Whatever goes wrong is recorded in :attr:`problems` and ends the turn with a failure.
    """

    FILE = "calc.py"
    SOURCE = "def add(a, b):\n    return a + b\n"
    SUMMARY = "Added calc.add in calc.py; it's tested by hand."  # an apostrophe: the heredoc carries it

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.problems: list[str] = []
        self.steps: list[Callable[[list[str], RecordedRequest], Turn]] = [
            self.who_am_i, self.read_config, self.ack, self.identity, self.go_idle, self.heartbeat, self.claim,
            self.go_working, self.prepare, self.do_the_work, self.finish, self.go_idle, self.done,
        ]
        self.no_reply = {1, 10}  # outputs that are not an omx team api answer (printenv, the work)

    def __call__(self, request: RecordedRequest) -> Turn:
        outputs = request.function_call_outputs()
        step = len(outputs)
        try:
            if step > 1 and step not in self.no_reply:  # an omx team api call: it must have said ok
                reply = api_reply(outputs[-1])
                if not reply["ok"]:
                    raise AssertionError(f"the previous call was refused: {reply['error']}")
            return self.steps[step](outputs, request)
        except Exception as exc:
            self.problems.append(f"step {step}: {exc}")
            return fail(f"worker player: {exc}")

    def command(self, request: RecordedRequest, op: str, must_contain: str = "") -> Turn:
        for line in skill_commands(request):
            if line.startswith(f"omx team api {op} ") and must_contain in line:
                return shell(fill(line, self.values))
        raise AssertionError(f"the $worker skill has no {op} command containing {must_contain!r}")

    def who_am_i(self, outputs: list[str], request: RecordedRequest) -> Turn:
        skill_commands(request)  # fails early if the skill was not injected
        return shell("printenv OMX_TEAM_WORKER")

    def read_config(self, outputs: list[str], request: RecordedRequest) -> Turn:
        team, worker = outputs[-1].strip().splitlines()[-1].split("/")
        self.values.update(TEAM=team, ME=worker)
        return self.command(request, "read-config")

    def ack(self, outputs: list[str], request: RecordedRequest) -> Turn:
        self.values["lease_ms"] = api_reply(outputs[-1])["data"]["config"]["lease_ms"]
        return self.command(request, "send-message", "ACK")

    def identity(self, outputs: list[str], request: RecordedRequest) -> Turn:
        return self.command(request, "write-worker-identity")

    def go_idle(self, outputs: list[str], request: RecordedRequest) -> Turn:
        return self.command(request, "write-worker-status", '"state":"idle"')

    def heartbeat(self, outputs: list[str], request: RecordedRequest) -> Turn:
        return self.command(request, "update-worker-heartbeat", '"turn_count":0')

    def claim(self, outputs: list[str], request: RecordedRequest) -> Turn:
        return self.command(request, "claim-next")

    def go_working(self, outputs: list[str], request: RecordedRequest) -> Turn:
        data = api_reply(outputs[-1])["data"]  # the token is shown only in this answer
        assert data["task"] is not None, f"claim-next found no task: {data}"
        self.values.update({"<id>": data["task"]["id"], "<token>": data["claimToken"]})
        return self.command(request, "write-worker-status", '"state":"working"')

    def prepare(self, outputs: list[str], request: RecordedRequest) -> Turn:
        return self.command(request, "prepare-task-worktree")

    def do_the_work(self, outputs: list[str], request: RecordedRequest) -> Turn:
        data = api_reply(outputs[-1])["data"]
        assert data["conflicts"] == [] and data["feedback"] == "", data
        self.values["path"] = data["path"]
        return shell(f"cd {shlex.quote(data['path'])} && printf %s {shlex.quote(self.SOURCE)} > {self.FILE}")

    def finish(self, outputs: list[str], request: RecordedRequest) -> Turn:
        assert "Process exited with code 0" in outputs[-1], outputs[-1]
        self.values["<what you did, one paragraph>"] = self.SUMMARY
        return self.command(request, "finish-task", '"summary"')

    def done(self, outputs: list[str], request: RecordedRequest) -> Turn:
        return message(f"Task {self.values['<id>']} completed; I am idle.")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_codex_plays_the_worker_skill_against_a_real_team(
    tmp_path: Path, codex_bin: Path, agent_env: dict[str, str]
) -> None:
    state = tmp_path / "state"
    api(state, "create-team", team_name="demo", workers=2, lease_ms=60_000, goal="a calculator")
    api(state, "create-task", team_name="demo", subject="Add calc.add", description="calc.py: add(a, b)",
        files=["calc.py"], priority=5)
    api(state, "create-task", team_name="demo", subject="Add calc.sub", depends_on=["1"])
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "worker@example.invalid")
    git(repo, "config", "user.name", "omx worker")
    (repo / "README.md").write_text("calc\n")
    (repo / "WORKFLOW.md").write_text(f"---\nworktree:\n  root: {tmp_path / 'worktrees'}\n---\nTask\n")
    git(repo, "add", "README.md", "WORKFLOW.md")
    git(repo, "commit", "-q", "-m", "start")

    player = WorkerPlayer()
    with FakeModel(fallback=player) as model:
        home = write_codex_home(tmp_path / "codex-home", model.base_url)
        install_skills(home)
        env = {**agent_env, "CODEX_HOME": str(home), "OMX_TEAM_WORKER": "demo/worker-1",
               "OMX_TEAM_STATE_ROOT": str(state)}
        proc, events = codex_exec(codex_bin, "$worker\nTake one task, do it, report it, then stop.", repo, env)

    assert not player.problems, player.problems
    assert proc.returncode == 0, proc.stderr[-2000:]
    commands = [e["item"] for e in events if e["type"] == "item.completed"
                and e["item"].get("type") == "command_execution"]
    assert len(commands) == 12 and all(c["exit_code"] == 0 for c in commands), commands
    assert "<name>worker</name>" in "\n".join(model.requests[0].user_texts()), "$worker did not inject the skill"

    store = FileStore(state)
    task = store.read_task("demo", "1")
    assert task.status == "completed" and task.owner == "worker-1" and task.claim is None
    result = task.result
    assert result["summary"] == WorkerPlayer.SUMMARY
    assert result["branch"] == "omx/demo/task-1" and result["workspace"] == player.values["path"]
    assert result["integration"]["status"] == "merged" and result["integration"]["files"] == ["calc.py"]
    # The work is on the integration branch, and never touched the repository's own checkout.
    assert git(repo, "show", "omx/demo/integration:calc.py") + "\n" == WorkerPlayer.SOURCE
    assert not (repo / "calc.py").exists() and git(repo, "status", "--porcelain") == ""
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD") == "main"

    acks = [m for m in store.mailbox_list("demo", "leader-fixed", include_delivered=True)
            if m.from_worker == "worker-1"]
    assert [m.body for m in acks] == ["ACK: worker-1 initialized"]

    evs = store.read_events("demo").events
    lifecycle = [(e.type, e.worker) for e in evs if e.task_id == "1" and e.type not in
                 ("worker_state_changed", "task_renewed")]
    assert lifecycle == [("task_created", None), ("task_claimed", "worker-1"), ("task_completed", "worker-1")]
    states = [e.data["state"] for e in evs if e.type == "worker_state_changed" and e.worker == "worker-1"]
    assert states == ["idle", "working", "idle"]
    assert store.read_status("demo", "worker-1").state == "idle"
    assert store.read_heartbeat("demo", "worker-1") is not None
    assert store.read_identity("demo", "worker-1").role == "codex-session"
    summary = store.summary("demo")
    assert summary["counts"]["completed"] == 1 and summary["counts"]["pending"] == 1  # task 2 is ready now


def test_omx_team_start_with_codex_agents_runs_a_session_per_worker(
    tmp_path: Path, codex_bin: Path, agent_env: dict[str, str]
) -> None:
    """`omx team start --agents codex`: the worker is a real Codex session playing $worker; the leader
    monitors, reports and integrates exactly as with its own workers."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "owner@example.invalid")
    git(repo, "config", "user.name", "repo owner")
    (repo / "README.md").write_text("calc\n")
    (repo / "WORKFLOW.md").write_text(f"---\nworktree:\n  root: {tmp_path / 'worktrees'}\n"
                                      "runtime:\n  sandbox: danger-full-access\n---\nTask\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "start")
    plan = tmp_path / "plan.md"
    plan.write_text("- Add calc.add in calc.py\n")

    player = WorkerPlayer()
    with FakeModel(fallback=player) as model:
        home = write_codex_home(tmp_path / "codex-home", model.base_url)
        env = {**agent_env, "CODEX_HOME": str(home), "OMX_HOME": str(tmp_path / "omx-home")}
        without = subprocess.run([str(OMX), "team", "start", "calc", "--workers", "1", "--plan", str(plan),
                                  "--agents", "codex", "--team", "nope"], cwd=repo, env=env, capture_output=True,
                                 text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert without.returncode == 2 and "the $worker skill is not installed" in without.stderr
        assert "run: omx setup" in without.stderr
        install_skills(home)
        r = subprocess.run([str(OMX), "team", "start", "calc", "--workers", "1", "--plan", str(plan),
                            "--agents", "codex", "--team", "calc", "--json"], cwd=repo, env=env,
                           capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)

    assert not player.problems, player.problems
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["counts"]["completed"] == 1
    assert "task 1 claimed by worker-1" in r.stderr and "task 1 completed by worker-1" in r.stderr
    assert git(repo, "show", "omx/calc/integration:calc.py") + "\n" == WorkerPlayer.SOURCE
    assert git(repo, "status", "--porcelain") == ""  # the user's checkout was not worked in
    log = (repo / ".omx/state/team/calc/logs/worker-1.log").read_text()
    assert '"type":"turn.completed"' in log.replace(" ", "")  # the session's own events, in its log
