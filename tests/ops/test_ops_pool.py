"""Pooling and normalization ops against onnx's reference: MaxPool, AveragePool, global pools, LpPool, LRN.

Tolerance: float32 rtol=1e-4 atol=1e-5 (windows are small sums or exact maxima).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers_onnx import graph_model, node_model, ort_reference, rand

POOL_CASES = {
    "k2_s2": ((1, 3, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    "k3_s1_pad1": ((2, 4, 7, 9), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "k3_s2_pad1": ((1, 5, 11, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "asym_pads": ((1, 2, 9, 9), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [0, 1, 2, 0]}),
    "ceil_mode": ((1, 3, 10, 11), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "ceil_mode_pad": ((1, 2, 9, 8), {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    "ceil_mode_pad_kept": ((1, 2, 10, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                           "ceil_mode": 1}),
    # ceil_mode windows that would start in the end padding (or past it) are dropped in both dims:
    "ceil_mode_dilated_asym": ((1, 2, 9, 9), {"kernel_shape": [2, 3], "strides": [3, 2], "dilations": [2, 1],
                                              "pads": [0, 1, 1, 2], "ceil_mode": 1}),
    "ceil_mode_asym_pads": ((1, 3, 10, 8), {"kernel_shape": [3, 2], "strides": [3, 3], "pads": [2, 1, 1, 0],
                                            "ceil_mode": 1}),
    "same_upper": ((1, 3, 9, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "same_lower": ((1, 3, 9, 10), {"kernel_shape": [2, 2], "strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    "valid": ((1, 3, 9, 10), {"kernel_shape": [3, 3], "strides": [2, 3], "auto_pad": "VALID"}),
    "many_channels": ((1, 37, 6, 6), {"kernel_shape": [2, 2], "strides": [1, 1]}),
    "1d": ((2, 3, 17), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    "3d": ((1, 2, 5, 6, 7), {"kernel_shape": [2, 2, 3], "strides": [1, 2, 2], "pads": [0, 1, 1, 0, 0, 1]}),
}


CEIL_CASES = sorted(n for n, (_, attrs) in POOL_CASES.items() if attrs.get("ceil_mode"))


def _check_pool(check, model, feeds, attrs, expected=None):
    """Against the reference (or ``expected``); ceil_mode cases against onnxruntime as well: their output
    size is where onnx's shape inference departs from the spec, and the frontend corrects it."""
    check(model, feeds, expected=expected)
    if attrs.get("ceil_mode"):
        check(model, feeds, expected=ort_reference(model, feeds))


@pytest.mark.parametrize("name", sorted(POOL_CASES))
def test_maxpool(check, name):
    shape, attrs = POOL_CASES[name]
    x = rand(shape, seed=1)
    model = node_model("MaxPool", ["x"], {"x": x}, attrs=attrs)
    expected = None
    if attrs.get("auto_pad") == "SAME_LOWER":
        # onnx's reference MaxPool computes SAME_LOWER's output size wrong (4 rows, not ceil(9/2) = 5).
        expected = ort_reference(model, {"x": x})
        model = node_model("MaxPool", ["x"], {"x": x}, attrs=attrs, expected=expected)
    _check_pool(check, model, {"x": x}, attrs, expected)


@pytest.mark.parametrize("dilations,pads", [([2, 2], [0, 0, 0, 0]), ([2, 1], [2, 1, 2, 1]), ([3, 2], [1, 1, 1, 1])])
def test_maxpool_dilations(check, dilations, pads):
    x = rand((1, 3, 13, 12), seed=2)
    attrs = {"kernel_shape": [3, 3], "dilations": dilations, "pads": pads, "strides": [1, 2]}
    check(node_model("MaxPool", ["x"], {"x": x}, attrs=attrs), {"x": x})


