"""Stage 2, a few query rows against a transposed K: the scores as dot products of K's stored rows
(compiler/graph/passes/few_rows.py).

The rewrite (a run-time choice on the row count where it is symbolic, the dot form alone where it is a
known small number, nothing where it is large or the transpose has another reader), and one artifact
run at 1, 4, 5 and 33 query rows against onnxruntime on the original model (max |diff| <= 1e-5,
float32), with a kernel profile showing that a run computes only the form its row count takes.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

import compiler
from compiler.frontend import load_graph
from compiler.graph.passes import run_passes
from runtime_stub import InferenceSession


def _scores_model(rows, keys="p", second_reader: bool = False) -> onnx.ModelProto:
    nodes = [helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "k_t"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["y"], axis=-1)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, rows, keys])]
    if second_reader:
        outputs.append(helper.make_tensor_value_info("k_t", TensorProto.FLOAT, [2, 3, 16, keys]))
    graph = helper.make_graph(nodes, "scores", [helper.make_tensor_value_info("q", TensorProto.FLOAT, [2, 3, rows, 16]),
                                                helper.make_tensor_value_info("k", TensorProto.FLOAT, [2, 3, keys, 16])],
                              outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in run_passes(load_graph(model)).nodes]


def test_symbolic_rows_choose_a_form_per_run():
    graph = run_passes(load_graph(_scores_model("s")))
    by_op = {n.op_type: n for n in graph.nodes}
    assert [n.op_type for n in graph.nodes] == ["Transpose", "MatMul", "Einsum", "Phi", "Softmax"]
    assert str(by_op["Einsum"].guard) == str(by_op["Phi"].attrs["predicate"])
    assert by_op["Transpose"].guard == by_op["MatMul"].guard != by_op["Einsum"].guard


def test_known_rows_take_one_form():
    assert _ops(_scores_model(1)) == ["Einsum", "Softmax"]
    assert _ops(_scores_model(5)) == ["Transpose", "MatMul", "Softmax"]
    assert _ops(_scores_model("s", second_reader=True)) == ["Transpose", "MatMul", "Softmax"]


def test_one_artifact_matches_onnxruntime_and_runs_only_the_taken_form(tmp_path):
    model = _scores_model("s")
    artifact = compiler.compile(model, tmp_path / "scores.tilec", profile=True)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    with InferenceSession(artifact, threads=1) as session:
        for rows, keys in ((1, 37), (4, 5), (5, 37), (33, 64)):
            feeds = {"q": rng.standard_normal((2, 3, rows, 16)).astype(np.float32),
                     "k": rng.standard_normal((2, 3, keys, 16)).astype(np.float32)}
            session.kernel_profile(reset=True)
            (got,) = session.run(None, feeds)
            np.testing.assert_allclose(got, reference.run(None, feeds)[0], rtol=1e-5, atol=1e-5)
            ran = {k.ops for k in session.kernel_profile() if k.seconds > 0}
            assert ("Einsum" in ran) == (rows <= 4) and ("MatMul" in ran) == (rows > 4), (rows, ran)
