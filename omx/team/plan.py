"""Turn a goal into tasks: a plan file (Markdown list, YAML or JSON), or the heuristic splitter.

Plan tasks use 1-based plan positions for dependencies (``after #2``, ``depends_on: [2]``); the leader
maps them to the task ids the store allocates. Nesting in a Markdown list means "after the parent".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omx.errors import InvalidInput

MAX_TASKS = 500


class PlanError(InvalidInput):
    """Raised when a plan file cannot be read as tasks; the message names the file and the line."""

    code = "plan_invalid"


@dataclass
class PlannedTask:
    subject: str
    description: str = ""
    depends_on: list[int] = field(default_factory=list)  # 1-based plan positions
    priority: int = 0
    role: str | None = None
    files: list[str] = field(default_factory=list)


_ITEM = re.compile(r"^(?P<indent>\s*)(?:[-*+]|\d+[.)])\s+(?:\[(?P<box>[ xX])\]\s+)?(?P<text>.+?)\s*$")
_DEP_WORDS = r"(?:after|depends\s+on|depends\s+upon|needs|requires|blocked\s+by|waits?\s+(?:on|for))"
_AFTER = re.compile(
    r"\(?\s*\b" + _DEP_WORDS + r"\s+(?:(?:tasks?|items?|steps?)\s+)?"
    r"((?:#?\d+\b(?:\s*(?:,|and|&|/)\s*(?:(?:tasks?|items?|steps?)\s+)?)?)+)\s*\)?", re.I)
#: A parenthesized dependency phrase that names no item number: "(after A)", "(needs the parser)".
_VAGUE = re.compile(r"\(\s*" + _DEP_WORDS + r"\b[^)]*\)", re.I)


#: The plan file syntax, as ``omx team start --help`` and the README show it.
PLAN_SYNTAX = """A plan file is a Markdown list, one task per item ('-', '*' or '1.'); indented lines under an
item are its description. Dependencies name item numbers: 'after #1', 'after 1 and 2', 'depends on
task 3', 'needs #2', 'blocked by 1'; an item nested under another depends on it; '- [x]' items are
done and skipped. YAML or JSON: tasks: [{subject, description, depends_on: [1], priority, files}]."""


def load_plan(path: Path, warn: list[str] | None = None) -> list[PlannedTask]:
    """Read a plan file: ``.md``/``.txt`` (a list), ``.yaml``/``.yml`` or ``.json`` (``tasks: [...]`` or a list).

    ``warn`` collects what the file says that the plan ignores (by line number).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read plan {path}: {exc}", path=str(path)) from None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise PlanError(f"{path}: YAML error: {exc}", path=str(path)) from None
        tasks = _from_data(data, str(path))
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"{path}: JSON error at line {exc.lineno}: {exc.msg}", path=str(path)) from None
        tasks = _from_data(data, str(path))
    else:
        tasks = parse_markdown(text, str(path), warn)
    check_plan(tasks, str(path))
    return tasks


def parse_markdown(text: str, label: str = "plan", warn: list[str] | None = None) -> list[PlannedTask]:
    """Numbered, bulleted or checkbox items; continuation lines join the item's description.

    ``after #2`` (or ``depends on task 1, 3``, ``needs 2``, ``blocked by #1``) names dependencies by item
    position; an indented item depends on the item it is nested under. Checked boxes (``- [x]``) are
    done: they are skipped, and dependencies on them are dropped. A dependency on an item that does not
    exist is an error naming the line; a phrase like ``(after A)`` that names no number goes to ``warn``.
    """
    tasks: list[PlannedTask] = []
    lines: list[int] = []
    stack: list[tuple[int, int]] = []  # (indent, position) of open parents
    done: set[int] = set()
    position = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        m = _ITEM.match(raw)
        if not m:
            if tasks and raw.strip() and not raw.lstrip().startswith("#") and raw.startswith((" ", "\t")):
                tasks[-1].description = (tasks[-1].description + "\n" + raw.strip()).strip()
            continue
        position += 1
        indent = len(m.group("indent").expandtabs(4))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        body = m.group("text")
        deps = [int(n) for n in re.findall(r"\d+", " ".join(_AFTER.findall(body)))]
        subject = _AFTER.sub("", body).strip(" -:;,") or body
        vague = _VAGUE.search(subject)
        if vague and warn is not None:
            warn.append(f"{label}:{lineno}: {vague.group(0)!r} names no item number, so no dependency was "
                        "recorded (write 'after #2')")
        if stack:
            deps.append(stack[-1][1])
        stack.append((indent, position))
        if m.group("box") in ("x", "X"):
            done.add(position)
        tasks.append(PlannedTask(subject=subject[:200], description=subject, depends_on=sorted(set(deps))))
        lines.append(lineno)
    for pos, (t, lineno) in enumerate(zip(tasks, lines, strict=True), start=1):
        for d in t.depends_on:
            if not 1 <= d <= len(tasks) or d == pos:
                what = "itself" if d == pos else f"item {d}, but the list has {len(tasks)} items"
                raise PlanError(f"{label}:{lineno}: {t.subject!r} depends on {what}")
    # Drop done items, renumbering dependencies to the remaining positions.
    keep = [i for i in range(1, len(tasks) + 1) if i not in done]
    renum = {old: new for new, old in enumerate(keep, start=1)}
    out = []
    for old in keep:
        t = tasks[old - 1]
        t.depends_on = [renum[d] for d in t.depends_on if d in renum]
        out.append(t)
    if not out and not done:
        raise PlanError(f"{label}: no list items found (write one task per '-', '*' or '1.' line)")
    return out


