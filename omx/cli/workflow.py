"""``omx workflow check|init``: validate WORKFLOW.md and show what it resolves to, or write one.

Errors are raised as :class:`omx.errors.OmxError` subclasses; ``omx.cli.app.run_app`` prints them as
``omx: error: <message> [<code>]`` and exits with their status (2 for a bad workflow). With
``--json`` the same error is also printed to stdout as a JSON envelope.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from omx.engine.workflow import Workflow

app = typer.Typer(
    help="Check or create WORKFLOW.md: the worker settings (YAML front matter) and the agent's prompt template.",
    no_args_is_help=True,
)

_FILE_ARG = typer.Argument(None, help="The workflow file (default: WORKFLOW.md at the repository root).")
_REPO_OPT = typer.Option(None, "--repo", help="The repository (default: the one around the current directory).")


@app.command("check")
def check(
    file: Path | None = _FILE_ARG,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a listing."),
    show_prompt: bool = typer.Option(False, "--prompt", help="Also print the prompt rendered for a sample task."),
    repo: Path | None = _REPO_OPT,
) -> None:
    """Validate a WORKFLOW.md and print the resolved settings and any warnings."""
    from omx.engine.workflow import WorkflowError, load_workflow

    try:
        wf = load_workflow(file, _repo_root(repo))
    except WorkflowError as exc:
        if as_json:
            typer.echo(json.dumps(_envelope("check", error=exc.to_dict()), ensure_ascii=False))
        raise
    prompt = _sample_render(wf)
    environment = environment_report(wf)
    if as_json:
        data = {
            "path": str(wf.path) if wf.path else None,
            "settings": wf.settings.model_dump(by_alias=True, mode="json"),
            "template": {"first_line": wf.template_line, "variables": sorted(wf.variables)},
            "environment": environment,
            "warnings": wf.warnings,
        }
        if show_prompt:
            data["prompt"] = prompt
        typer.echo(json.dumps(_envelope("check", data=data), ensure_ascii=False, indent=2))
        return
    from omx.terminal import visible

    typer.echo(visible(_listing(wf, environment), keep_newlines=True))  # variable names can hold anything
    if show_prompt and prompt is not None:
        typer.echo("\n--- prompt for a sample task ---\n" + prompt)


@app.command("init")
def init(
    file: Path | None = _FILE_ARG,
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    repo: Path | None = _REPO_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the path written)."),
) -> None:
    """Write a commented WORKFLOW.md with every setting at its default."""
    from omx.engine.workflow import WORKFLOW_FILE, init_workflow
    from omx.errors import OmxError

    try:
        path = init_workflow(file or _repo_root(repo) / WORKFLOW_FILE, force=force)
    except OmxError as exc:
        if as_json:
            typer.echo(json.dumps(_envelope("init", error=exc.to_dict()), ensure_ascii=False))
        raise
    if as_json:
        typer.echo(json.dumps(_envelope("init", data={"path": str(path)}), ensure_ascii=False, indent=2))
        return
    typer.echo(f"wrote {path}\nnext: edit it, then run `omx workflow check`")


def _repo_root(repo: Path | None) -> Path:
    """``repo``, else the nearest directory above the current one holding ``.git``, else the cwd."""
    if repo is not None:
        return repo
    here = Path.cwd().resolve()
    return next((d for d in (here, *here.parents) if (d / ".git").exists()), here)


def _envelope(op: str, *, data: Any = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"schema_version": "1.0", "command": f"omx workflow {op}", "ok": error is None}
    out.update({"data": data} if error is None else {"error": error})
    return out


def _sample_render(wf: Workflow) -> str | None:
    """Render the prompt for a made-up task; a failure becomes a warning on ``wf``."""
    from omx.engine.workflow import WorkflowRenderError

    task = {
        "id": "1", "subject": "Example task", "description": "An example description.", "status": "in_progress",
        "owner": "worker-1", "depends_on": [], "priority": 0, "role": None, "files": [], "attempts": 0,
    }
    session = {"id": "session-1", "title": "Example task", "prompt": "An example description.", "url": ""}
    try:
        return wf.render(task=task, team="example", worker="worker-1", attempt=1, session=session)
    except WorkflowRenderError as exc:
        wf.warnings.append(f"rendering a sample task failed: {exc.message}")
        return None


def environment_report(wf: Workflow, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Which of this shell's variables an agent and a hook would get, by name only (never a value).

    Adds a warning to ``wf`` for each variable it names on purpose (passEnv, the Codex provider's) that
    is not set here.
    """
    import os

    from omx.engine import envpolicy
    from omx.engine.hooks import hook_env

    env = dict(os.environ) if env is None else env
    rt, hooks = wf.settings.runtime, wf.settings.hooks
    provider = envpolicy.codex_provider_env(env, rt.command)
    agent = envpolicy.split_env(env, allow=envpolicy.agent_allowed(env, rt.command, rt.pass_env))
    hook = hook_env(env, hooks.pass_env)
    for what, names in (("runtime.passEnv", rt.pass_env), ("hooks.passEnv", hooks.pass_env),
                        ("the Codex model provider (env_key)", provider)):
        missing = [n for n in names if n not in env and not n.upper().startswith("OMX_")]
        if missing:
            wf.warnings.append(f"{what} names {', '.join(missing)}, not set in this environment")
    return {
        "agent": {"passed": sorted(agent.passed), "passed_on_purpose": agent.allowed, "withheld": agent.withheld,
                  "omx_own": agent.own, "codex_provider_variables": provider},
        "hooks": {"passed": sorted(hook.passed), "passed_on_purpose": hook.allowed, "withheld": hook.withheld},
    }


