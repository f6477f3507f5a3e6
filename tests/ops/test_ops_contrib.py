"""onnxruntime's com.microsoft contrib ops (expanded by compiler/frontend/contrib.py) against onnxruntime.

onnx's ReferenceEvaluator does not know these ops, so every expected value
comes from onnxruntime's CPU kernels. Tolerances: float32 rtol=1e-4,
atol=1e-5; the attention cases use atol=2e-5 (softmax sums over the keys).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from helpers_contrib import contrib_model, contrib_node, nbits_weights, single_node_model
from helpers_onnx import rand

ATTENTION_TOL = {"rtol": 1e-4, "atol": 2e-5}


def _check_node(check, op: str, feeds: dict, consts: dict | None = None, outputs: Sequence[str] = ("y",),
                tol: dict | None = None, **attrs) -> None:
    """One contrib node (see helpers_contrib.single_node_model), compiled and compared with onnxruntime."""
    model, expected = single_node_model(op, feeds, consts, outputs, **attrs)
    check(model, feeds, expected=expected, **(tol or {}))


# --- elementwise --------------------------------------------------------------------------


@pytest.mark.parametrize("op,extra,attrs", [
    ("Gelu", False, {}), ("FastGelu", False, {}), ("FastGelu", True, {}), ("BiasGelu", True, {}),
    ("QuickGelu", False, {}), ("QuickGelu", False, {"alpha": 0.75}),
])
def test_gelu_family(check, op, extra, attrs):
    feeds = {"x": rand((2, 3, 16), seed=1, low=-4, high=4)}
    consts = {"bias": rand((16,), seed=2)} if extra else None
    _check_node(check, op, feeds, consts, **attrs)


def test_bias_add(check):
    """onnxruntime has BiasAdd on CUDA only: the expected value is its one-line formula."""
    feeds = {"x": rand((2, 6, 8), seed=1), "skip": rand((2, 6, 8), seed=3)}
    consts = {"bias": rand((8,), seed=2)}
    model, expected = contrib_model([contrib_node("BiasAdd", ["x", "bias", "skip"])], feeds, ["y"], consts,
                                    expected=[feeds["x"] + consts["bias"] + feeds["skip"]])
    check(model, feeds, expected=expected)


# --- contractions -------------------------------------------------------------------------------


@pytest.mark.parametrize("a_shape,b_shape,attrs", [
    ((2, 3, 4), (4, 5), {"alpha": 0.5}),
    ((2, 4, 3), (2, 5, 4), {"transA": 1, "transB": 1}),
    ((3, 2, 4), (2, 4, 5), {"transBatchA": 1}),
    ((4, 2, 3), (2, 4, 5), {"transBatchA": 1, "transA": 1, "alpha": 2.0}),
    ((2, 3, 4), (5, 2, 4), {"transBatchB": 1, "transB": 1}),
    ((2, 3, 4, 5), (3, 4, 5, 6), {"transBatchA": 1}),
])
def test_fused_matmul(check, a_shape, b_shape, attrs):
    _check_node(check, "FusedMatMul", {"a": rand(a_shape, seed=1)}, {"b": rand(b_shape, seed=2)}, **attrs)


@pytest.mark.parametrize("activation,params,with_bias,with_z,conv_attrs", [
    ("Relu", None, True, False, {}),
    ("LeakyRelu", [0.2], True, True, {"pads": [1, 1, 1, 1]}),
    ("Clip", [-0.5, 0.5], False, True, {"strides": [2, 2]}),
    ("HardSigmoid", [0.3, 0.4], True, False, {"group": 2}),
    ("", None, True, True, {"dilations": [2, 2]}),
])
def test_fused_conv(check, activation, params, with_bias, with_z, conv_attrs):
    x = rand((1, 4, 7, 7), seed=1)
    group = conv_attrs.get("group", 1)
    w = rand((4, 4 // group, 3, 3), seed=2)
    inputs, consts = ["x", "w", "b" if with_bias else ""], {"w": w}
    if with_bias:
        consts["b"] = rand((4,), seed=3)
    attrs = dict(conv_attrs)
    if activation:
        attrs["activation"] = activation
    if params:
        attrs["activation_params"] = params
    feeds = {"x": x}
    if with_z:
        out_hw = {(): 5, ("pads",): 7, ("strides",): 3, ("dilations",): 3}[tuple(conv_attrs)]
        feeds["z"] = rand((1, 4, out_hw, out_hw), seed=4)
        inputs.append("z")
    _check_node(check, "FusedConv", feeds, consts, inputs=inputs, **attrs)


@pytest.mark.parametrize("activation,params", [
    ("Relu", {}), ("LeakyRelu", {"activation_alpha": 0.1}),
    ("HardSigmoid", {"activation_alpha": 0.3, "activation_beta": 0.4}),
    ("ScaledTanh", {"activation_alpha": 2.0, "activation_beta": 0.5}),
    ("Selu", {"activation_alpha": 1.6, "activation_gamma": 1.05}), ("Softsign", {}),
])
def test_fused_gemm(check, activation, params):
    consts = {"b": rand((5, 4), seed=2), "c": rand((5,), seed=3)}
    _check_node(check, "FusedGemm", {"a": rand((3, 4), seed=1)}, consts, activation=activation, alpha=0.5, beta=2.0,
                transB=1, **params)


# --- normalizations ------------------------------------------------------------------------------


@pytest.mark.parametrize("op,optional,outputs", [
    ("SkipLayerNormalization", ("beta", "bias"), ("y", "mean", "inv_std", "sum")),
    ("SkipLayerNormalization", (), ("y",)),
    ("SkipLayerNormalization", ("bias",), ("y", "", "", "sum")),
    ("SkipSimplifiedLayerNormalization", ("bias",), ("y", "", "inv_std", "sum")),
    ("SkipSimplifiedLayerNormalization", (), ("y",)),
])
def test_skip_layer_norm(check, op, optional, outputs):
    feeds = {"x": rand((2, 5, 16), seed=1), "skip": rand((2, 5, 16), seed=2)}
    consts = {"gamma": rand((16,), seed=3)}
    inputs = ["x", "skip", "gamma"]
    for name in ("beta", "bias") if op == "SkipLayerNormalization" else ("bias",):
        inputs.append(name if name in optional else "")
        if name in optional:
            consts[name] = rand((16,), seed=4 + len(consts))
    _check_node(check, op, feeds, consts, outputs=outputs, inputs=inputs, epsilon=1e-5)


@pytest.mark.parametrize("axis,outputs", [(-1, ("y",)), (1, ("y", "inv_std"))])
def test_simplified_layer_norm_in_the_default_domain(check, axis, outputs):
    """onnxruntime registers SimplifiedLayerNormalization in the default domain, where the checker refuses it."""
    feeds = {"x": rand((2, 3, 8), seed=1)}
    scale_shape = (8,) if axis == -1 else (3, 8)
    _check_node(check, "SimplifiedLayerNormalization", feeds, {"scale": rand(scale_shape, seed=2)}, outputs=outputs,
                domain="", axis=axis, epsilon=1e-4)


def test_layer_norm_in_the_default_domain_below_opset_17(check):
    """onnxruntime's transformer optimizer writes LayerNormalization into opset-12 models (ONNX has it from 17)."""
    feeds = {"x": rand((2, 3, 8), seed=1)}
    consts = {"g": rand((8,), seed=2), "b": rand((8,), seed=3)}
    _check_node(check, "LayerNormalization", feeds, consts, domain="", opset=12, epsilon=1e-5)