def _from_data(data: Any, label: str) -> list[PlannedTask]:
    items = data.get("tasks") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise PlanError(f"{label}: expected a list of tasks, or a mapping with 'tasks'")
    out = []
    for i, item in enumerate(items, start=1):
        if isinstance(item, str):
            out.append(PlannedTask(subject=item[:200], description=item))
            continue
        if not isinstance(item, dict):
            raise PlanError(f"{label}: task {i} must be a string or a mapping")
        subject = item.get("subject") or item.get("title")
        if not isinstance(subject, str) or not subject.strip():
            raise PlanError(f"{label}: task {i} needs a 'subject'")
        deps = item.get("depends_on", item.get("blocked_by", [])) or []
        if not isinstance(deps, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in deps):
            raise PlanError(f"{label}: task {i}: depends_on must be a list of task positions (1-based integers)")
        prio = item.get("priority", 0)
        files = item.get("files", []) or []
        if not isinstance(prio, int) or isinstance(prio, bool) or not isinstance(files, list):
            raise PlanError(f"{label}: task {i}: priority must be an integer and files a list")
        desc = item.get("description", subject)
        out.append(PlannedTask(subject=subject.strip()[:200], description=str(desc), depends_on=list(deps),
                               priority=prio, role=item.get("role"), files=[str(f) for f in files]))
    return out


def check_plan(tasks: list[PlannedTask], label: str) -> None:
    """Refuse dependencies that name no other task, or that form a cycle."""
    if len(tasks) > MAX_TASKS:
        raise PlanError(f"{label}: {len(tasks)} tasks; at most {MAX_TASKS}")
    n = len(tasks)
    for i, t in enumerate(tasks, start=1):
        for d in t.depends_on:
            if not 1 <= d <= n or d == i:
                raise PlanError(f"{label}: task {i} ({t.subject!r}) depends on #{d}, which is not another task")
    # Cycles: a topological order must exist.
    state = [0] * (n + 1)

    def visit(i: int) -> None:
        if state[i] == 1:
            raise PlanError(f"{label}: dependencies form a cycle through task {i}")
        if state[i] == 0:
            state[i] = 1
            for d in tasks[i - 1].depends_on:
                visit(d)
            state[i] = 2

    for i in range(1, n + 1):
        visit(i)


_NUMBERED = re.compile(r"(?:^|\s)(\d+)[.)]\s+")


def heuristic(goal: str) -> list[PlannedTask]:
    """Split a goal into tasks without a model: numbered lists, bullets, ';', short 'and' lists.

    An atomic goal stays one task. Never invents work that was not asked for.
    """
    goal = goal.strip()
    if not goal:
        raise InvalidInput("the goal is empty")
    lines = [ln for ln in goal.splitlines() if ln.strip()]
    if len(lines) > 1 and sum(bool(_ITEM.match(ln)) for ln in lines) >= 2:
        return parse_markdown(goal)
    nums = list(_NUMBERED.finditer(goal))
    if len(nums) >= 2:
        parts = [goal[m.end(): nums[i + 1].start() if i + 1 < len(nums) else len(goal)] for i, m in enumerate(nums)]
        return [_task(p) for p in parts if p.strip(" ;,.")]
    if ";" in goal:
        parts = [p for p in goal.split(";") if p.strip()]
        if len(parts) >= 2:
            return [_task(p) for p in parts]
    # "a, b and c" (a comma list), or "a and b" with two short parts; never a long sentence's clauses.
    parts = re.split(r",\s*(?:and\s+)?|\s+and\s+", goal)
    comma_list = "," in goal and 2 <= len(parts) <= 6 and all(0 < len(p.split()) <= 8 for p in parts)
    short_pair = len(parts) == 2 and all(0 < len(p.split()) <= 4 for p in parts)
    if comma_list or short_pair:
        return [_task(p) for p in parts]
    return [_task(goal)]


def _task(text: str) -> PlannedTask:
    t = text.strip(" \t\n;,.")
    return PlannedTask(subject=t[:200], description=t)
