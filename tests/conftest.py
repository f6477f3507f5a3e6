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

# The ONNX conformance suite's summary (cases computed by the artifact vs folded at compile time). A plugin
# loaded here, not tests/conformance/conftest.py: the pytest-xdist controller would never import that one.
pytest_plugins = ["conformance.counts"]


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


CHECK_BACKENDS = ("cpu", "cuda-emu")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--cuda-emulation", choices=("subset", "all", "off"), default="subset",
                     help="which cases of tests using the `check` fixture also run as generated CUDA C under CPU "
                          "emulation (tests/cuda/cuda_emulation.py): the first case of each test function "
                          "(default), all, or none")


@pytest.fixture(params=CHECK_BACKENDS)
def check(request: pytest.FixtureRequest, compile_cache: pathlib.Path) -> Callable[..., list]:
    """``check(model, feeds, rtol=..., atol=..., threads=(1,))``: compile (cached), run, compare to onnx's reference.

    Every test using it runs once per backend: ``cpu`` runs the compiled artifact, ``cuda-emu`` runs the
    CUDA C that ``--target cuda`` generates (and, where it differs, the same with every contraction
    tiled), compiled for the host (no GPU needed; tests/cuda/cuda_emulation.py), same tolerances.
    """
    if request.param == "cpu":
        return functools.partial(helpers_onnx.check_model, cache_dir=compile_cache)
    cuda_tests = str(_TESTS / "cuda")
    if cuda_tests not in sys.path:
        sys.path.insert(0, cuda_tests)
    from cuda_emulation import CXX, check_emulated

    if CXX is None:
        pytest.skip("no host C++ compiler to emulate CUDA kernels with")
    return check_emulated


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep the ``cuda-emu`` cases ``--cuda-emulation`` asks for (emulation compiles C++ per model)."""
    mode = config.getoption("--cuda-emulation")
    if mode == "all":
        return
    seen: set[tuple[str, str]] = set()
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or callspec.params.get("check") != "cuda-emu":
            kept.append(item)
            continue
        key = (str(item.path), getattr(item, "originalname", item.name))
        (kept if mode == "subset" and key not in seen else dropped).append(item)
        seen.add(key)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
