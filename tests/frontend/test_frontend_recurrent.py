"""RNN/GRU/LSTM expansion (compiler/frontend/recurrent.py): the expanded graph computes what the op does.

The expanded graph IR is run with onnx's ReferenceEvaluator (its plain ops are
exact enough) and compared with onnxruntime on the original node, which, unlike
the reference evaluator, implements sequence_lens, activations and clip.
onnxruntime lacks layout=1, so batch-first cases are compared with the
equivalent layout=0 run, transposed. Tolerance: float32 rtol=1e-4, atol=1e-5
(a few steps of small dot products).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from compiler.errors import UnsupportedOpError
from compiler.frontend import load_graph
from compiler.frontend.folding import fold_model, graph_to_model
from helpers_recurrent import GATES, ort_results, recurrent_model

CASES = [
    *[(op, {"direction": d}, {}) for op in GATES for d in ("forward", "reverse", "bidirectional")],
    *[(op, {"direction": d}, {"lens": [4, 2, 1]}) for op in GATES for d in ("forward", "reverse", "bidirectional")],
    *[(op, {"direction": "bidirectional"}, {"layout": 1, "lens": [3, 4, 2]}) for op in GATES],
    *[(op, {"clip": 0.5}, {}) for op in GATES],
    *[(op, {}, {"bias": False, "initial": False}) for op in GATES],
    ("GRU", {"linear_before_reset": 1, "direction": "bidirectional"}, {}),
    ("GRU", {"linear_before_reset": 1}, {"bias": False}),
    ("LSTM", {"direction": "bidirectional", "clip": 0.3}, {"peepholes": True}),
    ("LSTM", {"input_forget": 1}, {"peepholes": True}),
    *[("RNN", {"activations": [name], "activation_alpha": [0.3], "activation_beta": [0.4]}, {})
      for name in ("Relu", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu",
                   "Softsign", "Softplus")],
    # alpha/beta go to the activations that take them, in order: Tanh takes none.
    ("RNN", {"direction": "bidirectional", "activations": ["Tanh", "LeakyRelu"], "activation_alpha": [0.2]}, {}),
    ("GRU", {"activations": ["HardSigmoid", "LeakyRelu"], "activation_alpha": [0.2, 0.3],
             "activation_beta": [0.4]}, {}),
    ("LSTM", {"activations": ["HardSigmoid", "Tanh", "ScaledTanh"], "activation_alpha": [0.2, 0.5],
              "activation_beta": [0.4, 0.6]}, {}),
]


@pytest.mark.parametrize("op,attrs,kw", CASES, ids=lambda v: str(v))
def test_expansion_matches_onnxruntime(op, attrs, kw):
    expected = ort_results(op, attrs, kw.get("layout", 0), **{k: v for k, v in kw.items() if k != "layout"})
    model, feeds = recurrent_model(op, attrs, **kw)
    graph = load_graph(model)
    assert {n.op_type for n in graph.nodes}.isdisjoint(GATES)
    got = ReferenceEvaluator(graph_to_model(graph)).run(None, feeds)
    for name, g, e in zip(["Y", "Y_h", "Y_c"], got, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, err_msg=name)


def test_constant_weights_fold_and_only_read_outputs_are_built():
    model, feeds = recurrent_model("GRU", {})
    del model.graph.output[0]  # only Y_h is read
    model.graph.node[0].output[0] = ""
    graph = load_graph(model)
    # W^T and R^T were folded; no per-step stacking for Y remains.
    assert "Transpose" not in {n.op_type for n in graph.nodes}
    assert "Concat" in {n.op_type for n in graph.nodes}  # Y_h's stack of one direction
    assert sum(n.op_type == "Concat" for n in graph.nodes) == 1


def test_runtime_sequence_length_becomes_one_loop_of_the_run_per_direction():
    model, _ = recurrent_model("LSTM", {"direction": "bidirectional"}, symbolic=True)
    graph = load_graph(model)
    ends = [n for n in graph.nodes if n.op_type == "LoopEnd"]
    assert len(ends) == 2 and len(graph.loops) == 2
    # One step's gates, not one per step: a single recurrent MatMul per direction.
    assert sum(n.op_type == "MatMul" and n.loops != () for n in graph.nodes) == 2


def test_input_size_must_be_static():
    model, _ = recurrent_model("LSTM", {})
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "I"
    with pytest.raises(UnsupportedOpError, match=r"LSTM 'rec' \(opset 17\): the shape of X \('X'\) is not a rank-3 "
                                                 "shape with a static input size"):
        load_graph(model, is_supported=lambda op, domain: op not in GATES)


@pytest.mark.parametrize("opset", [9, 11, 13])
@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_expansion_spells_helper_ops_for_the_models_opset(op, opset):
    """Unconverted old models get Slice/Split/Unsqueeze/Clip with attributes or inputs as their opset wants."""
    attrs = {"direction": "bidirectional", "clip": 0.5, "linear_before_reset": 1 if op == "GRU" else 0}
    if op == "LSTM":
        del attrs["linear_before_reset"]
    model, feeds = recurrent_model(op, attrs, lens=[4, 2, 1], opset=opset)
    folded = fold_model(model)  # no opset conversion on this path
    assert {n.op_type for n in folded.nodes}.isdisjoint(GATES)
    expanded = helper.make_model(
        helper.make_graph(folded.nodes, "g", folded.inputs, folded.outputs,
                          [numpy_helper.from_array(v, k) for k, v in folded.constants.items()]),
        opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(expanded)
    got = ReferenceEvaluator(expanded).run(None, feeds)
    for name, g, e in zip(["Y", "Y_h", "Y_c"], got, ort_results(op, attrs, 0, lens=[4, 2, 1])):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5, err_msg=name)
