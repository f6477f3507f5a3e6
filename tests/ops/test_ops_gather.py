"""Gather, GatherElements and GatherND against onnx's reference (exact: they copy), and what happens to
indices out of range: a run-time index outside ``[-n, n)`` fails the run with ``InvalidInputError``
naming the node (onnxruntime refuses them too), a constant one fails the compile; no read ever
leaves the tensor. ScatterElements / ScatterND indices get the same checks.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import compiler
import runtime_stub
from compiler.errors import CompileError
from helpers_onnx import compiled, graph_model, node_model, rand


def _indices(shape, n, seed):
    """Random indices covering [-n, n): negative ones count from the end."""
    return np.random.default_rng(seed).integers(-n, n, size=shape).astype(np.int64)


@pytest.mark.parametrize("axis, idx_shape", [(0, [4]), (1, [2, 3]), (-1, []), (2, [5, 1])])
def test_gather(check, axis, idx_shape):
    x = rand([5, 6, 7])
    feeds = {"x": x, "i": _indices(idx_shape, x.shape[axis], seed=1)}
    check(node_model("Gather", ["x", "i"], feeds, attrs={"axis": axis}), feeds)


@pytest.mark.parametrize("axis", [0, 1, 2])  # onnx's reference evaluator mishandles a negative axis here
def test_gather_elements(check, axis):
    x = rand([4, 5, 3])
    shape = list(x.shape)
    shape[axis] = 6
    feeds = {"x": x, "i": _indices(shape, x.shape[axis], seed=2)}
    check(node_model("GatherElements", ["x", "i"], feeds, attrs={"axis": axis}), feeds)


@pytest.mark.parametrize("batch_dims, idx_shape", [(0, [3, 2]), (0, [2, 2, 3]), (1, [4, 2, 1])])
def test_gather_nd(check, batch_dims, idx_shape):
    x = rand([4, 5, 6])
    bounds = x.shape[batch_dims:batch_dims + idx_shape[-1]]
    idx = np.stack([_indices(idx_shape[:-1], n, seed=3 + j) for j, n in enumerate(bounds)], axis=-1)
    feeds = {"x": x, "i": idx}
    check(node_model("GatherND", ["x", "i"], feeds, attrs={"batch_dims": batch_dims}), feeds)


def _gather_nd_model():
    x = rand([4, 5])
    return node_model("GatherND", ["x", "i"], {"x": x, "i": np.zeros((3, 2), np.int64)}), x


@pytest.mark.parametrize("op, bad, message", [
    ("Gather", np.array([0, 5, 1], np.int64), r"Gather 'gather' .*: an index in i is out of range \[-5, 5\)"),
    ("Gather", np.array([0, -6, 1], np.int64), r"out of range \[-5, 5\)"),
    ("Gather", np.array([0, 1 << 40, 1], np.int64), r"out of range \[-5, 5\)"),  # unclamped, this read would fault
    ("GatherElements", np.array([[0, 0, 0, 0], [9, 0, 0, 0]], np.int64), r"GatherElements .* out of range \[-5, 5\)"),
], ids=["gather-past-end", "gather-before-start", "gather-far-away", "gather-elements"])
def test_runtime_index_out_of_range_fails_the_run(op, bad, message, tmp_path):
    x = rand([5, 4])
    model = node_model(op, ["x", "i"], {"x": x, "i": np.zeros_like(bad)}, attrs={"axis": 0})
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        with pytest.raises(runtime_stub.InvalidInputError, match=message):
            session.run(None, {"x": x, "i": bad})
        # The check resets every run: in-range indices (negative ones too) run normally again.
        good = np.clip(bad, -5, 4) if op == "Gather" else np.zeros_like(bad)
        (y,) = session.run(None, {"x": x, "i": good})
    np.testing.assert_array_equal(y, np.take(x, good, axis=0) if op == "Gather" else x[good, np.arange(4)])


def test_gather_nd_checks_each_coordinate_against_its_dimension(tmp_path):
    model, x = _gather_nd_model()
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        session.run(None, {"x": x, "i": np.array([[3, 4], [-4, -5], [0, 0]], np.int64)})  # all in range
        with pytest.raises(runtime_stub.InvalidInputError, match=r"i\[\.\.\., 1\] is out of range \[-5, 5\)"):
            session.run(None, {"x": x, "i": np.array([[0, 0], [1, 5], [0, 0]], np.int64)})
        with pytest.raises(runtime_stub.InvalidInputError, match=r"i\[\.\.\., 0\] is out of range \[-4, 4\)"):
            session.run(None, {"x": x, "i": np.array([[4, 0], [0, 0], [0, 0]], np.int64)})


@pytest.mark.parametrize("op", ["ScatterElements", "ScatterND"])
def test_scatter_index_out_of_range_fails_the_run(op, tmp_path):
    data = rand([4, 3])
    idx = np.array([[1], [2]], np.int64) if op == "ScatterND" else np.array([[1, 2, 0]], np.int64)
    updates = rand([2, 3] if op == "ScatterND" else [1, 3], seed=1)
    feeds = {"data": data, "i": idx, "u": updates}
    model = node_model(op, ["data", "i", "u"], feeds)
    bad = idx.copy()
    bad[0, 0] = 4
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        session.run(None, feeds)
        with pytest.raises(runtime_stub.InvalidInputError, match=rf"{op} .*: an index in i.* is out of range \[-4, 4\)"):
            session.run(None, {**feeds, "i": bad})


def test_constant_index_out_of_range_fails_the_compile(tmp_path):
    x = rand([5, 4])
    model = node_model("Gather", ["x", "i"], {"x": x}, consts={"i": np.array([1, 7], np.int64)},
                       expected=[np.zeros((2, 4), np.float32)])
    with pytest.raises(CompileError, match=r"Gather 'gather' .*: an index in i is out of range \[-5, 5\)"):
        compiler.compile(model, tmp_path / "g.tilec")


def test_sequence_lengths_and_roi_batch_indices_are_checked(tmp_path):
    """ReverseSequence's lengths must lie in [0, T] and RoiAlign's batch indices in [0, N): past them the
    reads left the tensor."""
    x = rand([4, 2, 3])
    lens = np.array([4, 1], np.int64)
    model = node_model("ReverseSequence", ["x", "l"], {"x": x, "l": lens}, attrs={"batch_axis": 1, "time_axis": 0})
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        session.run(None, {"x": x, "l": lens})
        with pytest.raises(runtime_stub.InvalidInputError, match=r"a sequence length in l is out of range \[0, 5\)"):
            session.run(None, {"x": x, "l": np.array([5, 1], np.int64)})
    image = rand([2, 3, 8, 8], seed=1)
    rois = np.array([[0, 0, 4, 4], [1, 1, 6, 6]], np.float32)
    feeds = {"x": image, "rois": rois, "b": np.array([0, 1], np.int64)}
    model = node_model("RoiAlign", ["x", "rois", "b"], feeds,
                       attrs={"output_height": 2, "output_width": 2, "sampling_ratio": 2}, opset=16)
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        session.run(None, feeds)
        with pytest.raises(runtime_stub.InvalidInputError, match=r"RoiAlign .*a batch index in b is out of range \[0, 2\)"):
            session.run(None, {**feeds, "b": np.array([0, 2], np.int64)})
