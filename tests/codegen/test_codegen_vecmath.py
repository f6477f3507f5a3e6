"""The inline float32 exp / erf / tanh (compiler/codegen/llvm/vecmath.py) against float64 math, lane-wise."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

import compiler  # noqa: F401  (sets up llvmlite's IR layer)
from compiler.codegen.llvm.module import BufferRef, KernelCall, build_module, emit_assembly
from compiler.codegen.target import Target, resolve_target
from compiler.dtypes import DType
from compiler.loopir.expr import Buffer, Var, call
from compiler.loopir.stmt import For, ForKind, Kernel, Store
from tests.schedule.test_schedule_transforms import run_nest

i = Var("i")


def _without_avx512(target: Target) -> Target:
    """The host target as the code generator sees one without AVX-512 (its generic exp scaling, which LLVM
    still compiles for the host's CPU)."""
    return replace(target, features=tuple(f for f in target.features if not f.startswith("avx512")))


TARGETS = {"host": resolve_target("host"), "host-without-avx512": _without_avx512(resolve_target("host"))}


def _run(func: str, xs: np.ndarray, vectorized: bool, target: str = "host") -> np.ndarray:
    """``func`` over ``xs`` (a multiple of 32 long) in 32-lane vectors, or one lane at a time."""
    x, y = Buffer("x", DType.F32, xs.shape), Buffer("y", DType.F32, xs.shape)
    if vectorized:
        outer, lane = Var("o"), Var("l")
        at = outer * 32 + lane
        nest = For(outer, xs.size // 32, For(lane, 32, Store(y, (at,), call(func, x[at])), ForKind.VECTORIZED))
    else:
        nest = For(i, xs.size, Store(y, (i,), call(func, x[i])))
    out = np.full(xs.shape, np.nan, np.float32)
    run_nest(nest, {"x": xs, "y": out}, target=TARGETS[target])
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


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("vectorized", [True, False])
@pytest.mark.parametrize("func", ["exp", "erf", "tanh"])
def test_accuracy(func: str, vectorized: bool, target: str) -> None:
    xs = _inputs()
    got = _run(func, xs, vectorized, target).astype(np.float64)
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


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("func", ["exp", "erf", "tanh"])
def test_special_values(func: str, target: str) -> None:
    xs = np.array([np.nan, np.inf, -np.inf] * 11 + [0.0] * 31, np.float32)
    got = _run(func, xs, True, target)
    want = {"exp": [np.nan, np.inf, 0.0], "erf": [np.nan, 1.0, -1.0], "tanh": [np.nan, 1.0, -1.0]}[func] * 11
    want += [1.0 if func == "exp" else 0.0] * 31
    np.testing.assert_array_equal(got, np.array(want, np.float32))


def _vector_exp_assembly(target: Target) -> str:
    x, y = Buffer("x", DType.F32, (64,)), Buffer("y", DType.F32, (64,))
    outer, lane = Var("o"), Var("l")
    nest = For(outer, 2, For(lane, 32, Store(y, (outer * 32 + lane,), call("exp", x[outer * 32 + lane])),
                             ForKind.VECTORIZED))
    kernel = Kernel("k", (x, y), nest)
    refs = (BufferRef("input", index=0), BufferRef("input", index=1))
    return emit_assembly(build_module([KernelCall(kernel, refs)], target), target)


def test_exp_scales_by_vscalef_with_avx512_and_in_the_exponent_field_without() -> None:
    assert "vscalefps" in _vector_exp_assembly(resolve_target("x86_64-linux-gnu", "znver4"))
    avx2 = _vector_exp_assembly(resolve_target("x86_64-linux-gnu", "x86-64-v3"))
    assert "vscalef" not in avx2 and "ldexp" not in avx2 and "expf" not in avx2  # no libm call per lane
