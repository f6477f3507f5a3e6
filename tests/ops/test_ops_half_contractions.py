"""float16 / bfloat16 MatMul, Gemm and Conv against onnx's reference (on CUDA: tensor-core kernels).

Under CUDA emulation these take the tensor-core schedule
(compiler/codegen/cuda/tensor_cores.py: 16 × 16 × 16 fragments, float
accumulators). Shapes are deliberately not multiples of 16 (partial tiles
along rows, cols and the reduction) and include batched products.

bfloat16 models take float32 inputs and cast them (the helpers feed numpy
types only); the reference then multiplies bfloat16 values exactly and rounds
once, as tilec does. Tolerances: both sides sum exact products in float32 and
round once, so they differ by the summation order only: one ulp of the output
type (float16 rtol 1e-3, bfloat16 8e-3) plus an absolute term for results
near zero whose sums cancel.
"""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from helpers_onnx import graph_model, node_model, rand

F16 = {"rtol": 1e-3, "atol": 2e-3}
BF16 = {"rtol": 8e-3, "atol": 2e-2}


def _in_bfloat16(nodes: list, inputs: list[str], outputs: list[str]) -> list:
    """``nodes`` computed in bfloat16: float32 ``inputs`` cast in, float32 ``outputs`` cast out."""
    cast_in = [helper.make_node("Cast", [x], [f"{x}_bf16"], to=TensorProto.BFLOAT16) for x in inputs]
    rename = {**{x: f"{x}_bf16" for x in inputs}, **{y: f"{y}_bf16" for y in outputs}}
    body = [helper.make_node(n.op_type, [rename.get(i, i) for i in n.input], [rename.get(o, o) for o in n.output],
                             **{a.name: helper.get_attribute_value(a) for a in n.attribute}) for n in nodes]
    cast_out = [helper.make_node("Cast", [f"{y}_bf16"], [y], to=TensorProto.FLOAT) for y in outputs]
    return cast_in + body + cast_out


MATMUL_SHAPES = [
    ((17, 33), (33, 19)),  # every tile partial, K not a multiple of 16
    ((3, 40, 24), (3, 24, 36)),  # batched: one grid slice per batch
    ((2, 3, 33, 20), (20, 17)),  # A's batch dims folded into the rows
    ((64, 48), (48, 64)),  # whole tiles
    ((1, 20, 16), (16, 130)),
    ((16, 300), (300, 16)),  # long reduction
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=lambda s: f"{s[0]}@{s[1]}")
def test_matmul_float16(check, shapes):
    a, b = rand(shapes[0], seed=1, dtype="float16"), rand(shapes[1], seed=2, dtype="float16")
    check(node_model("MatMul", ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b}, **F16)


@pytest.mark.parametrize("shapes", MATMUL_SHAPES[:3], ids=lambda s: f"{s[0]}@{s[1]}")
def test_matmul_bfloat16(check, shapes):
    a, b = rand(shapes[0], seed=1), rand(shapes[1], seed=2)
    nodes = _in_bfloat16([helper.make_node("MatMul", ["a", "b"], ["y"])], ["a", "b"], ["y"])
    check(graph_model(nodes, {"a": a, "b": b}, ["y"]), {"a": a, "b": b}, **BF16)


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 1), (0, 1)])
def test_gemm_float16_bias(check, trans_a, trans_b):
    a = rand([37, 70] if trans_a else [70, 37], seed=3, dtype="float16")
    w = rand([33, 37] if trans_b else [37, 33], seed=4, dtype="float16")
    c = rand([33], seed=5, dtype="float16")
    model = node_model("Gemm", ["a", "w", "c"], {"a": a}, consts={"w": w, "c": c},
                       attrs={"transA": trans_a, "transB": trans_b, "alpha": 0.5, "beta": 2.0})
    check(model, {"a": a}, **F16)


def test_gemm_bfloat16_relu(check):
    a, w, c = rand([45, 50], seed=3), rand([21, 50], seed=4), rand([21], seed=5)
    nodes = _in_bfloat16([helper.make_node("Gemm", ["a", "w", "c"], ["g"], transB=1),
                          helper.make_node("Relu", ["g"], ["y"])], ["a", "w", "c"], ["y"])
    check(graph_model(nodes, {"a": a, "w": w, "c": c}, ["y"]), {"a": a, "w": w, "c": c}, **BF16)


CONV_CASES = {
    "pad1_bias": ((2, 5, 11, 10), (24, 5, 3, 3), {"pads": [1, 1, 1, 1]}),
    "stride_dilation": ((1, 6, 13, 12), (20, 6, 3, 2), {"strides": [2, 1], "pads": [0, 1, 2, 1], "dilations": [1, 2]}),
    "groups": ((1, 8, 9, 9), (32, 4, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    "pointwise": ((2, 40, 6, 7), (17, 40, 1, 1), {}),
}


@pytest.mark.parametrize("name", sorted(CONV_CASES))
def test_conv_float16(check, name):
    x_shape, w_shape, attrs = CONV_CASES[name]
    x = rand(x_shape, seed=6, dtype="float16")
    w, b = rand(w_shape, seed=7, dtype="float16"), rand([w_shape[0]], seed=8, dtype="float16")
    check(node_model("Conv", ["x", "w", "b"], {"x": x}, consts={"w": w, "b": b}, attrs=attrs), {"x": x}, **F16)


@pytest.mark.parametrize("name", ["pad1_bias", "stride_dilation"])
def test_conv_bfloat16(check, name):
    x_shape, w_shape, attrs = CONV_CASES[name]
    x, w, b = rand(x_shape, seed=6), rand(w_shape, seed=7), rand([w_shape[0]], seed=8)
    nodes = _in_bfloat16([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], ["x", "w", "b"], ["y"])
    check(graph_model(nodes, {"x": x, "w": w, "b": b}, ["y"]), {"x": x, "w": w, "b": b}, **BF16)
