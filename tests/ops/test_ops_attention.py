"""Attention-family ops (compiler/ops/attention.py, transformer.py, recurrent.py) against onnx's reference.

Covers the variants the conformance suite leaves out or only touches once:
3-D GQA with a KV cache, masks of every rank (bool and float, shorter than the
total sequence), causal + window + nonpad_kv_seqlen together, every
qk_matmul_output mode, float64 and float16, partial interleaved rotary, and
each LinearAttention update rule with GQA and a past state.

Tolerances: float32 rtol=1e-4, atol=1e-5 (softmax and short dot products);
float64 1e-10; float16 rtol=atol=5e-3, since the reference rounds every
intermediate to float16 (~5e-4 unit roundoff) while tilec computes in float32
and rounds once.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from compiler.errors import UnsupportedOpError
from helpers_onnx import compiled, graph_model, node_model, rand, reference

F16 = {"rtol": 5e-3, "atol": 5e-3}


def _attention(check, feeds: dict, opset: int = 23, outputs=("y",), expected=None, tol=None, **attrs):
    """Check one Attention node; ``outputs`` may omit middle outputs with "" (the graph lists the others)."""
    names = ["q", "k", "v", "mask", "past_key", "past_value", "nonpad"]
    inputs = [n if n in feeds else "" for n in names]
    while not inputs[-1]:
        inputs.pop()
    node = helper.make_node("Attention", inputs, list(outputs), **attrs)
    model = graph_model([node], feeds, [o for o in outputs if o], opset=opset, expected=expected)
    return check(model, feeds, expected=expected, **(tol or {}))


def test_attention_3d_gqa_with_cache_and_short_float_mask(check):
    """3-D GQA (6 query heads on 2 KV heads), past cache, a rank-2 float mask shorter than past + new."""
    q, k, v = rand((2, 3, 6 * 4), seed=1), rand((2, 5, 2 * 4), seed=2), rand((2, 5, 2 * 3), seed=3)
    past_key, past_value = rand((2, 2, 4, 4), seed=4), rand((2, 2, 4, 3), seed=5)
    mask = rand((3, 7), seed=6)
    _attention(check, {"q": q, "k": k, "v": v, "mask": mask, "past_key": past_key, "past_value": past_value},
               outputs=("y", "present_key", "present_value"), q_num_heads=6, kv_num_heads=2)


@pytest.mark.parametrize("mask_shape,causal", [((6,), 0), ((3, 4, 6), 1), ((2, 1, 4, 6), 1), ((2, 3, 4, 5), 1)])
def test_attention_bool_mask_ranks(check, mask_shape, causal):
    """Bool masks broadcast from every rank (intersected with a causal frontier: some rows end fully masked).
    A rank-1 mask goes without is_causal: onnx's reference cannot compose the two."""
    q, k, v = rand((2, 3, 4, 8), seed=1), rand((2, 3, 6, 8), seed=2), rand((2, 3, 6, 8), seed=3)
    mask = rand(mask_shape, seed=7) > 0.3
    _attention(check, {"q": q, "k": k, "v": v, "mask": mask}, is_causal=causal)


def test_attention_fully_masked_rows_are_zero(check):
    q, k, v = rand((1, 2, 3, 4), seed=1), rand((1, 2, 3, 4), seed=2), rand((1, 2, 3, 4), seed=3)
    mask = np.array([[True, False, True], [False, False, False], [False, True, False]])
    got = _attention(check, {"q": q, "k": k, "v": v, "mask": mask}, outputs=("y", "", "", "qk"),
                     qk_matmul_output_mode=3)
    assert not np.isnan(got[0]).any() and np.all(got[0][:, :, 1] == 0) and np.all(got[1][:, :, 1] == 0)


@pytest.mark.parametrize("mode", [1, 2, 3])
def test_attention_qk_output_modes_with_softcap(check, mode):
    q, k, v = rand((2, 2, 3, 8), seed=1), rand((2, 2, 5, 8), seed=2), rand((2, 2, 5, 8), seed=3)
    mask = rand((3, 5), seed=4)
    _attention(check, {"q": q, "k": k, "v": v, "mask": mask}, outputs=("y", "", "", "qk"), softcap=1.5,
               qk_matmul_output_mode=mode, scale=0.3)