@pytest.mark.parametrize("segments,mask,position_ids,outputs", [
    (True, True, False, ("y", "mask_index", "embedding_sum")),
    (False, False, True, ("y", "mask_index", "embedding_sum")),
    (False, True, False, ("y", "mask_index")),
])
def test_embed_layer_norm(check, segments, mask, position_ids, outputs):
    rng = np.random.default_rng(0)
    batch, length, hidden = 2, 5, 16
    feeds = {"ids": rng.integers(0, 30, (batch, length)).astype(np.int32)}
    if segments:
        feeds["segment_ids"] = rng.integers(0, 2, (batch, length)).astype(np.int32)
    if mask:
        feeds["mask"] = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)
    if position_ids:
        feeds["position_ids"] = np.array([[4, 0, 3, 1, 2]], np.int32)
    consts = {"word": rand((30, hidden), seed=1), "position": rand((8, hidden), seed=2),
              "segment": rand((2, hidden), seed=3), "gamma": rand((hidden,), seed=4), "beta": rand((hidden,), seed=5)}
    if not segments:
        del consts["segment"]
    inputs = ["ids", "segment_ids" if segments else "", "word", "position", "segment" if segments else "", "gamma",
              "beta", "mask" if mask else "", "position_ids" if position_ids else ""]
    while not inputs[-1]:
        inputs.pop()
    _check_node(check, "EmbedLayerNormalization", feeds, consts, outputs=outputs, inputs=inputs, epsilon=1e-5)


# --- attention -------------------------------------------------------------------------------------


