"""Function-body expansion (compiler/frontend/functions.py): ops tilec does not lower become their schema's body.

Ops tilec does lower are hidden from the frontend with an ``is_supported`` that
refuses them, so that their (static or context-dependent) function bodies get
inlined; the expanded graph IR is run with onnx's ReferenceEvaluator and
compared with the reference on the original model. Both evaluate the same
float32 operations, up to the order of a few reductions: 1e-6.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from compiler.errors import UnsupportedOpError
from compiler.frontend import load_graph
from compiler.frontend.folding import graph_to_model
from compiler.ops.registry import lookup
from helpers_onnx import node_model, rand


def _lowered_except(*hidden: str):
    return lambda op, domain: op not in hidden and lookup(op, domain) is not None


def _check_expanded(model: onnx.ModelProto, feeds: dict[str, np.ndarray], hidden: tuple[str, ...]) -> set[str]:
    graph = load_graph(model, is_supported=_lowered_except(*hidden))
    ops = {n.op_type for n in graph.nodes}
    assert ops.isdisjoint(hidden), ops
    got = ReferenceEvaluator(graph_to_model(graph)).run(None, feeds)
    expected = ReferenceEvaluator(model).run(None, feeds)
    for out, g, e in zip(model.graph.output, got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype, out.name
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6, err_msg=out.name)
    return ops


@pytest.mark.parametrize("op,opset,attrs", [
    ("Mish", 18, {}),                                     # a static body
    ("Celu", 17, {"alpha": 2.0}),                         # context-dependent, an attribute reference
    ("Softmax", 17, {}),                                  # body version 13 read in opset 17, axis defaulted
    ("Softmax", 18, {"axis": 1}),                         # the newer body (ReduceMax with an axes input)
    ("LogSoftmax", 17, {"axis": 0}),
    ("HardSwish", 17, {}),
    ("ReduceL2", 18, {"keepdims": 0}),
    ("Gelu", 20, {"approximate": "tanh"}),
])
def test_unary_op_expands_to_its_body(op: str, opset: int, attrs: dict[str, Any]) -> None:
    x = rand((2, 3, 4), seed=1)
    _check_expanded(node_model(op, ["x"], {"x": x}, attrs=attrs, opset=opset), {"x": x}, (op,))


@pytest.mark.parametrize("opset,axis", [(17, -1), (20, 1)])
def test_layer_normalization_expands_with_constant_scale(opset: int, axis: int) -> None:
    """The body's shape computations on a static input fold away; the scale stays a constant input."""
    x = rand((2, 3, 4), seed=1)
    normalized = (2, 3, 4)[axis:]
    scale, bias = rand(normalized, seed=2), rand(normalized, seed=3)
    model = node_model("LayerNormalization", ["x", "scale", "bias"], {"x": x}, {"scale": scale, "bias": bias},
                       attrs={"axis": axis, "epsilon": 1e-3}, opset=opset)
    ops = _check_expanded(model, {"x": x}, ("LayerNormalization",))
    assert "Shape" not in ops


def test_expansion_iterates_into_expandable_body_ops() -> None:
    """Celu's body holds an Elu, whose own (opset 18) body is expanded in a later round."""
    x = rand((3, 5), seed=1)
    ops = _check_expanded(node_model("Celu", ["x"], {"x": x}, attrs={"alpha": 0.5}, opset=18), {"x": x},
                          ("Celu", "Elu"))
    assert "Elu" not in ops


def test_lowered_ops_are_not_expanded() -> None:
    x = rand((2, 3, 4), seed=1)
    model = node_model("Mish", ["x"], {"x": x}, opset=18)
    graph = load_graph(model, is_supported=lambda op, domain: lookup(op, domain) is not None)
    assert [n.op_type for n in graph.nodes] == ["Mish"]


def test_no_body_for_the_opset_is_refused_with_the_reason() -> None:
    """Elu-6's only body is written for opset 18: an opset-17 model keeps the node and says why."""
    x = rand((3, 5), seed=1)
    with pytest.raises(UnsupportedOpError, match="Elu.*no function body for opset 17"):
        load_graph(node_model("Elu", ["x"], {"x": x}, opset=17), is_supported=_lowered_except("Elu"))


def _flex_model(attr: str, graph: onnx.GraphProto, feeds: dict[str, np.ndarray]) -> onnx.ModelProto:
    node = helper.make_node("FlexAttention", ["q", "k", "v"], ["y"], domain="ai.onnx.preview", **{attr: graph})
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in feeds.items()]
    out = (feeds["q"].shape[0], feeds["q"].shape[1], feeds["q"].shape[2], feeds["v"].shape[3])
    model = helper.make_model(helper.make_graph([node], "flex", inputs, [helper.make_tensor_value_info("y", 1, out)]),
                              opset_imports=[helper.make_opsetid("", 26), helper.make_opsetid("ai.onnx.preview", 1)])
    model.ir_version = 10
    return model


def _scores_graph(name: str, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.GraphProto:
    info = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["B", "H", "L", "S"]) for n in ("scores", "out")]
    return helper.make_graph(nodes, name, info[:1], info[1:], inits)


@pytest.mark.parametrize("attr", ["score_mod", "prob_mod"])
def test_flex_attention_with_a_subgraph_compiles_as_its_body(check, attr: str) -> None:
    """FlexAttention is lowered directly, but not with a score_mod/prob_mod subgraph: its body inlines that."""
    feeds = {"q": rand((1, 4, 3, 8), seed=1), "k": rand((1, 2, 5, 8), seed=2), "v": rand((1, 2, 5, 6), seed=3)}
    cap = helper.make_tensor("cap", TensorProto.FLOAT, [], [1.5])
    mod = _scores_graph("mod", [helper.make_node("Div", ["scores", "cap"], ["d"]), helper.make_node("Tanh", ["d"], ["t"]),
                                helper.make_node("Mul", ["t", "cap"], ["out"])], [cap])
    model = _flex_model(attr, mod, feeds)
    graph = load_graph(model, is_supported=lambda op, domain: lookup(op, domain) is not None)
    assert "FlexAttention" not in {n.op_type for n in graph.nodes}
    check(model, feeds)
