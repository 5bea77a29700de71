"""``omx auth login|logout|status``: log in to the remote platform with the OAuth device flow.

Tokens are stored in ``$OMX_HOME/auth/<platform>.json`` (mode 0600) and never printed. Library errors
become exit codes in ``omx.cli.app.run_app``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from omx.platform.models import DeviceCode

app = typer.Typer(help="Log in to the remote planning platform (OAuth device flow) for `omx worker`.",
                  no_args_is_help=True)

_URL = typer.Option(None, "--url", help="the platform's URL (saved for later commands; default: $OMX_PLATFORM_URL "
                    "or $OMX_HOME/config/platform.toml)")


@app.command("login")
def login(
    url: str | None = _URL,
    client_id: str | None = typer.Option(None, "--client-id", help="OAuth client id (default: omx-cli)"),
) -> None:
    """Log in: open the page shown, enter the code, and the token is stored (mode 0600)."""
    from omx.platform.auth import auth_path, device_login
    from omx.platform.client import clean
    from omx.platform.config import load_platform_config, save_platform_config

    cfg = load_platform_config(url=url)
    if client_id:
        cfg.client_id = client_id
    cfg.require_url()

    def show(code: DeviceCode) -> None:
        page = clean(code.verification_uri_complete or code.verification_uri, 500)
        typer.echo(f"To log in, open {clean(code.verification_uri, 500)} and enter the code "
                   f"{clean(code.user_code, 40)}")
        if code.verification_uri_complete:
            typer.echo(f"(or open {page})")
        typer.echo(f"Waiting for approval (the code expires in {int(code.expires_in // 60)} min; Ctrl-C to cancel) ...")

    tokens = device_login(cfg, show=show)
    if url:
        save_platform_config({"url": url})
    if client_id:
        save_platform_config({"client_id": client_id})
    who = _who(tokens.user)
    typer.echo(f"Logged in to {cfg.url}{' as ' + who if who else ''}; token stored in {auth_path(cfg)} (mode 0600)")


@app.command("logout")
def logout(url: str | None = _URL) -> None:
    """Forget the stored tokens (and revoke them on the platform when it answers)."""
    from omx.platform.auth import logout as do_logout
    from omx.platform.config import load_platform_config

    cfg = load_platform_config(url=url)
    existed, revoked = do_logout(cfg)
    if not existed:
        typer.echo("not logged in")
        return
    typer.echo("logged out" + (" (tokens revoked on the platform)" if revoked else
                               " (the platform did not confirm the revocation; the local tokens are deleted)"))


@app.command("status")
def status(
    url: str | None = _URL,
    offline: bool = typer.Option(False, "--offline", help="do not ask the platform who the token belongs to"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Who is logged in, to which platform, and until when (never the token). Exit 1 when not usable."""
    from omx.platform.auth import auth_status
    from omx.platform.config import load_platform_config

    cfg = load_platform_config(url=url)
    st = auth_status(cfg, verify=not offline)
    if as_json:
        typer.echo(json.dumps(st, indent=2))
    else:
        typer.echo(_status_text(st))
    usable = st["logged_in"] and not st["api_key_configured"] and st.get("verified", True)
    if not usable:
        raise typer.Exit(1)


def _status_text(st: dict[str, Any]) -> str:
    from omx.platform.client import clean

    lines = [f"platform   {st['platform'] or '(not configured: omx auth login --url <url>)'}"]
    if st["api_key_configured"]:
        lines.append(f"api key    configured in {st['api_key_configured']}: refused — worker operations need an "
                     "OAuth user token (remove it and run `omx auth login`)")
    if not st["logged_in"]:
        lines.append("login      not logged in: run `omx auth login`")
        return "\n".join(lines)
    who = _who(st.get("user"))
    lines.append(f"login      {who or 'unknown user'}" + ("" if st.get("verified", True) else " (not verified)"))
    if st.get("expires_at"):
        left = st["expires_in_s"]
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st["expires_at"]))
        state = f"in {_span(left)}" if left > 0 else f"{_span(-left)} ago"
        lines.append(f"expires    {when} ({state}); " + ("refreshed automatically" if st["refreshable"]
                                                           else "no refresh token: log in again then"))
    lines.append(f"token file {st['file']} (mode {st.get('mode', '?')})")
    if st.get("error"):
        lines.append(f"platform   {clean(st['error']['message'])} [{st['error']['code']}]")
    return "\n".join(lines)


def _who(user: dict[str, Any] | None) -> str:
    from omx.platform.client import clean

    if not user:
        return ""
    text = str(user.get("name") or user.get("id") or "")
    if user.get("email"):
        text += f" <{user['email']}>"
    if user.get("workspace"):
        text += f" in workspace {user['workspace']}"
    return clean(text, 200)


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
