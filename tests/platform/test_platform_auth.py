"""The OAuth device flow, the token file and refresh — in process, against the fake platform over HTTP.

Waiting is injected (``sleep``, ``clock``): the device flow's intervals and a token's expiry are
asserted without waiting for them.
"""

from __future__ import annotations

import stat
import threading
import time

import pytest
from platform_helpers import Rig

from omx.platform.auth import TokenProvider, auth_path, device_login, read_tokens
from omx.platform.config import load_platform_config
from omx.platform.errors import ApiKeyRefused, PlatformAuthError
from omx.platform.models import DeviceCode


def _login(rig: Rig, **kw: object) -> tuple[list[float], list[DeviceCode]]:
    sleeps: list[float] = []
    shown: list[DeviceCode] = []
    device_login(load_platform_config(), show=shown.append, sleep=sleeps.append, **kw)  # type: ignore[arg-type]
    return sleeps, shown


def test_device_flow_honours_pending_and_slow_down(rig: Rig) -> None:
    rig.fake.device_script = ["authorization_pending", "slow_down", "authorization_pending"]
    rig.fake.auto_approve = "u2"
    sleeps, [code] = _login(rig)
    assert code.verification_uri == f"{rig.fake.url}/device" and len(code.user_code) == 9
    base = rig.fake.device_interval
    assert sleeps == pytest.approx([base, base, base + 5, base + 5])  # RFC 8628: slow_down adds 5 s for good
    path = auth_path(load_platform_config())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    tokens = read_tokens(path)
    assert tokens is not None and rig.fake.access[tokens.access_token][0] == "u2"
    assert tokens.user == {"id": "u2", "name": "Grace Hopper", "email": "grace@example.invalid", "workspace": "Acme"}
    assert len(rig.fake.calls("/oauth/token")) == 4


@pytest.mark.parametrize(("error", "says"), [("access_denied", "denied"), ("expired_token", "expired")])
def test_device_flow_ends_on_denial_or_expiry(rig: Rig, error: str, says: str) -> None:
    rig.fake.device_script = ["authorization_pending", error]
    with pytest.raises(PlatformAuthError, match=says):
        _login(rig)
    assert not auth_path(load_platform_config()).exists()


def test_device_flow_gives_up_at_the_codes_expiry(rig: Rig) -> None:
    now = [1000.0]

    def sleep(s: float) -> None:
        now[0] += 601  # the fake's codes live 600 s

    with pytest.raises(PlatformAuthError, match="expired before it was approved"):
        device_login(load_platform_config(), show=lambda c: None, sleep=sleep, clock=lambda: now[0])
    assert not rig.fake.calls("/oauth/token")  # it did not even ask


def test_an_expiring_token_is_refreshed_once_for_all_processes(rig: Rig) -> None:
    first = rig.login(ttl_s=120)
    cfg = load_platform_config()
    later = time.time() + 100  # within a minute of expiry
    a, b = TokenProvider(cfg, clock=lambda: later), TokenProvider(cfg, clock=lambda: later)
    got: list[str] = []
    threads = [threading.Thread(target=lambda p=p: got.append(p.access_token())) for p in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(set(got)) == 1 and got[0] != first["access_token"]
    assert len(rig.fake.calls("/oauth/token")) == 1  # the file lock made the others wait and reuse it
    stored = read_tokens(auth_path(cfg))
    assert stored is not None and stored.access_token == got[0] and stored.refresh_token != first["refresh_token"]
    assert first["refresh_token"] not in rig.fake.refresh  # rotated: the old one is dead


def test_a_rejected_token_is_refreshed_and_a_dead_login_says_log_in_again(rig: Rig) -> None:
    from omx.platform.auth import worker_client

    grant = rig.login()
    del rig.fake.access[grant["access_token"]]  # revoked on the platform
    with worker_client(load_platform_config()) as client:
        assert client.me().id == "u1"  # 401 -> refresh -> the same call again
        assert [r.status for r in rig.fake.calls("/api/v1/me")] == [401, 200]
        rig.fake.access.clear()
        rig.fake.refresh.clear()  # the whole login revoked
        with pytest.raises(PlatformAuthError, match="omx auth login"):
            client.me()


def test_a_token_file_others_can_read_is_refused(rig: Rig) -> None:
    rig.login()
    path = auth_path(load_platform_config())
    path.chmod(0o640)
    with pytest.raises(PlatformAuthError, match=r"readable by others \(mode 0640\)"):
        TokenProvider(load_platform_config())
    assert not rig.fake.requests


def test_an_api_key_in_the_config_file_is_refused(rig: Rig) -> None:
    rig.login()
    (rig.home / "config").mkdir(parents=True, exist_ok=True)
    (rig.home / "config" / "platform.toml").write_text(f'api_key = "{rig.fake.api_key()}"\n')
    with pytest.raises(ApiKeyRefused, match=r"need an OAuth user token.*platform\.toml"):
        TokenProvider(load_platform_config())
    with pytest.raises(ApiKeyRefused):
        _login(rig)  # and no login is even attempted while a key is configured
    assert not rig.fake.requests


def test_a_login_revoked_while_watching_stops_the_worker_with_a_way_out(rig: Rig) -> None:
    from omx.platform.service import run_worker

    rig.login()
    settings = rig.worker(poll_ms=50)
    said: list[str] = []
    box: dict[str, object] = {}
    t = threading.Thread(target=lambda: box.update(out=run_worker(settings, say=said.append, install_signals=False)))
    t.start()
    deadline = time.monotonic() + 30
    while not rig.fake.calls("/api/v1/sessions") and time.monotonic() < deadline:
        time.sleep(0.02)
    rig.fake.access.clear()
    rig.fake.refresh.clear()  # `omx auth logout` elsewhere, or revoked on the platform
    t.join(timeout=30)
    assert not t.is_alive()
    stopped_by = box["out"].stopped_by  # type: ignore[attr-defined]
    assert "the login could not be refreshed (invalid_grant): run `omx auth login`" in stopped_by
    assert any(line.startswith("stopping: the login could not be refreshed") for line in said)
