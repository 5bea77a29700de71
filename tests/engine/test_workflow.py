"""WORKFLOW.md: defaults, camelCase and Symphony keys, warnings, named errors, untrusted text as data."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from omx.engine.data.default_workflow import DEFAULT_WORKFLOW_MD
from omx.engine.settings import Settings
from omx.engine.workflow import (
    Workflow,
    WorkflowError,
    WorkflowExists,
    WorkflowInvalid,
    WorkflowNotFound,
    WorkflowRenderError,
    WorkflowTemplateError,
    WorkflowYamlError,
    init_workflow,
    load_workflow,
)
from omx.errors import EXIT_BAD_INPUT, EXIT_REFUSED

TASK = {"id": "7", "subject": "Fix the parser", "description": "It breaks on tabs.", "status": "in_progress",
        "files": ["parser.py"]}
VARS = {"task": TASK, "team": "alpha", "worker": "worker-1", "attempt": 1, "session": None}


def write(tmp_path: Path, text: str, name: str = "WORKFLOW.md") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def load(tmp_path: Path, text: str) -> Workflow:
    return load_workflow(write(tmp_path, text), tmp_path)


# --- defaults --------------------------------------------------------------------------------------


def test_no_file_means_the_built_in_default(tmp_path: Path) -> None:
    wf = load_workflow(None, tmp_path)
    assert wf.path is None
    assert wf.settings == Settings()
    assert wf.warnings == []
    prompt = wf.render(**VARS)
    assert "Task 7: Fix the parser" in prompt
    assert "It breaks on tabs." in prompt
    assert "- parser.py" in prompt
    assert "attempt" not in prompt  # the retry note is for attempts after the first
    assert "This is attempt 2" in wf.render(**{**VARS, "attempt": 2})


def test_default_template_documents_the_real_defaults() -> None:
    # Every commented "key: value" in the template is the setting's actual default.
    settings = Settings().model_dump(by_alias=True)
    section = None
    checked = 0
    for line in DEFAULT_WORKFLOW_MD.split("\n---\n")[0].splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            section = line[:-1]
        elif line.startswith("  # ") and ": " in line and section in settings:
            key, _, rest = line[4:].partition(": ")
            if key in settings[section] and not key[0].isupper():
                value = rest.split("#")[0].strip()
                expected = settings[section][key]
                shown = "null" if expected is None else str(expected).lower() if isinstance(expected, bool) \
                    else str(expected)
                if key == "command":
                    continue
                if key == "baseRef":
                    assert value == "HEAD"
                else:
                    assert value == shown, (section, key)
                checked += 1
    assert checked >= 18


def test_repo_workflow_is_picked_up(tmp_path: Path) -> None:
    write(tmp_path, "---\nagent:\n  maxRetryAttempts: 2\n---\nDo {{ task.subject }}\n")
    wf = load_workflow(None, tmp_path)
    assert wf.path == tmp_path / "WORKFLOW.md"
    assert wf.settings.agent.max_retry_attempts == 2
    assert wf.render(**VARS) == "Do Fix the parser\n"


def test_no_front_matter_and_empty_front_matter(tmp_path: Path) -> None:
    plain = load(tmp_path, "Just a prompt for {{ worker }}.\n")
    assert plain.settings == Settings()
    assert plain.render(**VARS) == "Just a prompt for worker-1.\n"
    empty = load(tmp_path, "---\n---\nHi\n")
    assert empty.settings == Settings()
    assert empty.template_line == 3
    assert empty.render(**VARS) == "Hi\n"


# --- keys ------------------------------------------------------------------------------------------


def test_camel_case_keys(tmp_path: Path) -> None:
    wf = load(tmp_path, """
        ---
        agent:
          maxConcurrentAgents: 3
          maxRetryAttempts: 2
          maxRetryBackoffMs: 60000
          retryBaseMs: 500
        polling:
          pollIntervalMs: 5000
        worktree:
          mode: branch
          root: /srv/omx
          baseRef: origin/main
        runtime:
          kind: codex-exec
          command: [codex, exec, --json]
          approvalPolicy: on-request
          sandbox: read-only
          model: gpt-5
          turnTimeoutMs: 1000
          stallTimeoutMs: 0
          readTimeoutMs: 2000
        hooks:
          afterCreate: |
            uv sync
          beforeRun: make lint
          timeoutMs: 9000
        ---
        Go.
        """)
    s = wf.settings
    assert wf.warnings == []
    assert (s.agent.max_concurrent_agents, s.agent.max_retry_attempts, s.agent.retry_base_ms) == (3, 2, 500)
    assert s.agent.max_retry_backoff_ms == 60000
    assert s.polling.poll_interval_ms == 5000
    assert (s.worktree.mode, s.worktree.root, s.worktree.base_ref) == ("branch", "/srv/omx", "origin/main")
    assert s.runtime.kind == "codex-exec"
    assert s.runtime.command == ["codex", "exec", "--json"]
    assert (s.runtime.approval_policy, s.runtime.sandbox, s.runtime.model) == ("on-request", "read-only", "gpt-5")
    assert (s.runtime.turn_timeout_ms, s.runtime.stall_timeout_ms, s.runtime.read_timeout_ms) == (1000, 0, 2000)
    assert s.hooks.after_create == "uv sync\n"
    assert s.hooks.before_run == "make lint"
    assert s.hooks.timeout_ms == 9000


def test_our_snake_case_attribute_names_work_too(tmp_path: Path) -> None:
    wf = load(tmp_path, """
        ---
        agent: {max_retry_attempts: 4}
        worktree: {base_ref: main}
        runtime: {approval_policy: untrusted, command: "my-agent --flag 'two words'", kind: command}
        hooks: {before_remove: "echo bye"}
        ---
        """)
    assert wf.warnings == []
    assert wf.settings.agent.max_retry_attempts == 4
    assert wf.settings.worktree.base_ref == "main"
    assert wf.settings.runtime.approval_policy == "untrusted"
    assert wf.settings.runtime.command == ["my-agent", "--flag", "two words"]
    assert wf.settings.hooks.before_remove == "echo bye"


SYMPHONY = """
---
tracker:
  kind: linear
  project_slug: "acme-web-1f2e3d"
  active_states:
    - Todo
    - In Progress
  terminal_states: [Done, Cancelled]
