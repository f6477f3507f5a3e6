"""Packed operands: the index simplifier, sibling-loop merging, pack computations and the packed
contraction schedule, which must compute the same values as the unpacked one."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.codegen.target import resolve_target
from compiler.dtypes import DType
from compiler.loopir.compute import Computation, ReduceAxis, acc_var
from compiler.loopir.expr import Buffer, Const, Var
from compiler.loopir.stmt import For, Seq, Store, loads_and_stores, seq
from compiler.schedule.defaults import schedule, schedule_computation
from compiler.schedule.packing import evaluate, pack_operand
from compiler.schedule.simplify import simplify_expr, simplify_indices
from compiler.schedule.transforms import merge_siblings
from tests.schedule.test_schedule_transforms import run_nest

F = DType.F32
i, j, k = Var("i"), Var("j"), Var("k")
j_o, j_i = Var("j_o"), Var("j_i")


def test_simplify_divides_out_a_split():
    ranges = {j_o: 4, j_i: 32}
    assert simplify_expr((j_o * 32 + j_i) // 32, ranges) == j_o
    assert simplify_expr((j_o * 32 + j_i) % 32, ranges) == j_i
    assert simplify_expr((j_i + 64) // 32, ranges) == Const(2)
    assert simplify_expr((j_i + 64) % 32, ranges) == j_i


def test_simplify_leaves_inexact_or_unknown_divisions():
    e = (j_o * 32 + j_i) // 16  # j_i spans two blocks of 16
    assert simplify_expr(e, {j_o: 4, j_i: 32}) == e
    assert simplify_expr(j // 4, {}) == j // 4
    neg = (j - 3) // 4  # negative numerators would round differently
    assert simplify_expr(neg, {j: 8}) == neg


def test_simplify_indices_uses_enclosing_loop_extents():
    y = Buffer("y", F, (4, 32))
    s = For(j_o, 4, For(j_i, 32, Store(y, ((j_o * 32 + j_i) // 32, (j_o * 32 + j_i) % 32), Const(1.0, F))))
    assert simplify_indices(s) == For(j_o, 4, For(j_i, 32, Store(y, (j_o, j_i), Const(1.0, F))))


def test_merge_siblings_joins_loops_around_other_statements():
    y = Buffer("y", F, (8,))
    a, b, c = (Store(y, (Const(n),), Const(float(n), F)) for n in range(3))
    s = Seq((For(j, 4, a), b, For(j, 4, c)))
    assert merge_siblings(s, "j") == Seq((For(j, 4, seq(a, c)), b))
    assert merge_siblings(s, "x") == s


def _matmul(m: int, kk: int, n: int, epilogue=None) -> Computation:
    a, b, y = Buffer("a", F, (m, kk)), Buffer("b", F, (kk, n)), Buffer("y", F, (m, n))
    return Computation(y, (i, j), a[i, k] * b[k, j], (ReduceAxis(k, kk),), "sum", epilogue)


def test_pack_operand_panels_and_compile_time_values():
    c = _matmul(3, 5, 10)
    packed_c, pack = pack_operand(c, c.body.b, j, 4, "bp")
    assert pack.output.shape == (3, 5, 4)
    bv = np.arange(50, dtype=np.float32).reshape(5, 10)
    panels = evaluate(pack, {"b": bv})
    # Panel p holds columns 4p..4p+3; the last one is padded by repeating column 9.
    np.testing.assert_array_equal(panels[1], bv[:, 4:8])
    np.testing.assert_array_equal(panels[2], bv[:, [8, 9, 9, 9]])
    assert evaluate(pack, {}) is None  # reads a buffer that is not a constant
    assert "bp" in repr(packed_c.body)


@pytest.mark.parametrize("m,kk,n", [(5, 9, 13), (30, 33, 200), (64, 70, 96), (130, 140, 200)])
@pytest.mark.parametrize("threads", [1, 2])
def test_packed_matmul_schedule_runs(m, kk, n, threads):
    # b is a constant (packed at "compile time" here with evaluate), a is packed at run time.
    c = _matmul(m, kk, n, acc_var(F) * 0.5 + 1.0)
    scheduled = schedule(c, resolve_target("host"), lambda name: name == "b")
    rng = np.random.default_rng(4)
    arrays = {"a": rng.standard_normal((m, kk)).astype(np.float32), "b": rng.standard_normal((kk, n)).astype(np.float32),
              "y": np.full((m, n), np.nan, np.float32)}
    run_first = []
    for pack in scheduled.packs:
        value = evaluate(pack, {"b": arrays["b"]})
        if value is None:
            arrays[pack.output.name] = np.full(pack.output.shape, np.nan, np.float32)
            run_first.append(schedule_computation(pack, resolve_target("host")))
        else:
            arrays[pack.output.name] = value
    assert any(pack.output.name.startswith("b_pk") for pack in scheduled.packs)
    assert "b" not in {buf.name for buf, is_store in loads_and_stores(scheduled.body) if not is_store}
    # a is big and reused by enough column panels to be packed per call.
    assert bool(run_first) == (m * kk >= 1 << 14)
    run_nest(seq(*run_first, scheduled.body), arrays, threads)
    np.testing.assert_allclose(arrays["y"], arrays["a"] @ arrays["b"] * 0.5 + 1.0, rtol=1e-4, atol=1e-4)


def test_a_strided_1x1_conv_reads_its_weights_once():
    """ResNet-50's last downsampling conv (1x1, stride 2, 1024 -> 2048 channels onto 7x7): it reads a
    quarter of its 800 KiB input, which stays in L2, so the 8 MiB of weight panels run outside and are
    read once, not once per output row (the loop order counts the bytes a load touches, not its buffer's)."""
    from onnx import helper

    from compiler.codegen.target import resolve_target
    from compiler.loopir.printer import format_kernel
    from compiler.pipeline import BuildLog, _lower
    from helpers_onnx import graph_model, rand

    x, w = rand((1, 1024, 14, 14)), rand((2048, 1024, 1, 1), seed=1)
    conv = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2])
    _, program = _lower(graph_model([conv], {"x": x}, ["y"], {"w": w}), None, None, None,
                        resolve_target("x86_64-linux-gnu", "znver4"), BuildLog(), None)
    lines = format_kernel(program.calls[0].kernel).splitlines()
    assert lines[1].startswith("  parallel for i1_o in 0..64 {"), lines[:3]  # the 64 weight panels outermost
