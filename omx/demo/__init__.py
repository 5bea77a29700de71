"""``omx demo``: a real team of Codex workers on a generated sample repository."""
