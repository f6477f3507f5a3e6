"""Stage 2 cleanup: Identity/Dropout removal, dead-code elimination, IR-level constant folding."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from compiler.dtypes import DType
from compiler.frontend import load_graph
from compiler.frontend.folding import graph_to_model
from compiler.graph.ir import Graph, Node, TensorType, Value
from compiler.graph.passes import run_passes
from compiler.graph.passes.cleanup import cleanup


def _f32(name, shape=(2, 3)):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _check_same_results(model: onnx.ModelProto, graph: Graph) -> None:
    """The cleaned graph computes what the original model does, output by output, under the same names."""
    rng = np.random.default_rng(0)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs}
    expected = ReferenceEvaluator(model).run(None, feeds)
    assert [v.name for v in graph.outputs] == [o.name for o in model.graph.output]
    got = ReferenceEvaluator(graph_to_model(graph)).run(None, feeds)
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-6)


def test_identity_in_the_middle_is_removed():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Identity", ["a"], ["b"], name="id"),
             helper.make_node("Neg", ["b"], ["y"], name="neg")]
    model = _model(nodes, [_f32("x")], [_f32("y")])
    graph = cleanup(load_graph(model))
    assert [n.op_type for n in graph.nodes] == ["Relu", "Neg"]
    assert graph.nodes[1].inputs[0] is graph.nodes[0].outputs[0]
    _check_same_results(model, graph)


def test_identity_producing_an_output_renames_the_kept_value():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Identity", ["a"], ["y"], name="id"),
             helper.make_node("Neg", ["a"], ["z"], name="neg")]
    model = _model(nodes, [_f32("x")], [_f32("y"), _f32("z")])
    graph = cleanup(load_graph(model))
    assert [n.op_type for n in graph.nodes] == ["Relu", "Neg"]
    assert graph.outputs[0] is graph.nodes[0].outputs[0] and graph.outputs[0].name == "y"
    _check_same_results(model, graph)


def test_identity_of_an_input_or_of_another_output_is_kept():
    nodes = [helper.make_node("Identity", ["x"], ["y"], name="id_in"),
             helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Identity", ["a"], ["o1"], name="id1"),
             helper.make_node("Identity", ["a"], ["o2"], name="id2")]
    model = _model(nodes, [_f32("x")], [_f32("y"), _f32("o1"), _f32("o2")])
    graph = cleanup(load_graph(model))
    assert [n.op_type for n in graph.nodes] == ["Identity", "Relu", "Identity"]
    assert [v.name for v in graph.outputs] == ["y", "o1", "o2"]
    assert graph.inputs[0].name == "x"
    _check_same_results(model, graph)


@pytest.mark.parametrize("with_mask", [False, True])
def test_inference_dropout_is_removed(with_mask):
    outs = ["d", "mask"] if with_mask else ["d"]
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Dropout", ["a", "ratio"], outs, name="drop"),
             helper.make_node("Neg", ["d"], ["y"], name="neg")]
    outputs = [_f32("y")]
    if with_mask:
        nodes.append(helper.make_node("Cast", ["mask"], ["m"], name="cast", to=TensorProto.FLOAT))
        outputs.append(_f32("m"))
    model = _model(nodes, [_f32("x")], outputs, [numpy_helper.from_array(np.float32(0.3), "ratio")])
    graph = cleanup(load_graph(model))
    assert [n.op_type for n in graph.nodes] == ["Relu", "Neg"]
    if with_mask:
        # The all-true mask was constant, so the Cast folded at the IR level too.
        assert graph.outputs[1].name == "m" and graph.outputs[1].is_const
        assert np.all(graph.outputs[1].const == 1.0)
    _check_same_results(model, graph)


@pytest.mark.parametrize("mask_read", [False, True])
def test_dropout_mask_past_the_fold_limit_is_not_a_constant(monkeypatch, mask_read):
    # An all-true mask as large as the data would be a constant that big: read, it is made at run time.
    monkeypatch.setattr("compiler.frontend.folding.FOLD_LIMIT_BYTES", 4)
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Dropout", ["a"], ["d", "mask"], name="drop"),
             helper.make_node("Neg", ["d"], ["y"], name="neg")]
    outputs = [_f32("y")]
    if mask_read:
        nodes.append(helper.make_node("Cast", ["mask"], ["m"], name="cast", to=TensorProto.FLOAT))
        outputs.append(_f32("m"))
    model = _model(nodes, [_f32("x")], outputs)
    graph = cleanup(load_graph(model))
    assert [n.op_type for n in graph.nodes] == (["Relu", "Dropout", "Neg", "Cast"] if mask_read else ["Relu", "Neg"])
    assert not graph.constants()
    _check_same_results(model, graph)


def test_training_mode_dropout_is_kept():
    nodes = [helper.make_node("Dropout", ["x", "", "train"], ["y"], name="drop")]
    model = _model(nodes, [_f32("x")], [_f32("y")], [numpy_helper.from_array(np.array(True), "train")])
    graph = cleanup(load_graph(model))
    assert [n.op_type for n in graph.nodes] == ["Dropout"]


def test_dead_code_is_eliminated():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Exp", ["a"], ["dead1"], name="dead_exp"),
             helper.make_node("Log", ["dead1"], ["dead2"], name="dead_log"),
             helper.make_node("Neg", ["a"], ["y"], name="neg")]
    model = _model(nodes, [_f32("x")], [_f32("y")])
    graph = cleanup(load_graph(model))
    assert [n.name for n in graph.nodes] == ["relu", "neg"]
    _check_same_results(model, graph)


def test_ir_level_constant_folding():
    # Built directly in the IR: the frontend would already have folded this at the ONNX level.
    g = Graph("g", [], [], [], {"": 17})
    x = Value("x", TensorType(DType.F32, (3,)))
    a = g.add_const("a", np.array([1.0, 2.0, 3.0], np.float32))
    b = g.add_const("b", np.array([10.0, 20.0, 30.0], np.float32))
    s = Value("s", TensorType(DType.F32, (3,)))
    y = Value("y", TensorType(DType.F32, (3,)))
    add = Node("Add", "add", [a, b], [s], opset=17)
    mul = Node("Mul", "mul", [x, s], [y], opset=17)
    s.producer, y.producer = add, mul
    g.nodes, g.inputs, g.outputs = [add, mul], [x], [y, s]
    cleanup(g)
    assert [n.op_type for n in g.nodes] == ["Mul"]
    assert g.nodes[0].inputs[1] is s and s.is_const and s.const.tolist() == [11.0, 22.0, 33.0]
    assert g.outputs[1] is s and s.name == "s" and s.producer is None


def test_ir_level_folding_skips_random_ops():
    g = Graph("g", [], [], [], {"": 17})
    r = Value("r", TensorType(DType.F32, (2,)))
    node = Node("RandomUniform", "rand", [], [r], {"shape": [2], "dtype": TensorProto.FLOAT}, opset=17)
    r.producer = node
    g.nodes, g.outputs = [node], [r]
    cleanup(g)
    assert g.nodes == [node] and not r.is_const


def test_run_passes_keeps_output_names():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Dropout", ["a"], ["b"], name="drop"),
             helper.make_node("Identity", ["b"], ["y"], name="id")]
    model = _model(nodes, [_f32("x")], [_f32("y")])
    graph = run_passes(load_graph(model))
    assert [n.op_type for n in graph.nodes] == ["Relu"] and graph.outputs[0].name == "y"
    _check_same_results(model, graph)
