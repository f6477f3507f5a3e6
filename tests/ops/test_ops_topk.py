"""TopK against onnx's reference: k as attribute (opset 1) or input (10, 11+), largest/smallest, axes, ties, NaN.

Values and indices are compared exactly (TopK only moves elements).
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, rand


@pytest.mark.parametrize("opset", [10, 11, 17])
@pytest.mark.parametrize("axis,largest", [(-1, 1), (0, 1), (1, 0), (2, 0)])
def test_topk_input_k(check, opset, axis, largest):
    x = rand((4, 7, 5), seed=axis + 3)
    k = np.array([3], dtype=np.int64)
    attrs = {"axis": axis} if opset == 10 else {"axis": axis, "largest": largest}
    feeds = {"x": x}
    check(node_model("TopK", ["x", "k"], feeds, consts={"k": k}, attrs=attrs, opset=opset,
                     outputs=("values", "indices")), feeds, rtol=0, atol=0)


def test_topk_attribute_k(check):
    x = rand((3, 9), seed=1)
    feeds = {"x": x}
    check(node_model("TopK", ["x"], feeds, attrs={"k": 4, "axis": 1}, opset=1, outputs=("values", "indices")),
          feeds, rtol=0, atol=0)


@pytest.mark.parametrize("largest", [0, 1])
def test_topk_ties_and_nan(check, largest):
    x = np.array([[3, 1, 3, np.nan, 1, 2, 3, np.nan], [0, 0, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    feeds = {"x": x}
    check(node_model("TopK", ["x", "k"], feeds, consts={"k": np.array([6], np.int64)},
                     attrs={"largest": largest, "sorted": 1}, opset=11, outputs=("values", "indices")),
          feeds, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["int32", "uint8", "float64"])
def test_topk_dtypes(check, dtype):
    x = np.random.default_rng(5).integers(0, 20, size=(5, 6)).astype(dtype)  # small range: many ties
    feeds = {"x": x}
    check(node_model("TopK", ["x", "k"], feeds, consts={"k": np.array([6], np.int64)}, attrs={"axis": 1},
                     opset=11, outputs=("values", "indices")), feeds, rtol=0, atol=0)


def test_topk_runtime_k(check):
    """k fed at run time: the declared output shape fixes it."""
    x = rand((4, 10), seed=7)
    feeds = {"x": x, "k": np.array([5], dtype=np.int64)}
    check(node_model("TopK", ["x", "k"], feeds, attrs={"largest": 0}, opset=11, outputs=("values", "indices")),
          feeds, rtol=0, atol=0)
