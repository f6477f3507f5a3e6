"""Tensor sequences known at compile time become tensor ops (compiler/frontend/sequences.py)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from compiler.errors import DataDependentError, UnsupportedOpError
from compiler.frontend import load_graph
from helpers_onnx import graph_model, rand

XYZ = {"x": rand((2, 3), seed=1), "y": rand((2, 3), seed=2), "z": rand((2, 3), seed=3)}


def _ops(model) -> list[str]:
    return [n.op_type for n in load_graph(model).nodes]


def test_construct_insert_erase_at(check):
    nodes = [helper.make_node("SequenceConstruct", ["x", "y"], ["s1"]),
             helper.make_node("SequenceInsert", ["s1", "z", "front"], ["s2"]),
             helper.make_node("SequenceErase", ["s2", "last"], ["s3"]),
             helper.make_node("SequenceAt", ["s3", "one"], ["a"]),
             helper.make_node("SequenceLength", ["s3"], ["n"]),
             helper.make_node("Mul", ["a", "a"], ["out"])]
    consts = {"front": np.array(0, np.int64), "last": np.array(-1, np.int64), "one": np.array(1, np.int64)}
    model = graph_model(nodes, XYZ, ["out", "n"], consts)
    assert not any(op.startswith("Sequence") for op in _ops(model))
    check(model, XYZ)


@pytest.mark.parametrize("new_axis, axis", [(0, 1), (1, -1), (1, 0)])
def test_concat_from_sequence(check, new_axis, axis):
    nodes = [helper.make_node("SequenceConstruct", ["x", "y", "z"], ["s"]),
             helper.make_node("ConcatFromSequence", ["s"], ["out"], axis=axis, new_axis=new_axis)]
    check(graph_model(nodes, XYZ, ["out"]), XYZ)


@pytest.mark.parametrize("split, keepdims", [(None, 0), (None, 1), (np.array(2, np.int64), 1),
                                             (np.array([1, 3], np.int64), 1)])
def test_split_to_sequence_then_concat(check, split, keepdims):
    x = {"x": rand((2, 4), seed=4)}
    inputs, consts = ["x"], {}
    if split is not None:
        inputs.append("split")
        consts["split"] = split
    nodes = [helper.make_node("SplitToSequence", inputs, ["s"], axis=1, keepdims=keepdims),
             helper.make_node("SequenceLength", ["s"], ["n"]),
             helper.make_node("SequenceAt", ["s", "last"], ["tail"])]
    consts["last"] = np.array(-1, np.int64)
    check(graph_model(nodes, x, ["tail", "n"], consts), x)


def test_run_time_position_names_the_value():
    feeds = {**XYZ, "pos": np.array(1, np.int64)}
    nodes = [helper.make_node("SequenceConstruct", ["x", "y", "z"], ["s"]),
             helper.make_node("SequenceAt", ["s", "pos"], ["out"])]
    model = graph_model(nodes, feeds, ["out"])
    with pytest.raises(DataDependentError, match="'pos'.*compile-time constant") as info:
        load_graph(model)
    assert info.value.values == ("pos",)
    graph = load_graph(model, constant_inputs={"pos": np.array(2, np.int64)})
    assert [v.name for v in graph.inputs] == ["x", "y", "z"]


def test_a_sequence_output_is_refused_clearly():
    nodes = [helper.make_node("SequenceConstruct", ["x", "y"], ["s"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in "xy"],
                              [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError, match="SequenceConstruct"):
        load_graph(model, is_supported=lambda op, domain: not op.startswith("Sequence"))


def test_split_to_sequence_of_a_ceil_mode_pool(check):
    # The pool's 5 rows come from the frontend's corrected inference (onnx's says 6): the split must see 5.
    x = {"x": rand((1, 2, 9, 8), seed=4)}
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              ceil_mode=1),
             helper.make_node("SplitToSequence", ["p"], ["s"], axis=2),
             helper.make_node("SequenceLength", ["s"], ["n"]),
             helper.make_node("ConcatFromSequence", ["s"], ["out"], axis=-1)]
    check(graph_model(nodes, x, ["out", "n"]), x)
