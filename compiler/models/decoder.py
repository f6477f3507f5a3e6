"""KV-cache decoders built the way optimum / torch.onnx export them, and a greedy generation loop.

Both models take ``input_ids`` and ``position_ids`` [batch, sequence], ``attention_mask``
[batch, past + sequence] and per layer ``past_key_values.N.key`` / ``.value`` [batch, kv_heads, past,
head_dim], and return ``logits`` [batch, sequence, vocab] and ``present.N.key`` / ``.value`` (the
past with the new rows appended). A generation loop calls them once with an empty past (prefill)
and then once per token, feeding each step's presents back as the next step's past.

* ``gpt2_decoder_model``: GPT-2 as the TorchScript exporter writes it: Conv1D layers as Reshape ->
  Gemm -> Reshape to Shape dims, one fused QKV projection Split in three, learned positions, the
  causal mask Sliced out of a constant ``bias`` at ``[key_len - query_len, key_len)``, tanh-Gelu
  with Pow, the padding mask as ``(1 - mask) * finfo.min``.
* ``llama_decoder_model``: LLaMA-style: RMSNorm decomposed (Pow, ReduceMean, Sqrt, Div), rotary
  embeddings computed from ``position_ids`` (inv_freq MatMul, Cos, Sin, rotate_half by Slice, Neg,
  Concat), grouped-query attention with ``repeat_kv`` as Unsqueeze -> Expand -> Reshape, the causal
  mask from Range / Less / And / Where, SiLU-gated MLP, no biases; opset 18 (the dynamo exporter's).

Weights are seeded random; every model passes onnx.checker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

from compiler.models.exported import GraphBuilder

FLOAT_MIN = np.finfo(np.float32).min


@dataclass(frozen=True)
class DecoderShape:
    """What a generation loop needs to know of a decoder to build its feeds."""

    layers: int
    kv_heads: int
    head_dim: int
    vocab: int


def _i64(values) -> np.ndarray:
    return np.array(values, np.int64)


def _io(layers: int, kv_heads: int, head_dim: int, vocab: int) -> tuple[list, list]:
    past, total = "past_sequence_length", "past_sequence_length + sequence_length"
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", total]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", vocab])]
    for layer in range(layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{layer}.{kind}", TensorProto.FLOAT,
                                                        ["batch_size", kv_heads, past, head_dim]))
            outputs.append(helper.make_tensor_value_info(f"present.{layer}.{kind}", TensorProto.FLOAT,
                                                         ["batch_size", kv_heads, total, head_dim]))
    return inputs, outputs


def _model(b: GraphBuilder, name: str, inputs: list, outputs: list, opset: int) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(b.nodes, name, inputs, outputs, b.inits),
                              opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _conv1d(b: GraphBuilder, x: str, n_in: int, n_out: int, tag: str) -> str:
    """GPT-2's Conv1D: ``addmm(bias, x.view(-1, n_in), w).view(*x.shape[:-1], n_out)``."""
    flat = b.op("Reshape", x, b.const(f"{tag}_flat", _i64([-1, n_in])))
    y = b.op("Gemm", flat, b.weight(f"{tag}_w", n_in, n_out, scale=0.1), b.weight(f"{tag}_b", n_out, scale=0.02))
    return b.op("Reshape", y, b.op("Concat", b.dim(x, 0), b.dim(x, 1), b.const(f"{tag}_n", _i64([n_out])), axis=0))


def _merge_heads(b: GraphBuilder, context: str, hidden: int, tag: str) -> str:
    """[b, h, s, d] -> [b, s, h * d]."""
    t = b.op("Transpose", context, perm=[0, 2, 1, 3])
    return b.op("Reshape", t, b.op("Concat", b.dim(t, 0), b.dim(t, 1), b.const(f"{tag}_hid", _i64([hidden])), axis=0))


def _present(b: GraphBuilder, layer: int, kind: str, new: str) -> str:
    name = f"present.{layer}.{kind}"
    b.nodes.append(helper.make_node("Concat", [f"past_key_values.{layer}.{kind}", new], [name], axis=2))
    return name


def _padding_bias(b: GraphBuilder) -> str:
    """``(1 - attention_mask[:, None, None, :]) * finfo.min`` as GPT-2's forward computes it."""
    mask = b.op("Cast", b.op("Unsqueeze", "attention_mask", b.const("mask_axes", _i64([1, 2]))), to=TensorProto.FLOAT)
    return b.op("Mul", b.op("Sub", b.const("f_one", np.array(1.0, np.float32)), mask),
                b.const("f_min", np.array(FLOAT_MIN, np.float32)))