def _env_lines(label: str, part: dict[str, Any], setting: str) -> list[str]:
    lines = [f"  {label}: {len(part['passed'])} pass: {', '.join(part['passed']) or 'none'}"]
    if part["passed_on_purpose"]:
        lines.append(f"    passed on purpose: {', '.join(part['passed_on_purpose'])}")
    lines.append(f"    withheld as credentials: {', '.join(part['withheld']) or 'none'}"
                 + (f" (let one through with {setting})" if part["withheld"] else ""))
    if part.get("omx_own"):
        lines.append(f"    withheld, omx's own: {', '.join(part['omx_own'])}")
    return lines


def _listing(wf: Workflow, environment: dict[str, Any] | None = None) -> str:
    lines = [f"workflow  {wf.path if wf.path else 'built-in default (no WORKFLOW.md found)'}", ""]
    flat = _flatten(wf.settings.model_dump(by_alias=True, mode="json"))
    width = max(len(k) for k in flat)
    for key, value in flat.items():
        lines.append(f"  {key:<{width}}  {_show(key, value)}")
    variables = ", ".join(sorted(wf.variables)) or "none"
    lines += ["", f"template  from line {wf.template_line}; variables: {variables}"]
    if environment is not None:
        lines += ["", "environment (names only, as this shell would start a worker)"]
        lines += _env_lines("agent", environment["agent"], "runtime.passEnv")
        provider = environment["agent"]["codex_provider_variables"]
        if provider:
            lines.append(f"    the Codex model provider reads: {', '.join(provider)}")
        lines += _env_lines("hooks", environment["hooks"], "hooks.passEnv")
    if wf.warnings:
        lines += ["", f"warnings ({len(wf.warnings)}):", *(f"  - {w}" for w in wf.warnings)]
    else:
        lines += ["", "no warnings"]
    return "\n".join(lines)


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        if isinstance(value, dict) and not prefix:
            out.update(_flatten(value, f"{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "runtime.command" and isinstance(value, list):
        return shlex.join(value)
    if isinstance(value, str) and "\n" in value.strip():
        first = value.strip().splitlines()
        return f"{first[0]}  (+{len(first) - 1} more lines)"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
