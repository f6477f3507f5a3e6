"""Shape-setting values given at run time: a graph input that names axes is read by the runtime, not compiled in.

Each model is compiled once, as a user's model arrives (no ``--constant-input``), and run with many values of
its shape-setting input, against onnxruntime. Tolerance: max |tilec - onnxruntime| <= 1e-5 * max(1, max
|onnxruntime|) (float32 sums of at most 60 elements). A value the model cannot take (an axis out of range, an
axis named twice where keepdims=0 drops one axis per entry) is an ``InvalidInputError`` naming it.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import compiler
from runtime_stub import InferenceSession
from runtime_stub.errors import InvalidInputError

RTOL = 1e-5


def _reduce_model(op: str, keepdims: int, n_axes: int, batch: str | int = 3):
    out_rank = 3 if keepdims else 3 - n_axes
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "axes"], ["y"], name="reduce", keepdims=keepdims)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 5]),
         helper.make_tensor_value_info("axes", TensorProto.INT64, [n_axes])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [f"y{k}" for k in range(out_rank)])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _compiled(model, tmp_path, name: str = "m") -> tuple[InferenceSession, ort.InferenceSession]:
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    compiler.compile(str(path), str(tmp_path / f"{name}.tilec"))
    return InferenceSession(str(tmp_path / f"{name}.tilec")), ort.InferenceSession(str(path))


def _check(session: InferenceSession, reference: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> None:
    got, = session.run(None, feeds)
    want, = reference.run(None, feeds)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert float(np.abs(got - want).max(initial=0.0)) <= RTOL * max(1.0, float(np.abs(want).max(initial=0.0)))


@pytest.mark.parametrize("op, keepdims, n_axes", [("ReduceSum", 1, 1), ("ReduceMean", 0, 1), ("ReduceMax", 1, 2),
                                                  ("ReduceLogSumExp", 0, 2), ("ReduceProd", 0, 3)])
def test_reduce_axes_read_at_run_time(tmp_path, op: str, keepdims: int, n_axes: int) -> None:
    session, reference = _compiled(_reduce_model(op, keepdims, n_axes), tmp_path)
    assert [a.name for a in session.get_inputs()] == ["x", "axes"]  # still an input, not a constant
    x = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32) + 0.5
    for axes in itertools.permutations([0, 1, 2, -1, -2], n_axes):
        if len({a % 3 for a in axes}) < n_axes:
            continue  # an axis named twice: below
        _check(session, reference, {"x": x, "axes": np.array(axes, np.int64)})


def test_reduce_axes_with_a_symbolic_batch(tmp_path) -> None:
    session, reference = _compiled(_reduce_model("ReduceSum", 0, 1, batch="batch"), tmp_path)
    rng = np.random.default_rng(1)
    for n, axis in [(1, 0), (2, 1), (7, -1), (3, 0), (5, 2)]:
        _check(session, reference, {"x": rng.random((n, 4, 5)).astype(np.float32), "axes": np.array([axis], np.int64)})


def test_bad_run_time_axes_are_refused_naming_them(tmp_path) -> None:
    session, _ = _compiled(_reduce_model("ReduceSum", 0, 2), tmp_path)
    x = np.ones((3, 4, 5), np.float32)
    with pytest.raises(InvalidInputError, match=r"axes\[1\] must be an axis of the rank-3 input"):
        session.run(None, {"x": x, "axes": np.array([0, 3], np.int64)})
    with pytest.raises(InvalidInputError, match=r"axes\[0\] must be an axis of the rank-3 input: needs -3 <= axes\[0\]"):
        session.run(None, {"x": x, "axes": np.array([-4, 1], np.int64)})
    with pytest.raises(InvalidInputError, match="distinct axes"):
        session.run(None, {"x": x, "axes": np.array([2, -1], np.int64)})
    with pytest.raises(InvalidInputError, match=r"input 'axes' element 0 is 9223372036854775807, outside"):
        session.run(None, {"x": x, "axes": np.array([2**63 - 1, 0], np.int64)})
    assert session.run(None, {"x": x, "axes": np.array([0, 1], np.int64)})[0].tolist() == [12.0] * 5  # the session still runs


@pytest.mark.parametrize("op, exclusive, reverse", [("CumSum", 0, 0), ("CumSum", 1, 1), ("CumSum", 0, 1)])
def test_cumulative_axis_read_at_run_time(tmp_path, op: str, exclusive: int, reverse: int) -> None:
    graph = helper.make_graph(
        [helper.make_node(op, ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 5]),
         helper.make_tensor_value_info("axis", TensorProto.INT32, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4, 5])])
    session, reference = _compiled(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path)
    rng = np.random.default_rng(2)
    for n, axis in [(3, 0), (1, 1), (2, 2), (4, -1), (3, -3)]:
        x = rng.random((n, 4, 5)).astype(np.float32) + 0.5
        _check(session, reference, {"x": x, "axis": np.array(axis, np.int32)})
    with pytest.raises(InvalidInputError, match="axis must be an axis of the rank-3 input"):
        session.run(None, {"x": x, "axis": np.array(3, np.int32)})


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "wrap"])
def test_pads_read_at_run_time(tmp_path, mode: str) -> None:
    graph = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads", "", "axes"], ["y"], mode=mode)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4, 5]),
         helper.make_tensor_value_info("pads", TensorProto.INT64, [4]),
         helper.make_tensor_value_info("axes", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "h", "w"])])
    session, reference = _compiled(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path)
    rng = np.random.default_rng(3)
    for n, pads, axes in [(1, [1, 2, 3, 0], [1, 2]), (2, [0, 0, 0, 0], [1, 2]), (3, [2, 1, 0, 3], [-1, -2]),
                          (2, [1, 1, 1, 1], [0, 2]), (2, [-1, 0, 3, -2], [1, 2])]:
        if mode == "reflect" and min(pads) < 0:
            continue  # onnxruntime bounds reflect pads by what the negative ones leave
        x = rng.random((n, 4, 5)).astype(np.float32)
        _check(session, reference, {"x": x, "pads": np.array(pads, np.int64), "axes": np.array(axes, np.int64)})
    x = np.ones((1, 4, 5), np.float32)
    with pytest.raises(InvalidInputError, match="size >= 0"):
        session.run(None, {"x": x, "pads": np.array([-3, 0, -3, 0], np.int64), "axes": np.array([1, 2], np.int64)})
    if mode == "reflect":
        with pytest.raises(InvalidInputError, match="reflect pads of axis 1 must be smaller than its size 4"):
            session.run(None, {"x": x, "pads": np.array([4, 0, 0, 0], np.int64), "axes": np.array([1, 2], np.int64)})


def test_slice_starts_ends_axes_steps_read_at_run_time(tmp_path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Slice", ["x", "starts", "ends", "axes", "steps"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6, 7]),
         *[helper.make_tensor_value_info(n, TensorProto.INT64, [2]) for n in ("starts", "ends", "axes", "steps")]],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "h", "w"])])
    session, reference = _compiled(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path)
    rng = np.random.default_rng(4)
    big = 2**62
    runs = [(2, [0, 1], [6, 7], [1, 2], [1, 1]), (1, [-1, 5], [-7, 0], [1, 2], [-1, -2]),
            (3, [1, -100], [big, 100], [-1, 0], [2, 1]), (2, [4, 0], [2, 1], [2, 1], [1, 3]),
            (1, [-big, 0], [big, -1], [0, 2], [1, -1]), (4, [0, 6], [0, 0], [1, 2], [1, -3])]
    for n, starts, ends, axes, steps in runs:
        feeds = {"x": rng.random((n, 6, 7)).astype(np.float32), "starts": np.array(starts, np.int64),
                 "ends": np.array(ends, np.int64), "axes": np.array(axes, np.int64), "steps": np.array(steps, np.int64)}
        _check(session, reference, feeds)
    feeds["steps"] = np.array([1, 0], np.int64)
    with pytest.raises(InvalidInputError, match=r"steps\[1\] must not be 0"):
        session.run(None, feeds)
    feeds["steps"], feeds["axes"] = np.array([1, 1], np.int64), np.array([2, -1], np.int64)
    with pytest.raises(InvalidInputError, match="the axes name axis 2 twice"):
        session.run(None, feeds)


def test_one_hot_depth_read_at_run_time(tmp_path) -> None:
    graph = helper.make_graph(
        [helper.make_node("OneHot", ["indices", "depth", "values"], ["y"], axis=1)], "g",
        [helper.make_tensor_value_info("indices", TensorProto.INT64, ["batch", 3]),
         helper.make_tensor_value_info("depth", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("values", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", "d", "k"])])
    session, reference = _compiled(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), tmp_path)
    rng = np.random.default_rng(5)
    values = np.array([-1.0, 2.0], np.float32)
    for n, depth in [(1, 1.0), (2, 5.0), (3, 7.9), (1, 16.0)]:
        indices = rng.integers(-int(depth), int(depth), (n, 3))
        _check(session, reference, {"indices": indices, "depth": np.array([depth], np.float32), "values": values})
    with pytest.raises(InvalidInputError, match="depth must be positive"):
        session.run(None, {"indices": indices, "depth": np.array([0.5], np.float32), "values": values})
    with pytest.raises(InvalidInputError, match="must be a finite number"):
        session.run(None, {"indices": indices, "depth": np.array([np.nan], np.float32), "values": values})


def _graph_model(node, inputs, output, opset: int = 18):
    return helper.make_model(helper.make_graph([node], "g", inputs, [output]),
                             opset_imports=[helper.make_opsetid("", opset)])


SHAPE_CASES = {
    # name: (node, inputs, output, the feeds of each run (the data input first, as a function of the values))
    "reshape": (helper.make_node("Reshape", ["x", "shape"], ["y"]),
                [("x", TensorProto.FLOAT, ["n", 3, 4]), ("shape", TensorProto.INT64, [2])], ["a", "b"],
                [((2, 3, 4), {"shape": [6, 4]}), ((1, 3, 4), {"shape": [-1, 2]}), ((5, 3, 4), {"shape": [0, -1]}),
                 ((2, 3, 4), {"shape": [24, 1]}), ((7, 3, 4), {"shape": [-1, 12]})]),
    "expand": (helper.make_node("Expand", ["x", "shape"], ["y"]),
               [("x", TensorProto.FLOAT, [3, 1]), ("shape", TensorProto.INT64, [3])], ["a", "b", "c"],
               [((3, 1), {"shape": [2, 3, 4]}), ((3, 1), {"shape": [1, 1, 1]}), ((3, 1), {"shape": [2, 1, 5]}),
                ((3, 1), {"shape": [1, 3, 0]})]),
    "tile": (helper.make_node("Tile", ["x", "repeats"], ["y"]),
             [("x", TensorProto.FLOAT, [2, 3]), ("repeats", TensorProto.INT64, [2])], ["a", "b"],
             [((2, 3), {"repeats": [1, 1]}), ((2, 3), {"repeats": [2, 3]}), ((2, 3), {"repeats": [0, 2]})]),
}


@pytest.mark.parametrize("name", sorted(SHAPE_CASES))
def test_shapes_read_at_run_time(tmp_path, name: str) -> None:
    node, inputs, out_dims, runs = SHAPE_CASES[name]
    model = _graph_model(node, [helper.make_tensor_value_info(*i) for i in inputs],
                         helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims))
    session, reference = _compiled(model, tmp_path)
    rng = np.random.default_rng(6)
    for shape, values in runs:
        feeds = {"x": rng.random(shape).astype(np.float32), **{k: np.array(v, np.int64) for k, v in values.items()}}
        _check(session, reference, feeds)


@pytest.mark.parametrize("values, message", [
    ([5, 5], "the shape must keep the input's 12 \\* n elements"), ([-1, -1], "at most one entry of the shape may be -1"),
    ([-2, -12], r"shape\[0\] must be -1 or more")])
def test_bad_run_time_reshape_is_refused(tmp_path, values, message: str) -> None:
    node, inputs, out_dims, _ = SHAPE_CASES["reshape"]
    model = _graph_model(node, [helper.make_tensor_value_info(*i) for i in inputs],
                         helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims))
    session, _ = _compiled(model, tmp_path)
    with pytest.raises(InvalidInputError, match=message):
        session.run(None, {"x": np.ones((2, 3, 4), np.float32), "shape": np.array(values, np.int64)})


def test_constant_of_shape_and_range_read_at_run_time(tmp_path) -> None:
    fill = helper.make_node("ConstantOfShape", ["shape"], ["y"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.5]))
    session, reference = _compiled(_graph_model(fill, [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                                                helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])),
                                   tmp_path, "fill")
    for shape in ([2, 3], [1, 1], [0, 4], [17, 5]):
        _check(session, reference, {"shape": np.array(shape, np.int64)})
    with pytest.raises(InvalidInputError, match=r"shape\[0\] must not be negative"):
        session.run(None, {"shape": np.array([-1, 2], np.int64)})
    scalars = [helper.make_tensor_value_info(n, TensorProto.INT32, []) for n in ("start", "limit", "delta")]
    session, reference = _compiled(_graph_model(helper.make_node("Range", ["start", "limit", "delta"], ["y"]), scalars,
                                                helper.make_tensor_value_info("y", TensorProto.INT32, ["n"])),
                                   tmp_path, "range")
    for start, limit, delta in [(0, 5, 1), (10, 2, -3), (3, 3, 1), (1, 10, 4), (5, 0, 1), (-7, 7, 5)]:
        feeds = {"start": np.array(start, np.int32), "limit": np.array(limit, np.int32), "delta": np.array(delta, np.int32)}
        got, = session.run(None, feeds)
        assert got.tolist() == reference.run(None, feeds)[0].tolist()
    with pytest.raises(InvalidInputError, match="delta must not be 0"):
        session.run(None, {"start": np.array(0, np.int32), "limit": np.array(4, np.int32), "delta": np.array(0, np.int32)})


TWO_OUTPUT_CASES = {
    # name: (node, the size input and its dtype, the runs' values, a bad value and the error it gives)
    "topk": (helper.make_node("TopK", ["x", "k"], ["a", "b"], axis=1), ("k", [1]), [[1], [4], [10], [0]],
             [11], "k must be at most the 10 elements of axis 1"),
    "split": (helper.make_node("Split", ["x", "split"], ["a", "b"], axis=1), ("split", [2]), [[3, 7], [10, 0], [5, 5]],
              [4, 4], "the split sizes must add up to axis 1's 10 elements"),
}


@pytest.mark.parametrize("name", sorted(TWO_OUTPUT_CASES))
def test_top_k_and_split_sizes_read_at_run_time(tmp_path, name: str) -> None:
    node, (size_name, size_shape), runs, bad, message = TWO_OUTPUT_CASES[name]
    second = TensorProto.INT64 if name == "topk" else TensorProto.FLOAT
    model = _graph_model(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 10]),
                                helper.make_tensor_value_info(size_name, TensorProto.INT64, size_shape)],
                         helper.make_tensor_value_info("a", TensorProto.FLOAT, ["p", "q"]))
    model.graph.output.append(helper.make_tensor_value_info("b", second, ["r", "s"]))
    session, reference = _compiled(model, tmp_path)
    rng = np.random.default_rng(7)
    for n, values in enumerate(runs, start=1):
        feeds = {"x": rng.random((n, 10)).astype(np.float32), size_name: np.array(values, np.int64)}
        for got, want in zip(session.run(None, feeds), reference.run(None, feeds)):
            assert got.shape == want.shape and np.array_equal(got, want)
    with pytest.raises(InvalidInputError, match=message):
        session.run(None, {"x": np.ones((1, 10), np.float32), size_name: np.array(bad, np.int64)})
