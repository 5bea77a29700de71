"""Which environment variables reach an agent or a hook: what it needs, nothing else (issue 10).

The agent (and a hook) inherit the worker's environment minus two kinds of names:

- omx's own (``OMX_*``; hooks keep theirs): worker identity, state roots, platform settings;
- anything whose name looks like a credential. A name is split on ``_`` into segments, and it looks
  like a credential when a segment is one of :data:`CREDENTIAL_SEGMENTS` (``KEY``, ``TOKEN``,
  ``PASS``, ``PWD``, ``PAT``, ``AUTH``, ``SESSION``...; plurals too) or contains one of
  :data:`CREDENTIAL_PARTS` (``PASSWORD``, ``SECRET``, ``APIKEY``...), or it is one of the usual cloud
  names that hold one without saying so (:data:`CREDENTIAL_NAMES`). Segments, not substrings: ``PATH``
  is not ``PAT``, ``KEYBOARD_LAYOUT`` is not ``KEY``. ``PWD`` and ``OLDPWD`` are directories, and a few
  desktop session names are not secrets (:data:`NOT_CREDENTIALS`).

What passes on purpose: the model credentials Codex reads itself (``OPENAI_API_KEY``,
``CODEX_API_KEY``), the variables the active Codex model provider names (``env_key`` and
``env_http_headers`` of ``[model_providers.<id>]`` in ``$CODEX_HOME/config.toml``, after the
``-c key=value`` and ``--profile`` options of the runtime's command), and every name listed in
WORKFLOW.md's ``runtime.passEnv`` (agents) or ``hooks.passEnv`` (hooks).

This module is imported by the worker's head start (:mod:`omx.engine.early`) before anything else:
its own imports are the interpreter's; ``tomllib`` is imported only when a Codex config or a ``-c``
option may name a provider's variables.

Example:
    >>> is_credential("GH_PAT"), is_credential("PATH"), is_credential("KEYBOARD_LAYOUT"), is_credential("PWD")
    (True, False, False, False)
"""

from __future__ import annotations

import os
import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

#: A segment of a name (split on ``_``) that makes it a credential's name, alone or with an ``S``.
CREDENTIAL_SEGMENTS = frozenset({
    "KEY", "SECRET", "TOKEN", "PASS", "PASSWD", "PASSWORD", "PASSPHRASE", "PWD", "PAT", "CREDENTIAL", "CREDS",
    "AUTH", "COOKIE", "SESSION", "APIKEY", "DSN", "WEBHOOK",
})
#: Text inside a segment that makes it a credential's name (``CLIENTSECRET``, ``DBPASSWORD``, ``MYAPIKEY``).
CREDENTIAL_PARTS = ("PASSWORD", "PASSWD", "PASSPHRASE", "SECRET", "APIKEY", "ACCESSKEY", "PRIVATEKEY", "AUTHTOKEN",
                    "ACCESSTOKEN", "CREDENTIAL")
#: The usual names that hold a credential without a telling segment (a URL with a password in it).
CREDENTIAL_NAMES = frozenset({"DATABASE_URL"})
CREDENTIAL_SUFFIXES = ("_CONNECTION_STRING", "_CONNSTR")
#: Names with a telling segment that are not secrets.
NOT_CREDENTIALS = frozenset({
    "PWD", "OLDPWD", "XDG_SESSION_ID", "XDG_SESSION_TYPE", "XDG_SESSION_CLASS", "XDG_SESSION_DESKTOP",
    "DESKTOP_SESSION", "TERM_SESSION_ID",
})
#: The model credentials Codex reads itself (its built-in OpenAI provider, ``codex exec``).
MODEL_KEYS = ("OPENAI_API_KEY", "CODEX_API_KEY")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONFIG_OPTIONS = ("-c", "--config")
_PROFILE_OPTIONS = ("-p", "--profile")


def is_credential(name: str) -> bool:
    """Does ``name`` look like the name of a credential? (See the module docstring for the rule.)"""
    upper = name.upper()
    if upper in NOT_CREDENTIALS:
        return False
    if upper in CREDENTIAL_NAMES or upper.endswith(CREDENTIAL_SUFFIXES):
        return True
    for seg in upper.split("_"):
        if seg in CREDENTIAL_SEGMENTS or (seg.endswith("S") and seg[:-1] in CREDENTIAL_SEGMENTS):
            return True
        if any(part in seg for part in CREDENTIAL_PARTS):
            return True
    return False


