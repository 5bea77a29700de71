"""WORKFLOW.md: YAML front matter (the worker settings) and a Jinja2 prompt template.

The file is trusted; task text is not. Untrusted values reach the prompt only as template variables
(``task``, ``team``, ``worker``, ``attempt``, ``session``), never as template source, so a task
description containing ``{{ 7*7 }}`` is printed as written. The environment is sandboxed and an
undefined variable is an error, not an empty string.

OpenAI Symphony's keys are mapped onto ours (:data:`omx.engine.settings.SYMPHONY_KEYS`), so a Symphony
WORKFLOW.md works unchanged; what omx cannot use (its tracker section, ``agent.max_turns``, ...)
becomes a warning.

Example:
    >>> wf = load_workflow(None, Path("/nonexistent"))  # no WORKFLOW.md there: the built-in default
    >>> wf.settings.worktree.mode
    'task'
    >>> wf.render(task={"id": "7", "subject": "Fix {{ it }}", "description": ""}, team="alpha",
    ...           worker="worker-1", attempt=1, session=None).count("Fix {{ it }}")
    1
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omx.engine.data.default_workflow import DEFAULT_WORKFLOW_MD
from omx.engine.early import WORKFLOW_FILE as WORKFLOW_FILE
from omx.engine.early import runs_codex_app_server as runs_codex_app_server  # re-exported
from omx.engine.settings import Settings, kind_of, resolve_settings
from omx.errors import InvalidInput, Refused

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import SandboxedEnvironment

#: Text that makes a template more than plain text: Jinja's delimiters, and "\r" (Jinja normalizes newlines).
_JINJA_MARKS = ("{{", "{%", "{#", "\r")
#: The variables omx passes to the template. ``issue`` (Symphony's name) is a view of ``task``.
TEMPLATE_VARIABLES = frozenset({"task", "team", "worker", "attempt", "session"})


class WorkflowError(InvalidInput):
    """Raised when WORKFLOW.md cannot be used; the base of the workflow errors."""

    code = "workflow_invalid"


class WorkflowNotFound(WorkflowError):
    """Raised when a WORKFLOW.md named explicitly does not exist."""

    code = "workflow_not_found"


class WorkflowYamlError(WorkflowError):
    """Raised when the front matter is not valid YAML; the message carries the file's line."""

    code = "workflow_yaml_error"


class WorkflowInvalid(WorkflowError):
    """Raised when the front matter is not a map, or a setting has a value of the wrong type."""

    code = "workflow_invalid"


class WorkflowTemplateError(WorkflowError):
    """Raised when the prompt template has a syntax error; the message carries the file's line."""

    code = "workflow_template_error"


class WorkflowRenderError(WorkflowError):
    """Raised when rendering the prompt fails, e.g. on an undefined variable (named in the message)."""

    code = "workflow_render_error"


class WorkflowExists(Refused):
    """Raised when ``omx workflow init`` would overwrite a file without ``force``."""

    code = "workflow_exists"


