"""Test doubles: a fake Responses API model server, a scripted fake codex app-server, an event recorder."""
