"""Half-precision sums (MatMul, Gemm, Reduce*, Softmax) accumulate in float32 and round once.

onnx's reference (numpy) sums float16 arrays in float32 and rounds the total
once; summing in float16 would round after every addition, which over a long
axis drifts by many units in the last place. Every element is first rounded
to float16 as its own op would (a product, an exp), so tilec and the
reference agree to the last bit, up to the order of the float32 additions
(numpy sums pairwise): at most one float16 ulp (rtol 1e-3) where that order
flips a rounding, and bit-exact in the long-axis cases checked with ``exact``.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

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