@dataclass
class Workflow:
    """A loaded WORKFLOW.md.

    Attributes:
        settings: the validated front matter, defaults filled in.
        template_source: the prompt body (everything after the front matter).
        path: the file it came from; ``None`` for the built-in default.
        warnings: one line per ignored or unknown key, naming it by dotted path and file line.
        template_line: the file line the body starts on (error messages count from it).
        variables: the undeclared names the template uses.
    """

    settings: Settings
    template_source: str
    path: Path | None
    warnings: list[str] = field(default_factory=list)
    template_line: int = 1
    variables: frozenset[str] = frozenset()
    _template: Template | None = field(default=None, repr=False, compare=False)
    _plain: bool = field(default=False, repr=False, compare=False)  # no Jinja syntax: the prompt is the text

    def compile(self) -> None:
        """Compile the template and look at the variables it uses (once; :func:`load_workflow` does it).

        Separate so that a worker can start its agent server between reading the settings and
        paying for Jinja (~50 ms to import it and compile a template). A body with no Jinja syntax
        at all renders as itself: Jinja is not needed for it.

        Raises:
            WorkflowTemplateError: a syntax error in the template (with the file's line).
        """
        if self._template is not None or self._plain:
            return
        if not any(mark in self.template_source for mark in _JINJA_MARKS):
            self._plain = True
            return
        self._template = _compile(self.template_source, self.label, self.template_line)
        from jinja2 import meta

        self.variables = frozenset(meta.find_undeclared_variables(_environment().parse(self.template_source)))
        for name in sorted(self.variables - TEMPLATE_VARIABLES - {"issue"}):
            self.warnings.append(f"{self.label}: template uses {name!r}, which omx does not provide: "
                                 "rendering will fail")
        if "issue" in self.variables:
            self.warnings.append(f"{self.label}: template uses Symphony's 'issue': omx fills it from 'task' "
                                 "(prefer 'task')")

    @property
    def label(self) -> str:
        """How messages name this workflow: its path, or ``<built-in WORKFLOW.md>``."""
        return str(self.path) if self.path else f"<built-in {WORKFLOW_FILE}>"

    def render(self, **variables: Any) -> str:
        """Render the prompt with ``task``, ``team``, ``worker``, ``attempt`` and ``session``.

        Values are data: their text is never parsed as a template. A template that uses Symphony's
        ``issue`` gets a view of ``task`` (identifier, title, description, state, labels, url).

        Raises:
            WorkflowRenderError: an undefined variable (named) or any other failure while rendering.
        """
        self.compile()
        if self._plain:
            return self.template_source
        assert self._template is not None
        if "issue" in self.variables and "issue" not in variables and "task" in variables:
            variables["issue"] = _issue_view(variables["task"])
        try:
            return self._template.render(variables)
        except Exception as exc:
            raise _render_error(exc, self) from None