def test_maxpool_all_negative_window_with_padding(check):
    # Padding must read as -inf, not 0: with negative inputs a 0 would win the max.
    x = -rand((1, 2, 5, 5), seed=3, low=0.5, high=2.0)
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}
    check(node_model("MaxPool", ["x"], {"x": x}, attrs=attrs), {"x": x})


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("name", sorted(POOL_CASES))
def test_averagepool(check, name, count_include_pad):
    shape, attrs = POOL_CASES[name]
    if not any(attrs.get("pads", [0])) and attrs.get("auto_pad", "NOTSET") in ("NOTSET", "VALID") \
            and not attrs.get("ceil_mode") and count_include_pad:
        pytest.skip("no padding: count_include_pad changes nothing (covered by the 0 case)")
    x = rand(shape, seed=4)
    attrs = {**attrs, "count_include_pad": count_include_pad}
    _check_pool(check, node_model("AveragePool", ["x"], {"x": x}, attrs=attrs, opset=19), {"x": x}, attrs)


@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_averagepool_dilations(check, count_include_pad):
    # Dilations on AveragePool exist from opset 19.
    x = rand((1, 2, 11, 12), seed=5)
    attrs = {"kernel_shape": [3, 2], "dilations": [2, 3], "pads": [1, 2, 1, 2], "strides": [2, 1],
             "count_include_pad": count_include_pad}
    check(node_model("AveragePool", ["x"], {"x": x}, attrs=attrs, opset=19), {"x": x})


def test_averagepool_opset11(check):
    x = rand((1, 3, 9, 9), seed=6)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}
    check(node_model("AveragePool", ["x"], {"x": x}, attrs=attrs, opset=11), {"x": x})


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(1, 3, 7, 7), (2, 37, 5, 3), (1, 4, 9), (1, 2, 3, 4, 5), (1, 64, 1, 1)],
                         ids=lambda s: "x".join(map(str, s)))
def test_global_pool(check, op, shape):
    x = rand(shape, seed=7)
    # onnx's reference GlobalMaxPool gets the output rank wrong for inputs that are not 4-D.
    axes = tuple(range(2, x.ndim))
    expected = [x.mean(axis=axes, keepdims=True) if op == "GlobalAveragePool" else x.max(axis=axes, keepdims=True)]
    check(node_model(op, ["x"], {"x": x}, expected=expected), {"x": x}, expected=expected)


@pytest.mark.parametrize("threads", [1, 2])
def test_global_average_pool_threaded(check, threads):
    x = rand((2, 96, 14, 14), seed=8)
    check(node_model("GlobalAveragePool", ["x"], {"x": x}), {"x": x}, threads=(threads,))


@pytest.mark.parametrize("p", [1, 2, 3])
def test_lppool(check, p):
    x = rand((1, 3, 8, 9), seed=9)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "p": p}
    check(node_model("LpPool", ["x"], {"x": x}, attrs=attrs, opset=18), {"x": x})


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("name", CEIL_CASES)
def test_lppool_ceil_mode(check, name, p):
    # onnx's reference LpPool is wrong where a ceil_mode window overhangs the end (it disagrees with
    # onnxruntime and a numpy loop): compared with onnxruntime.
    shape, attrs = POOL_CASES[name]
    x = rand(shape, seed=9)
    attrs = {**attrs, "p": p}
    expected = ort_reference(node_model("LpPool", ["x"], {"x": x}, attrs=attrs, opset=18), {"x": x})
    check(node_model("LpPool", ["x"], {"x": x}, attrs=attrs, opset=18, expected=expected), {"x": x}, expected=expected)


def test_ceil_mode_pools_feed_shape_consumers(check):
    """A ceil_mode pool's corrected size reaches everything downstream: a second pool, Shape (folded to a
    constant) and the Reshape it feeds, and graph outputs (MaxPool's Indices too)."""
    attrs = {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}
    x = rand((1, 2, 17, 16), seed=12)
    nodes = [helper.make_node("MaxPool", ["x"], ["p1", "indices"], **attrs),
             helper.make_node("AveragePool", ["p1"], ["p2"], **attrs),
             helper.make_node("Shape", ["p2"], ["s"]),
             helper.make_node("Relu", ["p2"], ["r"]),
             helper.make_node("Reshape", ["r", "s"], ["y"])]
    model = graph_model(nodes, {"x": x}, ["y", "p1", "indices"], opset=19)
    assert [tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output] == \
        [(1, 2, 5, 5), (1, 2, 9, 9), (1, 2, 9, 9)]
    check(model, {"x": x})