def _padding_mask(batch: int, length: int) -> np.ndarray:
    mask = np.ones((batch, length), np.int32)
    mask[0, length // 2:] = 0
    return mask


@pytest.mark.parametrize("mask_form,attrs", [
    (None, {}),
    ("2d", {}),
    ("2d_first_masked", {"unidirectional": 1}),
    ("lengths", {"scale": 0.3}),
    ("3d", {"mask_filter_value": -1e4}),
    (None, {"qkv_hidden_sizes": [8, 8, 12]}),
    ("bias", {"unidirectional": 1}),
])
def test_attention(check, mask_form, attrs):
    batch, length, hidden, heads = 2, 6, 12, 2
    sizes = attrs.get("qkv_hidden_sizes", [hidden] * 3)
    feeds = {"x": rand((batch, length, hidden), seed=1)}
    consts = {"w": rand((hidden, sum(sizes)), seed=2) * 0.5, "b": rand((sum(sizes),), seed=3)}
    inputs = ["x", "w", "b"]
    if mask_form in ("2d", "2d_first_masked"):
        feeds["mask"] = _padding_mask(batch, length)
        if mask_form == "2d_first_masked":
            feeds["mask"][1, 0] = 0  # query 0 sees key 0 only: padded and causally hidden keys must not tie
    elif mask_form == "lengths":
        feeds["mask"] = np.array([3, 6], np.int32)
    elif mask_form == "3d":
        feeds["mask"] = (np.random.default_rng(5).random((batch, length, length)) > 0.3).astype(np.int32)
    if "mask" in feeds:
        inputs.append("mask")
    if mask_form == "bias":
        feeds["attention_bias"] = rand((1, heads, length, length), seed=6)
        inputs += ["", "", "attention_bias"]
    _check_node(check, "Attention", feeds, consts, inputs=inputs, tol=ATTENTION_TOL, num_heads=heads, **attrs)


@pytest.mark.parametrize("bias,mask,outputs,attrs", [
    (True, "2d", ("y",), {}),
    (False, None, ("y", "present_key", "present_value"), {"unidirectional": 1}),
    (True, "lengths", ("y",), {"scale": 0.25}),
])
def test_multi_head_attention(check, bias, mask, outputs, attrs):
    batch, kv_len, hidden, v_hidden, heads = 2, 6, 8, 12, 2
    q_len = kv_len if attrs.get("unidirectional") else 4
    feeds = {"q": rand((batch, q_len, hidden), seed=1), "k": rand((batch, kv_len, hidden), seed=2),
             "v": rand((batch, kv_len, v_hidden), seed=3)}
    consts = {}
    inputs = ["q", "k", "v", ""]
    if bias:
        consts["bias"] = rand((2 * hidden + v_hidden,), seed=4)
        inputs[3] = "bias"
    if mask == "2d":
        feeds["mask"] = _padding_mask(batch, kv_len)
    elif mask == "lengths":
        feeds["mask"] = np.array([2, 6], np.int32)
    if mask:
        inputs.append("mask")
    while not inputs[-1]:
        inputs.pop()
    _check_node(check, "MultiHeadAttention", feeds, consts, outputs=outputs, inputs=inputs, tol=ATTENTION_TOL,
                num_heads=heads, **attrs)


# --- a whole encoder layer -------------------------------------------------------------------------


def bert_layer_model(batch: int = 2, length: int = 8, hidden: int = 32, heads: int = 4, inner: int = 64,
                     vocab: int = 50):
    """A BERT encoder layer as onnxruntime's optimizer writes it: the mask reaches Attention as key lengths."""
    rng = np.random.default_rng(7)
    feeds = {"ids": rng.integers(0, vocab, (batch, length)).astype(np.int32),
             "segment_ids": rng.integers(0, 2, (batch, length)).astype(np.int32),
             "mask": np.array([[1] * length, [1] * (length - 3) + [0] * 3], np.int32)}

    def w(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (scale * rng.standard_normal(shape)).astype(np.float32)

    consts = {"word": w(vocab, hidden, scale=1.0), "position": w(length, hidden, scale=1.0),
              "segment": w(2, hidden, scale=1.0), "ln0_g": 1 + w(hidden), "ln0_b": w(hidden),
              "qkv_w": w(hidden, 3 * hidden), "qkv_b": w(3 * hidden), "out_w": w(hidden, hidden), "out_b": w(hidden),
              "ln1_g": 1 + w(hidden), "ln1_b": w(hidden), "ff1_w": w(hidden, inner), "ff1_b": w(inner),
              "ff2_w": w(inner, hidden), "ff2_b": w(hidden), "ln2_g": 1 + w(hidden), "ln2_b": w(hidden)}
    nodes = [
        contrib_node("EmbedLayerNormalization", ["ids", "segment_ids", "word", "position", "segment", "ln0_g", "ln0_b",
                                                 "mask"], ["embedded", "mask_index"], epsilon=1e-12),
        contrib_node("Attention", ["embedded", "qkv_w", "qkv_b", "mask_index"], ["context"], num_heads=heads),
        contrib_node("MatMul", ["context", "out_w"], ["projected"], domain=""),
        contrib_node("SkipLayerNormalization", ["projected", "embedded", "ln1_g", "ln1_b", "out_b"], ["attended"],
                     epsilon=1e-12),
        contrib_node("FusedMatMul", ["attended", "ff1_w"], ["inner"]),
        contrib_node("BiasGelu", ["inner", "ff1_b"], ["activated"]),
        contrib_node("MatMul", ["activated", "ff2_w"], ["outer"], domain=""),
        contrib_node("SkipLayerNormalization", ["outer", "attended", "ln2_g", "ln2_b", "ff2_b"], ["y"], epsilon=1e-12),
    ]
    for i, node in enumerate(nodes):
        node.name = f"{node.op_type.lower()}_{i}"
    return contrib_model(nodes, feeds, ["y"], consts), feeds


def test_bert_encoder_layer(check):
    """EmbedLayerNormalization -> Attention -> SkipLayerNormalization -> FusedMatMul/BiasGelu -> SkipLayerNorm."""
    (model, expected), feeds = bert_layer_model()
    check(model, feeds, expected=expected, rtol=1e-4, atol=5e-5)


@pytest.mark.parametrize("op", ["SkipSimplifiedLayerNormalization", "SkipLayerNormalization", "FastGelu"])
def test_float16(check, op):
    """Half inputs: statistics in float32 as onnxruntime keeps them; tolerance 5e-3 (float16 rounding)."""
    feeds = {"x": rand((2, 4, 16), seed=1, dtype="float16"), "skip": rand((2, 4, 16), seed=2, dtype="float16")}
    consts = {"gamma": rand((16,), seed=3, dtype="float16")}
    if op == "FastGelu":
        feeds.pop("skip")
    _check_node(check, op, feeds, consts, tol={"rtol": 5e-3, "atol": 5e-3})


def test_multi_head_attention_float16(check):
    feeds = {"q": rand((1, 4, 8), seed=1, dtype="float16"), "k": rand((1, 4, 8), seed=2, dtype="float16"),
             "v": rand((1, 4, 8), seed=3, dtype="float16")}
    _check_node(check, "MultiHeadAttention", feeds, num_heads=2, unidirectional=1, tol={"rtol": 5e-3, "atol": 5e-3})


def _rotary_cache(length: int, width: int) -> dict[str, np.ndarray]:
    angles = np.arange(length)[:, None] * (0.5 ** np.arange(width))[None, :]
    return {"cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32)}


@pytest.mark.parametrize("shape,positions,width,attrs", [
    ((2, 5, 16), [3], 4, {"num_heads": 2}),
    ((2, 2, 5, 8), [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0]], 4, {"interleaved": 1}),
    ((2, 5, 16), [0], 2, {"num_heads": 2, "rotary_embedding_dim": 4}),
    ((2, 5, 16), [2], 3, {"num_heads": 2, "interleaved": 1, "rotary_embedding_dim": 6}),
])
def test_rotary_embedding(check, shape, positions, width, attrs):
    feeds = {"x": rand(shape, seed=1), "position_ids": np.array(positions, np.int64)}
    _check_node(check, "RotaryEmbedding", feeds, _rotary_cache(16, width), **attrs)


# --- MatMulNBits ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits, block, k, zeros, shape", [
    (4, 32, 64, "packed", (1, 64)),          # a decoding step
    (4, 32, 80, "none", (2, 7, 80)),         # K not a multiple of the block; rank-3 A
    (4, 16, 48, "float", (5, 48)),
    (8, 32, 64, "packed", (3, 64)),
    (2, 32, 64, "packed", (3, 64)),
])
def test_matmul_nbits(check, bits, block, k, zeros, shape):
    """Block-quantized weights against onnxruntime's kernel (accuracy_level 0: A stays float)."""
    n = 24
    consts = nbits_weights(n, k, bits, block, seed=bits + k)
    blocks = -(-k // block)
    if zeros == "none":
        consts.pop("z")
    elif zeros == "float":
        consts["z"] = np.random.default_rng(3).uniform(0, 15, n * blocks).astype(np.float32)
    inputs = ["a", "w", "s", "z" if "z" in consts else ""]
    _check_node(check, "MatMulNBits", {"a": rand(shape, seed=1)}, consts, inputs=inputs, K=k, N=n, bits=bits,
                block_size=block, tol={"rtol": 1e-4, "atol": 1e-4})


def test_matmul_nbits_with_bias_and_g_idx(check):
    consts = nbits_weights(8, 64, 4, 32, seed=5)
    consts["z"] = np.random.default_rng(7).uniform(0, 15, 16).astype(np.float32)
    consts["g"] = (np.arange(64) // 32).astype(np.int32)[::-1].copy()  # each K's block, reordered
    consts["bias"] = rand((8,), seed=6)
    _check_node(check, "MatMulNBits", {"a": rand((3, 64), seed=1)}, consts, inputs=["a", "w", "s", "z", "g", "bias"],
                K=64, N=8, bits=4, block_size=32, tol={"rtol": 1e-4, "atol": 1e-4})
