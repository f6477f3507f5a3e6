"""Schedule transforms: exact before/after trees, and the transformed kernels still compute the same values.

Trees are compared structurally (statements and expressions are frozen
dataclasses). For numerical sanity each transformed nest is wrapped in a
kernel, compiled for the host with the LLVM codegen, linked, and run through
``runtime_stub.native.NativeModule`` against a numpy result.
"""

from __future__ import annotations

import numpy as np
import pytest

from compiler.codegen.link import link_shared_object
from compiler.codegen.llvm.module import BufferRef, KernelCall, build_module, compile_module
from compiler.codegen.target import Target, resolve_target
from compiler.dtypes import DType
from compiler.loopir.compute import Computation, ReduceAxis, acc_var, build_loops
from compiler.loopir.expr import Buffer, Const, Var
from compiler.loopir.stmt import Alloc, For, ForKind, Kernel, Seq, Stmt, Store, find_loops, loads_and_stores, walk_stmts
from compiler.schedule.defaults import schedule_computation
from compiler.schedule.transforms import (annotate, blocks_inside, fuse, hoist_reduction, loop_vars_outside_in,
                                          outermost_loop,
                                          reorder, split)
from runtime_stub.native import NativeModule

F = DType.F32
i, j, k = Var("i"), Var("j"), Var("k")
i_o, i_i, j_o, j_i = Var("i_o"), Var("i_i"), Var("j_o"), Var("j_i")


def _scale(rows: int, cols: int) -> tuple[Computation, Buffer, Buffer]:
    """y[i, j] = x[i, j] * 2 + 1."""
    x, y = Buffer("x", F, (rows, cols)), Buffer("y", F, (rows, cols))
    return Computation(y, (i, j), x[i, j] * 2.0 + 1.0), x, y


def _matmul(m: int, kk: int, n: int) -> tuple[Computation, Buffer, Buffer, Buffer]:
    """y[i, j] = sum_k a[i, k] * b[k, j]."""
    a, b, y = Buffer("a", F, (m, kk)), Buffer("b", F, (kk, n)), Buffer("y", F, (m, n))
    return Computation(y, (i, j), a[i, k] * b[k, j], (ReduceAxis(k, kk),), "sum"), a, b, y


def run_nest(body: Stmt, arrays: dict[str, np.ndarray], threads: int = 1, target: Target | None = None) -> None:
    """Compile ``body`` as one kernel for ``target`` (the host's CPU and features, or some of them) and run
    it on ``arrays`` (written in place)."""
    params: dict[str, Buffer] = {}
    for buffer, _ in loads_and_stores(body):
        if buffer.scope == "global":
            params.setdefault(buffer.name, buffer)
    kernel = Kernel("k", tuple(params.values()), body)
    target = target or resolve_target("host")
    call = KernelCall(kernel, tuple(BufferRef("input", index=n) for n in range(len(params))))
    native = link_shared_object([compile_module(build_module([call], target), target)], target.triple, target.cpu)
    module = NativeModule(native, threads)
    try:
        assert module.run([arrays[name].ctypes.data for name in params], [], 0, 0) == 0
    finally:
        module.close()


def _check_scale(body: Stmt, rows: int, cols: int, threads: int = 1) -> None:
    x = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    y = np.full_like(x, np.nan)
    run_nest(body, {"x": x, "y": y}, threads)
    np.testing.assert_allclose(y, x * 2 + 1, rtol=1e-6)


def _check_matmul(body: Stmt, m: int, kk: int, n: int, threads: int = 1) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, kk)).astype(np.float32)
    b = rng.standard_normal((kk, n)).astype(np.float32)
    y = np.full((m, n), np.nan, np.float32)
    run_nest(body, {"a": a, "b": b, "y": y}, threads)
    np.testing.assert_allclose(y, a @ b, rtol=1e-4, atol=1e-4)


# --- split ------------------------------------------------------------------------------------


def test_split_divisible():
    c, x, y = _scale(3, 8)
    s = split(build_loops(c), "j", 4)
    j_new = j_o * 4 + j_i
    assert s == For(i, 3, For(j_o, 2, For(j_i, 4, Store(y, (i, j_new), x[i, j_new] * 2.0 + 1.0))))
    _check_scale(s, 3, 8)