def gpt2_decoder_model(layers: int = 2, hidden: int = 64, heads: int = 4, vocab: int = 128, max_positions: int = 256,
                       seed: int = 7) -> tuple[onnx.ModelProto, DecoderShape]:
    b = GraphBuilder(seed)
    head_dim = hidden // heads
    h = b.op("Add", b.op("Gather", b.weight("wte", vocab, hidden), "input_ids"),
             b.op("Gather", b.weight("wpe", max_positions, hidden, scale=0.05), "position_ids"))
    causal = b.const("bias", np.tril(np.ones((max_positions, max_positions), bool))[None, None])
    padding = _padding_bias(b)
    for layer in range(layers):
        tag = f"h{layer}"
        x = b.layer_norm(h, hidden, f"{tag}_ln1")
        q, k, v = (f"{tag}_{n}" for n in "qkv")
        b.nodes.append(helper.make_node("Split", [_conv1d(b, x, hidden, 3 * hidden, f"{tag}_attn"),
                                                  b.const(f"{tag}_split", _i64([hidden] * 3))], [q, k, v], axis=2))
        q, k, v = (b.heads(t, heads, head_dim, [0, 2, 1, 3]) for t in (q, k, v))
        key, value = _present(b, layer, "key", k), _present(b, layer, "value", v)
        scores = b.op("Div", b.op("MatMul", q, b.op("Transpose", key, perm=[0, 1, 3, 2])),
                      b.const(f"{tag}_scale", np.array(np.sqrt(head_dim), np.float32)))
        query_len = b.dim(q, 2)
        key_len = b.dim(key, 2)
        mask = b.op("Slice", causal, b.op("Sub", key_len, query_len), key_len, b.const(f"{tag}_ax2", _i64([2])))
        mask = b.op("Slice", mask, b.const(f"{tag}_zero", _i64([0])), key_len, b.const(f"{tag}_ax3", _i64([3])))
        scores = b.op("Where", mask, scores, b.const(f"{tag}_min", np.array(FLOAT_MIN, np.float32)))
        probs = b.op("Softmax", b.op("Add", scores, padding), axis=-1)
        attn = _conv1d(b, _merge_heads(b, b.op("MatMul", probs, value), hidden, tag), hidden, hidden, f"{tag}_proj")
        h = b.op("Add", h, attn)
        up = _conv1d(b, b.layer_norm(h, hidden, f"{tag}_ln2"), hidden, 4 * hidden, f"{tag}_fc")
        cube = b.op("Mul", b.op("Pow", up, b.const(f"{tag}_3", np.array(3.0, np.float32))),
                    b.const(f"{tag}_c", np.array(0.044715, np.float32)))
        inner = b.op("Mul", b.op("Add", up, cube), b.const(f"{tag}_gelu_k", np.array(np.sqrt(2 / np.pi), np.float32)))
        gelu = b.op("Mul", b.op("Mul", up, b.const(f"{tag}_half", np.array(0.5, np.float32))),
                    b.op("Add", b.op("Tanh", inner), b.const(f"{tag}_one", np.array(1.0, np.float32))))
        h = b.op("Add", h, _conv1d(b, gelu, 4 * hidden, hidden, f"{tag}_mlp_proj"))
    h = b.layer_norm(h, hidden, "ln_f")
    wte = next(t for t in b.inits if t.name == "wte")
    lm_head = b.const("lm_head", onnx.numpy_helper.to_array(wte).T.copy())
    b.nodes.append(helper.make_node("MatMul", [h, lm_head], ["logits"]))
    inputs, outputs = _io(layers, heads, head_dim, vocab)
    return _model(b, "gpt2_decoder", inputs, outputs, 17), DecoderShape(layers, heads, head_dim, vocab)


def _rms_norm(b: GraphBuilder, x: str, hidden: int, tag: str) -> str:
    variance = b.op("ReduceMean", b.op("Pow", x, b.const(f"{tag}_2", np.array(2.0, np.float32))),
                    b.const(f"{tag}_axes", _i64([-1])), keepdims=1)
    rms = b.op("Sqrt", b.op("Add", variance, b.const(f"{tag}_eps", np.array(1e-6, np.float32))))
    return b.op("Mul", b.weight(f"{tag}_w", hidden, scale=0.1), b.op("Div", x, rms))


