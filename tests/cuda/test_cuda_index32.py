"""32-bit index math (compiler/codegen/cuda/emitter.py): int where every buffer, thread and block index fits.

Every other CUDA test runs the 32-bit side (its buffers are small); here the
64-bit side is checked by a golden kernel over a 3 × 2^30 tensor (too large to
emulate) and by emulating ordinary models with the limit lowered, so their
kernels take the 64-bit path.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import compiler.codegen.cuda.emitter as cuda_emitter
from compiler.codegen.cuda.emitter import StmtEmitter, emit_module
from compiler.codegen.cuda.target import CudaTarget
from compiler.codegen.llvm.module import BufferRef, KernelCall
from compiler.dtypes import DType
from compiler.loopir.compute import Computation
from compiler.loopir.expr import Buffer, Cast, Const, Var, compare, select
from compiler.loopir.stmt import Kernel
from cuda_emulation import CXX, emulate, lower_for_cuda
from helpers_onnx import graph_model, node_model, rand, reference


def _add_kernel_source(rows: int, cols: int) -> str:
    """The CUDA C of ``y = x + b`` (float16, b broadcast over rows), from hand-built loop IR (a golden kernel;
    tests/e2e/test_e2e_big_shapes.py lowers 3 × 2^30 models from ONNX)."""
    x, b, y = Buffer("x", DType.F16, (rows, cols)), Buffer("b", DType.F16, (cols,)), Buffer("y", DType.F16, (rows, cols))
    i, j = Var("i"), Var("j")
    kernel = Kernel("k_add", (x, b, y), CudaTarget().schedule_computation(Computation(y, (i, j), x[i, j] + b[j])), "Add")
    args = (BufferRef("input", 0), BufferRef("input", 1), BufferRef("output", 0))
    source = emit_module([KernelCall(kernel, args)], CudaTarget()).source
    return source[source.index("// k_add"):].strip()


GOLDEN_64 = """\
// k_add (Add); threads over i:3 x j:1073741824
extern "C" __global__ void __launch_bounds__(256) k_add_0(const unsigned short* __restrict__ g_x, const unsigned short* __restrict__ g_b, unsigned short* __restrict__ g_y) {
  for (tl_i64 tl_idx = (tl_i64)blockIdx.x * blockDim.x + threadIdx.x; tl_idx < 3221225472LL;
       tl_idx += (tl_i64)gridDim.x * blockDim.x) {
    tl_i64 tl_idx_rest = tl_idx;
    const tl_i64 v_j = tl_idx_rest % 1073741824LL;
    tl_idx_rest /= 1073741824LL;
    const tl_i64 v_i = tl_idx_rest;
    g_y[((v_i * 1073741824LL) + v_j)] = tl_f2h(tl_round_h((tl_h2f(g_x[((v_i * 1073741824LL) + v_j)]) + tl_h2f(g_b[v_j]))));
  }
}"""

GOLDEN_32 = """\
// k_add (Add); threads over i:3 x j:5
extern "C" __global__ void __launch_bounds__(32) k_add_0(const unsigned short* __restrict__ g_x, const unsigned short* __restrict__ g_b, unsigned short* __restrict__ g_y) {
  for (int tl_idx = (int)blockIdx.x * blockDim.x + threadIdx.x; tl_idx < 15;
       tl_idx += (int)gridDim.x * blockDim.x) {
    int tl_idx_rest = tl_idx;
    const int v_j = tl_idx_rest % 5;
    tl_idx_rest /= 5;
    const int v_i = tl_idx_rest;
    g_y[((v_i * 5) + v_j)] = tl_f2h(tl_round_h((tl_h2f(g_x[((v_i * 5) + v_j)]) + tl_h2f(g_b[v_j]))));
  }
}"""


def test_golden_64_bit_kernel_for_a_buffer_of_2_to_the_31_elements_or_more():
    assert _add_kernel_source(3, 1 << 30) == GOLDEN_64


def test_golden_32_bit_kernel():
    assert _add_kernel_source(3, 5) == GOLDEN_32


def test_only_index_expressions_that_fit_are_narrowed():
    i, j = Var("i"), Var("j")
    em = StmtEmitter(index32=True, extents={i: 1000, j: 7})
    assert em.index(i * 7 + j) == "((v_i * 7) + v_j)"
    # A value computed from an index (Range's start + i * delta) may leave int32: 64-bit, the variable widened.
    assert em.index(i * Const(3_000_000) + 1) == "((((tl_i64)v_i) * 3000000LL) + 1LL)"
    # An index read from memory (Gather) is 64-bit; the comparison beside it still fits.
    idx = Buffer("idx", DType.I64, (1000,))
    assert em.index(idx[i] * 7 + j) == "((g_idx[v_i] * 7LL) + ((tl_i64)v_j))"
    assert em.expr(select(compare("lt", i, 500), Cast(i, DType.F32), Const(0.0, DType.F32))) == \
        "((v_i < 500) ? ((float)(((tl_i64)v_i))) : 0x0.0p+0f)"
    wide = StmtEmitter(index32=False, extents={i: 1000, j: 7})
    assert wide.index(i * 7 + j) == "((v_i * 7LL) + v_j)"


def _gather_model():
    x = rand([20, 9], seed=1)
    idx = np.array([[3, -1, 19], [0, -20, 7]], np.int64)
    return node_model("Gather", ["x", "i"], {"x": x, "i": idx}, attrs={"axis": 0}), {"x": x, "i": idx}


def _models():
    a, b = rand([70, 41]), rand([41, 50], seed=1)
    yield "tiled matmul", node_model("MatMul", ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b}, 1e-4
    a16, b16 = rand([40, 33], dtype="float16"), rand([33, 20], seed=1, dtype="float16")
    yield "tensor cores", node_model("MatMul", ["a", "b"], {"a": a16, "b": b16}), {"a": a16, "b": b16}, 2e-3
    x = rand([10, 300], seed=2)
    yield "row softmax", node_model("Softmax", ["x"], {"x": x}, attrs={"axis": -1}), {"x": x}, 1e-5
    yield "gather", *_gather_model(), 0
    x = rand([2, 3, 9, 8], seed=3)
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"), helper.make_node("Relu", ["p"], ["y"])]
    yield "pad", graph_model(nodes, {"x": x}, ["y"], consts={"pads": np.array([0, 0, 2, 1, 0, 0, 1, 3], np.int64)}), \
        {"x": x}, 0


@pytest.mark.skipif(CXX is None, reason="no host C++ compiler to emulate CUDA kernels with")
@pytest.mark.parametrize("limit", [cuda_emitter.INDEX32_LIMIT, 64], ids=["32-bit", "64-bit"])
def test_both_index_widths_compute_the_same(monkeypatch, limit):
    monkeypatch.setattr(cuda_emitter, "INDEX32_LIMIT", limit)
    for what, model, feeds, tol in _models():
        source = lower_for_cuda(model)[1].source
        kernels = source[source.index("// k_"):]
        assert ("tl_i64 tl_" in kernels) == (limit == 64), what
        for got, want in zip(emulate(model, feeds), reference(model, feeds)):
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol, atol=tol,
                                       err_msg=what)