def test_split_with_tail():
    c, x, y = _scale(3, 10)
    s = split(build_loops(c), "j", 4)
    main, tail = j_o * 4 + j_i, j_i + 8
    assert s == For(i, 3, Seq((
        For(j_o, 2, For(j_i, 4, Store(y, (i, main), x[i, main] * 2.0 + 1.0))),
        For(j_i, 2, Store(y, (i, tail), x[i, tail] * 2.0 + 1.0)),
    )))
    _check_scale(s, 3, 10)


def test_split_single_chunk_drops_the_outer_loop():
    c, x, y = _scale(2, 6)
    s = split(build_loops(c), "j", 4)
    assert s == For(i, 2, Seq((
        For(j_i, 4, Store(y, (i, j_i), x[i, j_i] * 2.0 + 1.0)),
        For(j_i, 2, Store(y, (i, j_i + 4), x[i, j_i + 4] * 2.0 + 1.0)),
    )))
    _check_scale(s, 2, 6)


def test_split_by_extent_or_more_and_unknown_name_is_a_noop():
    c, _, _ = _scale(3, 8)
    s = build_loops(c)
    assert split(s, "j", 8) == s
    assert split(s, "j", 16) == s
    assert split(s, "nope", 2) == s


def test_split_keeps_the_loop_kind_on_the_outer_loop():
    c, _, _ = _scale(3, 10)
    s = split(annotate(build_loops(c), "j", ForKind.PARALLEL), "j", 4)
    assert [f.kind for f in find_loops(s, "j_o")] == [ForKind.PARALLEL]
    assert [f.kind for f in find_loops(s, "j_i")] == [ForKind.SERIAL, ForKind.SERIAL]


# --- reorder -----------------------------------------------------------------------------------


def test_reorder_swaps_a_perfect_nest():
    c, x, y = _scale(3, 5)
    s = reorder(build_loops(c), ["j", "i"])
    assert s == For(j, 5, For(i, 3, Store(y, (i, j), x[i, j] * 2.0 + 1.0)))
    assert loop_vars_outside_in(s) == [j, i]
    _check_scale(s, 3, 5)


def test_reorder_distributes_over_a_split_tail():
    c, x, y = _scale(3, 10)
    s = reorder(split(build_loops(c), "j", 4), ["j_o", "i", "j_i"])
    main, tail = j_o * 4 + j_i, j_i + 8
    assert s == Seq((
        For(j_o, 2, For(i, 3, For(j_i, 4, Store(y, (i, main), x[i, main] * 2.0 + 1.0)))),
        For(i, 3, For(j_i, 2, Store(y, (i, tail), x[i, tail] * 2.0 + 1.0))),
    ))
    _check_scale(s, 3, 10)


def test_reorder_identity_order_is_a_noop():
    c, _, _ = _scale(3, 5)
    s = build_loops(c)
    assert reorder(s, ["i", "j"]) == s


# --- fuse / annotate ------------------------------------------------------------------------------