def load_workflow(path: Path | None, repo: Path, *, compile: bool = True) -> Workflow:
    """Load ``path``; with ``None``, ``<repo>/WORKFLOW.md`` if present, else the built-in default.

    ``compile=False`` reads the settings only; :meth:`Workflow.compile` (or the first render) does
    the template then.

    Raises:
        WorkflowNotFound: ``path`` was given and does not exist.
        WorkflowYamlError, WorkflowInvalid, WorkflowTemplateError: the file is not usable.
    """
    if path is None:
        candidate = repo / WORKFLOW_FILE
        if not candidate.is_file():
            return parse_workflow(DEFAULT_WORKFLOW_MD, None, compile=compile)
        path = candidate
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (FileNotFoundError, NotADirectoryError):
        raise WorkflowNotFound(f"{path}: no such workflow file", path=str(path)) from None
    except IsADirectoryError:
        raise WorkflowNotFound(f"{path}: is a directory, not a workflow file", path=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowInvalid(f"{path}: cannot read: {exc}", path=str(path)) from None
    return parse_workflow(text, path, compile=compile)


def parse_workflow(text: str, path: Path | None, *, compile: bool = True) -> Workflow:
    """Parse WORKFLOW.md ``text``; ``path`` only names it in messages. See :func:`load_workflow`."""
    wf = Workflow(settings=Settings(), template_source="", path=path)
    front, wf.template_source, wf.template_line = _split_front_matter(text, wf.label)
    if front is not None:
        wf.settings = _settings_from_yaml(front, wf.label, wf.warnings)
    if compile:
        wf.compile()
    return wf


def init_workflow(path: Path, *, force: bool = False) -> Path:
    """Write the commented default WORKFLOW.md to ``path``; refuse to overwrite unless ``force``.

    Raises:
        WorkflowExists: ``path`` exists and ``force`` is false.
    """
    if path.exists() and not force:
        raise WorkflowExists(f"{path} already exists (use --force to overwrite)", path=str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    from omx.state import atomic

    atomic.write_bytes(path, DEFAULT_WORKFLOW_MD.encode(), mode=0o644)  # whole or not at all; a repo file
    return path


def _split_front_matter(text: str, label: str) -> tuple[str | None, str, int]:
    """(front matter or ``None``, body, the 1-based file line the body starts on)."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip() != "---":
        return None, text, 1
    for i, line in enumerate(lines[1:], start=1):
        if line.rstrip() in ("---", "..."):
            return "".join(lines[1:i]), "".join(lines[i + 1 :]), i + 2
    raise WorkflowYamlError(f"{label}:1: the front matter opened by '---' is never closed", path=label, line=1)


# --- front matter -> Settings --------------------------------------------------------------------

def _settings_from_yaml(front: str, label: str, warnings: list[str]) -> Settings:
    import yaml

    try:
        data = yaml.safe_load(front)
        key_lines = _key_lines(yaml.compose(front, Loader=yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 2 if mark is not None else 1  # 0-based, and the opening '---' comes first
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        msg = f"{label}:{line}: invalid YAML front matter: {problem}"
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark.line + 2 != line:
            msg += f" ({context} at line {context_mark.line + 2})"
        raise WorkflowYamlError(msg, path=label, line=line) from None
    if data is None:
        return Settings()
    if not isinstance(data, dict):
        got = kind_of(data)
        raise WorkflowInvalid(f"{label}:2: the front matter must be a map of settings, got {got}", path=label)

    def where(dotted: str) -> str:
        line = key_lines.get(dotted)
        return f"{label}:{line}" if line else label

    settings, found, problems = resolve_settings(data, where)
    warnings.extend(found)
    if settings is None:
        raise WorkflowInvalid(f"{label}: invalid settings:\n  " + "\n  ".join(problems), path=label)
    return settings


def _key_lines(node: Any, prefix: str = "") -> dict[str, int]:
    """Map each dotted key path of a composed YAML document to its 1-based line in the file."""
    import yaml

    out: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            dotted = f"{prefix}{key_node.value}"
            out[dotted] = key_node.start_mark.line + 2  # 0-based, after the opening '---'
            out.update(_key_lines(value_node, dotted + "."))
    return out


# --- the template ----------------------------------------------------------------------------------


@functools.cache
def _environment() -> SandboxedEnvironment:
    from jinja2 import StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


def _compile(source: str, label: str, first_line: int) -> Template:
    from jinja2 import TemplateSyntaxError

    env = _environment()
    try:
        code = env.compile(source, name=WORKFLOW_FILE, filename=label)
    except TemplateSyntaxError as exc:
        line = first_line + (exc.lineno or 1) - 1
        raise WorkflowTemplateError(
            f"{label}:{line}: template syntax error: {exc.message}", path=label, line=line
        ) from None
    return env.template_class.from_code(env, code, env.make_globals(None))


def _render_error(exc: Exception, wf: Workflow) -> WorkflowRenderError:
    from jinja2 import UndefinedError

    rel = None
    tb = exc.__traceback__
    while tb is not None:  # jinja rewrites tracebacks so template frames carry template lines
        if tb.tb_frame.f_code.co_filename == wf.label:
            rel = tb.tb_lineno
        tb = tb.tb_next
    what = "undefined variable" if isinstance(exc, UndefinedError) else f"render failed ({type(exc).__name__})"
    msg = str(exc)
    if rel is None:
        return WorkflowRenderError(f"{wf.label}: {what}: {msg}", path=wf.label)
    line = wf.template_line + rel - 1
    lines = wf.template_source.splitlines()
    snippet = lines[rel - 1].strip() if 0 < rel <= len(lines) else ""
    shown = f" (in: {snippet[:120]})" if snippet else ""
    return WorkflowRenderError(f"{wf.label}:{line}: {what}: {msg}{shown}", path=wf.label, line=line)


def _issue_view(task: Any) -> dict[str, Any]:
    """Symphony's ``issue`` fields, filled from an omx task (a model or a mapping)."""

    def get(name: str) -> Any:
        return task.get(name) if isinstance(task, Mapping) else getattr(task, name, None)

    tid = get("id")
    return {
        "id": tid,
        "identifier": f"task-{tid}" if str(tid).isdigit() else str(tid),
        "title": get("subject") or "",
        "description": get("description") or "",
        "state": get("status") or "",
        "labels": list(get("labels") or []),
        "url": get("url") or "",
        "priority": get("priority"),
    }
