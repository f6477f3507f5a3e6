"""Stage 2, grouped-query attention: ``repeat_kv`` (Unsqueeze -> Expand -> Reshape) before a MatMul goes, each
K/V head read in place by its group of query heads (compiler/graph/passes/grouped_heads.py).

The rewrite (no Expand left, the MatMuls read the un-repeated K and V) and the compiled result against
onnxruntime on the original model at several past lengths from one artifact: max |diff| <= 1e-5 (the
same products summed in the same order; float32).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.frontend import load_graph
from compiler.graph.passes import run_passes
from runtime_stub import InferenceSession

KV, GROUPS, D = 2, 4, 16


def _repeat_kv(x: str, tag: str) -> list[onnx.NodeProto]:
    """transformers' repeat_kv as torch.onnx exports it: the expanded shape from Shape(x)."""
    return [helper.make_node("Shape", [x], [f"{tag}_shape"]),
            helper.make_node("Slice", [f"{tag}_shape", "zero", "one"], [f"{tag}_b"]),
            helper.make_node("Slice", [f"{tag}_shape", "two", "three"], [f"{tag}_l"]),
            helper.make_node("Concat", [f"{tag}_b", "kv_groups", f"{tag}_l", "d"], [f"{tag}_wide_shape"], axis=0),
            helper.make_node("Concat", [f"{tag}_b", "heads", f"{tag}_l", "d"], [f"{tag}_heads_shape"], axis=0),
            helper.make_node("Unsqueeze", [x, "two"], [f"{tag}_u"]),
            helper.make_node("Expand", [f"{tag}_u", f"{tag}_wide_shape"], [f"{tag}_wide"]),
            helper.make_node("Reshape", [f"{tag}_wide", f"{tag}_heads_shape"], [f"{tag}_rep"])]


def _gqa_model() -> onnx.ModelProto:
    nodes = [*_repeat_kv("k", "k"), *_repeat_kv("v", "v"),
             helper.make_node("Transpose", ["k_rep"], ["k_t"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "k_t"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
             helper.make_node("MatMul", ["probs", "v_rep"], ["out"])]
    ints = {"zero": [0], "one": [1], "two": [2], "three": [3], "kv_groups": [KV, GROUPS], "d": [D],
            "heads": [KV * GROUPS]}
    graph = helper.make_graph(
        nodes, "gqa",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["B", KV * GROUPS, "S", D]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, ["B", KV, "P", D]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, ["B", KV, "P", D])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["B", KV * GROUPS, "S", D])],
        [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_repeat_kv_goes_and_the_matmuls_read_the_shared_heads():
    graph = run_passes(load_graph(_gqa_model()))
    assert not any(n.op_type in ("Expand", "Unsqueeze") for n in graph.nodes), str(graph)
    inputs = {v.name: v for v in graph.inputs}
    matmuls = [n for n in graph.nodes if n.op_type == "MatMul"]
    assert len(matmuls) == 2 and matmuls[1].inputs[1] is inputs["v"]
    assert matmuls[0].inputs[1].producer.op_type == "Transpose" and matmuls[0].inputs[1].producer.inputs[0] is inputs["k"]
    # Each K/V head's group of query heads is one MatMul's rows: [batch, kv, groups * rows, past].
    assert all(m.outputs[0].shape[1] == KV for m in matmuls)


def test_grouped_attention_matches_onnxruntime_at_every_past_length(tmp_path):
    model = _gqa_model()
    session = InferenceSession(compiler.compile(model, tmp_path / "gqa.tilec"))
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch, rows, past in ((1, 1, 1), (1, 1, 37), (2, 3, 16), (1, 16, 64)):
        feeds = {"q": rng.standard_normal((batch, KV * GROUPS, rows, D)).astype(np.float32),
                 "k": rng.standard_normal((batch, KV, past, D)).astype(np.float32),
                 "v": rng.standard_normal((batch, KV, past, D)).astype(np.float32)}
        got, = session.run(None, feeds)
        want, = reference.run(None, feeds)
        assert got.shape == want.shape
        assert float(np.abs(got - want).max()) <= 1e-5
