"""Golden text of scheduled kernels (lowering + default schedule + printer), and printer unit tests.

The target is fixed (x86-64-v3: AVX2, 8 float lanes, 16 vector registers) so the
text does not depend on the machine running the tests. A change to these texts
is a change to what the compiler generates: review it, then update the golden.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from compiler.codegen.target import resolve_target
from compiler.dtypes import DType
from compiler.frontend import load_graph
from compiler.graph.passes import run_passes
from compiler.loopir.expr import Buffer, Const, Var, call, cast, compare, logical_and, max_, select
from compiler.loopir.printer import format_expr, format_kernel, format_stmt
from compiler.loopir.stmt import Alloc, For, ForKind, Kernel, Store, seq
from compiler.lowering.driver import lower_graph
from helpers_onnx import node_model, rand

TARGET = resolve_target("x86_64-linux-gnu", cpu="x86-64-v3")


def _kernel_texts(model) -> list[str]:
    program = lower_graph(run_passes(load_graph(model)), TARGET)
    return [format_kernel(call.kernel) for call in program.calls]


def test_relu_4x8():
    x = rand((4, 8))
    assert _kernel_texts(node_model("Relu", ["x"], {"x": x})) == ["""\
kernel k_relu_3 "Relu" (y_1: float32[4, 8], x_0: float32[4, 8]) {
  for i0 in 0..4 {
    vectorized for i1 in 0..8 {
      y_1[i0, i1] = max(x_0[i0, i1], 0.0)
    }
  }
}"""]


def test_relu_with_vector_tail():
    # 37 = 2 * 16 + 5: two full double-register chunks, then a 5-lane tail under the same name.
    x = rand((3, 37))
    assert _kernel_texts(node_model("Relu", ["x"], {"x": x})) == ["""\
kernel k_relu_3 "Relu" (y_1: float32[3, 37], x_0: float32[3, 37]) {
  for i0 in 0..3 {
    for i1_o in 0..2 {
      vectorized for i1_i in 0..16 {
        y_1[i0, ((i1_o * 16) + i1_i)] = max(x_0[i0, ((i1_o * 16) + i1_i)], 0.0)
      }
    }
    vectorized for i1_i in 0..5 {
      y_1[i0, (i1_i + 32)] = max(x_0[i0, (i1_i + 32)], 0.0)
    }
  }
}"""]


def test_matmul_3x5_5x8():
    a, b = rand((3, 5)), rand((5, 8), seed=1)
    assert _kernel_texts(node_model("MatMul", ["a", "b"], {"a": a, "b": b})) == ["""\
kernel k_matmul_4 "MatMul" (a_0: float32[3, 5], b_1: float32[5, 8], y_2: float32[3, 8]) {
  alloc y_2_acc: float32[3, 8] local
  unrolled for i0 in 0..3 {
    vectorized for i1 in 0..8 {
      y_2_acc[i0, i1] = 0.0
    }
  }
  for r2 in 0..5 {
    unrolled for i0 in 0..3 {
      vectorized for i1 in 0..8 {
        y_2_acc[i0, i1] = (y_2_acc[i0, i1] + (a_0[i0, r2] * b_1[r2, i1]))
      }
    }
  }
  unrolled for i0 in 0..3 {
    vectorized for i1 in 0..8 {
      y_2[i0, i1] = y_2_acc[i0, i1]
    }
  }
}"""]


def test_softmax_2x5():
    # Max, exps, their sum's reciprocal and the scaled row: four passes fused over the rows (fuse_siblings).
    x = rand((2, 5))
    assert _kernel_texts(node_model("Softmax", ["x"], {"x": x})) == ["""\
