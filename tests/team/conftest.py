"""Leader tests reuse the engine's fake model and Codex fixtures."""

from tests.engine.conftest import codex_bin, codex_env, fake_model, workdir

__all__ = ["codex_bin", "codex_env", "fake_model", "workdir"]
