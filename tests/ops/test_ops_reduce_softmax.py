"""Reduce*, Softmax and LogSoftmax against onnx's reference.

Reduce* take axes as an attribute before opset 13 (18 for all but ReduceSum)
and as an input after; Softmax before opset 13 normalizes the input coerced to
2-D at ``axis``, from 13 along ``axis`` alone. Tolerance: float32 rtol=1e-4,
atol=1e-5 except ReduceProd/ReduceLogSumExp and the sums of squares, which use
atol=1e-4 because they sum up to ~100 values of magnitude up to ~10.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, ort_reference, rand

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]
AXES = [None, [0], [1], [-1], [0, 2], [1, 2], [-3, -1]]
SHAPE = (3, 5, 19)


def _data(op: str, shape=SHAPE, seed=1) -> np.ndarray:
    if op == "ReduceLogSum":
        return rand(shape, seed=seed, low=0.1, high=2.0)  # log of a positive sum
    if op == "ReduceProd":
        return rand(shape, seed=seed, low=0.8, high=1.2)  # products of ~100 values stay O(1)
    return rand(shape, seed=seed)


def _atol(op: str) -> float:
    return 1e-4 if op in ("ReduceProd", "ReduceLogSumExp", "ReduceSumSquare", "ReduceL2") else 1e-5


def _reduce_model(op, x, axes, keepdims, opset, noop=None):
    attrs = {"keepdims": keepdims}
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    axes_as_input = opset >= (13 if op == "ReduceSum" else 18)
    consts, inputs = {}, ["x"]
    if axes is not None:
        if axes_as_input:
            consts["axes"] = np.array(axes, dtype=np.int64)
            inputs.append("axes")
        else:
            attrs["axes"] = axes
    return node_model(op, inputs, {"x": x}, consts=consts, attrs=attrs, opset=opset)


@pytest.mark.parametrize("keepdims", [1, 0])
@pytest.mark.parametrize("axes", AXES, ids=str)
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_axes_input(check, op, axes, keepdims):
    x = _data(op)
    check(_reduce_model(op, x, axes, keepdims, opset=18), {"x": x}, atol=_atol(op))


@pytest.mark.parametrize("axes", [None, [1], [0, 2]], ids=str)
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_axes_attribute_opset11(check, op, axes):
    x = _data(op, seed=2)
    check(_reduce_model(op, x, axes, 1, opset=11), {"x": x}, atol=_atol(op))


@pytest.mark.parametrize("axes", [None, [1], [0, -1]], ids=str)
def test_reduce_sum_opset13(check, axes):
    # ReduceSum moved axes to an input in opset 13, five versions before the others.
    x = _data("ReduceSum", seed=3)
    check(_reduce_model("ReduceSum", x, axes, 0, opset=13), {"x": x})


def test_reduce_noop_with_empty_axes(check):
    x = _data("ReduceMean", seed=4)
    check(_reduce_model("ReduceMean", x, None, 1, opset=18, noop=1), {"x": x})


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax"])
def test_reduce_int(check, op):
    x = (rand((4, 7, 9), seed=5) * 20).astype(np.int32)
    check(_reduce_model(op, x, [1], 0, opset=18), {"x": x})


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("axes", [[1], [0]], ids=str)
def test_reduce_large_threaded(check, axes, threads):
    x = rand((130, 520), seed=6)
    check(_reduce_model("ReduceMean", x, axes, 1, opset=18), {"x": x}, threads=(threads,))


# --- Softmax / LogSoftmax ---------------------------------------------------------------------

SOFTMAX_SHAPES = [(4, 37), (2, 3, 5, 7), (17,)]


def _axes_for(shape):
    return sorted({None, 0, len(shape) - 1, -1, *( [1, -2] if len(shape) > 2 else [])},
                  key=lambda a: (a is not None, a))


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("shape,axis", [(s, a) for s in SOFTMAX_SHAPES for a in _axes_for(s)],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else str(v))
def test_softmax(check, op, opset, shape, axis):
    if opset < 13 and axis is None and len(shape) == 1:
        pytest.skip("Softmax-11's default axis=1 is out of range for a 1-D input (an invalid model)")
    x = rand(shape, seed=7) * 3
    attrs = {} if axis is None else {"axis": axis}
    model = node_model(op, ["x"], {"x": x}, attrs=attrs, opset=opset)
    expected = None
    if opset < 13:
        # onnx's ReferenceEvaluator applies opset-13 semantics (normalize along ``axis`` only) to
        # Softmax-11 too; onnxruntime implements the coerced-2-D semantics the spec defines.
        expected = ort_reference(model, {"x": x})
    check(model, {"x": x}, expected=expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_softmax_large_threaded(check, threads):
    x = rand((64, 1000), seed=8) * 4
    check(node_model("Softmax", ["x"], {"x": x}), {"x": x}, threads=(threads,))


def test_softmax_large_values_are_stable(check):
    # exp(1000) overflows float32: the lowering must subtract the row maximum first.
    x = rand((3, 9), seed=9) * 10 + 1000
    check(node_model("Softmax", ["x"], {"x": x}), {"x": x})


def test_matmul_softmax_chain(check):
    from onnx import helper

    from helpers_onnx import graph_model

    x = rand((6, 16), seed=10)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Softmax", ["m"], ["y"], axis=-1)]
    check(graph_model(nodes, {"x": x}, ["y"], {"w": rand((16, 21), seed=11)}), {"x": x}, atol=1e-5)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceProd", "ReduceMax", "ReduceLogSumExp", "ReduceL2"])
def test_reduce_over_an_empty_axis_gives_the_identity(check, op):
    # Reducing a zero-length axis: the combiner's identity through the epilogue (0, 1, -inf, log 0 = -inf, 0).
    x = np.zeros((2, 0, 4), np.float32)
    check(_reduce_model(op, x, [1], 1, opset=18), {"x": x})


def test_zero_size_result_runs_no_kernel(check):
    x = rand((3, 0, 5), seed=6)
    check(node_model("Relu", ["x"], {"x": x}), {"x": x})