def _rotate(b: GraphBuilder, x: str, cos: str, sin: str, head_dim: int, tag: str) -> str:
    """``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x[..., d/2:], x[..., :d/2])``."""
    half, end, last = (b.const(f"{tag}_{n}", _i64([v])) for n, v in (("half", head_dim // 2), ("end", head_dim),
                                                                      ("last", -1)))
    zero = b.const(f"{tag}_zero", _i64([0]))
    x1 = b.op("Slice", x, zero, half, last)
    x2 = b.op("Slice", x, half, end, last)
    rotated = b.op("Concat", b.op("Neg", x2), x1, axis=-1)
    return b.op("Add", b.op("Mul", x, cos), b.op("Mul", rotated, sin))


def _repeat_kv(b: GraphBuilder, x: str, kv_heads: int, groups: int, head_dim: int, tag: str) -> str:
    """``x[:, :, None].expand(b, kv, groups, L, d).reshape(b, kv * groups, L, d)``."""
    if groups == 1:
        return x
    wide = b.op("Expand", b.op("Unsqueeze", x, b.const(f"{tag}_ax", _i64([2]))),
                b.op("Concat", b.dim(x, 0), b.const(f"{tag}_kvg", _i64([kv_heads, groups])), b.dim(x, 2),
                     b.const(f"{tag}_d", _i64([head_dim])), axis=0))
    return b.op("Reshape", wide, b.op("Concat", b.dim(x, 0), b.const(f"{tag}_h", _i64([kv_heads * groups])),
                                      b.dim(x, 2), b.const(f"{tag}_d2", _i64([head_dim])), axis=0))


def _causal_bias(b: GraphBuilder) -> str:
    """The 4-d additive mask [batch, 1, sequence, past + sequence]: query row r (at position past + r)
    sees key column c when c < past + r + 1 and attention_mask[:, c] is 1; ``finfo.min`` elsewhere."""
    seq = b.op("Squeeze", b.dim("input_ids", 1), b.const("sq0", _i64([0])))
    past = b.op("Squeeze", b.dim("past_key_values.0.key", 2), b.const("sq1", _i64([0])))
    total = b.op("Add", past, seq)
    one = b.const("i_one", np.array(1, np.int64))
    rows = b.op("Range", b.op("Add", past, one), b.op("Add", total, one), one)
    cols = b.op("Range", b.const("i_zero", np.array(0, np.int64)), total, one)
    causal = b.op("Less", cols, b.op("Unsqueeze", rows, b.const("ax_last", _i64([1]))))
    keep = b.op("Cast", b.op("Unsqueeze", "attention_mask", b.const("ax12", _i64([1, 2]))), to=TensorProto.BOOL)
    allowed = b.op("And", b.op("Unsqueeze", causal, b.const("ax01", _i64([0, 1]))), keep)
    return b.op("Where", allowed, b.const("f_zero", np.array(0.0, np.float32)),
                b.const("f_min", np.array(FLOAT_MIN, np.float32)))


def llama_decoder_model(layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2, intermediate: int = 176,
                        vocab: int = 128, rope_theta: float = 10000.0, seed: int = 11
                        ) -> tuple[onnx.ModelProto, DecoderShape]:
    b = GraphBuilder(seed)
    head_dim = hidden // heads
    groups = heads // kv_heads
    h = b.op("Gather", b.weight("embed_tokens", vocab, hidden), "input_ids")
    inv_freq = 1.0 / rope_theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)
    positions = b.op("Unsqueeze", b.op("Cast", "position_ids", to=TensorProto.FLOAT), b.const("ax1", _i64([1])))
    freqs = b.op("Transpose", b.op("MatMul", b.const("inv_freq", inv_freq.astype(np.float32)[None, :, None]),
                                   positions), perm=[0, 2, 1])
    emb = b.op("Concat", freqs, freqs, axis=-1)
    cos, sin = (b.op("Unsqueeze", b.op(f, emb), b.const(f"ax_{f}", _i64([1]))) for f in ("Cos", "Sin"))
    bias = _causal_bias(b)
    for layer in range(layers):
        tag = f"l{layer}"
        x = _rms_norm(b, h, hidden, f"{tag}_in")
        q = b.heads(b.op("MatMul", x, b.weight(f"{tag}_q", hidden, hidden, scale=0.1)), heads, head_dim, [0, 2, 1, 3])
        k = b.heads(b.op("MatMul", x, b.weight(f"{tag}_k", hidden, kv_heads * head_dim, scale=0.1)), kv_heads, head_dim,
                    [0, 2, 1, 3])
        v = b.heads(b.op("MatMul", x, b.weight(f"{tag}_v", hidden, kv_heads * head_dim, scale=0.1)), kv_heads, head_dim,
                    [0, 2, 1, 3])
        q, k = _rotate(b, q, cos, sin, head_dim, f"{tag}_rq"), _rotate(b, k, cos, sin, head_dim, f"{tag}_rk")
        key, value = _present(b, layer, "key", k), _present(b, layer, "value", v)
        key = _repeat_kv(b, key, kv_heads, groups, head_dim, f"{tag}_rk")
        value = _repeat_kv(b, value, kv_heads, groups, head_dim, f"{tag}_rv")
        scores = b.op("Mul", b.op("MatMul", q, b.op("Transpose", key, perm=[0, 1, 3, 2])),
                      b.const(f"{tag}_scale", np.array(1 / np.sqrt(head_dim), np.float32)))
        probs = b.op("Softmax", b.op("Add", scores, bias), axis=-1)
        merged = _merge_heads(b, b.op("MatMul", probs, value), hidden, tag)
        h = b.op("Add", h, b.op("MatMul", merged, b.weight(f"{tag}_o", hidden, hidden, scale=0.1)))
        x = _rms_norm(b, h, hidden, f"{tag}_post")
        gate = b.op("MatMul", x, b.weight(f"{tag}_gate", hidden, intermediate, scale=0.1))
        up = b.op("MatMul", x, b.weight(f"{tag}_up", hidden, intermediate, scale=0.1))
        act = b.op("Mul", b.op("Mul", gate, b.op("Sigmoid", gate)), up)
        h = b.op("Add", h, b.op("MatMul", act, b.weight(f"{tag}_down", intermediate, hidden, scale=0.1)))
    h = _rms_norm(b, h, hidden, "norm")
    b.nodes.append(helper.make_node("MatMul", [h, b.weight("lm_head", hidden, vocab, scale=0.1)], ["logits"]))
    inputs, outputs = _io(layers, kv_heads, head_dim, vocab)
    return _model(b, "llama_decoder", inputs, outputs, 18), DecoderShape(layers, kv_heads, head_dim, vocab)