def test_fuse_two_loops():
    c, x, y = _scale(3, 5)
    s = fuse(build_loops(c), "i", "j")
    ij = Var("i_j")
    assert s == For(ij, 15, Store(y, (ij // 5, ij % 5), x[ij // 5, ij % 5] * 2.0 + 1.0))
    _check_scale(s, 3, 5)


def test_fuse_named_and_not_adjacent_is_a_noop():
    c, _, _ = _scale(3, 5)
    s = build_loops(c)
    assert fuse(s, "j", "i") == s
    assert find_loops(fuse(s, "i", "j", "ij"), "ij")[0].extent == 15


def test_fuse_then_split_then_parallel():
    c, _, _ = _scale(7, 9)
    s = annotate(split(fuse(build_loops(c), "i", "j"), "i_j", 8), "i_j_o", ForKind.PARALLEL)
    _check_scale(s, 7, 9, threads=2)


@pytest.mark.parametrize("kind", list(ForKind))
def test_annotate(kind):
    c, x, y = _scale(3, 8)
    s = annotate(build_loops(c), "j", kind)
    assert s == For(i, 3, For(j, 8, Store(y, (i, j), x[i, j] * 2.0 + 1.0), kind))
    _check_scale(s, 3, 8, threads=2)


def test_annotate_every_loop_of_that_name():
    c, _, _ = _scale(3, 10)
    s = annotate(split(build_loops(c), "j", 4), "j_i", ForKind.VECTORIZED)
    assert [f.kind for f in find_loops(s, "j_i")] == [ForKind.VECTORIZED, ForKind.VECTORIZED]
    _check_scale(s, 3, 10)


# --- hoist_reduction ------------------------------------------------------------------------------


def test_hoist_reduction_builds_an_accumulator_tile():
    c, a, b, y = _matmul(3, 5, 4)
    before = build_loops(c)
    acc = Buffer("y_acc", F, (1,), "local")
    assert before == For(i, 3, For(j, 4, Alloc(acc, Seq((
        Store(acc, (Const(0),), Const(0.0, F)),
        For(k, 5, Store(acc, (Const(0),), acc[0] + a[i, k] * b[k, j])),
        Store(y, (i, j), acc[0]),
    )))))
    after = hoist_reduction(before, ["i", "j"])
    tile = Buffer("y_acc", F, (3, 4), "local")
    assert after == Alloc(tile, Seq((
        For(i, 3, For(j, 4, Store(tile, (i, j), Const(0.0, F)))),
        For(k, 5, For(i, 3, For(j, 4, Store(tile, (i, j), tile[i, j] + a[i, k] * b[k, j])))),
        For(i, 3, For(j, 4, Store(y, (i, j), tile[i, j]))),
    )))
    _check_matmul(after, 3, 5, 4)


def test_hoist_reduction_of_the_inner_loop_only():
    c, a, b, y = _matmul(3, 5, 4)
    after = hoist_reduction(build_loops(c), ["j"])
    tile = Buffer("y_acc", F, (4,), "local")
    assert after == For(i, 3, Alloc(tile, Seq((
        For(j, 4, Store(tile, (j,), Const(0.0, F))),
        For(k, 5, For(j, 4, Store(tile, (j,), tile[j] + a[i, k] * b[k, j]))),
        For(j, 4, Store(y, (i, j), tile[j])),
    ))))
    _check_matmul(after, 3, 5, 4)


def test_hoist_reduction_needs_the_whole_perfect_chain():
    c, _, _, _ = _matmul(3, 5, 4)
    s = build_loops(c)
    assert hoist_reduction(s, ["i"]) == s  # j sits between i and the accumulator
    assert hoist_reduction(s, ["x"]) == s


def test_hoist_reduction_with_epilogue_and_tail():
    # Split j with a tail, then hoist in both the main and the tail nest.
    a, b, y = Buffer("a", F, (3, 5)), Buffer("b", F, (5, 10)), Buffer("y", F, (3, 10))
    c = Computation(y, (i, j), a[i, k] * b[k, j], (ReduceAxis(k, 5),), "sum", acc_var(F) * 0.5 + 1.0)
    s = reorder(split(build_loops(c), "j", 4), ["i", "j_o", "j_i"])
    s = hoist_reduction(s, ["j_i"])
    tiles = [n.buffer.shape for n in walk_stmts(s) if isinstance(n, Alloc)]
    assert tiles == [(4,), (2,)]
    s = annotate(s, "j_i", ForKind.VECTORIZED)
    rng = np.random.default_rng(2)
    av, bv = rng.standard_normal((3, 5)).astype(np.float32), rng.standard_normal((5, 10)).astype(np.float32)
    out = np.zeros((3, 10), np.float32)
    run_nest(s, {"a": av, "b": bv, "y": out})
    np.testing.assert_allclose(out, (av @ bv) * 0.5 + 1.0, rtol=1e-5, atol=1e-5)


def test_outermost_loop_and_loop_vars():
    c, _, _, _ = _matmul(3, 5, 4)
    tiled = hoist_reduction(build_loops(c), ["i", "j"])
    assert outermost_loop(tiled).var == i
    assert loop_vars_outside_in(build_loops(c)) == [i, j]
    assert outermost_loop(Store(Buffer("y", F, (1,)), (Const(0),), Const(0.0, F))) is None


# --- default schedules, run ---------------------------------------------------------------------


@pytest.mark.parametrize("m,kk,n", [(1, 7, 3), (5, 9, 13), (17, 33, 40), (64, 3, 9)])
@pytest.mark.parametrize("threads", [1, 2])
def test_default_schedule_matmul_runs(m, kk, n, threads):
    c, _, _, _ = _matmul(m, kk, n)
    _check_matmul(schedule_computation(c, resolve_target("host")), m, kk, n, threads)


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 5), (7, 37), (300, 129)])
def test_default_schedule_pointwise_runs(rows, cols):
    c, _, _ = _scale(rows, cols)
    _check_scale(schedule_computation(c, resolve_target("host")), rows, cols, threads=2)