polling:
  interval_ms: 5000
workspace:
  root: ~/code/symphony-workspaces
hooks:
  timeout_ms: 900000
  after_create: |
    set -eu
    git fetch origin main
  before_run: ./scripts/prepare.sh
  after_run: ./scripts/report.sh
  before_remove: |
    echo removing
agent:
  max_concurrent_agents: 10
  max_turns: 20
  max_retry_backoff_ms: 120000
codex:
  command: codex app-server proxy --sock "${CODEX_HOME:-$HOME/.codex}/app-server-control.sock"
  model: gpt-5.5
  reasoning_effort: xhigh
  approval_policy: never
  thread_sandbox: danger-full-access
  turn_sandbox_policy:
    type: dangerFullAccess
  turn_timeout_ms: 1800000
  read_timeout_ms: 60000
  stall_timeout_ms: 120000
---

You are working on a Linear ticket `{{ issue.identifier }}`

{% if attempt %}This is retry attempt #{{ attempt }}.{% endif %}

Title: {{ issue.title }}
Current status: {{ issue.state }}
Description:
{% if issue.description %}
{{ issue.description }}
{% else %}
No description provided.
{% endif %}
"""


def test_symphony_workflow_resolves_with_warnings(tmp_path: Path) -> None:
    wf = load(tmp_path, SYMPHONY)
    s = wf.settings
    assert s.polling.poll_interval_ms == 5000
    assert s.worktree.root == "~/code/symphony-workspaces"
    assert s.hooks.timeout_ms == 900000
    assert s.hooks.after_create == "set -eu\ngit fetch origin main\n"
    assert s.hooks.before_run == "./scripts/prepare.sh"
    assert s.hooks.after_run == "./scripts/report.sh"
    assert s.hooks.before_remove == "echo removing\n"
    assert s.agent.max_concurrent_agents == 10
    assert s.agent.max_retry_backoff_ms == 120000
    assert s.runtime.kind == "codex-app-server"
    assert s.runtime.command == [
        "codex", "app-server", "proxy", "--sock", "${CODEX_HOME:-$HOME/.codex}/app-server-control.sock"
    ]
    assert s.runtime.model == "gpt-5.5"
    assert s.runtime.approval_policy == "never"
    assert s.runtime.sandbox == "danger-full-access"
    timeouts = (s.runtime.turn_timeout_ms, s.runtime.read_timeout_ms, s.runtime.stall_timeout_ms)
    assert timeouts == (1800000, 60000, 120000)
    text = "\n".join(wf.warnings)
    path = str(tmp_path / "WORKFLOW.md")
    assert f"{path}:2: 'tracker' section ignored" in text
    assert f"{path}:24: Symphony setting 'agent.max_turns' is not supported" in text
    assert "'codex.reasoning_effort' is not supported" in text
    assert "'codex.turn_sandbox_policy' is not supported" in text
    assert "codex.command uses shell syntax" in text
    assert "Symphony's 'issue'" in text
    assert len(wf.warnings) == 6, wf.warnings
    prompt = wf.render(**{**VARS, "attempt": 2})
    assert "Linear ticket `task-7`" in prompt
    assert "retry attempt #2" in prompt
    assert "Title: Fix the parser" in prompt
    assert "Current status: in_progress" in prompt
    assert "It breaks on tabs." in prompt


def test_symphony_plain_command_and_map_approval_policy(tmp_path: Path) -> None:
    wf = load(tmp_path, """
        ---
        codex:
          command: codex app-server
          approval_policy:
            reject: {sandbox_approval: true, rules: true}
        ---
        """)
    assert wf.warnings == []
    assert wf.settings.runtime.command == ["codex", "app-server"]
    assert wf.settings.runtime.approval_policy == {"reject": {"sandbox_approval": True, "rules": True}}


def test_our_keys_win_over_symphony_keys(tmp_path: Path) -> None:
    wf = load(tmp_path, """
        ---
        codex:
          thread_sandbox: danger-full-access
        runtime:
          sandbox: read-only
        polling:
          interval_ms: 1000
          pollIntervalMs: 2000
        ---
        """)
    assert wf.settings.runtime.sandbox == "read-only"
    assert wf.settings.polling.poll_interval_ms == 2000
    text = "\n".join(wf.warnings)
    assert "'codex.thread_sandbox' ignored: 'runtime.sandbox' sets the same setting" in text
    assert "'polling.interval_ms' ignored: 'polling.pollIntervalMs' sets the same setting" in text


def test_unknown_keys_warn_with_dotted_path_and_line(tmp_path: Path) -> None:
    wf = load(tmp_path, """
        ---
        agent:
          maxConcurentAgents: 4
        telemetry:
          enabled: true
        hooks:
          afterCreate: "true"
          onFailure: "echo"
        ---
        """)
    path = tmp_path / "WORKFLOW.md"
    assert wf.warnings == [
        f"{path}:3: unknown key 'agent.maxConcurentAgents' ignored",
        f"{path}:4: unknown key 'telemetry' ignored",
        f"{path}:8: unknown key 'hooks.onFailure' ignored",
    ]
    assert wf.settings.agent.max_concurrent_agents == 1
    assert wf.settings.hooks.after_create == "true"


def test_null_values_mean_the_default(tmp_path: Path) -> None:
    wf = load(tmp_path, "---\npolling:\n  pollIntervalMs:\nhooks:\n---\n")
    assert wf.settings == Settings()


# --- named errors ------------------------------------------------------------------------------------


def error_of(tmp_path: Path, text: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        load(tmp_path, text)
    return info.value


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowNotFound) as info:
        load_workflow(tmp_path / "nope.md", tmp_path)
    assert info.value.code == "workflow_not_found"
    assert str(tmp_path / "nope.md") in info.value.message
    with pytest.raises(WorkflowNotFound):
        load_workflow(tmp_path, tmp_path)  # a directory


def test_yaml_error_names_the_file_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, "---\nagent:\n  maxRetryAttempts: 1\n   bad: indent: here\n---\nbody\n")
    assert isinstance(err, WorkflowYamlError)
    assert err.code == "workflow_yaml_error"
    assert err.message.startswith(f"{tmp_path / 'WORKFLOW.md'}:4: invalid YAML")
    assert err.details["line"] == 4


def test_unclosed_front_matter(tmp_path: Path) -> None:
    err = error_of(tmp_path, "---\nagent: {}\nno closing line\n")
    assert isinstance(err, WorkflowYamlError)
    assert "never closed" in err.message


@pytest.mark.parametrize("front", ["- a\n- b\n", "just a string\n", "42\n"])
def test_front_matter_must_be_a_map(tmp_path: Path, front: str) -> None:
    err = error_of(tmp_path, f"---\n{front}---\n")
    assert isinstance(err, WorkflowInvalid)
    assert err.code == "workflow_invalid"
    assert "must be a map" in err.message
    assert str(tmp_path / "WORKFLOW.md") in err.message


@pytest.mark.parametrize(
    ("front", "needle"),
    [
        ("agent:\n  maxConcurrentAgents: many\n", ":3: agent.maxConcurrentAgents: Input should be a valid integer"),
        ("agent:\n  maxConcurrentAgents: 0\n", ":3: agent.maxConcurrentAgents: Input should be greater than"),
        ("worktree:\n  mode: per-task\n", ":3: worktree.mode: Input should be 'task', 'branch' or 'repository'"),
        ("codex:\n  turn_timeout_ms: soon\n", ":3: codex.turn_timeout_ms: Input should be a valid integer"),
        ("hooks:\n  afterCreate: [a, b]\n", ":3: hooks.afterCreate: Input should be a valid string"),
        ("hooks: echo hi\n", ":2: hooks: expected a map of settings, got a string"),
        ("runtime:\n  command: 'unbalanced \"quote'\n", ":3: runtime.command: cannot split"),
        ("runtime:\n  command: [1, 2]\n", ":3: runtime.command: expected a command string or a list of strings"),
    ],
)
def test_wrong_types_are_named_errors(tmp_path: Path, front: str, needle: str) -> None:
    err = error_of(tmp_path, f"---\n{front}---\n")
    assert isinstance(err, WorkflowInvalid)
    assert err.code == "workflow_invalid"
    assert f"{tmp_path / 'WORKFLOW.md'}{needle}" in err.message


def test_template_syntax_error_names_the_file_line(tmp_path: Path) -> None:
    err = error_of(tmp_path, "---\nagent: {}\n---\nline 4\nline 5 {% for x in %}\n{% endfor %}\n")
    assert isinstance(err, WorkflowTemplateError)
    assert err.code == "workflow_template_error"
    assert err.message.startswith(f"{tmp_path / 'WORKFLOW.md'}:5: template syntax error")


def test_undefined_variable_at_render_is_named(tmp_path: Path) -> None:
    wf = load(tmp_path, "---\n---\nHello {{ worker }}\nTicket {{ ticket.number }}\n")
    assert any("'ticket'" in w and "rendering will fail" in w for w in wf.warnings)
    with pytest.raises(WorkflowRenderError) as info:
        wf.render(**VARS)
    assert info.value.code == "workflow_render_error"
    assert info.value.message.startswith(f"{tmp_path / 'WORKFLOW.md'}:4: undefined variable: 'ticket' is undefined")
    wf2 = load(tmp_path, "{{ task.subject }}\n{{ task.estimate }}\n")
    expected = r":2: undefined variable: .*'estimate'.*\(in: \{\{ task.estimate \}\}\)"
    with pytest.raises(WorkflowRenderError, match=expected):
        wf2.render(**VARS)


def test_sandbox_blocks_unsafe_attributes(tmp_path: Path) -> None:
    wf = load(tmp_path, "{{ task.__class__.__mro__ }}\n")
    with pytest.raises(WorkflowRenderError):
        wf.render(**VARS)


def test_error_codes_and_exit_statuses() -> None:
    for cls, code in [(WorkflowNotFound, "workflow_not_found"), (WorkflowYamlError, "workflow_yaml_error"),
                      (WorkflowInvalid, "workflow_invalid"), (WorkflowTemplateError, "workflow_template_error"),
                      (WorkflowRenderError, "workflow_render_error")]:
        assert cls.code == code
        assert cls.exit_status == EXIT_BAD_INPUT
        assert cls.__doc__ and cls.__doc__.startswith("Raised when")
    assert WorkflowExists.code == "workflow_exists"
    assert WorkflowExists.exit_status == EXIT_REFUSED


# --- untrusted text ------------------------------------------------------------------------------------

HOSTILE = [
    "{{ 7*7 }}",
    "{% for x in range(3) %}{{ x }}{% endfor %}",
    "{# hidden #}{{ task.__class__ }}",
    "$(touch pwned) `id`; rm -rf / && echo ${HOME}",
    "{% raw %}{{ still }}{% endraw %}",
    "---\nagent:\n  maxConcurrentAgents: 64\n---",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_untrusted_task_text_is_rendered_verbatim(tmp_path: Path, text: str) -> None:
    wf = load_workflow(None, tmp_path)
    task = {**TASK, "subject": text, "description": text, "files": [text]}
    prompt = wf.render(**{**VARS, "task": task})
    assert prompt.count(text) == 3
    assert "49" not in prompt
    assert "012" not in prompt
    assert not (tmp_path / "pwned").exists()


# --- init ------------------------------------------------------------------------------------------------


def test_init_writes_a_commented_workflow_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "WORKFLOW.md"
    assert init_workflow(path) == path
    text = path.read_text()
    assert text == DEFAULT_WORKFLOW_MD
    assert text.count("#") > 20  # commented
    wf = load_workflow(path, tmp_path)
    assert wf.settings == Settings()
    assert wf.warnings == []
    path.write_text("mine\n")
    with pytest.raises(WorkflowExists) as info:
        init_workflow(path)
    assert info.value.code == "workflow_exists"
    assert path.read_text() == "mine\n"
    init_workflow(path, force=True)
    assert path.read_text() == DEFAULT_WORKFLOW_MD


def test_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "WORKFLOW.md"
    path.write_bytes("\ufeff---\r\nagent:\r\n  maxRetryAttempts: 3\r\n---\r\nHi {{ worker }}\r\n".encode())
    wf = load_workflow(path, tmp_path)
    assert wf.settings.agent.max_retry_attempts == 3
    assert wf.render(**VARS).strip() == "Hi worker-1"
