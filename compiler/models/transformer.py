"""Transformer models built with onnx.helper, in the op patterns exporters (torch.onnx, HF) emit.

* ``encoder(layers, hidden, heads, seq, batch)``: a BERT-style encoder. Per layer: fused QKV
  MatMul + Split, heads via Reshape/Transpose, scaled QK^T, the attention mask applied through
  Where (mask == 0 → large negative), Softmax, context MatMul, output projection, residual Add,
  LayerNormalization, an Erf-based Gelu MLP, a second residual + LayerNormalization (post-LN).
  Inputs ``embeddings`` [batch, seq, hidden] float, ``attention_mask`` [batch, seq] int64.
* ``gpt2(layers, hidden, heads, seq, batch, vocab, mask=..., gelu=...)``: GPT-2-style decoder
  blocks (pre-LN) on token + position embeddings (Gather; positions from Shape/Range), a causal
  mask applied through Where (built by Trilu, or sliced from a constant lower-triangular buffer
  as HF's ``bias``), tanh- or Erf-Gelu, a final LayerNormalization. Input ``input_ids`` int64.
* ``vit(image, patch, channels, hidden, heads, layers, classes, tokens=...)``: a ViT-style patch
  embedding (Conv with stride = kernel = patch; tokens via Reshape + Transpose or Transpose +
  Flatten + Reshape), a class token Expand + Concat, a position embedding Add, pre-LN encoder
  layers, and a classifier on the class token. Input ``pixel_values`` [batch, channels, image, image].

Weights are seeded random (scaled 1/sqrt(fan_in)); every model passes ``onnx.checker`` and has
IR version 8 (what onnxruntime reads).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MaskFn = Callable[[str, str], str]  # (scores, name prefix) -> masked scores


class _Builder:
    """Collects nodes and initializers; each method adds one exporter-style subgraph and returns its output."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, name: str, *shape: int, scale: float | None = None) -> str:
        std = 1 / np.sqrt(shape[0]) if scale is None else scale
        return self.const(name, self.rng.normal(0, std, shape).astype(np.float32))

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def scalar(self, name: str, value: float) -> str:
        return self.const(name, np.array(value, np.float32))

    def ints(self, name: str, *values: int) -> str:
        """A 1-D int64 initializer (shapes, axes, starts)."""
        return self.const(name, np.array(values, np.int64))

    def linear(self, x: str, p: str, n_in: int, n_out: int) -> str:
        """x @ W + b, as MatMul + Add (what exporters emit for nn.Linear on 3-D inputs)."""
        mm = self.node("MatMul", [x, self.weight(p + "w", n_in, n_out)], p + "mm")
        return self.node("Add", [mm, self.const(p + "b", self.rng.normal(0, 0.02, n_out).astype(np.float32))], p + "out")

    def layer_norm(self, x: str, p: str, hidden: int) -> str:
        gamma = self.const(p + "g", (1 + self.rng.normal(0, 0.1, hidden)).astype(np.float32))
        beta = self.const(p + "b", self.rng.normal(0, 0.1, hidden).astype(np.float32))
        return self.node("LayerNormalization", [x, gamma, beta], p + "out", axis=-1, epsilon=1e-5)

    def gelu_erf(self, x: str, p: str) -> str:
        """0.5 * x * (1 + erf(x / sqrt 2))."""
        erf = self.node("Erf", [self.node("Div", [x, self.scalar(p + "sqrt2", np.sqrt(2))], p + "s")], p + "erf")
        one = self.node("Add", [erf, self.scalar(p + "one", 1.0)], p + "erf1")
        return self.node("Mul", [self.node("Mul", [x, one], p + "mul"), self.scalar(p + "half", 0.5)], p + "out")

    def gelu_tanh(self, x: str, p: str) -> str:
        """0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))) — GPT-2's gelu_new, with Pow as exported."""
        cube = self.node("Pow", [x, self.scalar(p + "three", 3.0)], p + "cube")
        inner = self.node("Add", [x, self.node("Mul", [cube, self.scalar(p + "c", 0.044715)], p + "cubec")], p + "in")
        t = self.node("Tanh", [self.node("Mul", [inner, self.scalar(p + "k", np.sqrt(2 / np.pi))], p + "ink")], p + "tanh")
        one = self.node("Add", [t, self.scalar(p + "one", 1.0)], p + "tanh1")
        return self.node("Mul", [self.node("Mul", [x, self.scalar(p + "half", 0.5)], p + "xh"), one], p + "out")

    def attention(self, x: str, p: str, hidden: int, heads: int, split_shape: str, merge_shape: str,
                  mask: MaskFn | None, scale_op: str = "Mul") -> str:
        """Multi-head self-attention with a fused QKV projection split three ways; returns the output projection.

        ``split_shape`` / ``merge_shape``: initializer names of the Reshape targets to
        [batch, seq, heads, head] and back to [batch, seq, hidden]. ``scale_op``: "Mul" by
        1/sqrt(head) (BERT exports) or "Div" by sqrt(head) (GPT-2 exports).
        """
        head = hidden // heads
        qkv = self.linear(x, p + "qkv_", hidden, 3 * hidden)
        self.nodes.append(helper.make_node("Split", [qkv, self.const(p + "split", np.array([hidden] * 3, np.int64))],
                                           [p + "q", p + "k", p + "v"], axis=-1, name=p + "split_qkv"))

        def heads_of(t: str, perm: list[int]) -> str:
            return self.node("Transpose", [self.node("Reshape", [t, split_shape], t + "_r")], t + "_t", perm=perm)

        q, kt, v = heads_of(p + "q", [0, 2, 1, 3]), heads_of(p + "k", [0, 2, 3, 1]), heads_of(p + "v", [0, 2, 1, 3])
        factor = 1 / np.sqrt(head) if scale_op == "Mul" else np.sqrt(head)
        scores = self.node(scale_op, [self.node("MatMul", [q, kt], p + "qk"), self.scalar(p + "scale", factor)],
                           p + "scores")
        if mask is not None:
            scores = mask(scores, p)
        probs = self.node("Softmax", [scores], p + "probs", axis=-1)
        ctx = self.node("Transpose", [self.node("MatMul", [probs, v], p + "ctx")], p + "ctx_t", perm=[0, 2, 1, 3])
        return self.linear(self.node("Reshape", [ctx, merge_shape], p + "ctx_m"), p + "o_", hidden, hidden)

    def mlp(self, x: str, p: str, hidden: int, ffn: int, gelu: str) -> str:
        up = self.linear(x, p + "up_", hidden, ffn)
        act = self.gelu_erf(up, p + "gelu_") if gelu == "erf" else self.gelu_tanh(up, p + "gelu_")
        return self.linear(act, p + "down_", ffn, hidden)

    def model(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
              opset: int = 17) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tilec-models")
        model.ir_version = 8  # what onnxruntime reads
        onnx.checker.check_model(model)
        return model