@pytest.mark.parametrize("rows,cols", [(5, 3), (4, 37), (200, 300)])
def test_default_schedule_column_sum_runs(rows, cols):
    # A non-contraction reduction whose output is contiguous: vectorized with a per-lane tile.
    x, y = Buffer("x", F, (rows, cols)), Buffer("y", F, (cols,))
    c = Computation(y, (j,), x[k, j], (ReduceAxis(k, rows),), "sum")
    s = schedule_computation(c, resolve_target("x86_64-linux-gnu", cpu="x86-64-v3"))
    assert any(isinstance(n, For) and n.kind is ForKind.VECTORIZED for n in walk_stmts(s))
    xv = np.random.default_rng(3).standard_normal((rows, cols)).astype(np.float32)
    out = np.zeros(cols, np.float32)
    run_nest(schedule_computation(c, resolve_target("host")), {"x": xv, "y": out}, threads=2)
    np.testing.assert_allclose(out, xv.sum(axis=0), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rows,cols", [(513, 64), (64, 513), (200, 17), (16, 16)])
def test_default_schedule_transpose_gathers_vectors_in_blocks(rows, cols):
    """y[j, i] = x[i, j]: vectors along y's rows gathered from x's columns, x's rows walked inside the
    vector blocks (each gathered cache line reused from L1), in blocks of 64 when longer."""
    x, y = Buffer("x", F, (rows, cols)), Buffer("y", F, (cols, rows))
    c = Computation(y, (j, i), x[i, j])
    s = schedule_computation(c, resolve_target("host"))
    vectors = [n for n in walk_stmts(s) if isinstance(n, For) and n.kind is ForKind.VECTORIZED]
    assert vectors and {n.var.name for n in vectors} == {"i_i" if rows > 16 else "i"}
    first, order = s.stmts[0] if isinstance(s, Seq) else s, []
    while isinstance(first, For):
        order.append(first.var.name)
        first = first.body
    assert order == (["j_o", "i_o", "j_i", "i_i"] if cols > 64 else ["i_o", "j", "i_i"] if rows > 16 else ["j", "i"])
    xv = np.random.default_rng(4).standard_normal((rows, cols)).astype(np.float32)
    out = np.full((cols, rows), np.nan, np.float32)
    run_nest(s, {"x": xv, "y": out}, threads=2)
    np.testing.assert_array_equal(out, xv.T)


def test_blocks_inside_puts_groups_of_outer_iterations_inside_the_inner_loop():
    """for b in 0..10 { parallel for p in 0..4 { S } } in groups of 3: 3 full groups, then a tail of 1."""
    b, p = Var("b"), Var("p")
    x = Buffer("x", F, (10, 4))
    body = Store(x, (b, p), Const(1.0, F))
    nest = For(b, 10, For(p, 4, body, ForKind.PARALLEL))
    b_o, b_i = Var("b_o"), Var("b_i")
    want = Seq((For(b_o, 3, For(p, 4, For(b_i, 3, Store(x, (b_o * 3 + b_i, p), Const(1.0, F))), ForKind.PARALLEL)),
                For(p, 4, For(b_i, 1, Store(x, (Const(9) + b_i, p), Const(1.0, F))), ForKind.PARALLEL)))
    assert blocks_inside(nest, 3) == want
    out = np.zeros((10, 4), np.float32)
    run_nest(blocks_inside(nest, 3), {"x": out}, threads=2)
    assert (out == 1).all()
