"""Tensor-core kernels (compiler/codegen/cuda/tensor_cores.py): which contractions get them, NVRTC, emulation.

Emulated results are compared with float32 products of the float16 / bfloat16
inputs rounded once to the output type (what the reference computes): the
kernel's float accumulation may differ in summation order only, so by at most
one ulp of the output type. tests/ops/test_ops_half_contractions.py runs the
op-level cases (MatMul / Gemm / Conv, both types) through the ``check`` fixture.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

from compiler.codegen.cuda.nvrtc import compile_cuda, nvrtc_available
from compiler.codegen.cuda.target import CudaTarget
from compiler.loopir.printer import format_kernel
from cuda_emulation import CXX, emulate, lower_for_cuda, tiling_everything
from helpers_onnx import graph_model, node_model, rand, reference

needs_cxx = pytest.mark.skipif(CXX is None, reason="no host C++ compiler to emulate CUDA kernels with")
NO_NVRTC = "NVRTC IS NOT AVAILABLE: pip install -e '.[cuda]' (nvidia-cuda-nvrtc, cuda-bindings) to run this test"


def _mma_calls(model) -> int:
    return lower_for_cuda(model)[1].source.count("tl_wmma::mma_sync(")


def _matmul16(shape_a, shape_b):
    a, b = rand(shape_a, seed=1, dtype="float16"), rand(shape_b, seed=2, dtype="float16")
    return node_model("MatMul", ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b}


def _matmul_bf16(shape_a, shape_b):
    a, b = rand(shape_a, seed=1), rand(shape_b, seed=2)
    nodes = [helper.make_node("Cast", ["a"], ["ah"], to=TensorProto.BFLOAT16),
             helper.make_node("Cast", ["b"], ["bh"], to=TensorProto.BFLOAT16),
             helper.make_node("MatMul", ["ah", "bh"], ["yh"]),
             helper.make_node("Cast", ["yh"], ["y"], to=TensorProto.FLOAT)]
    return graph_model(nodes, {"a": a, "b": b}, ["y"]), {"a": a, "b": b}


def _within_one_ulp(got: np.ndarray, exact: np.ndarray, dtype) -> None:
    """``got`` is ``exact`` (float32) rounded to ``dtype``, or a neighbour of it."""
    rounded = exact.astype(dtype).astype(np.float32)
    ulp = np.abs(np.nextafter(rounded.astype(dtype), np.array(np.inf, dtype)).astype(np.float32) - rounded)
    np.testing.assert_array_less(np.abs(got.astype(np.float32) - rounded), ulp * 1.01 + 1e-30)


@needs_cxx
@pytest.mark.parametrize("shape_a,shape_b", [
    ([17, 33], [33, 19]),  # every tile partial, K not a multiple of 16
    ([3, 40, 24], [3, 24, 36]),  # batched
    ([2, 70, 41], [41, 130]),  # several blocks both ways, two fragments per warp
    ([5, 3], [3, 7]),  # tiny: only tiled when every contraction is
])
def test_float16_matmul_edges(shape_a, shape_b):
    model, feeds = _matmul16(shape_a, shape_b)
    with tiling_everything():
        assert _mma_calls(model) == 1
        got = emulate(model, feeds)[0]
    exact = np.matmul(feeds["a"].astype(np.float32), feeds["b"].astype(np.float32))
    assert got.dtype == np.float16
    _within_one_ulp(got, exact, np.float16)


@needs_cxx
@pytest.mark.parametrize("shape_a,shape_b", [([17, 33], [33, 19]), ([2, 40, 72], [2, 72, 36])])
def test_bfloat16_matmul_edges(shape_a, shape_b):
    model, feeds = _matmul_bf16(shape_a, shape_b)
    assert _mma_calls(model) == 1
    got = emulate(model, feeds)[0]
    bf = [feeds[k].astype(ml_dtypes.bfloat16).astype(np.float32) for k in ("a", "b")]
    _within_one_ulp(got, np.matmul(*bf), ml_dtypes.bfloat16)


@needs_cxx
def test_float16_conv_bias_relu_fused_into_the_store():
    x, w, b = rand([2, 5, 11, 10], dtype="float16"), rand([24, 5, 3, 3], seed=1, dtype="float16"), \
        rand([24], seed=2, dtype="float16")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    model = graph_model(nodes, {"x": x}, ["y"], consts={"w": w, "b": b})
    program, module = lower_for_cuda(model)
    assert module.source.count("tl_wmma::mma_sync(") == 1 and len(program.calls) == 1
    np.testing.assert_allclose(emulate(model, {"x": x})[0].astype(np.float32),
                               reference(model, {"x": x})[0].astype(np.float32), rtol=1e-3, atol=2e-3)


def test_float32_and_integers_stay_off_tensor_cores():
    """TF32 would round float32 operands; integer products have no float16 tensor-core path."""
    a, b = rand([64, 48]), rand([48, 64], seed=1)
    model = node_model("MatMul", ["a", "b"], {"a": a, "b": b})
    source = lower_for_cuda(model)[1].source
    assert "__syncthreads" in source and "tl_wmma" not in source
    ai = np.random.default_rng(0).integers(-100, 100, (33, 24)).astype(np.int8)
    bi = np.random.default_rng(1).integers(0, 255, (24, 40)).astype(np.uint8)
    assert _mma_calls(node_model("MatMulInteger", ["a", "b"], {"a": ai, "b": bi}, opset=10)) == 0


def test_loop_ir_prints_the_warp_statements():
    program, _ = lower_for_cuda(_matmul16([40, 30], [30, 20])[0])
    text = format_kernel(program.calls[0].kernel)
    assert "alloc y_2_acc: float32[2, 1] fragment" in text  # 40 rows: two fragments per warp, one col
    assert "fill fragments y_2_acc with 0.0" in text and "warp mma y_2_acc += y_2_a_tile" in text
    assert "= fragments y_2_acc" in text


@pytest.mark.skipif(not nvrtc_available(), reason=NO_NVRTC)
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvrtc_compiles_tensor_core_kernels(arch):
    a16, b16 = rand([70, 41], dtype="float16"), rand([41, 50], seed=1, dtype="float16")
    a, b = rand([33, 40], seed=2), rand([40, 20], seed=3)
    nodes = [helper.make_node("MatMul", ["a16", "b16"], ["y16"]),
             helper.make_node("Cast", ["a"], ["ah"], to=TensorProto.BFLOAT16),
             helper.make_node("Cast", ["b"], ["bh"], to=TensorProto.BFLOAT16),
             helper.make_node("MatMul", ["ah", "bh"], ["yh"]),
             helper.make_node("Cast", ["yh"], ["y"], to=TensorProto.FLOAT)]
    model = graph_model(nodes, {"a16": a16, "b16": b16, "a": a, "b": b}, ["y16", "y"])
    _, module = lower_for_cuda(model, CudaTarget(arch))
    ptx, cubin = compile_cuda(module.source, arch)
    assert f".target {arch}".encode() in ptx and cubin[:4] == b"\x7fELF"
    assert b"wmma.mma.sync.aligned.col.row.m16n16k16.f32.f32" in ptx  # float16 operands
    assert b"wmma.mma.sync.aligned.col.row.m16n16k16.f32.bf16.bf16.f32" in ptx
    assert b"wmma.load.a.sync.aligned.col.m16n16k16" in ptx and b"wmma.store.d.sync.aligned.row" in ptx
