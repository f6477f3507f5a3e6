"""Stage 2: BatchNormalization folded into the preceding Conv."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from compiler.frontend import load_graph
from compiler.frontend.folding import graph_to_model
from compiler.graph.passes import run_passes
from compiler.graph.passes.fold_batchnorm import fold_batchnorm

C_IN, C_OUT, GROUP = 4, 6, 2


def _conv_bn_model(with_bias: bool, extra_reader: bool = False, weight_is_input: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(42)
    w = rng.standard_normal((C_OUT, C_IN // GROUP, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("scale", rng.uniform(0.5, 2.0, C_OUT)), ("shift", rng.standard_normal(C_OUT)),
        ("mean", rng.standard_normal(C_OUT)), ("var", rng.uniform(0.1, 3.0, C_OUT))]]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, C_IN, 7, 7])]
    if weight_is_input:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(w.shape)))
    else:
        inits.append(numpy_helper.from_array(w, "w"))
    conv_inputs = ["x", "w"]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(C_OUT).astype(np.float32), "b"))
        conv_inputs.append("b")
    nodes = [helper.make_node("Conv", conv_inputs, ["c"], name="conv", pads=[1, 1, 1, 1], group=GROUP),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["y"], name="bn",
                              epsilon=1e-3)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, C_OUT, 7, 7])]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [2, C_OUT, 7, 7]))
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ReferenceEvaluator(model).run(None, feeds)


@pytest.mark.parametrize("with_bias", [False, True])
def test_conv_bn_fold_matches_reference(with_bias):
    model = _conv_bn_model(with_bias)
    graph = run_passes(load_graph(model))
    assert [n.op_type for n in graph.nodes] == ["Conv"]
    conv = graph.nodes[0]
    assert conv.outputs[0] is graph.outputs[0] and graph.outputs[0].name == "y"
    weight, bias = conv.inputs[1], conv.inputs[2]
    assert weight.is_const and bias is not None and bias.is_const and bias.shape == (C_OUT,)
    assert weight.const.dtype == np.float32 and bias.const.dtype == np.float32
    assert conv.attrs["group"] == GROUP
    x = np.random.default_rng(1).standard_normal((2, C_IN, 7, 7)).astype(np.float32)
    expected = _run(model, {"x": x})[0]
    got = _run(graph_to_model(graph), {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_folded_weights_follow_the_formula():
    model = _conv_bn_model(with_bias=True)
    inits = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}
    s = inits["scale"] / np.sqrt(inits["var"] + 1e-3)
    graph = fold_batchnorm(load_graph(model))
    _, weight, bias = graph.nodes[0].inputs
    np.testing.assert_allclose(weight.const, inits["w"] * s[:, None, None, None], rtol=1e-6)
    np.testing.assert_allclose(bias.const, (inits["b"] - inits["mean"]) * s + inits["shift"], rtol=1e-5, atol=1e-6)


def test_conv_output_read_elsewhere_is_not_folded():
    graph = run_passes(load_graph(_conv_bn_model(with_bias=True, extra_reader=True)))
    assert sorted(n.op_type for n in graph.nodes) == ["BatchNormalization", "Conv", "Relu"]


def test_runtime_weights_are_not_folded():
    graph = run_passes(load_graph(_conv_bn_model(with_bias=False, weight_is_input=True)))
    assert [n.op_type for n in graph.nodes] == ["Conv", "BatchNormalization"]


def test_batchnorm_not_after_conv_stays():
    inits = [numpy_helper.from_array(np.ones(3, np.float32), n) for n in ("s", "b", "m", "v")]
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["y"], name="bn")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])], inits)
    ir = run_passes(load_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    assert [n.op_type for n in ir.nodes] == ["Relu", "BatchNormalization"]