def test_attention_qk_output_mode0_is_raw_even_with_softcap(check):
    """The spec's mode 0 is the raw scaled Q·K^T; onnx's reference returns the softcapped value there,
    so the expected output is spelled out here."""
    q, k, v = rand((1, 2, 3, 8), seed=1), rand((1, 2, 4, 8), seed=2), rand((1, 2, 4, 8), seed=3)
    feeds = {"q": q, "k": k, "v": v}
    y = node_model("Attention", ["q", "k", "v"], feeds, attrs={"softcap": 1.5}, opset=23)
    expected = [reference(y, feeds)[0], (q @ k.transpose(0, 1, 3, 2) / np.sqrt(8)).astype(np.float32)]
    _attention(check, feeds, outputs=("y", "", "", "qk"), expected=expected, softcap=1.5)


def test_attention_nonpad_causal_window(check):
    """External cache (opset 25): per-batch valid lengths, bottom-right causal, a left window."""
    q, k, v = rand((3, 2, 2, 8), seed=1), rand((3, 2, 7, 8), seed=2), rand((3, 2, 7, 8), seed=3)
    nonpad = np.array([7, 3, 1], dtype=np.int64)  # the last batch's first query has no key at all
    _attention(check, {"q": q, "k": k, "v": v, "nonpad": nonpad}, opset=25, is_causal=1, left_window_size=2)


def test_attention_bidirectional_window_with_past(check):
    q, k, v = rand((1, 2, 3, 4), seed=1), rand((1, 2, 3, 4), seed=2), rand((1, 2, 3, 4), seed=3)
    past_key, past_value = rand((1, 2, 5, 4), seed=4), rand((1, 2, 5, 4), seed=5)
    _attention(check, {"q": q, "k": k, "v": v, "past_key": past_key, "past_value": past_value}, opset=25,
               outputs=("y", "present_key", "present_value"), left_window_size=1, right_window_size=2)


def test_attention_float64_with_softmax_precision(check):
    q, k, v = (rand(s, seed=n, dtype="float64") for n, s in enumerate([(2, 4, 3, 8), (2, 2, 5, 8), (2, 2, 5, 6)]))
    _attention(check, {"q": q, "k": k, "v": v}, opset=24, is_causal=1, softmax_precision=11,
               tol={"rtol": 1e-10, "atol": 1e-10})


def test_attention_float16_gqa_with_mask(check):
    q, k, v = (rand(s, seed=n, dtype="float16") for n, s in enumerate([(2, 4, 3, 8), (2, 2, 5, 8), (2, 2, 5, 8)]))
    mask = rand((2, 1, 3, 5), seed=9, dtype="float16")
    _attention(check, {"q": q, "k": k, "v": v, "mask": mask}, softmax_precision=1, tol=F16)


def test_attention_refuses_uneven_groups(tmp_path):
    q, k, v = rand((1, 3, 2, 4), seed=1), rand((1, 2, 2, 4), seed=2), rand((1, 2, 2, 4), seed=3)
    model = node_model("Attention", ["q", "k", "v"], {"q": q, "k": k, "v": v}, opset=23,
                       expected=[np.zeros((1, 3, 2, 4), np.float32)])
    with pytest.raises(UnsupportedOpError, match="multiple of kv_num_heads"):
        compiled(model, tmp_path)


@pytest.mark.parametrize("dtype,precision", [("float32", None), ("float64", None), ("float16", 1)])
def test_flex_attention_gqa(check, dtype, precision):
    q, k, v = (rand(s, seed=n, dtype=dtype) for n, s in enumerate([(2, 4, 3, 8), (2, 2, 5, 8), (2, 2, 5, 6)]))
    attrs = {"scale": 0.2} | ({"softmax_precision": precision} if precision else {})
    node = helper.make_node("FlexAttention", ["q", "k", "v"], ["y"], domain="ai.onnx.preview", **attrs)
    feeds = {"q": q, "k": k, "v": v}
    # graph_model knows the default domain only: the preview domain's import is added by hand.
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = helper.make_graph([node], "flex", [helper.make_tensor_value_info(n, elem, a.shape) for n, a in feeds.items()],
                              [helper.make_tensor_value_info("y", elem, (2, 4, 3, 6))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26),
                                                    helper.make_opsetid("ai.onnx.preview", 1)])
    tol = F16 if dtype == "float16" else {"rtol": 1e-10, "atol": 1e-10} if dtype == "float64" else {}
    check(model, feeds, **tol)


# --- RotaryEmbedding, SwiGLU ---------------------------------------------------------------


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rotary_dim", [0, 6])
def test_rotary_embedding_3d_with_positions(check, interleaved, rotary_dim):
    x = rand((2, 5, 3 * 10), seed=1)
    half = (rotary_dim or 10) // 2
    cos, sin = rand((16, half), seed=2), rand((16, half), seed=3)
    positions = np.array([[0, 3, 7, 15, 2], [9, 9, 1, 0, 4]], dtype=np.int64)
    feeds = {"x": x, "cos": cos, "sin": sin, "pos": positions}
    check(node_model("RotaryEmbedding", ["x", "cos", "sin", "pos"], feeds, opset=23,
                     attrs={"interleaved": interleaved, "rotary_embedding_dim": rotary_dim, "num_heads": 3}), feeds)


