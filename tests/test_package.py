"""The package's public face and error tree."""

from __future__ import annotations

import inspect

import pytest

import omx
from omx import errors


def test_all_is_sorted_and_complete() -> None:
    assert omx.__all__ == sorted(omx.__all__, key=lambda n: (not n.isupper(), n))  # isort style, as ruff RUF022
    for name in omx.__all__:
        assert hasattr(omx, name), name
    public = {n for n, v in vars(omx).items() if not n.startswith("_") and not inspect.ismodule(v)}
    assert public <= set(omx.__all__) | {"annotations"}


def test_error_tree() -> None:
    codes = [c.code for c in errors.ALL_ERRORS]
    assert len(codes) == len(set(codes)), "codes are unique"
    for cls in errors.ALL_ERRORS:
        assert issubclass(cls, errors.OmxError)
        assert (cls.__doc__ or "").startswith("Raised "), cls
        assert cls.exit_status in (1, 2, 3, 4)
    assert issubclass(errors.LockTimeout, TimeoutError)
    assert errors.ERROR_CODES["claim_conflict"] == 1 and errors.ERROR_CODES["invalid_input"] == 2
    assert errors.ERROR_CODES["task_not_found"] == 3


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    from omx.cli import main

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"omx {omx.__version__}\n"
