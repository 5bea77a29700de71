"""``omx team create|status`` and ``omx doctor``: the human side of the team state."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import typer

from omx.errors import InvalidInput
from omx.team.plan import PLAN_SYNTAX
from omx.terminal import plural, visible

app = typer.Typer(help="Create, watch and drive a team. Scripts: `omx team api --list`.", no_args_is_help=True)

RootOpt = typer.Option(None, "--root", help="state root (default: $OMX_TEAM_STATE_ROOT or <repo>/.omx/state)")


def _store(root: Path | None) -> Any:
    from omx.state.filestore import FileStore
    from omx.state.paths import default_root

    return FileStore(root.expanduser() if root else default_root())


def _pick_team(store: Any, team: str | None) -> str:
    if team:
        return team
    teams = store.list_teams()
    if len(teams) == 1:
        return str(teams[0])
    if not teams:
        raise InvalidInput(f"no team under {store.root}; create one with `omx team create <name>`")
    raise InvalidInput(f"several teams under {store.root} ({', '.join(teams)}): pass --team")


@app.command("create")
def create(
    team: str = typer.Argument(..., help="team name: 1-30 chars of a-z, 0-9, '-'"),
    workers: int = typer.Option(2, "--workers", "-w", min=0, max=64, help="workers worker-1..worker-N"),
    lease_ms: int = typer.Option(60_000, "--lease-ms", min=1, help="claim lease; workers renew every lease/3"),
    goal: str = typer.Option("", "--goal", help="the team's goal, shown in inboxes"),
    shared_group: bool = typer.Option(False, "--shared-group",
                                      help="let the group read and write the state (files 0660, folders 0770)"),
    root: Path | None = RootOpt,
    as_json: bool = typer.Option(False, "--json", help="print the config as JSON"),
) -> None:
    """Create a team (no tasks yet: add them with `omx team api create-task`)."""
    store = _store(root)
    cfg = store.create_team(team, goal=goal, workers=[f"worker-{i}" for i in range(1, workers + 1)],
                            lease_ms=lease_ms, shared_group=shared_group)
    if as_json:
        typer.echo(json.dumps(cfg.to_dict(), indent=2))
    else:
        typer.echo(f"created team {team} with {plural(workers, 'worker')} (lease {lease_ms} ms) under {store.root}")


@app.command("status")
def status(
    team: str | None = typer.Option(None, "--team", "-t", help="team name (default: the only team)"),
    root: Path | None = RootOpt,
    as_json: bool = typer.Option(False, "--json", help="print get-summary's JSON"),
    watch: bool = typer.Option(False, "--watch", "-w", help="redraw on every change until Ctrl-C"),
) -> None:
    """Tasks by status, each worker's state and heartbeat, blocked tasks, corrupt files."""
    store = _store(root)
    name = _pick_team(store, team)
    cursor = 0
    while True:
        summary = store.summary(name)
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
        else:
            if watch:
                from rich.console import Console

                Console().clear()
            render_status(summary, store.list_tasks(name))
        if not watch:
            return
        cursor = store.await_event(name, cursor=cursor or store.read_events(name).cursor, timeout_ms=2_000).cursor


def humanize_ms(ms: int) -> str:
    """``1500`` → ``1.5s``, ``125000`` → ``2m 5s``, ``90000000`` → ``1d 1h``."""
    s = ms / 1000
    if s < 60:
        return f"{s:.1f}s"
    m, s = divmod(int(s), 60)
    if m < 60:
        return f"{m}m {s}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h {m}m"
    d, h = divmod(h, 24)
    return f"{d}d {h}h"


def cell(value: object, style: str = "") -> Any:
    """A rich table cell or line showing ``value`` as plain text: control characters escaped, and no
    rich markup read from it (``[link=...]`` in a subject would print a hyperlink's escape sequence)."""
    from rich.text import Text

    return Text(visible(value), style=style)