def test_rotary_embedding_4d_float16_without_positions(check):
    x = rand((2, 3, 5, 8), seed=1, dtype="float16")
    cos, sin = rand((2, 5, 4), seed=2, dtype="float16"), rand((2, 5, 4), seed=3, dtype="float16")
    feeds = {"x": x, "cos": cos, "sin": sin}
    check(node_model("RotaryEmbedding", ["x", "cos", "sin"], feeds, opset=23), feeds, **F16)


@pytest.mark.parametrize("dtype,alpha", [("float32", 1.702), ("float16", 1.0)])
def test_swiglu(check, dtype, alpha):
    a, b = rand((3, 37), seed=1, dtype=dtype) * 3, rand((3, 37), seed=2, dtype=dtype)
    tol = F16 if dtype == "float16" else {}
    check(node_model("SwiGLU", ["a", "b"], {"a": a, "b": b}, attrs={"alpha": alpha}, opset=28), {"a": a, "b": b},
          **tol)


# --- CausalConvWithState, LinearAttention --------------------------------------------------


@pytest.mark.parametrize("taps,length", [(4, 9), (5, 2), (1, 6)])
def test_causal_conv_with_state(check, taps, length):
    x, w, bias = rand((2, 3, length), seed=1), rand((3, 1, taps), seed=2), rand((3,), seed=3)
    past = rand((2, 3, taps - 1), seed=4)
    feeds = {"x": x, "w": w, "bias": bias, "past": past}
    check(node_model("CausalConvWithState", ["x", "w", "bias", "past"], feeds, attrs={"activation": "silu"},
                     opset=27, outputs=("y", "state")), feeds)


def test_causal_conv_with_state_float16_no_past(check):
    x, w = rand((1, 4, 7), seed=1, dtype="float16"), rand((4, 1, 3), seed=2, dtype="float16")
    check(node_model("CausalConvWithState", ["x", "w"], {"x": x, "w": w}, opset=27, outputs=("y", "state")),
          {"x": x, "w": w}, **F16)


@pytest.mark.parametrize("rule,decay_per_head,beta_shared", [
    ("linear", False, False), ("gated", True, False), ("delta", False, True), ("gated_delta", False, False),
])
def test_linear_attention_rules_gqa_with_past(check, rule, decay_per_head, beta_shared):
    batch, steps, q_heads, kv_heads, dk, dv = 2, 3, 4, 2, 4, 5
    feeds = {"q": rand((batch, steps, q_heads * dk), seed=1), "k": rand((batch, steps, kv_heads * dk), seed=2) * 0.5,
             "v": rand((batch, steps, kv_heads * dv), seed=3), "past": rand((batch, kv_heads, dk, dv), seed=4)}
    inputs = ["q", "k", "v", "past", "", ""]
    if rule in ("gated", "gated_delta"):
        feeds["decay"] = -rand((batch, steps, kv_heads if decay_per_head else kv_heads * dk), seed=5, low=0, high=1)
        inputs[4] = "decay"
    if rule in ("delta", "gated_delta"):
        feeds["beta"] = rand((batch, steps, 1 if beta_shared else kv_heads), seed=6, low=0, high=1)
        inputs[5] = "beta"
    while not inputs[-1]:
        inputs.pop()
    check(node_model("LinearAttention", inputs, feeds, opset=27, outputs=("y", "state"),
                     attrs={"update_rule": rule, "q_num_heads": q_heads, "kv_num_heads": kv_heads, "scale": 0.7}),
          feeds)


def test_linear_attention_refuses_long_sequences(tmp_path):
    from compiler.ops.recurrent import MAX_STEPS

    steps = MAX_STEPS + 1
    feeds = {n: rand((1, steps, 4), seed=1) for n in ("q", "k", "v")}
    model = node_model("LinearAttention", ["q", "k", "v"], feeds, opset=27, outputs=("y", "state"),
                       attrs={"update_rule": "linear", "q_num_heads": 1, "kv_num_heads": 1},
                       expected=[np.zeros((1, steps, 4), np.float32), np.zeros((1, 1, 4, 4), np.float32)])
    with pytest.raises(UnsupportedOpError, match="unrolled"):
        compiled(model, tmp_path)
