"""The main job: a real team of 3 Codex workers on a generated sample repository, end to end.

Decomposition (the Codex planner), claims, a git worktree and branch per task, real ``codex
app-server`` turns, commits, and the final report with its merge check. When no model account is
configured (no ``$CODEX_HOME/auth.json``, no ``OPENAI_API_KEY``) Codex talks to the offline demo
model (:mod:`omx.demo.model`) on 127.0.0.1 — scripted answers, not an AI — and every line says so.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

GOAL = "Build a tiny calculator package: tokenizer, evaluator, a command line, and its documentation"

WORKFLOW = """---
worktree:
  root: {root}
runtime:
  sandbox: workspace-write
  approvalPolicy: never
  turnTimeoutMs: 300000
  stallTimeoutMs: 120000
---
"""


def model_account_configured() -> bool:
    home = Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex")
    return bool(os.environ.get("OPENAI_API_KEY")) or (home / "auth.json").exists()


def find_codex() -> str | None:
    found = shutil.which("codex")
    if found:
        return found
    here = Path(__file__).resolve().parents[2] / ".tools" / "codex" / "node_modules" / ".bin" / "codex"
    return str(here) if here.exists() else None


def make_sample_repo(base: Path) -> Path:
    from omx.engine.data.default_workflow import DEFAULT_WORKFLOW_MD

    repo = base / "calc"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=omx demo", "-c", "user.email=demo@omx.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README.md").write_text("# calc\n\nA tiny calculator, built by a team of agents.\n")
    (repo / "calc").mkdir()
    (repo / "calc" / "__init__.py").write_text('"""calc: a tiny calculator."""\n')
    body = DEFAULT_WORKFLOW_MD.split("\n---\n", 1)[1]
    (repo / "WORKFLOW.md").write_text(WORKFLOW.format(root=base / "worktrees") + body)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "calc: empty package"], check=True)
    return repo


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="omx demo", description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=3, help="how many workers (default 3)")
    ap.add_argument("--keep", action="store_true", help="keep the sample repo, its worktrees and state")
    ap.add_argument("--offline", action="store_true", help="use the offline demo model even with an account")
    ap.add_argument("--json", action="store_true", help="a final JSON summary on stdout; progress goes to stderr")
    a = ap.parse_args(argv)
    if not a.json:
        return _demo(a)
    import contextlib
    import json

    result: dict[str, Any] = {}
    with contextlib.redirect_stdout(sys.stderr):
        code = _demo(a, result)
    print(json.dumps({"ok": code == 0, **result}, indent=2))
    return code


def _demo(a: argparse.Namespace, result: dict[str, Any] | None = None) -> int:
    """The demo; ``result`` (for --json) receives what it did."""

    codex = find_codex()
    if codex is None:
        from omx.engine.early import INSTALL_CODEX

        print(f"omx demo: the Codex binary was not found on PATH; install it: {INSTALL_CODEX} "
              "(in a source checkout, ./scripts/setup does)", file=sys.stderr)
        return 2
    base = Path(tempfile.mkdtemp(prefix="omx-demo-"))
    os.environ["PATH"] = f"{Path(codex).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["OMX_HOME"] = str(base / "omx-home")  # machine slots etc. stay inside the demo folder
    try:
        return _run(a, base, offline=a.offline or not model_account_configured(), result=result)
    finally:
        if result is not None:
            result["kept"] = str(base) if a.keep else None
        if a.keep:
            print(f"\nkept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def _run(a: argparse.Namespace, base: Path, *, offline: bool, result: dict[str, Any] | None = None) -> int:
    from contextlib import ExitStack

    from omx.demo.model import DemoModel, write_codex_home
    from omx.state.filestore import FileStore
    from omx.team.leader import StartOptions, run_team
    from omx.team.report import team_report

    repo = make_sample_repo(base)
    with ExitStack() as stack:
        if offline:
            model = stack.enter_context(DemoModel())
            os.environ["CODEX_HOME"] = str(write_codex_home(base / "codex-home", model.base_url))
            os.environ.pop("OPENAI_API_KEY", None)
            label = "OFFLINE DEMO MODEL (scripted answers on 127.0.0.1, not an AI)"
        else:
            label = "your Codex configuration (a real model: this spends tokens)"
        print(f"omx demo — real Codex {_codex_version()} · model: {label}")
        print(f"sample repo: {repo}\n")
        store = FileStore(repo / ".omx" / "state")
        opts = StartOptions(goal=GOAL, workers=a.workers, team="calc", planner="auto", repo=repo, lease_ms=60_000)
        summary = run_team(store, opts, live=False, on_line=print)
        rep = team_report(store, summary["team"], repo)
    from omx.terminal import plural, visible

    print(f"\n{'task':<5} {'status':<10} {'branch':<20} {'commit':<10} summary")
    for t in rep["tasks"]:
        print(visible(f"{t['id']:<5} {t['status']:<10} {t['branch'] or '—':<20} {(t['commit'] or '—')[:8]:<10} "
                      f"{visible(t['summary'] or t['error'] or '')[:70]}"))
    from omx.cli.team import report_lines

    print()
    for line in report_lines(rep):
        print(visible(line))
    c = summary["counts"]
    ok = c["completed"] == summary["total"] and not summary["interrupted"]
    integ = rep.get("integration") or {}
    if ok and integ.get("tip"):
        _show_integration(repo, integ["branch"])
        print(f"\n$ omx team land --team {summary['team']}    # bring {integ['branch']} into {rep['base']}")
        from omx.team.report import land_team

        landed = land_team(store, summary["team"], repo)
        print(f"{landed['mode']}: {landed['into']} is now at {landed['commit'][:10]}")
    else:
        landed = None
    print(f"\n{c['completed']}/{summary['total']} tasks completed by {plural(a.workers, 'worker')} "
          f"(planned by the {summary['planned_by']}) · model: {'offline demo' if offline else 'yours'}")
    if result is not None:
        result.update({"team": summary["team"], "model": "offline demo" if offline else "yours",
                       "workers": a.workers, "planned_by": summary["planned_by"], "total": summary["total"],
                       "counts": c, "interrupted": summary["interrupted"],
                       "tasks": [{k: t.get(k) for k in ("id", "status", "branch", "commit", "summary", "error")}
                                 for t in rep["tasks"]],
                       "integration": integ, "landed": landed})
    return 0 if ok else 1


def _show_integration(repo: Path, branch: str) -> None:
    """What the integration branch holds: its merges, and the line that shows a task used an earlier one's file."""
    from omx.terminal import visible

    log = subprocess.run(["git", "-C", str(repo), "log", "--first-parent", "--format=  %h %s", branch],
                         capture_output=True, text=True).stdout
    print()
    print(visible(f"{branch}:"))
    for entry in log.rstrip().splitlines():  # merge subjects carry task subjects: data, escaped
        print(visible(entry))
    used = subprocess.run(["git", "-C", str(repo), "grep", "^# builds on", branch, "--"],
                          capture_output=True, text=True).stdout.strip()
    for line in used.splitlines():
        path, _, text = line.removeprefix(f"{branch}:").partition(":")
        print(visible(f"  {path} {text.lstrip('# ')}"))


def _codex_version() -> str:
    try:
        out = subprocess.run(["codex", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.replace("codex-cli ", "")
