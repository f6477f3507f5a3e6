"""Half-precision semantics: sums accumulate in float32, every op's result is rounded to its type.

Sums (MatMul, Gemm, Reduce*, Softmax, average pools) accumulate in float32 and round once.

onnx's reference (numpy) sums float16 arrays in float32 and rounds the total
once; summing in float16 would round after every addition, which over a long
axis drifts by many units in the last place. Every element is first rounded
to float16 as its own op would (a product, an exp), so tilec and the
reference agree to the last bit, up to the order of the float32 additions
(numpy sums pairwise): at most one float16 ulp (rtol 1e-3) where that order
flips a rounding, and bit-exact in the long-axis cases checked with ``exact``.

Fused chains of bfloat16 ops (computed in float registers) round after every
op, as separate ops would, and float16 libm functions (erf, asinh, ...) go
through their float spelling: bit-exact against the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from helpers_onnx import graph_model, node_model, rand, reference, run_compiled


def _half(shape, seed):
    return rand(shape, seed=seed, dtype="float16")


def _check_half(model, feeds, cache, exact: bool = False) -> None:
    want = reference(model, feeds)[0]
    got = run_compiled(model, feeds, cache_dir=cache)[0]
    assert got.dtype == want.dtype == np.float16
    if exact:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-3, atol=1e-3)


def test_matmul_float16_long_inner_axis(compile_cache) -> None:
    a, b = _half((8, 512), 1), _half((512, 16), 2)
    model = node_model("MatMul", ["a", "b"], {"a": a, "b": b})
    # The float32 sum of 512 exact products rounds once: the float32 order (numpy's or tilec's) rarely matters.
    _check_half(model, {"a": a, "b": b}, compile_cache)


def test_gemm_float16(compile_cache) -> None:
    a, b, c = _half((6, 256), 1), _half((10, 256), 2), _half((10,), 3)
    model = node_model("Gemm", ["a", "b", "c"], {"a": a, "b": b}, {"c": c}, attrs={"transB": 1, "alpha": 0.5})
    _check_half(model, {"a": a, "b": b}, compile_cache)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"])
def test_reduce_float16_long_axis(compile_cache, op: str) -> None:
    x = _half((4, 1024), 3)
    model = node_model(op, ["x", "axes"], {"x": x}, {"axes": np.array([1], np.int64)}, opset=18)
    _check_half(model, {"x": x}, compile_cache)


def test_softmax_float16_after_matmul(compile_cache) -> None:
    """Attention's core as separate ops: each op's float16 result rounds exactly as the reference's."""
    q, k = _half((2, 4, 16), 1), _half((2, 16, 6), 2)
    nodes = [helper.make_node("MatMul", ["q", "k"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1)]
    model = graph_model(nodes, {"q": q, "k": k}, ["p"])
    _check_half(model, {"q": q, "k": k}, compile_cache, exact=True)


@pytest.mark.parametrize("chain", [
    [("Cast", {"to": TensorProto.BFLOAT16}), ("Cast", {"to": TensorProto.FLOAT})],   # the round trip quantizes
    [("Cast", {"to": TensorProto.BFLOAT16}), ("Mul", {}), ("Add", {}), ("Exp", {}), ("Cast", {"to": TensorProto.FLOAT})],
])
def test_bfloat16_chain_rounds_after_every_op(compile_cache, chain) -> None:
    x = rand((16, 64), seed=5, low=-2.0, high=2.0)
    nodes, value = [], "x"
    for k, (op, attrs) in enumerate(chain):
        inputs = [value, value] if op in ("Mul", "Add") else [value]
        nodes.append(helper.make_node(op, inputs, [f"v{k}"], **attrs))
        value = f"v{k}"
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [16, 64]) for n in ("x", value)]
    model = helper.make_model(helper.make_graph(nodes, "bf16", info[:1], info[1:]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert not np.array_equal(want, x)  # the chain does quantize
    np.testing.assert_array_equal(run_compiled(model, {"x": x}, cache_dir=compile_cache)[0], want)


@pytest.mark.parametrize("op,low,high", [("Erf", -3.0, 3.0), ("Asinh", -4.0, 4.0), ("Acosh", 1.0, 5.0),
                                         ("Atanh", -0.95, 0.95)])
def test_float16_functions_without_llvm_intrinsic(compile_cache, op: str, low: float, high: float) -> None:
    """Functions tilec calls from libm, which has float and double spellings only."""
    x = rand((8, 32), seed=6, low=low, high=high, dtype="float16")
    _check_half(node_model(op, ["x"], {"x": x}), {"x": x}, compile_cache, exact=True)


@pytest.mark.parametrize("op, attrs", [("GlobalAveragePool", {}), ("AveragePool", {"kernel_shape": [300, 300]})])
def test_average_pool_over_more_elements_than_float16_counts(op, attrs):
    """90000 > 65504: a float16 count or running sum would overflow (it failed the compile). Compared with the
    float64 mean (onnx's reference overflows too), within one float16 ulp."""
    x = _half([1, 3, 300, 300], seed=11)
    (y,) = run_compiled(node_model(op, ["x"], {"x": x}, attrs=attrs, expected=[np.zeros((1, 3, 1, 1), np.float16)]),
                        {"x": x})
    want = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("op", ["InstanceNormalization", "MeanVarianceNormalization"])
def test_normalization_statistics_over_more_elements_than_float16_counts(op):
    """Statistics over 90000 elements per instance, in float32; within one float16 ulp of the float64 formula."""
    x = _half([1, 2, 300, 300], seed=12)
    consts = {"s": np.ones(2, np.float16), "b": np.zeros(2, np.float16)} if op == "InstanceNormalization" else {}
    model = node_model(op, ["x", *consts], {"x": x}, consts=consts, expected=[np.zeros(x.shape, np.float16)])
    (y,) = run_compiled(model, {"x": x})
    wide = x.astype(np.float64)
    axes = (2, 3) if op == "InstanceNormalization" else (0, 2, 3)
    eps = 1e-5 if op == "InstanceNormalization" else 0.0
    want = (wide - wide.mean(axis=axes, keepdims=True)) / np.sqrt(wide.var(axis=axes, keepdims=True) + eps)
    np.testing.assert_allclose(y.astype(np.float64), want, rtol=1e-3, atol=2e-3)
