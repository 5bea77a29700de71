"""The ``omx team api`` operation registry: name → input fields, handler, one-line summary.

Input field names follow oh-my-codex (``team_name``, ``task_id``, ``worker``, ``claim_token``,
``from``/``to``, ``from_worker``/``to_worker``, ``body``, ``message_id``), with a few aliases
(``team`` for ``team_name``, ``blocked_by`` for ``depends_on``, ``status`` for ``to``). Unknown
fields are refused by name, so a typo is an ``invalid_input`` error, not a silently ignored key.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omx.errors import InvalidInput
from omx.state import names
from omx.state.apispec import NAME_LEN, TASK, TEAM, TOKEN, WORKER, F, parse_input
from omx.state.base import PRIORITY_LIMIT
from omx.state.filestore import FileStore
from omx.state.mailbox import MAX_BODY
from omx.state.tasks import MAX_DESCRIPTION, MAX_SUBJECT

Handler = Callable[[FileStore, dict[str, Any], dict[str, Any]], dict[str, Any]]

# Bounds of the free-text fields (characters); see omx.state.apispec and each op's --help.
GOAL_LEN = 20_000
ROLE_LEN = 100
REASON_LEN = 2_000
ERROR_LEN = 20_000
PATH_LEN = 4_096
HOST_LEN = 255
MESSAGE_ID_LEN = 80
TIMESTAMP_LEN = 64
CHOICE_LEN = 32
MAX_FILES = 1_000
MAX_DEPENDS = 1_000
RESULT_JSON_LEN = 1_000_000
EVENT_DATA_JSON_LEN = 100_000
INBOX_LEN = 1_000_000
#: An identity's other fields (pane_id, ...): how many, and each one's JSON length.
IDENTITY_EXTRA_FIELDS = 32
IDENTITY_EXTRA_LEN = 10_000


@dataclass(frozen=True)
class Operation:
    name: str
    fields: tuple[F, ...]
    handler: Handler
    summary: str
    ours: bool = False  # an omx extension: not in oh-my-codex
    allow_extra: bool = False

    def call(self, store: FileStore, data: dict[str, Any]) -> dict[str, Any]:
        values, extra = parse_input(self.name, self.fields, data, allow_extra=self.allow_extra)
        return self.handler(store, values, extra)


OPERATIONS: dict[str, Operation] = {}


def op(name: str, fields: tuple[F, ...], summary: str, *, ours: bool = False, allow_extra: bool = False
       ) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        OPERATIONS[name] = Operation(name, (TEAM, *fields), fn, summary, ours, allow_extra)
        return fn

    return register


def _tid(v: Any) -> str | None:
    return None if v is None else str(v)


def _types(v: Any) -> list[str] | None:
    return [v] if isinstance(v, str) else v


# --- teams --------------------------------------------------------------------------------------


@op("create-team", (F("goal", default="", max_len=GOAL_LEN),
                    F("workers", "count_or_strs", default=1, help="a count (worker-1..worker-N) or a list of names",
                      max_len=64, item_len=NAME_LEN),
                    F("lease_ms", "int", default=60_000, lo=1, hi=7 * 24 * 3_600_000),
                    F("shared_group", "bool", default=False,
                      help="files 0660 and folders 0770 (group access) instead of 0600 and 0700")),
    "Create a team with its workers and lease length.", ours=True)
def _create_team(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    w = a["workers"]
    if isinstance(w, int):
        if not 0 <= w <= 64:
            raise InvalidInput("workers must be between 0 and 64", field="workers")
        w = [f"worker-{n}" for n in range(1, w + 1)]
    cfg = s.create_team(a["team_name"], goal=a["goal"] or "", workers=w, lease_ms=a["lease_ms"],
                        shared_group=bool(a["shared_group"]))
    return {"config": cfg.to_dict()}


@op("read-config", (), "Read the team's config.json.")
def _read_config(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    return {"config": s.read_config(a["team_name"]).to_dict()}


@op("cleanup", (F("force", "bool", default=False),),
    "Delete the team's state (refused while tasks are in progress, unless force); `omx team cleanup` "
    "removes its worktrees and branches.")
def _cleanup(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    return s.cleanup(a["team_name"], force=bool(a["force"]))


@op("get-summary", (), "Counts by status, workers with heartbeat age, stale workers, blocked reasons.")
def _summary(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    return s.summary(a["team_name"])


# --- tasks --------------------------------------------------------------------------------------


TASK_FIELDS = (
    F("subject", required=True, max_len=MAX_SUBJECT), F("description", default="", max_len=MAX_DESCRIPTION),
    F("depends_on", "task_ids", default=list, aliases=("blocked_by",), max_len=MAX_DEPENDS),
    F("priority", "int", default=0, help="higher runs first", lo=-PRIORITY_LIMIT, hi=PRIORITY_LIMIT),
    F("role", max_len=ROLE_LEN), F("files", "strs", default=list, max_len=MAX_FILES, item_len=PATH_LEN),
)


@op("create-task", (*TASK_FIELDS, F("owner", help="pre-assign to this worker", max_len=NAME_LEN)),
    "Create a pending task; ids are allocated atomically and never reused.")
def _create_task(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    t = s.create_task(a["team_name"], a["subject"], a["description"] or "", depends_on=a["depends_on"] or [],
                      priority=a["priority"] or 0, role=a["role"], files=a["files"] or [], owner=a["owner"])
    return {"task": s.task_view(a["team_name"], t)}


@op("read-task", (TASK,), "Read one task.")
def _read_task(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    return {"task": s.task_view(a["team_name"], s.read_task(a["team_name"], a["task_id"]))}


@op("list-tasks", (F("status", help="pending|blocked|in_progress|completed|failed", max_len=CHOICE_LEN),
                   F("owner", max_len=NAME_LEN)),
    "List tasks (filter by status/owner); corrupt task files are listed with their paths.")
def _list_tasks(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    listing = s.list_tasks(a["team_name"], status=a["status"], owner=a["owner"])
    tasks = []
    for t in listing.tasks:
        d = t.to_dict()
        if t.id in listing.blocked_by:
            d["blocked_by"] = listing.blocked_by[t.id]
        tasks.append(d)
    return {"tasks": tasks, "count": len(tasks), "corrupt": listing.corrupt}


@op("update-task", (TASK, F("expected_version", "int", lo=1),
                    *(F(f.name, f.kind, aliases=f.aliases, help=f.help or "changed when given", lo=f.lo, hi=f.hi,
                        max_len=f.max_len, item_len=f.item_len, passthrough=True) for f in TASK_FIELDS)),
    "Change subject, description, depends_on (alias blocked_by), priority, role or files.")
def _update_task(s: FileStore, a: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    t = s.update_task(a["team_name"], a["task_id"], extra, expected_version=a["expected_version"])
    return {"task": s.task_view(a["team_name"], t)}


@op("assign-task", (TASK, F("owner", help="a worker, or null for anyone", max_len=NAME_LEN)),
    "Pre-assign a pending task to a worker, or to nobody (null).", ours=True)
def _assign_task(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    return {"task": s.task_view(a["team_name"], s.assign_task(a["team_name"], a["task_id"], a["owner"]))}


@op("retry-task", (TASK,),
    "Send a failed task back to pending (attempts kept; its last result and error under result.previous); "
    "refused unless the task is failed.", ours=True)
def _retry_task(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    return {"task": s.task_view(a["team_name"], s.retry_task(a["team_name"], a["task_id"]))}


# --- claims -------------------------------------------------------------------------------------

PID = F("pid", "int", lo=1, hi=2**31, help="the worker's long-lived pid: a dead holder is reclaimed at once")


@op("claim-task", (TASK, WORKER, F("expected_version", "int", lo=1), PID),
    "Claim a task by id; returns data.task and data.claimToken (shown once).")
def _claim_task(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    r = s.claim_task(a["team_name"], a["task_id"], a["worker"], expected_version=a["expected_version"], pid=a["pid"])
    return {"task": s.task_view(a["team_name"], r.task), "claimToken": r.token}


@op("claim-next", (WORKER, PID, F("wait_ms", "int", default=0, lo=0, hi=3_600_000,
                                   help="wait this long for a task to become ready")),
    "Claim the best ready task for the worker (priority, then id); task null when none.", ours=True)
def _claim_next(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    team, worker = a["team_name"], a["worker"]
    if a["wait_ms"]:
        r = s.claim_next_wait(team, worker, wait_ms=a["wait_ms"], pid=a["pid"])
    else:
        r = s.claim_next(team, worker, pid=a["pid"])
    if r is None:
        return {"task": None, "claimToken": None, "drained": s.is_drained(team)}
    return {"task": s.task_view(team, r.task), "claimToken": r.token}


@op("renew-claim", (TASK, WORKER, TOKEN), "Extend the lease of a task you hold by the team's lease_ms.", ours=True)
def _renew(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    t = s.renew_claim(a["team_name"], a["task_id"], a["worker"], a["claim_token"])
    return {"task": s.task_view(a["team_name"], t)}


@op("transition-task-status", (TASK, WORKER, TOKEN, F("to", required=True, aliases=("status",),
                                                      help="completed|failed", max_len=CHOICE_LEN),
                               F("from", help="in_progress (checked when given)", max_len=CHOICE_LEN),
                               F("result", "any", max_len=RESULT_JSON_LEN), F("error", max_len=ERROR_LEN)),
    "Finish a task you hold: in_progress -> completed|failed, with a result or an error.")
def _transition(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    t = s.transition_task(a["team_name"], a["task_id"], a["worker"], a["claim_token"], a["to"], result=a["result"],
                          error=a["error"], from_status=a["from"])
    return {"task": s.task_view(a["team_name"], t)}


@op("release-task-claim", (TASK, WORKER, TOKEN, F("reason", max_len=REASON_LEN)),
    "Give back a task you hold: in_progress -> pending.")
def _release(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    t = s.release_claim(a["team_name"], a["task_id"], a["worker"], a["claim_token"], reason=a["reason"])
    return {"task": s.task_view(a["team_name"], t)}


@op("reclaim-expired", (), "Return tasks with expired leases (or dead local holders) to pending.", ours=True)
def _reclaim(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    out = s.reclaim_expired(a["team_name"])
    return {"reclaimed": out, "count": len(out)}


TIMEOUT = F("timeout_ms", "int", default=30_000, lo=0, hi=3_600_000)


@op("await-task", (F("worker", max_len=NAME_LEN), F("task_id", "task_id"),
                   F("statuses", "str_or_strs", aliases=("status",), help="with task_id; default completed+failed",
                     max_len=8, item_len=CHOICE_LEN),
                   TIMEOUT),
    "Block until a task is ready for the worker (or task_id reaches a status), or the timeout.", ours=True)
def _await_task(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    found = s.await_task(a["team_name"], worker=a["worker"], task_id=_tid(a["task_id"]),
                         statuses=_types(a["statuses"]), timeout_ms=a["timeout_ms"])
    return {"timed_out": found is None, **(found or {})}


# --- mailbox ------------------------------------------------------------------------------------


@op("send-message", (F("from_worker", required=True, max_len=NAME_LEN), F("to_worker", required=True, max_len=NAME_LEN),
                     F("body", required=True, max_len=MAX_BODY)),
    "Send a message to a worker or to leader-fixed.")
def _send(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    return {"message": s.send_message(a["team_name"], a["from_worker"], a["to_worker"], a["body"]).to_dict()}


@op("broadcast", (F("from_worker", required=True, max_len=NAME_LEN), F("body", required=True, max_len=MAX_BODY)),
    "Send a message to every worker but the sender.")
def _broadcast(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    msgs = s.broadcast(a["team_name"], a["from_worker"], a["body"])
    return {"messages": [m.to_dict() for m in msgs], "count": len(msgs)}


@op("mailbox-list", (WORKER, F("include_delivered", "bool", default=False)),
    "List a mailbox, oldest first (undelivered only unless include_delivered).")
def _mailbox_list(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    msgs = s.mailbox_list(a["team_name"], a["worker"], include_delivered=bool(a["include_delivered"]))
    return {"messages": [m.to_dict() for m in msgs], "count": len(msgs)}


MSG = F("message_id", required=True, max_len=MESSAGE_ID_LEN)


@op("mailbox-mark-delivered", (WORKER, MSG), "Mark a message delivered (read).")
def _mark_delivered(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    return {"message": s.mark_delivered(a["team_name"], a["worker"], a["message_id"]).to_dict()}


@op("mailbox-mark-notified", (WORKER, MSG), "Mark that the worker was notified of a message.")
def _mark_notified(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    return {"message": s.mark_notified(a["team_name"], a["worker"], a["message_id"]).to_dict()}


# --- workers ------------------------------------------------------------------------------------


@op("read-worker-status", (WORKER,), "Read a worker's status.json.")
def _read_status(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    return {"status": s.read_status(a["team_name"], a["worker"]).to_dict()}


@op("write-worker-status", (WORKER, F("state", required=True, aliases=("status",),
                                      help="idle|working|blocked|done|failed|draining", max_len=CHOICE_LEN),
                            F("current_task_id", "task_id"), F("reason", max_len=REASON_LEN)),
    "Write a worker's status.json.")
def _write_status(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    current = a["current_task_id"]
    if current is not None:
        try:
            current = names.task_id(current)
        except InvalidInput as exc:
            raise InvalidInput(f"current_task_id: {exc.message}", field="current_task_id") from None
    st = s.write_status(a["team_name"], a["worker"], a["state"], current_task_id=current,
                        reason=a["reason"])
    return {"status": st.to_dict()}


@op("read-worker-heartbeat", (WORKER,), "Read a worker's heartbeat.json (null if none).")
def _read_hb(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    hb = s.read_heartbeat(a["team_name"], a["worker"])
    return {"heartbeat": hb.to_dict() if hb else None}


@op("update-worker-heartbeat", (WORKER, PID, F("turn_count", "int", lo=0), F("alive", "bool", default=True)),
    "Record a worker's liveness (pid, turn count).")
def _update_hb(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    hb = s.update_heartbeat(a["team_name"], a["worker"], pid=a["pid"], turn_count=a["turn_count"],
                            alive=a["alive"] is not False)
    return {"heartbeat": hb.to_dict()}


@op("write-worker-inbox", (WORKER, F("content", required=True, max_len=INBOX_LEN)),
    "Replace a worker's inbox.md verbatim.")
def _write_inbox(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    return s.write_inbox(a["team_name"], a["worker"], a["content"])


@op("write-worker-identity", (WORKER, F("index", "int", default=0, lo=0, hi=10_000), F("role", max_len=ROLE_LEN),
                              F("pid", "int", lo=1, hi=2**31), F("host", max_len=HOST_LEN),
                              F("worktree", aliases=("worktree_path",), max_len=PATH_LEN)),
    "Write a worker's identity.json (other fields, e.g. pane_id, are kept as given).", allow_extra=True)
def _write_identity(s: FileStore, a: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    keep = {k: v for k, v in extra.items() if k not in ("name", "team")}
    if len(keep) > IDENTITY_EXTRA_FIELDS:
        raise InvalidInput(f"write-worker-identity: at most {IDENTITY_EXTRA_FIELDS} other fields")
    for k, v in keep.items():
        if len(k) > NAME_LEN or len(json.dumps(v, ensure_ascii=False)) > IDENTITY_EXTRA_LEN:
            raise InvalidInput(f"write-worker-identity: other field {k[:NAME_LEN]!r} is longer than "
                               f"{IDENTITY_EXTRA_LEN} characters as JSON (or its name than {NAME_LEN})", field=k)
    ident = s.write_identity(a["team_name"], a["worker"], index=a["index"] or 0, role=a["role"], pid=a["pid"],
                             host=a["host"], worktree=a["worktree"], **keep)
    return {"identity": ident.to_dict()}


@op("write-shutdown-request", (WORKER, F("requested_by", default="leader-fixed", max_len=NAME_LEN),
                               F("reason", max_len=REASON_LEN)),
    "Ask a worker to shut down.")
def _shutdown_req(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    req = s.write_shutdown_request(a["team_name"], a["worker"], a["requested_by"] or "leader-fixed", a["reason"])
    return {"request": req.to_dict()}


@op("read-shutdown-request", (WORKER,), "Read a worker's shutdown request (null if none).", ours=True)
def _read_shutdown_req(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    req = s.read_shutdown_request(a["team_name"], a["worker"])
    return {"request": req.to_dict() if req else None}


@op("read-shutdown-ack", (WORKER, F("min_updated_at", max_len=TIMESTAMP_LEN)),
    "Read a worker's shutdown ACK (null if none, or older than min_updated_at).")
def _read_ack(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    ack = s.read_shutdown_ack(a["team_name"], a["worker"], a["min_updated_at"])
    return {"ack": ack.to_dict() if ack else None}


@op("write-shutdown-ack", (WORKER, F("status", default="accept", help="accept|reject", max_len=CHOICE_LEN),
                           F("reason", max_len=REASON_LEN)),
    "Acknowledge a shutdown request.")
def _write_ack(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    ack = s.write_shutdown_ack(a["team_name"], a["worker"], a["status"] or "accept", a["reason"])
    return {"ack": ack.to_dict()}


# --- events -------------------------------------------------------------------------------------

EVENT_FILTERS = (
    F("cursor", "int", default=0, lo=0, help="byte offset from a previous answer's cursor"),
    F("limit", "int", default=1000, lo=1, hi=10_000),
    F("types", "str_or_strs", aliases=("type",), max_len=100, item_len=NAME_LEN), F("worker", max_len=NAME_LEN),
    F("task_id", "task_id"),
)


@op("append-event", (F("type", required=True, max_len=NAME_LEN), F("worker", max_len=NAME_LEN), F("task_id", "task_id"),
                     F("message_id", max_len=MESSAGE_ID_LEN), F("reason", max_len=REASON_LEN),
                     F("data", "object", max_len=EVENT_DATA_JSON_LEN)),
    "Append a custom event to the audit log.")
def _append_event(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    ev = s.append_event(a["team_name"], a["type"], worker=a["worker"], task_id=_tid(a["task_id"]),
                        message_id=a["message_id"], reason=a["reason"], data=a["data"])
    return {"event": ev.to_dict(exclude_none=True)}


@op("read-events", EVENT_FILTERS, "Read events after a cursor; returns the next cursor.")
def _read_events(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    page = s.read_events(a["team_name"], cursor=a["cursor"] or 0, limit=a["limit"] or 1000, types=_types(a["types"]),
                         worker=a["worker"], task_id=_tid(a["task_id"]))
    return _page(page)


def _page(page: Any) -> dict[str, Any]:
    out = {"events": [e.to_dict(exclude_none=True) for e in page.events], "cursor": page.cursor,
           "count": len(page.events)}
    if page.torn:  # bytes that are no event, skipped (see omx doctor --fix)
        out["torn"] = page.torn
        out["warning"] = (f"{len(page.torn)} torn line(s) in the event log were skipped; "
                          "`omx doctor --fix` moves them aside")
    return out


@op("await-event", (*EVENT_FILTERS, TIMEOUT), "Block until an event after the cursor arrives, or the timeout.")
def _await_event(s: FileStore, a: dict[str, Any], _: dict[str, Any]) -> dict[str, Any]:
    page = s.await_event(a["team_name"], cursor=a["cursor"] or 0, timeout_ms=a["timeout_ms"],
                         types=_types(a["types"]), worker=a["worker"], task_id=_tid(a["task_id"]))
    return {**_page(page), "timed_out": not page.events}
