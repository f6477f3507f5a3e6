"""flatten_inner / flatten_reduction: merge the innermost output dims (reduction axes) when every access
allows it, and only then."""

from __future__ import annotations

import numpy as np

from compiler.codegen.target import resolve_target
from compiler.dtypes import DType
from compiler.loopir.compute import Computation, ReduceAxis
from compiler.loopir.expr import Buffer, Const, Var, compare, select
from compiler.schedule.defaults import schedule_computation
from compiler.loopir.printer import format_stmt
from compiler.schedule.flatten import flatten_inner, flatten_reduction
from tests.schedule.test_schedule_transforms import run_nest

F = DType.F32
co, oh, ow, ci, kh = Var("co"), Var("oh"), Var("ow"), Var("ci"), Var("kh")


def _conv1x1(h: int, w: int) -> Computation:
    x, wt, y = Buffer("x", F, (8, h, w)), Buffer("w", F, (8, 1, 16)), Buffer("y", F, (16, h, w))
    return Computation(y, (co, oh, ow), x[ci, oh + kh, ow] * wt[ci, kh, co], (ReduceAxis(ci, 8), ReduceAxis(kh, 1)), "sum")


def test_1x1_conv_becomes_a_gemm_over_flat_pixels():
    flat = flatten_inner(_conv1x1(5, 7))
    assert flat.output.shape == (16, 35) and flat.space == (16, 35)
    assert [ld.buffer.shape for ld in (flat.body.a, flat.body.b)] == [(8, 35), (8, 1, 16)]
    x = np.random.default_rng(0).standard_normal((8, 5, 7)).astype(np.float32)
    wt = np.random.default_rng(1).standard_normal((8, 1, 16)).astype(np.float32)
    y = np.full((16, 5, 7), np.nan, np.float32)
    run_nest(schedule_computation(_conv1x1(5, 7), resolve_target("host")), {"x": x, "w": wt, "y": y})
    np.testing.assert_allclose(y, np.einsum("chw,co->ohw", x, wt[:, 0]), rtol=1e-4, atol=1e-4)


def test_shifted_or_index_dependent_accesses_stay():
    x, y = Buffer("x", F, (4, 6)), Buffer("y", F, (3, 6))
    shifted = Computation(y, (oh, ow), x[oh + 1, ow])  # rows of different extents
    assert flatten_inner(shifted) == shifted
    mask = Computation(Buffer("m", F, (4, 6)), (oh, ow), select(compare("lt", oh, ow), x[oh, ow], Const(0.0, F)))
    assert flatten_inner(mask) == mask


def test_a_slice_read_in_place_is_not_a_reshape():
    """x[oh, ow] of a wider x (a Slice inlined into its reader) indexes 8-wide rows with a 6-wide var."""
    x, y = Buffer("x", F, (4, 8)), Buffer("y", F, (4, 6))
    sliced = Computation(y, (oh, ow), x[oh, ow])
    assert flatten_inner(sliced) == sliced


kh2, kw2 = Var("kh2"), Var("kw2")


def _plane_sum(x: Buffer) -> Computation:
    """Sum over each channel's whole 7x7 plane, as a global average pool reads it."""
    return Computation(Buffer("y", F, (16,)), (co,), x[co, kh2, kw2], (ReduceAxis(kh2, 7), ReduceAxis(kw2, 7)), "sum")


def test_plane_reduction_reads_one_vectorized_row():
    c = _plane_sum(Buffer("x", F, (16, 7, 7)))
    flat = flatten_reduction(c)
    assert [a.extent for a in flat.axes] == [49] and flat.body.buffer.shape == (16, 49)
    nest = schedule_computation(c, resolve_target("x86_64-linux-gnu", "znver4"))
    assert "vectorized for kh2_kw2_i in 0..16" in format_stmt(nest)  # 3 vectors of 16 and one scalar
    x = np.random.default_rng(2).standard_normal((16, 7, 7)).astype(np.float32)
    y = np.full(16, np.nan, np.float32)
    run_nest(nest, {"x": x, "y": y})
    np.testing.assert_allclose(y, x.sum(axis=(1, 2)), rtol=1e-5, atol=1e-5)


def test_a_window_inside_a_bigger_plane_stays_two_axes():
    c = _plane_sum(Buffer("x", F, (16, 9, 9)))  # a 7x7 window of 9-wide rows: not contiguous
    assert flatten_reduction(c) == c