def encoder(layers: int = 2, hidden: int = 64, heads: int = 4, seq: int = 16, batch: int = 1,
            ffn: int | None = None, seed: int = 0) -> onnx.ModelProto:
    b = _Builder(seed)
    ffn = ffn or 4 * hidden
    split_shape = b.const("heads_shape", np.array([batch, seq, heads, hidden // heads], np.int64))
    merge_shape = b.const("merge_shape", np.array([batch, seq, hidden], np.int64))
    neg = b.scalar("neg_big", -1e9)
    # mask [batch, seq] of 0/1 → [batch, 1, 1, seq] boolean "padded"
    padded = b.node("Equal", [b.node("Unsqueeze", ["attention_mask", b.const("mask_axes", np.array([1, 2], np.int64))],
                                     "mask4"), b.const("zero_i64", np.array(0, np.int64))], "mask_is_zero")

    def mask(scores: str, p: str) -> str:
        return b.node("Where", [padded, neg, scores], p + "masked")

    x = "embeddings"
    for k in range(layers):
        p = f"l{k}_"
        attn = b.attention(x, p, hidden, heads, split_shape, merge_shape, mask)
        ln1 = b.layer_norm(b.node("Add", [x, attn], p + "res1"), p + "ln1_", hidden)
        x = b.layer_norm(b.node("Add", [ln1, b.mlp(ln1, p, hidden, ffn, "erf")], p + "res2"), p + "ln2_", hidden)
    b.node("Identity", [x], "last_hidden_state")
    return b.model("encoder",
                   [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [batch, seq, hidden]),
                    helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [batch, seq])],
                   [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [batch, seq, hidden])])


