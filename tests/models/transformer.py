"""A BERT-style encoder built with onnx.helper, in the op patterns exporters emit.

Per layer: fused QKV MatMul + Split, heads via Reshape/Transpose, scaled QK^T,
an attention mask applied through Where (mask == 0 → large negative), Softmax,
context MatMul, output projection, residual Add, LayerNormalization, an
Erf-based Gelu MLP, and a second residual + LayerNormalization.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def encoder(layers: int = 2, hidden: int = 64, heads: int = 4, seq: int = 16, batch: int = 1,
            ffn: int | None = None, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    ffn = ffn or 4 * hidden
    head = hidden // heads
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(name: str, *shape: int) -> str:
        return const(name, rng.normal(0, 1 / np.sqrt(shape[0]), shape).astype(np.float32))

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    split_shape = const("heads_shape", np.array([batch, seq, heads, head], np.int64))
    merge_shape = const("merge_shape", np.array([batch, seq, hidden], np.int64))
    neg = const("neg_big", np.array(-1e9, np.float32))
    scale = const("scale", np.array(1 / np.sqrt(head), np.float32))
    zero = const("zero_i64", np.array(0, np.int64))
    # mask [batch, seq] of 0/1 → [batch, 1, 1, seq] boolean "keep"
    keep = node("Equal", [node("Unsqueeze", ["attention_mask", const("mask_axes", np.array([1, 2], np.int64))],
                               "mask4"), zero], "mask_is_zero")
    x = "embeddings"
    for k in range(layers):
        p = f"l{k}_"
        qkv = node("Add", [node("MatMul", [x, weight(p + "wqkv", hidden, 3 * hidden)], p + "qkv_mm"),
                           const(p + "bqkv", np.zeros(3 * hidden, np.float32))], p + "qkv")
        nodes.append(helper.make_node("Split", [qkv, const(p + "split", np.array([hidden] * 3, np.int64))],
                                      [p + "q", p + "k", p + "v"], axis=-1, name=p + "split_qkv"))

        def heads_of(t: str, perm: list[int]) -> str:
            return node("Transpose", [node("Reshape", [t, split_shape], t + "_r")], t + "_t", perm=perm)

        q, kt, v = heads_of(p + "q", [0, 2, 1, 3]), heads_of(p + "k", [0, 2, 3, 1]), heads_of(p + "v", [0, 2, 1, 3])
        scores = node("Mul", [node("MatMul", [q, kt], p + "qk"), scale], p + "scores")
        masked = node("Where", [keep, neg, scores], p + "masked")
        probs = node("Softmax", [masked], p + "probs", axis=-1)
        ctx = node("Transpose", [node("MatMul", [probs, v], p + "ctx")], p + "ctx_t", perm=[0, 2, 1, 3])
        ctx = node("Reshape", [ctx, merge_shape], p + "ctx_m")
        attn = node("Add", [node("MatMul", [ctx, weight(p + "wo", hidden, hidden)], p + "o_mm"),
                            const(p + "bo", np.zeros(hidden, np.float32))], p + "attn")
        ln1 = node("LayerNormalization", [node("Add", [x, attn], p + "res1"),
                                          const(p + "g1", np.ones(hidden, np.float32)),
                                          const(p + "b1", np.zeros(hidden, np.float32))], p + "ln1", axis=-1,
                   epsilon=1e-5)
        up = node("Add", [node("MatMul", [ln1, weight(p + "w1", hidden, ffn)], p + "up_mm"),
                          const(p + "bup", np.zeros(ffn, np.float32))], p + "up")
        erf = node("Erf", [node("Div", [up, const(p + "sqrt2", np.array(np.sqrt(2), np.float32))], p + "up_s")],
                   p + "erf")
        gelu = node("Mul", [node("Mul", [up, node("Add", [erf, const(p + "one", np.array(1, np.float32))],
                                                  p + "erf1")], p + "g_mul"),
                            const(p + "half", np.array(0.5, np.float32))], p + "gelu")
        down = node("Add", [node("MatMul", [gelu, weight(p + "w2", ffn, hidden)], p + "down_mm"),
                            const(p + "bdown", np.zeros(hidden, np.float32))], p + "down")
        x = node("LayerNormalization", [node("Add", [ln1, down], p + "res2"),
                                        const(p + "g2", np.ones(hidden, np.float32)),
                                        const(p + "b2", np.zeros(hidden, np.float32))], p + "out", axis=-1,
                 epsilon=1e-5)
    nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"]))
    graph = helper.make_graph(
        nodes, "encoder",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [batch, seq, hidden]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, seq])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [batch, seq, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tilec-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def encoder_inputs(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    mask = np.ones(shape[:2], np.int64)
    mask[:, shape[1] * 3 // 4:] = 0  # padded tail, as a tokenizer gives
    return {"embeddings": rng.standard_normal(shape).astype(np.float32), "attention_mask": mask}
