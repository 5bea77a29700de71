'''The built-in WORKFLOW.md: used when a repository has none, and written by ``omx workflow init``.

Every setting is shown commented out at its default, so the file documents itself; the prompt body
below the front matter is a Jinja2 template rendered once per attempt.
'''

from __future__ import annotations

DEFAULT_WORKFLOW_MD = """\
---
# WORKFLOW.md: how omx workers run tasks in this repository.
# The front matter (between the --- lines) is YAML; everything below it is the prompt each agent
# receives, a Jinja2 template. Uncomment a key to change it; the values shown are the defaults.
# OpenAI Symphony's snake_case keys (polling.interval_ms, codex.command, hooks.after_create, ...)
# are read too. Run `omx workflow check` after editing.

agent:
  # maxConcurrentAgents: 1        # agents one worker runs at once
  # maxRetryAttempts: 0           # retries of a failed attempt
  # retryBaseMs: 1000             # first retry delay; doubles each retry ...
  # maxRetryBackoffMs: 300000     # ... up to this cap

polling:
  # pollIntervalMs: 30000         # resync interval when no file event arrives

worktree:
  # mode: task                    # task: a git worktree per task | branch: a branch per task in the
  #                               # repo itself, one run at a time | repository: the repo as it is
  # root: ~/.omx/worktrees        # where task worktrees live (relative paths are under the repo)
  # baseRef: HEAD                 # what new task branches start from (default: the repo's HEAD)

runtime:
  # kind: codex-app-server        # codex-app-server | codex-exec | command
  # command: [codex, app-server]  # argv; never run through a shell
  # approvalPolicy: never         # untrusted | on-request | never
  # sandbox: workspace-write      # read-only | workspace-write | danger-full-access
  # model: null                   # the runtime's default model
  # turnTimeoutMs: 3600000        # a turn longer than this is interrupted
  # stallTimeoutMs: 300000        # no runtime event for this long interrupts the turn (0: never)
  # readTimeoutMs: 10000          # a runtime that does not answer a request in time has failed
  # passEnv: []                   # variables the agent gets although their names look like credentials
  #                               # (*KEY*, *TOKEN*, *PASS*, ...: withheld otherwise). The Codex model
  #                               # provider's env_key passes anyway. `omx workflow check` lists both.

hooks:
  # Shell scripts run with bash in the workspace. Task facts arrive only as OMX_* environment
  # variables (OMX_TEAM, OMX_WORKER, OMX_TASK_ID, OMX_TASK_SUBJECT, OMX_WORKSPACE, OMX_ATTEMPT, ...)
  # and as JSON in the file named by $OMX_HOOK_CONTEXT. Quote them: "$OMX_TASK_SUBJECT".
  # afterCreate: null            # after a new workspace is made; failure aborts it
  # beforeRun: null               # before each attempt; failure fails the attempt
  # afterRun: null                # after each attempt; failure is logged
  # beforeRemove: null            # before a workspace is removed; failure is logged
  # timeoutMs: 60000              # a hook running longer is killed, with its children
  # passEnv: []                   # credential-like variables the hooks get all the same
  # For example:
  #   afterCreate: |
  #     uv sync --frozen
  #   beforeRun: git fetch --quiet origin

integration:
  # A team's finished tasks are merged into one branch before they count as completed, and every
  # new task starts from that branch, so a task sees the work of the tasks it depends on.
  # enabled: true                 # false: one branch per task, nothing merged
  # branch: null                  # default: omx/<team>/integration
  # verify: null                  # a shell command run on the merged tree (e.g. pytest -q); the
  #                               # branch moves only when it passes, else the task is retried
  # verifyTimeoutMs: null         # default: hooks.timeoutMs
  # maxAttempts: 2                # merge conflicts or failed verifications before the task fails
---
You are {{ worker }}, a member of team {{ team }}, working in a git checkout of this repository.

## Task {{ task.id }}: {{ task.subject }}

{{ task.description }}
{%- if task.files is defined and task.files %}

Files to focus on:
{%- for path in task.files %}
- {{ path }}
{%- endfor %}
{%- endif %}
{%- if attempt is defined and attempt > 1 %}

This is attempt {{ attempt }}: an earlier attempt did not finish. The workspace keeps its work;
check what is already done before you change anything.
{%- endif %}

Work only inside this checkout. Keep the change focused on the task, run the project's tests, and
finish with a short summary of what you changed and how you checked it. Do not commit or push: omx
commits your changes to the task branch when you finish.
"""