def step_feeds(shape: DecoderShape, tokens: np.ndarray, past: list[np.ndarray], mask: np.ndarray
               ) -> dict[str, np.ndarray]:
    """The feeds of one call: ``tokens`` [batch, new], ``past`` [key0, value0, key1, ...] (empty for the
    prefill), ``mask`` [batch, past + new] (0 marks padding)."""
    batch, new = tokens.shape
    past_len = past[0].shape[2] if past else 0
    positions = np.broadcast_to(np.arange(past_len, past_len + new, dtype=np.int64), (batch, new))
    feeds = {"input_ids": np.ascontiguousarray(tokens, np.int64), "attention_mask": mask,
             "position_ids": np.ascontiguousarray(positions)}
    empty = np.zeros((batch, shape.kv_heads, 0, shape.head_dim), np.float32)
    for layer in range(shape.layers):
        for i, kind in enumerate(("key", "value")):
            feeds[f"past_key_values.{layer}.{kind}"] = past[2 * layer + i] if past else empty
    return feeds


Session = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def greedy_generate(run: Session, shape: DecoderShape, prompt: np.ndarray, steps: int,
                    on_step: Callable[[int, np.ndarray], None] | None = None) -> np.ndarray:
    """Prefill ``prompt`` [batch, length], then ``steps`` decode calls, each feeding the previous
    call's presents back as its past; returns the generated tokens [batch, steps + 1]. ``run`` is a
    session's ``lambda feeds: session.run(None, feeds)``; ``on_step(i, logits)`` sees every call's logits."""
    batch = prompt.shape[0]
    tokens, past = prompt, []
    mask = np.ones((batch, prompt.shape[1]), np.int64)
    generated = []
    for i in range(steps + 1):
        logits, *past = run(step_feeds(shape, tokens, past, mask))
        if on_step is not None:
            on_step(i, logits)
        tokens = logits[:, -1].argmax(-1).astype(np.int64)[:, None]
        generated.append(tokens)
        mask = np.ones((batch, mask.shape[1] + 1), np.int64)
    return np.concatenate(generated, axis=1)
