"""Stage 1c: ONNX -> graph IR (values, attributes, opsets, order, constants)."""

from __future__ import annotations

import glob
import os
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.dtypes import DType
from compiler.frontend import load_graph
from compiler.frontend.folding import FOLD_LIMIT_BYTES
from compiler.graph.ir import Graph


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _model(nodes, inputs, outputs, inits=(), opsets=(("", 17),)) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])


def _assert_valid_ir(graph: Graph) -> None:
    """The IR contract: topological order, static types, constants without producers."""
    defined = {id(v) for v in graph.inputs}
    for node in graph.nodes:
        for v in node.inputs:
            assert v is None or v.is_const or id(v) in defined, f"{node.describe()} reads {v} before it is defined"
        for v in node.outputs:
            assert v.producer is node
            defined.add(id(v))
    for v in graph.values():
        assert all(isinstance(d, int) and d >= 0 for d in v.shape), v
        assert isinstance(v.dtype, DType)
        if v.is_const:
            assert v.producer is None and v.const.shape == v.shape and v.const.dtype == v.dtype.numpy
    for v in graph.outputs:
        assert v.is_const or id(v) in defined or any(v is i for i in graph.inputs)


def test_attributes_become_plain_python_values():
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="reflect"),
        helper.make_node("Conv", ["p", "w"], ["c"], name="conv", kernel_shape=[1, 1], strides=[1, 1]),
        helper.make_node("ConstantOfShape", ["shp"], ["k"], name="cos",
                         value=numpy_helper.from_array(np.array([2.0], np.float32))),
        helper.make_node("Mul", ["c", "xk"], ["y"], name="mul"),
        helper.make_node("Reshape", ["x", "xs"], ["xk"], name="r"),
    ]
    model = _model(nodes, [_f32("x", [1, 1, 2, 2]), _f32("s", [2])], [_f32("y", [1, 1, 4, 4])], [
        numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
        numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "w"),
        numpy_helper.from_array(np.array([1], np.int64), "shp"),
        # [1, 1, 1, 4] broadcasts against the conv's [1, 1, 4, 4]; [1, 1, 2, 2] did not, which the loader
        # let pass while onnx's inference skipped the Mul silently (it checks each node now).
        numpy_helper.from_array(np.array([1, 1, 1, 4], np.int64), "xs"),
    ])
    model.graph.node.insert(0, model.graph.node.pop())  # Reshape listed last: exercises sorting
    graph = load_graph(model)
    pad = next(n for n in graph.nodes if n.op_type == "Pad")
    conv = next(n for n in graph.nodes if n.op_type == "Conv")
    assert pad.attrs == {"mode": "reflect"} and isinstance(pad.attrs["mode"], str)
    assert conv.attrs == {"kernel_shape": [1, 1], "strides": [1, 1]} and isinstance(conv.attrs["strides"], list)
    assert [v.name for v in graph.inputs] == ["x", "s"]  # an unused input stays: it is the ABI
    _assert_valid_ir(graph)


def test_tensor_attribute_is_a_numpy_array():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu"),
             # A Loop whose trip count is computed from tensor data is not expanded, so its GRAPH attribute
             # reaches the IR.
             helper.make_node("ArgMax", ["x"], ["argmax"], axis=0, keepdims=0),
             helper.make_node("ReduceMax", ["argmax"], ["m"], keepdims=0),
             helper.make_node("Loop", ["m", "", "s"], ["z"], name="loop",
                              body=helper.make_graph(
                                  [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                                   helper.make_node("Constant", [], ["one"], value_float=1.0),
                                   helper.make_node("Add", ["s_in", "one"], ["s_out"])],
                                  "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                                           helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                                           _f32("s_in", [])],
                                  [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                                   _f32("s_out", [])]))]
    nodes.append(helper.make_node("EyeLike", ["y"], ["eye"], name="eye", dtype=TensorProto.FLOAT))
    # ConstantOfShape on a run-time shape (value sizes) is not foldable, so its TENSOR attribute reaches the IR.
    nodes.append(helper.make_node("ConstantOfShape", ["shape_in"], ["filled"], name="fill",
                                  value=numpy_helper.from_array(np.array([3], np.int32))))
    model = _model(nodes, [_f32("x", [2, 2]), _f32("s", []),
                           helper.make_tensor_value_info("shape_in", TensorProto.INT64, [1])],
                   [_f32("eye", [2, 2]), _f32("z", []), helper.make_tensor_value_info("filled", TensorProto.INT32, ["k"])])
    graph = load_graph(model)
    fill = next(n for n in graph.nodes if n.op_type == "ConstantOfShape")
    assert isinstance(fill.attrs["value"], np.ndarray) and fill.attrs["value"].tolist() == [3]
    loop = next(n for n in graph.nodes if n.op_type == "Loop")
    assert isinstance(loop.attrs["body"], onnx.GraphProto)
    assert next(n for n in graph.nodes if n.op_type == "EyeLike").attrs == {"dtype": TensorProto.FLOAT}


