"""Test-wide setup: make tests/ importable (helpers_onnx) and give op tests a shared compile cache."""

from __future__ import annotations

import functools
import os
import pathlib
import sys
from typing import Callable

import pytest

_TESTS = pathlib.Path(__file__).resolve().parent
if str(_TESTS) not in sys.path:
    sys.path.insert(0, str(_TESTS))

import helpers_onnx  # noqa: E402 - needs the path above


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """One directory of compiled artifacts per test run, keyed by model bytes.

    Under pytest-xdist every worker has its own basetemp below one per-run folder;
    the cache lives in that shared folder so a model compiled by one worker is
    reused by the others (writes are atomic renames, so concurrent fills are safe).
    """
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / "tilec-compile-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def check(compile_cache: pathlib.Path) -> Callable[..., list]:
    """``check(model, feeds, rtol=..., atol=..., threads=(1,))``: compile (cached), run, compare to onnx's reference."""
    return functools.partial(helpers_onnx.check_model, cache_dir=compile_cache)
