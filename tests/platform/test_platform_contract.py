"""One contract, four places: the protocol page, the OpenAPI file, the client's ROUTES and the fake platform.

Plus the local pieces every command relies on: the TOML writer (any text reads back unchanged), the
worker settings file, and that ``omx`` does not load httpx or the platform package for other commands.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from platform_helpers import Rig

from omx.platform.client import API_KEY_ALLOWED, ROUTES
from omx.platform.config import WorkerSettings, list_worker_settings, pick_worker, save_worker_settings
from omx.platform.errors import PLATFORM_ERRORS, PlatformConfigError
from omx.platform.tomlwrite import dumps
from tests.fakes.fake_platform import ROUTES as FAKE_ROUTES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_protocol_page_the_openapi_file_the_client_and_the_fake_agree() -> None:
    client = {(m, p) for m, p in ROUTES.values()}
    fake = {(m, p) for m, p, _, _ in FAKE_ROUTES}
    spec = yaml.safe_load((DOCS / "platform-openapi.yaml").read_text())
    openapi = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert client == fake == openapi
    ids = {op["operationId"] for ops in spec["paths"].values() for op in ops.values()}
    assert ids == set(ROUTES)  # the client's names are the OpenAPI operation ids
    page = (DOCS / "platform-protocol.md").read_text()
    for name, (method, path) in ROUTES.items():
        assert f"`{path}" in page or f"`{method} {path}" in page, path
        if path.startswith("/api/"):
            assert f"`{name}`" in page, name
    # API keys: refused by exactly the routes the page marks **W**, in the client and in the fake
    open_to_keys = {(m, p) for m, p, _, who in FAKE_ROUTES if who == "any"}
    fake_any = {name for name, route in ROUTES.items() if route in open_to_keys}
    assert fake_any == API_KEY_ALLOWED
    worker_ops = {name for name, (_, p) in ROUTES.items() if p.startswith("/api/")} - API_KEY_ALLOWED
    assert all(f"`{name}` **W**" in page for name in worker_ops)


def test_error_codes_are_unique_and_documented() -> None:
    import omx.platform.errors as mod

    codes = [cls.code for cls in PLATFORM_ERRORS]
    assert len(codes) == len(set(codes))
    for cls in PLATFORM_ERRORS:
        assert (cls.__doc__ or "").startswith("Raised "), cls
        assert f"``{cls.code}``" in (mod.__doc__ or ""), cls.code


@given(st.dictionaries(st.text(min_size=1, max_size=20),
                       st.one_of(st.text(st.characters(blacklist_categories=("Cs",))), st.integers(),
                                 st.booleans(), st.lists(st.text(st.characters(blacklist_categories=("Cs",)))))))
def test_the_toml_writer_round_trips_any_text(data: dict[str, object]) -> None:
    assert tomllib.loads(dumps(data, comment="a comment\nover two lines")) == data


def test_worker_settings_files(rig: Rig) -> None:
    with pytest.raises(PlatformConfigError, match="no platform worker is configured"):
        pick_worker(None)
    one = rig.worker("one", instructions='He said "run `rm -rf /`"\n\\ and \x07 left')
    assert pick_worker(None) == one
    rig.worker("two")
    with pytest.raises(PlatformConfigError, match=r"several workers are configured \(.*\): pass --worker"):
        pick_worker(None)
    assert pick_worker(one.id).instructions == one.instructions
    (rig.home / "config" / "workers" / "broken.toml").write_text("id = 'broken'\nisolation = 'container'\n")
    good, bad = list_worker_settings()
    assert len(good) == 2 and "isolation" in bad[0][1] and "name" in bad[0][1]
    with pytest.raises(PlatformConfigError, match="not a valid platform id"):
        pick_worker("../../etc/passwd")
    bad_settings = WorkerSettings.model_construct(**{**one.model_dump(), "id": "other"})
    path = save_worker_settings(bad_settings)
    path.rename(path.with_name("renamed.toml"))
    assert any("does not match the file name" in problem for _, problem in list_worker_settings()[1])


def test_omx_does_not_import_httpx_or_the_platform_for_other_commands() -> None:
    code = ("import sys; from omx.cli.app import app; "
            "print(sorted(m for m in sys.modules if m == 'httpx' or m.startswith('omx.platform')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
