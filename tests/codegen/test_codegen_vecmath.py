"""The inline float32 exp / erf / tanh (compiler/codegen/llvm/vecmath.py) against float64 math, lane-wise."""

from __future__ import annotations

import math

import numpy as np
import pytest

import compiler  # noqa: F401  (sets up llvmlite's IR layer)
from compiler.dtypes import DType
from compiler.loopir.expr import Buffer, Var, call
from compiler.loopir.stmt import For, ForKind, Store
from tests.schedule.test_schedule_transforms import run_nest

i = Var("i")


def _run(func: str, xs: np.ndarray, vectorized: bool) -> np.ndarray:
    """``func`` over ``xs`` (a multiple of 32 long) in 32-lane vectors, or one lane at a time."""
    x, y = Buffer("x", DType.F32, xs.shape), Buffer("y", DType.F32, xs.shape)
    if vectorized:
        outer, lane = Var("o"), Var("l")
        at = outer * 32 + lane
        nest = For(outer, xs.size // 32, For(lane, 32, Store(y, (at,), call(func, x[at])), ForKind.VECTORIZED))
    else:
        nest = For(i, xs.size, Store(y, (i,), call(func, x[i])))
    out = np.full(xs.shape, np.nan, np.float32)
    run_nest(nest, {"x": xs, "y": out})
    return out


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    dense = np.linspace(-12, 12, 20001)
    wide = rng.uniform(-110, 110, 4000)
    tiny = rng.standard_normal(1000) * 1e-6
    specials = [0.0, -0.0, 0.875, -0.875, 0.625, 3.92, 4.0, 9.0, 88.72, 88.73, -103.5, -104.5, 1e-30, -1e-30]
    xs = np.concatenate([dense, wide, tiny, specials]).astype(np.float32)
    return np.concatenate([xs, np.zeros(-xs.size % 32, np.float32)])


REFERENCE = {"exp": np.exp, "erf": np.vectorize(math.erf), "tanh": np.tanh}


@pytest.mark.parametrize("vectorized", [True, False])
@pytest.mark.parametrize("func", ["exp", "erf", "tanh"])
def test_accuracy(func: str, vectorized: bool) -> None:
    xs = _inputs()
    got = _run(func, xs, vectorized).astype(np.float64)
    with np.errstate(over="ignore", under="ignore"):
        want = REFERENCE[func](xs.astype(np.float64))
    if func == "exp":
        finite = np.isfinite(want) & (want < np.finfo(np.float32).max)
        tiny = want < np.finfo(np.float32).tiny
        ulp = np.spacing(want[finite & ~tiny].astype(np.float32)).astype(np.float64)
        assert np.max(np.abs(got[finite & ~tiny] - want[finite & ~tiny]) / ulp) <= 2.0
        assert np.max(np.abs(got[tiny] - want[tiny])) <= 2 * 1.5e-45
        assert np.all(np.isinf(got[~finite | (want >= np.finfo(np.float32).max)]))
    else:
        err = np.abs(got - want)
        assert err.max() <= 3e-7
        assert np.max(err / np.maximum(np.abs(want), 1e-30)) <= 2e-6


@pytest.mark.parametrize("func", ["exp", "erf", "tanh"])
def test_special_values(func: str) -> None:
    xs = np.array([np.nan, np.inf, -np.inf] * 11 + [0.0] * 31, np.float32)
    got = _run(func, xs, True)
    want = {"exp": [np.nan, np.inf, 0.0], "erf": [np.nan, 1.0, -1.0], "tanh": [np.nan, 1.0, -1.0]}[func] * 11
    want += [1.0 if func == "exp" else 0.0] * 31
    np.testing.assert_array_equal(got, np.array(want, np.float32))