kernel k_softmax_6 "Softmax" (x_0: float32[2, 5], softmax_max_2: float32[2, 1], softmax_exp_3: float32[2, 5], \
softmax_inverse_sum_4: float32[2, 1], y_1: float32[2, 5]) {
  for i0 in 0..2 {
    alloc softmax_max_2_acc: float32[1] local
    softmax_max_2_acc[0] = -inf
    for r2 in 0..5 {
      softmax_max_2_acc[0] = max(softmax_max_2_acc[0], x_0[i0, r2])
    }
    softmax_max_2[i0, 0] = softmax_max_2_acc[0]
    vectorized for i4 in 0..5 {
      softmax_exp_3[i0, i4] = exp((x_0[i0, i4] - softmax_max_2[i0, 0]))
    }
    alloc softmax_inverse_sum_4_acc: float32[1] local
    softmax_inverse_sum_4_acc[0] = 0.0
    for r7 in 0..5 {
      softmax_inverse_sum_4_acc[0] = (softmax_inverse_sum_4_acc[0] + softmax_exp_3[i0, r7])
    }
    softmax_inverse_sum_4[i0, 0] = (1.0 / softmax_inverse_sum_4_acc[0])
    vectorized for i9 in 0..5 {
      y_1[i0, i9] = (softmax_exp_3[i0, i9] * softmax_inverse_sum_4[i0, 0])
    }
  }
}"""]


def test_reduce_over_leading_axis_vectorizes_with_a_tile():
    # A non-contraction reduction vectorized over its output: one accumulator per lane.
    x = rand((3, 5))
    model = node_model("ReduceSum", ["x", "axes"], {"x": x}, consts={"axes": np.array([0])}, attrs={"keepdims": 0})
    assert _kernel_texts(model) == ["""\
kernel k_reducesum_4 "ReduceSum" (x_0: float32[3, 5], y_2: float32[5]) {
  alloc y_2_acc: float32[5] local
  vectorized for i0 in 0..5 {
    y_2_acc[i0] = 0.0
  }
  for r1 in 0..3 {
    vectorized for i0 in 0..5 {
      y_2_acc[i0] = (y_2_acc[i0] + x_0[r1, i0])
    }
  }
  vectorized for i0 in 0..5 {
    y_2[i0] = y_2_acc[i0]
  }
}"""]


# --- printer units ------------------------------------------------------------------------


def test_format_expr_forms():
    x = Buffer("x", DType.F32, (4, 8))
    i, j = Var("i"), Var("j")
    assert format_expr(Const(3)) == "3"
    assert format_expr(Const(2.5, DType.F32)) == "2.5"
    assert format_expr(Const(-math.inf, DType.F32)) == "-inf"
    assert format_expr(Const(True, DType.BOOL)) == "true"
    assert format_expr(x[i, j * 2 + 1]) == "x[i, ((j * 2) + 1)]"
    assert format_expr(max_(x[i, j], 0.0)) == "max(x[i, j], 0.0)"
    assert format_expr(call("exp", -x[i, j])) == "exp(neg(x[i, j]))"
    cond = logical_and(compare("ge", i, 0), compare("lt", i, 4))
    assert format_expr(select(cond, x[i, j], Const(0.0, DType.F32))) == \
        "select(((i >= 0) && (i < 4)), x[i, j], 0.0)"
    assert format_expr(cast(i, DType.F32)) == "float32(i)"
    assert format_expr(i % 3) == "(i % 3)"


def test_format_kernel_with_alloc_and_loop_kinds():
    x = Buffer("x", DType.F32, (4,))
    t = Buffer("t", DType.F32, (2,), "local")
    i, k = Var("i"), Var("k")
    body = Alloc(t, seq(For(k, 2, Store(t, (k,), Const(0.0, DType.F32)), ForKind.UNROLLED),
                        For(i, 4, Store(x, (i,), t[0]), ForKind.PARALLEL)))
    assert format_kernel(Kernel("k", (x,), body, "Test")) == """\
kernel k "Test" (x: float32[4]) {
  alloc t: float32[2] local
  unrolled for k in 0..2 {
    t[k] = 0.0
  }
  parallel for i in 0..4 {
    x[i] = t[0]
  }
}"""
    assert format_stmt(Store(x, (Const(1),), Const(1.0, DType.F32))) == "x[1] = 1.0"
    assert format_kernel(Kernel("k", (), seq())).startswith("kernel k () {")


def test_format_kernel_without_label():
    x = Buffer("x", DType.F32, (2,))
    assert format_kernel(Kernel("k", (x,), For(Var("i"), 2, Store(x, (Var("i"),), Const(0.0, DType.F32))))) == """\
kernel k (x: float32[2]) {
  for i in 0..2 {
    x[i] = 0.0
  }
}"""
