"""Text that ships with the engine (kept as Python constants so every install carries it)."""