def render_status(summary: dict[str, Any], listing: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    c = summary["counts"]
    con.print(cell(f"team {summary['team']}", "bold") + cell(f"  {summary['goal']}"))
    con.print(cell("  ".join(f"{k}: {v}" for k, v in c.items()) + f"  (total {summary['total']})"))
    wt = Table("worker", "state", "task", "heartbeat", "turns", "tokens", title="workers", title_justify="left")
    for w in summary["workers"]:
        age = "—" if w["heartbeat_age_ms"] is None else humanize_ms(w["heartbeat_age_ms"]) + " ago"
        state = cell(f"{w['state']} (stale)", "red") if w["stale"] else cell(w["state"])
        wt.add_row(cell(w["name"]), state, cell(w["current_task_id"] or "—"), age, cell(w["turn_count"]),
                   cell(w.get("tokens", 0)))
    con.print(wt)
    tt = Table("id", "status", "owner", "prio", "subject", title="tasks", title_justify="left")
    for t in listing.tasks:
        st = "blocked" if t.id in listing.blocked_by else t.status
        subject = textwrap.shorten(visible(t.subject), 160, placeholder=" …")  # whole words
        tt.add_row(cell(t.id), cell(st), cell(t.owner or "—"), cell(t.priority), cell(subject))
    con.print(tt)
    for b in summary["blocked"]:
        con.print(cell(f"task {b['task_id']} waits: {b['reason']}", "yellow"))
    for bad in summary["corrupt"]:
        con.print(cell(f"corrupt: {bad['path']}: {bad['error']}", "red"))


def doctor(
    root: Path | None = RootOpt,
    fix: bool = typer.Option(False, "--fix", help="also rebuild the claim index from the task files"),
    as_json: bool = typer.Option(False, "--json", help="print the checks as JSON"),
) -> None:
    """Check git, Codex, tmux, the state root, every state file, stale claims and workers."""
    from omx import doctor as doc
    from omx.state.paths import default_root

    report = doc.run(root.expanduser() if root else default_root(), fix=fix)
    if as_json:
        typer.echo(json.dumps({"ok": report.ok, "checks": [c.to_dict() for c in report.checks]}, indent=2))
    else:
        for c in report.checks:
            mark = "ok  " if c.ok else {"error": "FAIL", "warning": "warn", "info": "info"}[c.level]
            first, *rest = visible(c.detail, keep_newlines=True).split("\n")
            typer.echo(f"[{mark}] {c.name}: {first}")
            for line in rest:
                typer.echo(f"         {line}")
    if not report.ok:
        raise typer.Exit(1)


@app.command("worker")
def worker(
    team: str | None = typer.Option(None, "--team", help="team (default: from OMX_TEAM_WORKER=<team>/<worker>)"),
    name: str | None = typer.Option(None, "--name", help="worker name (default: from OMX_TEAM_WORKER)"),
    root: Path | None = RootOpt,
    repo: Path = typer.Option(Path("."), "--repo", help="the git repository the tasks change"),
    workflow: Path | None = typer.Option(None, "--workflow", help="WORKFLOW.md (default: <repo>/WORKFLOW.md)"),
    until_empty: bool = typer.Option(False, "--until-empty", help="exit when the team has no work left"),
    max_tasks: int | None = typer.Option(None, "--max-tasks", min=1, help="exit after this many tasks"),
    shutdown_policy: str = typer.Option("finish", "--shutdown-policy",
                                        help="on a leader's shutdown request: finish | interrupt the running task"),
    poll_ms: int = typer.Option(1_000, "--poll-ms", min=10, help="longest wait per claim attempt"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="log every step to stderr"),
) -> None:
    """Run a worker: ACK the leader, then claim, run and report tasks until stopped or drained."""
    # `omx team worker` normally takes the fast path in omx.cli.team_worker; this is its typer face
    # (help, usage errors, and whatever the fast path's parser leaves to typer).
    from omx.cli.team_worker import run_worker

    run_worker(team=team, name=name, root=root, repo=repo, workflow=workflow, until_empty=until_empty,
               max_tasks=max_tasks, shutdown_policy=shutdown_policy, poll_ms=poll_ms, verbose=verbose)


def setup(
    codex_home: Path | None = typer.Option(None, "--codex-home", help="default: $CODEX_HOME or ~/.codex"),
    uninstall: bool = typer.Option(False, "--uninstall", help="remove the skills omx installed"),
    as_json: bool = typer.Option(False, "--json", help="print what changed as JSON"),
) -> None:
    """Install the $team, $swarm and $worker skills into $CODEX_HOME/skills (idempotent)."""
    from omx import setup as st

    r = st.uninstall(codex_home) if uninstall else st.install(codex_home)
    if as_json:
        typer.echo(json.dumps({"target": str(r.target), "installed": r.installed, "updated": r.updated,
                               "unchanged": r.unchanged, "removed": r.removed}, indent=2))
        return
    for what in ("installed", "updated", "unchanged", "removed"):
        names = getattr(r, what)
        if names:
            typer.echo(f"{what}: {', '.join(names)}")
    typer.echo(f"skills folder: {r.target}")


PlannerTimeoutOpt = typer.Option(None, "--planner-timeout", min=1.0,
                                 help="seconds the Codex planner may take, then the heuristic (default: "
                                      "WORKFLOW.md planner.timeoutMs, 180 s)")


AgentsOpt = typer.Option("omx", "--agents",
                         help="omx: omx's worker loop runs the agent | codex: each worker is a Codex session "
                              "following the $worker skill (omx setup installs it)")


def _start(goal: str, workers: int, *, swarm: bool, plan: Path | None, planner: str, workflow: Path | None,
           tmux: bool, team: str | None, restart: bool, as_json: bool, root: Path | None, lease_ms: int,
           planner_timeout: float | None = None, agents: str = "omx") -> None:
    import sys

    from omx.team.leader import StartOptions, run_team

    if planner not in ("auto", "codex", "heuristic"):
        raise InvalidInput("--planner must be codex or heuristic")
    store = _store(root)
    opts = StartOptions(goal=goal, workers=workers, team=team, plan=plan, planner=planner, workflow=workflow,
                        tmux=tmux, restart=restart, swarm=swarm, lease_ms=lease_ms,
                        planner_timeout_s=planner_timeout, agents=agents)
    live = sys.stdout.isatty() and not as_json

    def line(text: str) -> None:  # progress lines hold task data (reasons, names): shown escaped
        typer.echo(visible(text), err=as_json)

    try:
        summary = run_team(store, opts, live=live, on_line=line)
    except Exception as exc:
        if opts.created_team is None:
            raise
        # The leader failed after writing the team: its state is kept, and `resume` takes it from here.
        from omx.cli.exits import guarded

        caught = exc

        def reraise() -> None:
            raise caught

        status = guarded(reraise)
        typer.echo(visible(f"the team's state is kept; resume it: omx team resume --team {opts.created_team}"),
                   err=True)
        raise typer.Exit(status) from None
    _finish(summary, as_json)


def _finish(summary: dict[str, Any], as_json: bool) -> None:
    """The end of `omx team start` and `omx team resume`: the summary, and the exit status."""
    c = summary["counts"]
    unfinished = c["pending"] + c["in_progress"]
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(f"team {visible(summary['team'])}: {c['completed']} completed, {c['failed']} failed, "
                   f"{c['blocked']} blocked, {unfinished} unfinished")
        integ = summary.get("integration")
        if integ and integ.get("tip"):
            ahead = integ.get("ahead")
            typer.echo(f"integrated: {integ['branch']} at {integ['tip'][:10]}"
                       + (f", {ahead} commit{'' if ahead == 1 else 's'} ahead of {integ['base']}" if ahead else "")
                       + (f"; land it: omx team land --team {summary['team']}" if ahead else ""))
        if c["failed"] and not unfinished:
            typer.echo(visible(f"retry failed tasks: omx team retry <id>… --team {summary['team']}, then "
                               f"omx team resume --team {summary['team']}"))
    if unfinished and (summary["interrupted"] or summary.get("restarted") != []):
        # Stopped with work left (Ctrl-C, or workers gone): the last line says how to go on.
        left = summary["total"] - c["completed"] - c["failed"]
        typer.echo(visible(f"{left} task{'' if left == 1 else 's'} unfinished; resume: "
                           f"omx team resume --team {summary['team']}"), err=as_json)
    raise typer.Exit(0 if c["completed"] == summary["total"] and not summary["interrupted"] else 1)


@app.command("start", epilog=PLAN_SYNTAX.replace("\n", " ").replace("[", "\\["))
def start(
    goal: str = typer.Argument(..., help="what the team should achieve"),
    workers: int = typer.Option(3, "--workers", "-w", min=1, max=64),
    plan: Path | None = typer.Option(None, "--plan", help="a Markdown list, YAML or JSON file of tasks"),
    planner: str = typer.Option("auto", "--planner",
                                help="codex | heuristic | auto (codex when found on PATH), without --plan"),
    workflow: Path | None = typer.Option(None, "--workflow", help="WORKFLOW.md for the workers"),
    tmux: bool = typer.Option(False, "--tmux", help="run the workers in tmux panes"),
    team: str | None = typer.Option(None, "--team", help="team name (default: from the goal)"),
    restart: bool = typer.Option(False, "--restart", help="restart workers that crash"),
    lease_ms: int = typer.Option(60_000, "--lease-ms", min=100),
    as_json: bool = typer.Option(False, "--json", help="print the final summary as JSON"),
    root: Path | None = RootOpt,
    planner_timeout: float | None = PlannerTimeoutOpt,
    agents: str = AgentsOpt,
) -> None:
    """Decompose GOAL into tasks, start N workers, show progress, and end with a summary.

    Exits 0 when every task completed, 1 when any failed (or the run was interrupted).
    """
    _start(goal, workers, swarm=False, plan=plan, planner=planner, workflow=workflow, tmux=tmux, team=team,
           restart=restart, as_json=as_json, root=root, lease_ms=lease_ms, planner_timeout=planner_timeout,
           agents=agents)


def swarm(
    workers: int = typer.Argument(..., min=1, max=64, help="how many workers"),
    goal: str = typer.Argument(..., help="what the swarm should achieve"),
    plan: Path | None = typer.Option(None, "--plan", help="a Markdown list, YAML or JSON file of tasks"),
    planner: str = typer.Option("auto", "--planner", help="codex | heuristic | auto (without --plan)"),
    workflow: Path | None = typer.Option(None, "--workflow", help="WORKFLOW.md for the workers"),
    tmux: bool = typer.Option(False, "--tmux"),
    team: str | None = typer.Option(None, "--team"),
    restart: bool = typer.Option(False, "--restart"),
    lease_ms: int = typer.Option(60_000, "--lease-ms", min=100),
    as_json: bool = typer.Option(False, "--json"),
    root: Path | None = RootOpt,
    planner_timeout: float | None = PlannerTimeoutOpt,
    agents: str = AgentsOpt,
) -> None:
    """Like `omx team start`, pull-only: no pre-assignment, every worker takes the next ready task."""
    _start(goal, workers, swarm=True, plan=plan, planner=planner, workflow=workflow, tmux=tmux, team=team,
           restart=restart, as_json=as_json, root=root, lease_ms=lease_ms, planner_timeout=planner_timeout,
           agents=agents)


@app.command("resume")
def resume(
    team: str | None = typer.Option(None, "--team", "-t", help="team name (default: the only team)"),
    workflow: Path | None = typer.Option(None, "--workflow", help="WORKFLOW.md for the workers"),
    tmux: bool = typer.Option(False, "--tmux", help="run the workers in tmux panes"),
    restart: bool = typer.Option(False, "--restart", help="restart workers that crash"),
    as_json: bool = typer.Option(False, "--json", help="print the final summary as JSON"),
    root: Path | None = RootOpt,
) -> None:
    """Restart the workers of an existing team that no live process runs, then watch as `start` does.

    For a team whose leader was stopped (Ctrl-C) or crashed. Workers still running are left alone.
    Exits 0 when every task completed, 1 otherwise.
    """
    import sys

    from omx.team.leader import StartOptions, resume_team

    store = _store(root)
    name = _pick_team(store, team)
    opts = StartOptions(goal="", team=name, workflow=workflow, tmux=tmux, restart=restart)

    def line(text: str) -> None:
        typer.echo(visible(text), err=as_json)

    summary = resume_team(store, name, opts, live=sys.stdout.isatty() and not as_json, on_line=line)
    _finish(summary, as_json)


@app.command("report")
def report(
    team: str | None = typer.Option(None, "--team", "-t"),
    repo: Path = typer.Option(Path("."), "--repo", help="the repository whose task branches to check"),
    base: str | None = typer.Option(None, "--base", help="merge target (default: the checked-out branch)"),
    root: Path | None = RootOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per task: status, owner, summary, branch, commit, tokens, time — and which branches merge cleanly."""
    from omx.team.leader import repo_root
    from omx.team.report import team_report

    store = _store(root)
    name = _pick_team(store, team)
    rep = team_report(store, name, repo_root(repo), base)
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    # Narrow terminals (80 columns) get no branch column (the branch is omx/<team>/task-<id>, and the
    # lines below name integrated commits); every column but the summary keeps its words whole.
    wide = con.width >= 110
    tt = Table(title=cell(f"team {name} — {rep['goal']}"), title_justify="left")
    for head in ("id", "status", "owner", *(("branch",) if wide else ()), "commit", "tokens", "time"):
        tt.add_column(head, no_wrap=True, justify="right" if head == "tokens" else "left")
    tt.add_column("summary / error", ratio=1, min_width=16, overflow="fold")
    for r in rep["tasks"]:
        secs = f"{r['duration_ms'] / 1000:.1f}s" if isinstance(r["duration_ms"], (int, float)) else "—"
        note = r["summary"] or r["error"] or (f"waits on {r['blocked_by']}" if r["blocked_by"] else "")
        short = textwrap.shorten(visible(note), 240, placeholder=" …") if note else ""  # whole words only
        tt.add_row(cell(r["id"]), cell(r["status"]), cell(r["owner"] or "—"),
                   *((cell(r["branch"] or "—"),) if wide else ()),
                   cell(visible(r["commit"] or "—")[:10 if wide else 8]), cell(r["tokens"]), secs, cell(short))
    con.print(tt)
    for line in report_lines(rep):
        con.print(visible(line), markup=False, highlight=False)


def report_lines(rep: dict[str, Any]) -> list[str]:
    """The report's text after its table: what each task added, the integration branch, waiting tasks,
    and how it lands (or, without an integration branch, which task branches merge)."""
    lines: list[str] = []
    integ = rep.get("integration") or {}
    for r in rep["tasks"]:
        ti = r.get("integration") or {}
        if ti.get("status") == "merged":
            files = ti.get("files") or []
            shown = ", ".join(files[:6]) + (f" (+{len(files) - 6} more)" if len(files) > 6 else "")
            lines.append(f"task {r['id']}: integrated at {str(ti.get('commit'))[:10]}: {shown or 'no file changes'}")
        elif ti.get("status") == "already":
            lines.append(f"task {r['id']}: integrated at {str(ti.get('commit'))[:10]} (by an earlier attempt)")
        elif ti.get("status") == "unchanged":
            lines.append(f"task {r['id']}: changed nothing; no merge")
    if "none" in integ:
        lines.append(f"integration: {integ['none']}")
    elif integ.get("branch"):
        if integ.get("tip"):
            ahead = integ.get("ahead")
            lines.append(f"integration: {integ['branch']} at {integ['tip'][:10]}"
                         + (f", {ahead} commit{'' if ahead == 1 else 's'} ahead of {rep['base']}"
                            if ahead is not None else ""))
        else:
            lines.append(f"integration: {integ['branch']} does not exist (yet)")
        for w in integ.get("waiting") or []:
            why = ("merge conflict in " + ", ".join(w["paths"][:10])) if w["problem"] == "conflict" \
                else "verification failed"
            tries = f" (attempt {w['failures']} of {w['max_attempts']})" if w.get("failures") else ""
            state = "failed" if w["status"] == "failed" else "waiting on integration"
            lines.append(f"task {w['id']}: {state}: {why}{tries}")
    for m in rep["merges"]:
        extra = f": {', '.join(m.get('conflicts', []))}" if m["merges"] == "conflict" else m.get("error", "")
        lines.append(f"{m['branch']} → {rep['base']}: {m['merges']}{extra}")
    if integ.get("tip") and integ.get("landed") is False:
        lines.append(f"land it: omx team land --team {rep['team']}" + ("" if rep["base"] == integ.get("base")
                                                                       else f" --into {rep['base']}"))
    elif integ.get("landed"):
        lines.append(f"{integ['branch']} is landed in {rep['base']}")
    return lines


@app.command("retry")
def retry(
    tasks: list[str] = typer.Argument(..., help="ids of failed tasks (7, task-7)"),
    team: str | None = typer.Option(None, "--team", "-t"),
    root: Path | None = RootOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Send failed tasks back to pending, which unblocks their dependents once they complete.

    Attempts and history are kept; the last result and error move to the task's `result.previous`.
    Refuses (exit 1, changing nothing) when a named task is not failed. A running team picks the
    tasks up; otherwise run `omx team resume`.
    """
    from omx.state import names

    store = _store(root)
    name = _pick_team(store, team)
    ids = [names.task_id(t) for t in tasks]
    for tid in ids:  # all or nothing: check every task before changing any
        task = store.read_task(name, tid)
        if task.status != "failed":
            from omx.errors import InvalidTransition

            raise InvalidTransition(f"task {tid} is {task.status}; only a failed task can be retried", task_id=tid)
    done = [store.retry_task(name, tid) for tid in ids]
    if as_json:
        typer.echo(json.dumps({"team": name, "tasks": [t.to_dict() for t in done]}, indent=2))
        return
    for t in done:
        typer.echo(visible(f"task {t.id}: failed -> pending (attempts so far: {t.attempts})"))
    typer.echo(visible(f"workers of a running team take them; otherwise: omx team resume --team {name}"))


@app.command("cleanup")
def cleanup(
    team: str | None = typer.Option(None, "--team", "-t"),
    force: bool = typer.Option(False, "--force", help="also delete task branches with unmerged commits, and "
                                                     "worktrees with uncommitted changes"),
    workflow: Path | None = typer.Option(None, "--workflow", help="WORKFLOW.md (where the worktrees live)"),
    repo: Path = typer.Option(Path("."), "--repo", help="the repository"),
    root: Path | None = RootOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Remove the team's worktrees and merged task branches (its state stays: `omx team api cleanup`).

    Task branches merged into the integration branch (or the base) are deleted; one with unmerged
    commits is listed and kept unless --force. The integration branch is deleted only once it is
    landed in the base and no task is left to run. Refuses (exit 1) while any of the team's workers
    runs. The team's state files stay: `omx team api cleanup` is what deletes those.
    """
    from omx.team.cleanup import cleanup_team
    from omx.team.leader import repo_root

    store = _store(root)
    name = _pick_team(store, team)
    out = cleanup_team(store, name, repo_root(repo), force=force, workflow=workflow)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for path in out["worktrees_removed"]:
        typer.echo(visible(f"removed worktree {path}"))
    for w in out["worktrees_kept"]:
        typer.echo(visible(f"kept worktree {w['path']}: {w['reason']}"))
    for b in out["branches_deleted"]:
        why = f"merged into {b['merged_into']}" if b["merged_into"] else "unmerged, --force"
        typer.echo(visible(f"deleted branch {b['branch']} ({why})"))
    for b in out["branches_kept"]:
        n = b["commits"]
        count = "" if n is None else f"{n} commit{'' if n == 1 else 's'}: "
        typer.echo(visible(f"kept branch {b['branch']}: {count}{b['reason']}"))
    integ = out["integration"]
    typer.echo(visible(f"{'deleted' if integ['deleted'] else 'kept'} integration branch {integ['branch']}: "
                       f"{integ['reason']}" if integ["reason"] != "does not exist"
                       else f"integration branch {integ['branch']}: does not exist"))
    typer.echo(visible(f"team state kept under {out['state']} (`omx team api cleanup` deletes it)"))


@app.command("land")
def land(
    team: str | None = typer.Option(None, "--team", "-t"),
    into: str | None = typer.Option(None, "--into", help="branch to land in (default: the team's base branch)"),
    repo: Path = typer.Option(Path("."), "--repo", help="the repository"),
    root: Path | None = RootOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Bring the team's integration branch into its base branch: fast-forward if it can, else a merge.

    Refuses, changing nothing, when the checkout of the target branch has uncommitted changes or when
    the target branch moved and now conflicts with the integration branch.
    """
    from omx.team.leader import repo_root
    from omx.team.report import land_team

    store = _store(root)
    name = _pick_team(store, team)
    out = land_team(store, name, repo_root(repo), into)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    elif out["mode"] == "up-to-date":
        typer.echo(f"{out['into']} already holds {out['branch']}: nothing to land")
    else:
        how = "fast-forwarded" if out["mode"] == "fast-forward" else "merged"
        typer.echo(f"{how} {out['into']} to {out['commit'][:10]} ({out['branch']}, was {out['from'][:10]})"
                   + (f"; checkout {out['checkout']} updated" if out.get("checkout") else ""))


@app.command("shutdown")
def shutdown(
    team: str | None = typer.Option(None, "--team", "-t"),
    force: bool = typer.Option(False, "--force", help="stop even with pending or running tasks"),
    confirm_issues: bool = typer.Option(False, "--confirm-issues", help="end the team although tasks failed"),
    wait_s: float = typer.Option(30.0, "--wait", help="seconds to wait for the workers' ACKs"),
    root: Path | None = RootOpt,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Ask every worker to stop, wait for ACKs, and say which did not answer."""
    from omx.team.report import shutdown_team

    store = _store(root)
    name = _pick_team(store, team)
    out = shutdown_team(store, name, force=force, confirm_issues=confirm_issues, wait_s=wait_s)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    else:
        for w, st in out["acknowledged"].items():
            typer.echo(visible(f"{w}: {st}"))
        for s in out["no_answer"]:
            typer.echo(visible(f"{s['worker']}: no answer within {wait_s:g}s (state {s['state']}, "
                               f"last heartbeat {s['last_heartbeat'] or 'never'})"))
    if out["no_answer"]:
        raise typer.Exit(1)


@app.command("events")
def events(
    team: str | None = typer.Option(None, "--team", "-t"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new events"),
    root: Path | None = RootOpt,
    as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
) -> None:
    """Print the team's event log."""
    store = _store(root)
    name = _pick_team(store, team)
    cursor = 0
    while True:
        page = store.await_event(name, cursor=cursor, timeout_ms=1_000) if follow and cursor else \
            store.read_events(name, cursor=cursor)
        cursor = page.cursor
        for ev in page.events:
            if as_json:
                typer.echo(json.dumps(ev.to_dict(exclude_none=True)))
            else:
                who = ev.worker or ""
                task = f" task {ev.task_id}" if ev.task_id else ""
                why = f" ({ev.reason})" if ev.reason else ""
                typer.echo(visible(f"{ev.created_at}  {ev.type:<22} {who}{task}{why}"))
        if not follow:
            return