class EnvSplit:
    """An environment split by :func:`split_env`: what ``passed`` and the names withheld, and why.

    Attributes:
        passed: the environment to give the child (names and values).
        withheld: names withheld as credentials (never their values).
        own: omx's own names (``OMX_*``), withheld.
        allowed: credential-like names passed on purpose (passEnv, the model provider's).
    """

    def __init__(self) -> None:
        self.passed: dict[str, str] = {}
        self.withheld: list[str] = []
        self.own: list[str] = []
        self.allowed: list[str] = []


def split_env(env: Mapping[str, str], *, allow: Iterable[str] = (), drop_own: bool = True) -> EnvSplit:
    """Split ``env``: credential-like names withheld unless in ``allow``; ``OMX_*`` dropped when ``drop_own``
    (hooks keep theirs, minus credentials)."""
    allowed = frozenset(allow)
    out = EnvSplit()
    for name, value in env.items():
        if name.upper().startswith("OMX_") and drop_own:
            out.own.append(name)
        elif name in allowed and not name.upper().startswith("OMX_"):
            out.passed[name] = value
            if is_credential(name):
                out.allowed.append(name)
        elif is_credential(name):
            out.withheld.append(name)
        else:
            out.passed[name] = value
    out.withheld.sort()
    out.own.sort()
    out.allowed.sort()
    return out


def agent_allowed(env: Mapping[str, str], command: Sequence[str] | None = None,
                  pass_env: Iterable[str] = ()) -> list[str]:
    """Credential-like names an agent needs: Codex's model keys, the active provider's, and ``pass_env``."""
    return [*MODEL_KEYS, *codex_provider_env(env, command), *pass_env]


def codex_provider_env(env: Mapping[str, str], command: Sequence[str] | None = None) -> list[str]:
    """The variables the active Codex model provider reads: its ``env_key`` and ``env_http_headers`` values.

    The provider is ``model_provider`` of ``$CODEX_HOME/config.toml`` (``~/.codex``), or of the profile
    it (or ``--profile``) selects; ``-c key=value`` options in ``command`` override the file, as Codex
    applies them. A missing or unreadable config, or a provider that names no variable, gives ``[]``.
    """
    overrides, profile_flag = _overrides(command or ())
    home = env.get("CODEX_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".codex")
    try:
        with open(os.path.join(home, "config.toml"), encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError):
        text = ""
    if not overrides and not profile_flag and not any(w in text for w in ("env_key", "env_http_headers")):
        return []  # nothing could name a variable: no TOML parsing (the worker's head start runs this)
    import tomllib

    try:
        config: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        config = {}
    for path, raw in overrides:
        _set(config, path, _toml_value(raw))
    profile_name = profile_flag or config.get("profile")
    profiles = config.get("profiles")
    profile = profiles.get(profile_name) if isinstance(profiles, dict) and isinstance(profile_name, str) else None
    provider_id = (profile or {}).get("model_provider") if isinstance(profile, dict) else None
    provider_id = provider_id or config.get("model_provider") or "openai"
    providers = config.get("model_providers")
    provider = providers.get(provider_id) if isinstance(providers, dict) and isinstance(provider_id, str) else None
    if not isinstance(provider, dict):
        return []
    names = [provider.get("env_key")]
    headers = provider.get("env_http_headers")
    if isinstance(headers, dict):
        names += list(headers.values())
    return [n for n in names if isinstance(n, str) and ENV_NAME.fullmatch(n)]


def _overrides(argv: Sequence[str]) -> tuple[list[tuple[list[str], str]], str | None]:
    """The ``-c key=value`` options of a Codex command line (key as a dotted path), and ``--profile``."""
    out: list[tuple[list[str], str]] = []
    profile = None
    it = iter(argv)
    for arg in it:
        value: str | None = None
        if arg in _CONFIG_OPTIONS or arg in _PROFILE_OPTIONS:
            value = next(it, None)
        elif arg.startswith(("--config=", "--profile=")):
            value = arg.partition("=")[2]
            arg = arg.partition("=")[0]
        elif arg.startswith("-c") and len(arg) > 2:
            value, arg = arg[2:], "-c"
        if value is None:
            continue
        if arg in _PROFILE_OPTIONS:
            profile = value
            continue
        key, sep, raw = value.partition("=")
        if sep:
            out.append((_dotted(key.strip()), raw.strip()))
    return out, profile


def _dotted(key: str) -> list[str]:
    """``model_providers."my.gw".env_key`` -> ``["model_providers", "my.gw", "env_key"]``."""
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([^.]+)', key)
    return [a or b or c for a, b, c in parts]


def _toml_value(raw: str) -> Any:
    """A ``-c`` value as Codex reads it: TOML when it parses, else the text itself."""
    import tomllib

    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _set(config: dict[str, Any], path: list[str], value: Any) -> None:
    node = config
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if path:
        node[path[-1]] = value