def test_omitted_optional_input_is_none_and_names_are_generated():
    nodes = [helper.make_node("Clip", ["x", "", "hi"], ["y"]),  # no min, no node name
             helper.make_node("Relu", ["y"], ["z"])]
    model = _model(nodes, [_f32("x", [3])], [_f32("z", [3])], [numpy_helper.from_array(np.float32(1.0), "hi")])
    graph = load_graph(model)
    clip = graph.nodes[0]
    assert clip.inputs[1] is None and clip.input(1) is None and clip.inputs[2].const == 1.0
    assert clip.input(5) is None
    assert all(n.name for n in graph.nodes) and len({n.name for n in graph.nodes}) == 2


def test_duplicate_node_names_are_made_unique():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="n"), helper.make_node("Neg", ["y"], ["z"], name="n")]
    graph = load_graph(_model(nodes, [_f32("x", [3])], [_f32("z", [3])]))
    assert len({n.name for n in graph.nodes}) == 2 and graph.nodes[0].name == "n"


def test_opsets_per_domain_and_custom_op_uses_declared_type():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Fancy", ["r"], ["y"], name="fancy", domain="com.example", alpha=0.5)]
    model = _model(nodes, [_f32("x", [2, 3])], [_f32("y", [2, 3])], opsets=(("ai.onnx", 18), ("com.example", 3)))
    graph = load_graph(model)
    relu, fancy = graph.nodes
    assert (relu.domain, relu.opset) == ("", 18)
    assert (fancy.domain, fancy.opset) == ("com.example", 3)
    assert fancy.attrs == {"alpha": 0.5} and fancy.outputs[0].shape == (2, 3)
    assert graph.opsets == {"": 18, "com.example": 3}


def test_initializers_listed_as_inputs_are_not_graph_inputs():
    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), "w")
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                   [_f32("x", [4, 3]), _f32("w", [3, 2])], [_f32("y", [4, 2])], [w])
    model.ir_version = 3
    model.opset_import[0].version = 8
    graph = load_graph(model)
    assert [v.name for v in graph.inputs] == ["x"]
    weight = graph.nodes[0].inputs[1]
    assert weight.is_const and weight.const.tolist() == [[0, 1], [2, 3], [4, 5]]


def test_bfloat16_constant_is_carried_as_uint16_bits():
    b = helper.make_tensor("b", TensorProto.BFLOAT16, [2], [1.0, -2.0])
    model = _model([helper.make_node("Add", ["x", "b"], ["y"], name="add")],
                   [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2])],
                   [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2])], [b])
    graph = load_graph(model)
    const = graph.nodes[0].inputs[1]
    assert const.dtype is DType.BF16 and const.const.dtype == np.uint16
    assert const.const.tolist() == [0x3F80, 0xC000]
    assert graph.outputs[0].dtype is DType.BF16


def test_output_that_is_an_input_or_a_constant():
    model = _model([helper.make_node("Constant", [], ["k"], name="k", value_ints=[1, 2])],
                   [_f32("x", [2])], [_f32("x", [2]), helper.make_tensor_value_info("k", TensorProto.INT64, [2])])
    graph = load_graph(model)
    assert graph.nodes == [] and graph.outputs[0] is graph.inputs[0]
    assert graph.outputs[1].name == "k" and graph.outputs[1].const.tolist() == [1, 2]


LIGHT_MODELS = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx")))


@pytest.mark.skipif(not LIGHT_MODELS, reason="onnx light models not installed")
def test_onnx_light_models_import_with_static_shapes():
    start = time.perf_counter()
    for path in LIGHT_MODELS:
        graph = load_graph(path)
        # The weights (ConstantOfShape fills) were folded into constants, except those past folding's size
        # limit: they have more elements than their constant inputs, so they stay run-time fills.
        fills = [n.outputs[0] for n in graph.nodes if n.op_type == "ConstantOfShape"]
        assert all(v.type.nbytes > FOLD_LIMIT_BYTES for v in fills), path
        assert graph.opsets[""] == 17, path
        assert len(graph.inputs) == 1 and graph.inputs[0].shape == (1, 3, 224, 224), path
        assert graph.outputs[0].shape[:2] == (1, 1000), path
        _assert_valid_ir(graph)
    assert time.perf_counter() - start < 30
