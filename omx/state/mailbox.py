"""Mailboxes: one file per message, written by temp file + rename, so none is half-written or lost."""

from __future__ import annotations

import os
import re
import secrets
from typing import Any

from omx.errors import CorruptState, InvalidInput, MessageNotFound
from omx.models import Message
from omx.state import atomic, modes, names
from omx.state.paths import TeamPaths
from omx.state.tasks import TaskOps

MESSAGE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
MAX_BODY = 100_000


def _message_id(value: object) -> str:
    if not isinstance(value, str) or not MESSAGE_ID_RE.fullmatch(value):
        raise InvalidInput("message_id must be 1-80 chars of letters, digits, '.', '_' or '-'", field="message_id")
    return value


class MailboxOps(TaskOps):
    """send-message, broadcast, mailbox-list, mailbox-mark-delivered, mailbox-mark-notified."""

    def send_message(self, team: str, from_worker: str, to_worker: str, body: str) -> Message:
        """Deliver ``body`` to ``to_worker``'s mailbox (a member or ``leader-fixed``)."""
        p = self.paths(team)
        cfg = self._load_config(p)
        self.require_member(cfg, from_worker, allow_leader=True)
        self.require_member(cfg, to_worker, allow_leader=True)
        if not isinstance(body, str):
            raise InvalidInput("body must be a string", field="body")
        if len(body) > MAX_BODY:
            raise InvalidInput(f"body is longer than {MAX_BODY} characters", field="body")
        msg = self._write_message(p, from_worker, to_worker, body)
        if to_worker != names.LEADER:
            self.render_inbox(team, to_worker)
        return msg

    def _write_message(self, p: TeamPaths, from_worker: str, to_worker: str, body: str) -> Message:
        ms, at = self.now()
        msg = Message(
            message_id=f"{ms:013d}-{secrets.token_hex(4)}", from_worker=from_worker, to_worker=to_worker,
            body=body, created_at=at,
        )
        box = p.mailbox(to_worker)
        mode = self._fmode(p)
        modes.make_dirs(box, modes.dir_for(mode))
        atomic.write_json(box / f"{msg.message_id}.json", msg.to_dict(), mode=mode)
        self._emit(p, "message_sent", worker=from_worker, message_id=msg.message_id, data={"to_worker": to_worker})
        return msg

    def broadcast(self, team: str, from_worker: str, body: str) -> list[Message]:
        """Send ``body`` to every worker but the sender."""
        p = self.paths(team)
        cfg = self._load_config(p)
        self.require_member(cfg, from_worker, allow_leader=True)
        return [self.send_message(team, from_worker, w, body) for w in cfg.worker_names() if w != from_worker]

    def mailbox_list(self, team: str, worker: str, *, include_delivered: bool = False) -> list[Message]:
        """Messages to ``worker``, oldest first; delivered ones only with ``include_delivered``."""
        p = self.paths(team)
        self.require_member(self._load_config(p), worker, allow_leader=True)
        box = p.mailbox(worker)
        out = []
        try:
            entries = sorted(os.listdir(box))
        except FileNotFoundError:
            return []
        for name in entries:
            if not name.endswith(".json") or atomic.is_temp(name):
                continue
            try:
                msg: Message = Message.from_dict(atomic.read_json(box / name))
            except FileNotFoundError:
                continue
            except (CorruptState, ValueError):
                continue  # reported by doctor; one bad file must not hide the rest
            if include_delivered or msg.delivered_at is None:
                out.append(msg)
        return out

    def _mark(self, team: str, worker: str, message_id: str, field: str) -> Message:
        p = self.paths(team)
        self.require_member(self._load_config(p), worker, allow_leader=True)
        mid = _message_id(message_id)
        path = p.mailbox(worker) / f"{mid}.json"
        from omx.state.locks import locked

        with locked(p.locks / f"mailbox-{worker}.lock"):
            try:
                msg = Message.from_dict(atomic.read_json(path))
            except FileNotFoundError:
                raise MessageNotFound(f"no message {mid} for {worker}", message_id=mid) from None
            except ValueError as exc:
                raise CorruptState(f"{path}: invalid message ({exc})", path=str(path)) from None
            if getattr(msg, field) is None:
                _, at = self.now()
                msg = msg.replace(**{field: at})
                atomic.write_json(path, msg.to_dict(), mode=self._fmode(p))
                kind = field.removesuffix("_at")
                self._emit(p, f"message_{kind}", worker=worker, message_id=mid)
        if worker != names.LEADER and field == "delivered_at":
            self.render_inbox(team, worker)
        return msg

    def mark_delivered(self, team: str, worker: str, message_id: str) -> Message:
        """Mark a message read (idempotent)."""
        return self._mark(team, worker, message_id, "delivered_at")

    def mark_notified(self, team: str, worker: str, message_id: str) -> Message:
        """Mark that the worker was told about a message (idempotent)."""
        return self._mark(team, worker, message_id, "notified_at")

    def render_inbox(self, team: str, worker: str) -> str:
        """Write ``workers/<w>/inbox.md``: the worker's assignment and unread messages, for a human or agent."""
        p = self.paths(team)
        cfg = self._load_config(p)
        lines = [f"# Inbox of {worker} (team {team})", ""]
        if cfg.goal:
            lines += ["## Team goal", "", cfg.goal, ""]
        mine = [t for t in self.list_tasks(team).tasks if t.owner == worker and t.status in ("pending", "in_progress")]
        lines += ["## Your tasks", ""]
        if mine:
            lines += [f"- task {t.id} [{t.status}] {t.subject}" for t in mine]
        else:
            lines.append("- none assigned: claim the next ready task with `omx team api claim-next`")
        unread = self.mailbox_list(team, worker)
        lines += ["", f"## Unread messages ({len(unread)})", ""]
        for m in unread:
            lines += [f"### {m.message_id} from {m.from_worker} at {m.created_at}", "", m.body, ""]
        text = "\n".join(lines).rstrip() + "\n"
        d = p.worker_dir(worker)
        modes.make_dirs(d, modes.dir_for(self._fmode(p)))
        atomic.write_bytes(d / "inbox.md", text.encode(), durable=False, mode=self._fmode(p))
        return text

    def write_inbox(self, team: str, worker: str, content: str) -> dict[str, Any]:
        """Replace ``inbox.md`` with ``content`` verbatim (oh-my-codex's write-worker-inbox)."""
        p = self.paths(team)
        self.require_member(self._load_config(p), worker)
        if not isinstance(content, str) or "\x00" in content:
            raise InvalidInput("content must be a string without NUL", field="content")
        d = p.worker_dir(worker)
        modes.make_dirs(d, modes.dir_for(self._fmode(p)))
        atomic.write_bytes(d / "inbox.md", content.encode(), mode=self._fmode(p))
        return {"path": str(d / "inbox.md"), "bytes": len(content.encode())}
