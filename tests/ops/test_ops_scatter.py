"""Scatter ops against onnx's reference: ScatterElements, ScatterND, TensorScatter (indices at run time).

Tolerance: float32 rtol=1e-4 atol=1e-5 (at most a few updates combine per element); integers exact.
Duplicate targets with reduction="none" follow the reference (the last update wins).
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, rand


def _indices(shape, high, seed, negative=False):
    idx = np.random.default_rng(seed).integers(0, high, size=shape).astype(np.int64)
    return idx - high if negative else idx


@pytest.mark.parametrize("opset,reduction", [(11, "none"), (13, "none"), (16, "add"), (16, "mul"), (18, "max"),
                                             (18, "min"), (18, "none")])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements(check, opset, reduction, axis):
    data = rand((4, 5, 3), seed=1)
    idx_shape = [3, 4, 2]  # smaller than data on the other axes: those outputs keep data
    idx_shape[axis] = 6  # more updates than targets: duplicates
    idx = _indices(idx_shape, data.shape[axis], seed=2, negative=axis == 1)
    if reduction == "none":
        # Unique targets per row: the spec leaves duplicates undefined.
        idx = np.broadcast_to(np.arange(data.shape[axis]).reshape([-1 if d == axis % 3 else 1 for d in range(3)]),
                              [data.shape[axis] if d == axis % 3 else n for d, n in enumerate(idx_shape)]).copy()
        idx = np.flip(idx, axis=axis).copy()
    upd = rand(idx.shape, seed=3)
    attrs = {"axis": axis} if reduction == "none" else {"axis": axis, "reduction": reduction}
    feeds = {"data": data, "indices": idx, "updates": upd}
    check(node_model("ScatterElements", ["data", "indices", "updates"], feeds, attrs=attrs, opset=opset), feeds)


def test_scatter_elements_duplicates_last_wins(check):
    data = rand((3, 4), seed=4)
    idx = np.array([[1, 1, 3, 1]], dtype=np.int64)
    upd = rand((1, 4), seed=5)
    feeds = {"data": data, "indices": idx, "updates": upd}
    check(node_model("ScatterElements", ["data", "indices", "updates"], feeds, attrs={"axis": 1}), feeds)


@pytest.mark.parametrize("reduction", ["add", "max", "none"])
def test_scatter_elements_int32(check, reduction):
    data = np.arange(24, dtype=np.int32).reshape(4, 6)
    idx = np.array([[0, 2, 2], [5, 5, 1], [3, 0, 0], [1, 1, 1]], dtype=np.int32)
    if reduction == "none":
        idx = np.array([[0, 2, 4], [5, 3, 1], [3, 0, 2], [1, 4, 5]], dtype=np.int32)
    upd = np.random.default_rng(6).integers(-50, 50, size=(4, 3)).astype(np.int32)
    feeds = {"data": data, "indices": idx, "updates": upd}
    attrs = {"axis": 1} if reduction == "none" else {"axis": 1, "reduction": reduction}
    check(node_model("ScatterElements", ["data", "indices", "updates"], feeds, attrs=attrs, opset=18), feeds)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_scatter_nd(check, reduction, k):
    data = rand((4, 5, 3), seed=7)
    rng = np.random.default_rng(8)
    if reduction == "none":
        flat = rng.permutation(int(np.prod(data.shape[:k])))[:4]
        idx = np.stack(np.unravel_index(flat, data.shape[:k]), axis=-1).reshape(2, 2, k)
    else:
        idx = np.stack([rng.integers(0, n, size=(2, 3)) for n in data.shape[:k]], axis=-1)
    idx = idx.astype(np.int64)
    idx[..., 0] -= data.shape[0] * (idx[..., 0] % 2)  # some negative indices
    upd = rand(idx.shape[:-1] + data.shape[k:], seed=9)
    feeds = {"data": data, "indices": idx, "updates": upd}
    attrs = {} if reduction == "none" else {"reduction": reduction}
    check(node_model("ScatterND", ["data", "indices", "updates"], feeds, attrs=attrs, opset=18), feeds)


@pytest.mark.parametrize("mode,axis,writes", [("linear", -2, [0, 2]), ("circular", -2, [3, 1]),
                                              ("linear", 1, None), ("circular", 2, [4, 0])])
def test_tensor_scatter(check, mode, axis, writes):
    past = rand((2, 5, 5, 3), seed=10)
    shape = list(past.shape)
    shape[axis] = 2
    upd = rand(shape, seed=11)
    feeds = {"past": past, "update": upd}
    inputs = ["past", "update"]
    if writes is not None:
        feeds["write_indices"] = np.array(writes, dtype=np.int64)
        inputs.append("write_indices")
    check(node_model("TensorScatter", inputs, feeds, attrs={"mode": mode, "axis": axis}, opset=24), feeds)
