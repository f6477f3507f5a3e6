"""Vectorized loops of any extent become power-of-two vectors (no lane-by-lane stack legalization)."""

from __future__ import annotations

import numpy as np
import pytest

import compiler  # noqa: F401  (sets up llvmlite's IR layer)
from compiler.codegen.llvm.module import BufferRef, KernelCall, build_module, emit_assembly
from compiler.codegen.target import resolve_target
from compiler.dtypes import DType
from compiler.loopir.expr import Buffer, Var
from compiler.loopir.stmt import For, ForKind, Kernel, Store
from tests.schedule.test_schedule_transforms import run_nest

i, j = Var("i"), Var("j")


def _scale_nest(cols: int) -> tuple[For, Buffer, Buffer]:
    x, y = Buffer("x", DType.F32, (4, cols)), Buffer("y", DType.F32, (4, cols))
    return For(i, 4, For(j, cols, Store(y, (i, j), x[i, j] * 3.0 + 1.0), ForKind.VECTORIZED)), x, y


def test_odd_width_uses_whole_vectors():
    nest, x, y = _scale_nest(24)
    tgt = resolve_target("x86_64-linux-gnu", "znver4")
    call = KernelCall(Kernel("k", (x, y), nest), (BufferRef("input", index=0), BufferRef("output", index=0)))
    asm = emit_assembly(build_module([call], tgt), tgt)
    assert "vinsertps" not in asm and "zmm" in asm and "ymm" in asm


@pytest.mark.parametrize("cols", [1, 3, 7, 24, 29])
def test_odd_width_values(cols):
    nest, _, _ = _scale_nest(cols)
    xv = np.random.default_rng(0).standard_normal((4, cols)).astype(np.float32)
    out = np.full_like(xv, np.nan)
    run_nest(nest, {"x": xv, "y": out})
    np.testing.assert_allclose(out, xv * 3.0 + 1.0, rtol=1e-6)


def _strided_nest(stride: int, cols: int) -> tuple[For, Buffer, Buffer]:
    # y[i, j] = x[i, stride * j]: the row's last lane is the buffer's last element, so a load
    # reaching past it would read beyond the buffer.
    x, y = Buffer("x", DType.F32, (4, stride * (cols - 1) + 1)), Buffer("y", DType.F32, (4, cols))
    return For(i, 4, For(j, cols, Store(y, (i, j), x[i, j * stride] + 1.0), ForKind.VECTORIZED)), x, y


@pytest.mark.parametrize("stride", [2, 3, 4])
@pytest.mark.parametrize("cols", [2, 16, 27])
def test_strided_loads_values(stride, cols):
    nest, x, _ = _strided_nest(stride, cols)
    xv = np.random.default_rng(stride).standard_normal(x.shape).astype(np.float32)
    out = np.full((4, cols), np.nan, np.float32)
    run_nest(nest, {"x": xv, "y": out})
    np.testing.assert_array_equal(out, xv[:, ::stride] + np.float32(1.0))


def test_strided_loads_are_shuffled_vectors_not_lane_gathers():
    nest, x, y = _strided_nest(2, 16)
    tgt = resolve_target("x86_64-linux-gnu", "znver4")
    call = KernelCall(Kernel("k", (x, y), nest), (BufferRef("input", index=0), BufferRef("output", index=0)))
    ir_text = str(build_module([call], tgt))
    assert "shufflevector" in ir_text and "insertelement" not in ir_text


def test_vector_parts_mask_ragged_remainders():
    from compiler.codegen.target import padded_extent, vector_parts

    assert vector_parts(24) == [(16, 16), (8, 8)]
    assert vector_parts(23) == [(32, 23)]
    assert vector_parts(55) == [(32, 32), (32, 23)]
    assert vector_parts(7) == [(8, 7)]
    assert vector_parts(17) == [(16, 16), (1, 1)]
    assert vector_parts(23, masked=False) == [(16, 16), (4, 4), (2, 2), (1, 1)]
    assert padded_extent(23) == 32 and padded_extent(24) == 24


def test_ragged_width_is_one_masked_vector():
    nest, x, y = _scale_nest(23)
    tgt = resolve_target("x86_64-linux-gnu", "znver4")
    call = KernelCall(Kernel("k", (x, y), nest), (BufferRef("input", index=0), BufferRef("output", index=0)))
    ir_text = str(build_module([call], tgt))
    assert "llvm.masked.load.v32f32" in ir_text and "llvm.masked.store.v32f32" in ir_text


def test_masked_part_with_a_local_tile_keeps_values():
    # A reduction tile whose vector loop is ragged: the accumulator rows (local) are padded.
    from compiler.loopir.compute import Computation, ReduceAxis
    from compiler.schedule.defaults import schedule

    r = Var("r")
    a, b = Buffer("a", DType.F32, (20, 9)), Buffer("b", DType.F32, (9, 23))
    out = Buffer("c", DType.F32, (20, 23))
    comp = Computation(out, (i, j), a[i, r] * b[r, j], (ReduceAxis(r, 9),), "sum")
    nest = schedule(comp, resolve_target("host")).body
    rng = np.random.default_rng(3)
    av, bv = rng.standard_normal(a.shape).astype(np.float32), rng.standard_normal(b.shape).astype(np.float32)
    got = np.full(out.shape, np.nan, np.float32)
    run_nest(nest, {"a": av, "b": bv, "c": got})
    np.testing.assert_allclose(got, av @ bv, rtol=1e-5, atol=1e-5)