def encoder_inputs(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(seed)
    mask = np.ones(shape[:2], np.int64)
    mask[:, shape[1] * 3 // 4:] = 0  # padded tail, as a tokenizer gives
    return {"embeddings": rng.standard_normal(shape).astype(np.float32), "attention_mask": mask}


def gpt2(layers: int = 2, hidden: int = 64, heads: int = 4, seq: int = 16, batch: int = 2, vocab: int = 100,
         max_positions: int = 32, mask: str = "trilu", gelu: str = "tanh", seed: int = 0) -> onnx.ModelProto:
    """GPT-2 decoder blocks; ``mask``: "trilu" (Trilu over ones) or "slice" (slice of a constant bool buffer)."""
    if mask not in ("trilu", "slice") or gelu not in ("tanh", "erf"):
        raise ValueError(f"mask must be 'trilu' or 'slice' and gelu 'tanh' or 'erf', got {mask!r}, {gelu!r}")
    b = _Builder(seed)
    # Embeddings: wte[input_ids] + wpe[range(seq)], the sequence length read from the ids' shape.
    wte = b.weight("wte", vocab, hidden, scale=0.1)
    wpe = b.weight("wpe", max_positions, hidden, scale=0.05)
    seq_len = b.node("Gather", [b.node("Shape", ["input_ids"], "ids_shape"), b.const("one_i", np.array(1, np.int64))],
                     "seq_len", axis=0)
    positions = b.node("Range", [b.const("zero_i", np.array(0, np.int64)), seq_len, b.const("step_i", np.array(1, np.int64))],
                       "positions")
    x = b.node("Add", [b.node("Gather", [wte, "input_ids"], "tok_emb", axis=0),
                       b.node("Gather", [wpe, positions], "pos_emb", axis=0)], "h0")
    seq_1 = b.node("Unsqueeze", [seq_len, b.ints("ax0", 0)], "seq_1")
    split_shape = b.ints("heads_shape", 0, 0, heads, hidden // heads)  # Reshape's 0 copies batch and seq
    merge_shape = b.ints("merge_shape", 0, 0, hidden)
    if mask == "trilu":
        ones = b.node("ConstantOfShape", [b.node("Concat", [seq_1, seq_1], "mask_dims", axis=0)], "ones",
                      value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]))
        causal = b.node("Cast", [b.node("Trilu", [ones], "lower", upper=0)], "causal", to=TensorProto.BOOL)
    else:
        buffer = b.const("bias", np.tril(np.ones((max_positions, max_positions), bool))[None, None])
        rows = b.node("Slice", [buffer, b.ints("zero_1", 0), seq_1, b.ints("axis2", 2)], "bias_rows")
        causal = b.node("Slice", [rows, "zero_1", seq_1, b.ints("axis3", 3)], "causal")
    lowest = b.scalar("mask_value", float(np.finfo(np.float32).min))

    def masked(scores: str, p: str) -> str:
        return b.node("Where", [causal, scores, lowest], p + "masked")

    for k in range(layers):
        p = f"h{k}_"
        attn = b.attention(b.layer_norm(x, p + "ln1_", hidden), p, hidden, heads, split_shape, merge_shape, masked,
                           scale_op="Div")
        x = b.node("Add", [x, attn], p + "res1")
        x = b.node("Add", [x, b.mlp(b.layer_norm(x, p + "ln2_", hidden), p, hidden, 4 * hidden, gelu)], p + "res2")
    b.node("Identity", [b.layer_norm(x, "ln_f_", hidden)], "last_hidden_state")
    return b.model("gpt2",
                   [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq])],
                   [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [batch, seq, hidden])])


def vit(image: int = 32, patch: int = 8, channels: int = 3, hidden: int = 64, heads: int = 4, layers: int = 1,
        classes: int = 10, batch: int = 2, tokens: str = "reshape", seed: int = 0) -> onnx.ModelProto:
    """A ViT; ``tokens``: "reshape" (Reshape [0, 0, -1] + Transpose) or "flatten" (Transpose + Flatten + Reshape)."""
    if tokens not in ("reshape", "flatten") or image % patch:
        raise ValueError(f"tokens must be 'reshape' or 'flatten' and patch divide image, got {tokens!r}, {image}/{patch}")
    b = _Builder(seed)
    patches = (image // patch) ** 2
    seq = patches + 1
    kernel = b.weight("patch_w", hidden, channels, patch, patch, scale=1 / np.sqrt(channels * patch * patch))
    conv = b.node("Conv", ["pixel_values", kernel, b.weight("patch_b", hidden, scale=0.02)], "patch_conv",
                  kernel_shape=[patch, patch], strides=[patch, patch])  # [batch, hidden, h, w]
    if tokens == "reshape":
        flat = b.node("Reshape", [conv, b.ints("flat_shape", 0, 0, -1)], "patch_flat")  # [batch, hidden, patches]
        emb = b.node("Transpose", [flat], "patch_tokens", perm=[0, 2, 1])
    else:
        nhwc = b.node("Transpose", [conv], "patch_nhwc", perm=[0, 2, 3, 1])
        flat = b.node("Flatten", [nhwc], "patch_flat", axis=3)  # [batch * patches, hidden]
        emb = b.node("Reshape", [flat, b.ints("tok_shape", batch, patches, hidden)], "patch_tokens")
    cls = b.node("Expand", [b.weight("cls_token", 1, 1, hidden, scale=0.5), b.ints("cls_shape", batch, 1, hidden)], "cls")
    x = b.node("Add", [b.node("Concat", [cls, emb], "tokens", axis=1), b.weight("pos_emb", 1, seq, hidden, scale=0.5)],
               "h0")
    split_shape = b.ints("heads_shape", batch, seq, heads, hidden // heads)
    merge_shape = b.ints("merge_shape", batch, seq, hidden)
    for k in range(layers):
        p = f"l{k}_"
        x = b.node("Add", [x, b.attention(b.layer_norm(x, p + "ln1_", hidden), p, hidden, heads, split_shape,
                                          merge_shape, None)], p + "res1")
        x = b.node("Add", [x, b.mlp(b.layer_norm(x, p + "ln2_", hidden), p, hidden, 4 * hidden, "erf")], p + "res2")
    first = b.node("Gather", [b.layer_norm(x, "ln_f_", hidden), b.const("cls_index", np.array(0, np.int64))],
                   "cls_out", axis=1)  # [batch, hidden]
    head_w = b.weight("head_w", classes, hidden, scale=1 / np.sqrt(hidden))
    b.node("Gemm", [first, head_w, b.weight("head_b", classes, scale=0.02)], "logits", transB=1)
    return b.model("vit",
                   [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [batch, channels, image, image])],
                   [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])])
