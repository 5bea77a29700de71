"""``omx team api <operation> --help``: generated from the operation's input fields."""

from __future__ import annotations

import json
from typing import Any

EXAMPLES: dict[str, Any] = {
    "team_name": "alpha", "worker": "worker-1", "task_id": "1", "subject": "Write the parser",
    "claim_token": "<token from claim>", "to": "completed", "from_worker": "worker-1",
    "to_worker": "leader-fixed", "body": "ACK: worker-1 initialized", "message_id": "<message_id>",
    "content": "# Inbox\n", "type": "note", "state": "idle",
}


def operation_help(spec: Any) -> str:
    from omx.state.apispec import describe

    lines = [f"usage: omx team api {spec.name} --input JSON [--json] [--root DIR]", "", spec.summary, ""]
    required, optional = [], []
    example: dict[str, Any] = {}
    for f in describe(spec.fields):
        alias = f" (alias: {', '.join(f['aliases'])})" if f.get("aliases") else ""
        if f.get("bound"):
            f["type"] += f", {f['bound']}"
        helptext = f" — {f['help']}" if f.get("help") else ""
        if f["required"]:
            required.append(f"  {f['name']}: {f['type']}{alias}{helptext}")
            example[f["name"]] = EXAMPLES.get(f["name"], f"<{f['name']}>")
        else:
            optional.append(f"  {f['name']}: {f['type']} = {json.dumps(f['default'])}{alias}{helptext}")
    lines += ["Required input fields:", *(required or ["  (none)"]), ""]
    if optional:
        lines += ["Optional input fields:", *optional, ""]
    if spec.allow_extra:
        from omx.state.api import IDENTITY_EXTRA_FIELDS, IDENTITY_EXTRA_LEN

        lines += [f"Other fields are kept as given (at most {IDENTITY_EXTRA_FIELDS}, each at most "
                  f"{IDENTITY_EXTRA_LEN} characters as JSON).", ""]
    lines += ["Example:", f"  omx team api {spec.name} --input '{json.dumps(example)}' --json", ""]
    return "\n".join(lines)