def _lrn_numpy(x: np.ndarray, size: int, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0) -> np.ndarray:
    """LRN as the ONNX spec writes it (channels c - floor((size-1)/2) .. c + ceil((size-1)/2)).

    onnx's ReferenceEvaluator sums the wrong channel window (it disagrees with onnxruntime and
    the spec from the second channel on), so these tests compare against this instead.
    """
    square = x.astype(np.float64) ** 2
    out = np.empty_like(x)
    channels = x.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - (size - 1) // 2), min(channels - 1, c + size // 2)
        out[:, c] = x[:, c] / (bias + alpha / size * square[:, lo:hi + 1].sum(axis=1)) ** beta
    return out


@pytest.mark.parametrize("size,shape", [(3, (1, 8, 5, 5)), (5, (2, 7, 4, 6)), (4, (1, 6, 3, 3)), (1, (1, 3, 4, 4))])
def test_lrn(check, size, shape):
    # LRN's pow(base, -beta) goes through llvm.pow; rtol 1e-4 covers it.
    x = rand(shape, seed=10)
    attrs = {"size": size, "alpha": 1e-2, "beta": 0.75, "bias": 2.0}
    expected = [_lrn_numpy(x, **attrs)]
    check(node_model("LRN", ["x"], {"x": x}, attrs=attrs, expected=expected), {"x": x}, expected=expected)


def test_lrn_default_attrs(check):
    x = rand((1, 5, 4, 4), seed=11)
    expected = [_lrn_numpy(x, 3)]
    check(node_model("LRN", ["x"], {"x": x}, attrs={"size": 3}, expected=expected), {"x": x}, expected=expected)


@pytest.mark.parametrize("name", ["k2_s2", "k3_s1_pad1", "asym_pads", "same_upper", "1d", "3d",
                                  "ceil_mode_pad", "ceil_mode_dilated_asym"])
@pytest.mark.parametrize("storage_order", [0, 1])
def test_maxpool_indices(check, name, storage_order):
    shape, attrs = POOL_CASES[name]
    x = np.round(rand(shape, seed=3) * 2)  # coarse values: ties inside windows pick the first position
    attrs = {**attrs, "storage_order": storage_order}
    model = node_model("MaxPool", ["x"], {"x": x}, attrs=attrs, outputs=("y", "indices"))
    expected = None
    if any(attrs.get("pads", [])):
        # onnx's reference MaxPool offsets the indices of padded windows wrongly (negative indices).
        expected = ort_reference(model, {"x": x})
        model = node_model("MaxPool", ["x"], {"x": x}, attrs=attrs, outputs=("y", "indices"), expected=expected)
    check(model, {"x": x}, expected=expected)


def test_maxpool_indices_dilated(check):
    x = rand((2, 3, 9, 8), seed=4)
    attrs = {"kernel_shape": [2, 3], "dilations": [2, 2], "pads": [1, 1, 1, 1], "strides": [2, 1]}
    check(node_model("MaxPool", ["x"], {"x": x}, attrs=attrs, outputs=("y", "indices")), {"x": x})


@pytest.mark.parametrize("attrs,output_shape", [
    ({"kernel_shape": [2, 2], "strides": [2, 2]}, None),
    ({"kernel_shape": [2, 2], "strides": [2, 2]}, [2, 3, 9, 9]),
    ({"kernel_shape": [3, 2], "strides": [1, 2]}, None),  # overlapping windows: shared maxima
])
def test_maxpool_maxunpool_roundtrip(check, attrs, output_shape):
    """Unpadded windows only: onnx's reference gets padded MaxPool indices wrong. Like the reference (and the
    conformance data), indices address the inferred unpool shape, which a larger output_shape pads."""
    x = rand((2, 3, 8, 8), seed=5)
    unpool_inputs = ["y", "indices"] + (["shape"] if output_shape else [])
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "indices"], **attrs),
             helper.make_node("MaxUnpool", unpool_inputs, ["z"], **attrs)]
    consts = {"shape": np.array(output_shape, dtype=np.int64)} if output_shape else {}
    check(graph_model(nodes, {"x": x}, ["z"], consts=consts), {"x": x})
