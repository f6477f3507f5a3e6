"""onnxruntime's ``com.microsoft`` contrib ops as standard ONNX nodes.

Models saved by onnxruntime's transformer optimizer (and HF optimum's
``--optimize``) fuse subgraphs into contrib ops that neither ONNX nor its shape
inference know. :mod:`.expand` calls these expanders during folding for nodes
of domain ``com.microsoft`` (the loader moves onnxruntime's default-domain
``SimplifiedLayerNormalization``, and ``LayerNormalization`` below opset 17,
there first); each emits ONNX nodes computing what onnxruntime's CPU kernels
compute, so inference, folding, fusion and lowering treat the result like any
other graph. A form that is not expressible raises :class:`NotExpandable`
naming it; the node then stays and is reported as unsupported.

Ops and forms (every attribute and optional input of onnxruntime 1.31's schema
unless refused here):

* ``Gelu`` (erf), ``FastGelu`` (tanh approximation, optional bias),
  ``BiasGelu``, ``QuickGelu`` (``alpha``), ``BiasAdd``: elementwise formulas.
* ``FusedMatMul``: ``transA``/``transB``, ``transBatchA``/``transBatchB``
  (the first axis moves behind the other batch axes; both inputs of one rank
  >= 3, as onnxruntime requires), ``alpha``: Transpose, MatMul, Mul.
* ``FusedConv``: Conv (every Conv attribute), plus the optional ``Z`` summand,
  then ``activation`` with positional ``activation_params``.
* ``FusedGemm``: Gemm, then ``activation`` with ``activation_alpha``/``_beta``/
  ``_gamma``. Activations: Relu, Tanh, Sigmoid, Softsign, Softplus, LeakyRelu,
  Elu, Celu, ThresholdedRelu, HardSigmoid, Selu, ScaledTanh,
  ParametricSoftplus, Clip; a parameter the activation needs must be given
  (onnxruntime has no defaults for them either).
* ``SkipLayerNormalization`` / ``SkipSimplifiedLayerNormalization``: the sum
  input + skip (+ bias), normalized over the last axis (LayerNormalization
  with optional beta, resp. RMS), and the optional ``mean`` (LayerNorm only),
  ``inv_std_var`` and ``input_skip_bias_sum`` outputs.
* ``SimplifiedLayerNormalization`` (RMSNorm over ``axis``.., ``epsilon``,
  ``stash_type``; optional ``inv_std_var``) and ``LayerNormalization`` (as the
  ONNX op of opset 17).
* ``EmbedLayerNormalization``: word + position (``position_ids`` or 0..S-1)
  (+ segment) embeddings, LayerNormalization; ``mask_index`` is the per-row
  sum of ``mask`` (zeros without one), ``embedding_sum`` the sum before it.
* ``Attention`` (packed QKV projection) and ``MultiHeadAttention`` (separate
  Q/K/V of shape [batch, length, hidden], optional packed bias): per-head
  softmax(Q K^T * scale + masks) V with ``num_heads``, ``scale``,
  ``unidirectional``, ``mask_filter_value``, ``qkv_hidden_sizes``,
  ``attention_bias``; the mask (``mask_index`` / ``key_padding_mask``) as a
  raw [batch, kv] or [batch, q, kv] 0/1 mask or as [batch] key lengths, each
  masked position adding ``mask_filter_value`` to its score, while
  ``unidirectional`` leaves later keys out entirely, as onnxruntime does
  (refused for unequal query and key lengths). MultiHeadAttention's
  ``present_key``/``present_value`` outputs are the projected heads.
  Refused: past state (``past``, ``past_key``/``past_value``,
  ``past_sequence_length``, ``cache_indirection``, the ``qk`` output),
  ``do_rotary``, packed QKV/KV or BNSH key forms, the [2*batch],
  [3*batch+2] and 4-D mask forms.
* ``MatMulNBits``: 2-, 4- and 8-bit block-quantized constant weights (packed or
  float zero points, ``g_idx`` (refused with packed zero points, which
  onnxruntime then ignores), ``bias``): a MatMul of A's type whose weight is a
  ``tilec.BlockDequantize`` of the codes, so the codes stay in the artifact and
  the product reads them (with ``g_idx``, weights dequantized at compile time);
  ``accuracy_level`` (onnxruntime's leave to quantize A) is ignored: tilec
  computes in A's type.
* ``RotaryEmbedding``: input [batch, length, hidden] (``num_heads``) or
  [batch, heads, length, head]; ``position_ids`` [batch, length] or [1] (the
  first position); halves or ``interleaved`` pairs; partial
  ``rotary_embedding_dim`` with a cache of width rotary_embedding_dim / 2.
  ``scale`` is ignored, as onnxruntime's kernels do; refused:
  ``is_packed_batching``, a cache of another width.

Most expansions need static input shapes (head sizes, masks, positions):
they wait for folding to settle them like the recurrent expansions do.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence

import ml_dtypes
import numpy as np
import onnx
from onnx import helper

from compiler.frontend.loader import ORT_DOMAIN
from compiler.frontend.rewrite import Builder, NotExpandable
from compiler.graph.ir import PHI_DOMAIN

if TYPE_CHECKING:
    from compiler.frontend.folding import FoldedGraph

DOMAIN = ORT_DOMAIN

#: Activation -> its parameters, in FusedConv's ``activation_params`` order.
_ACTIVATION_PARAMS: dict[str, tuple[str, ...]] = {
    "Relu": (), "Tanh": (), "Sigmoid": (), "Softsign": (), "Softplus": (),
    "LeakyRelu": ("alpha",), "Elu": ("alpha",), "Celu": ("alpha",), "ThresholdedRelu": ("alpha",),
    "HardSigmoid": ("alpha", "beta"), "Selu": ("alpha", "gamma"), "ScaledTanh": ("alpha", "beta"),
    "ParametricSoftplus": ("alpha", "beta"), "Clip": ("min", "max"),
}

_DEFAULT_MASK_FILTER = -10000.0


# --- small helpers -----------------------------------------------------------------------


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    values = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in values.items()}


def _args(names: Sequence[str], count: int) -> list[str]:
    """The first ``count`` input/output names, '' for the omitted optional ones."""
    return (list(names) + [""] * count)[:count]


def _dtype(state: "FoldedGraph", name: str) -> np.dtype:
    dtype = state.element_type(name)
    if dtype is None:
        raise NotExpandable(f"the type of '{name}' is not known (yet)")
    return dtype


def _shape(state: "FoldedGraph", name: str, label: str, rank: int | None = None) -> tuple[int, ...]:
    shape = state.static_shape(name)
    if shape is None:
        raise NotExpandable(f"the shape of {label} ('{name}') is not static (yet)")
    if rank is not None and len(shape) != rank:
        raise NotExpandable(f"{label} has shape {list(shape)}; rank {rank} expected")
    return shape


def _rank(state: "FoldedGraph", name: str, label: str) -> int:
    if name in state.constants:
        return state.constants[name].ndim
    t = state.types.get(name)
    if t is None or not t.tensor_type.HasField("shape"):
        raise NotExpandable(f"the rank of {label} ('{name}') is not known (yet)")
    return len(t.tensor_type.shape.dim)


def _scalar(b: Builder, value: float, dtype: np.dtype) -> str:
    return b.const(np.array(value, dtype), "scalar")


def _reduce(b: Builder, op: str, x: str, axes: Sequence[int], keepdims: int) -> str:
    """A Reduce* node spelled for the opset (axes became an input in 13 for ReduceSum, 18 for the rest)."""
    if b.opset >= (13 if op == "ReduceSum" else 18):
        return b.op(op, [x, b.ints(axes, "axes")], keepdims=keepdims)
    return b.op(op, [x], axes=list(axes), keepdims=keepdims)


def _copy(b: Builder, value: str, out: str) -> None:
    if out:
        b.op("Identity", [value], out)


# --- elementwise -------------------------------------------------------------------------


def _gelu(b: Builder, x: str, dtype: np.dtype, out: str = "") -> str:
    """0.5 x (1 + erf(x / sqrt 2)), onnxruntime's (exact) Gelu."""
    erf = b.op("Erf", [b.op("Mul", [x, _scalar(b, 1 / math.sqrt(2), dtype)])])
    return b.op("Mul", [b.op("Mul", [x, _scalar(b, 0.5, dtype)]), b.op("Add", [erf, _scalar(b, 1.0, dtype)])], out)


def expand_gelu(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    _gelu(b, node.input[0], _dtype(state, node.input[0]), node.output[0])


def expand_bias_gelu(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    _gelu(b, b.op("Add", list(node.input[:2])), _dtype(state, node.input[0]), node.output[0])


def expand_fast_gelu(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) of x (+ bias)."""
    x, bias = _args(node.input, 2)
    dtype = _dtype(state, x)
    if bias:
        x = b.op("Add", [x, bias])
    cubic = b.op("Mul", [b.op("Mul", [b.op("Mul", [x, x]), x]), _scalar(b, 0.044715, dtype)])
    inner = b.op("Mul", [b.op("Add", [x, cubic]), _scalar(b, math.sqrt(2 / math.pi), dtype)])
    half = b.op("Mul", [x, _scalar(b, 0.5, dtype)])
    b.op("Mul", [half, b.op("Add", [b.op("Tanh", [inner]), _scalar(b, 1.0, dtype)])], node.output[0])


def expand_quick_gelu(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    """x sigmoid(alpha x)."""
    x = node.input[0]
    alpha = _attrs(node).get("alpha", 1.702)
    gate = b.op("Sigmoid", [b.op("Mul", [x, _scalar(b, alpha, _dtype(state, x))])])
    b.op("Mul", [x, gate], node.output[0])


def expand_bias_add(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    x, bias, skip = node.input
    b.op("Add", [b.op("Add", [x, bias]), skip], node.output[0])


# --- contractions ----------------------------------------------------------------------------


def _matmul_operand(b: Builder, state: "FoldedGraph", x: str, label: str, trans: int, trans_batch: int) -> str:
    """``x`` as MatMul reads it: transBatch moves axis 0 behind the batch axes, trans swaps the last two."""
    if not trans and not trans_batch:
        return x
    rank = _rank(state, x, label)
    if rank < 2:
        raise NotExpandable(f"trans{label}/transBatch{label} on the rank-{rank} input {label}")
    perm = list(range(1, rank - 1)) + [0, rank - 1] if trans_batch else list(range(rank))
    if trans:
        perm[-2], perm[-1] = perm[-1], perm[-2]
    return b.transpose(x, perm)


def expand_fused_matmul(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    a, m = node.input
    attrs = _attrs(node)
    batch_a, batch_b = attrs.get("transBatchA", 0), attrs.get("transBatchB", 0)
    if batch_a or batch_b:
        ranks = _rank(state, a, "A"), _rank(state, m, "B")
        if ranks[0] != ranks[1] or ranks[0] < 3:
            raise NotExpandable(f"transBatchA/transBatchB need A and B of one rank >= 3 (ranks {list(ranks)})")
    product = b.op("MatMul", [_matmul_operand(b, state, a, "A", attrs.get("transA", 0), batch_a),
                              _matmul_operand(b, state, m, "B", attrs.get("transB", 0), batch_b)])
    alpha = attrs.get("alpha", 1.0)
    if alpha == 1.0:
        _copy(b, product, node.output[0])
    else:
        b.op("Mul", [product, _scalar(b, alpha, _dtype(state, a))], node.output[0])


def _unpacked_codes(packed: np.ndarray, bits: int, rows: int) -> np.ndarray:
    """``rows`` rows of ``bits``-bit codes packed low-first into the bytes of ``packed`` (row-major)."""
    raw = np.asarray(packed).astype(np.uint8).reshape(rows, -1)
    shifts = np.arange(0, 8, bits, dtype=np.uint8)
    return ((raw[:, :, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(rows, -1)


def expand_matmul_nbits(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    """``A @ dequantize(B)^T (+ bias)``: B's ``bits``-bit codes (N rows of K, in blocks of ``block_size``
    along K) dequantized as onnxruntime's kernels read them, ``(code - zero point) * scale`` per block (zero
    points packed codes or floats; 2^(bits-1) without). The codes stay codes: a ``tilec.BlockDequantize``
    of them, transposed to [K, N] at compile time, which the product reads where it reads a weight. With
    ``g_idx`` (each K's block, in any order) the weights are dequantized at compile time instead."""
    a, packed, scales, zeros, g_idx, bias = _args(node.input, 6)
    attrs = _attrs(node)
    k, n, bits, block = attrs.get("K"), attrs.get("N"), attrs.get("bits", 4), attrs.get("block_size")
    if k is None or n is None or block is None:
        raise NotExpandable("the K, N and block_size attributes are required")
    if bits not in (2, 4, 8):
        raise NotExpandable(f"bits={bits} (2, 4 and 8 are supported)")
    unknown = [label for label, name in (("B", packed), ("scales", scales), ("zero_points", zeros), ("g_idx", g_idx))
               if name and name not in state.constants]
    if unknown:
        raise NotExpandable(f"{', '.join(unknown)} must be constants (weights known at compile time)")
    packed_zeros = bool(zeros) and state.constants[zeros].dtype == np.uint8
    if g_idx and packed_zeros:
        # onnxruntime's CPU kernel then dequantizes with the default zero point, as if none were given.
        raise NotExpandable("g_idx (deprecated) with packed uint8 zero_points: onnxruntime ignores those "
                            "zero points; give float zero points or no g_idx")
    blocks = -(-k // block)
    codes = _unpacked_codes(state.constants[packed], bits, n)
    scale = np.asarray(state.constants[scales]).astype(np.float32)
    if codes.shape[1] != blocks * block or scale.size != n * blocks:
        raise NotExpandable(f"B of {state.constants[packed].size} bytes and {scale.size} scales do not hold "
                            f"N={n} rows of {blocks} blocks of {block} {bits}-bit codes")
    scale = scale.reshape(n, blocks)
    if not zeros:
        zero = np.full((n, blocks), float(1 << (bits - 1)), np.float32)
    elif packed_zeros:
        zero = _unpacked_codes(state.constants[zeros], bits, n)[:, :blocks].astype(np.float32)
    else:
        zero = np.asarray(state.constants[zeros]).astype(np.float32).reshape(n, blocks)
    dtype = _dtype(state, a)
    if g_idx:
        block_of = np.asarray(state.constants[g_idx]).astype(np.int64).reshape(k)
        if block_of.min(initial=0) < 0 or block_of.max(initial=0) >= blocks:
            raise NotExpandable(f"g_idx names blocks outside 0..{blocks - 1}")
        weight = b.const(((codes[:, :k].astype(np.float32) - zero[:, block_of]) * scale[:, block_of]).T.astype(dtype),
                         "dequantized_b")
    else:
        weight = b.fresh("dequantized_b")
        state.opsets.setdefault(PHI_DOMAIN, 1)
        b.nodes.append(helper.make_node(
            "BlockDequantize", [b.const(np.ascontiguousarray(codes[:, :k].T).astype(_CODE_TYPES[bits]), "codes"),
                                b.const(np.ascontiguousarray(scale.T), "scales"),
                                b.const(np.ascontiguousarray((-zero * scale).T), "offsets")],
            [weight], name=b.fresh("BlockDequantize"), domain=PHI_DOMAIN, axis=0, block_size=block,
            to=helper.np_dtype_to_tensor_dtype(dtype)))
    product = b.op("MatMul", [a, weight], "" if bias else node.output[0])
    if bias:
        b.op("Add", [product, bias], node.output[0])


# The element type that holds MatMulNBits' codes of each width (ml_dtypes' sub-byte types are packed in memory).
_CODE_TYPES = {2: ml_dtypes.uint2, 4: ml_dtypes.uint4, 8: np.uint8}


def _activation(b: Builder, name: str, params: dict[str, float], x: str, dtype: np.dtype, out: str) -> None:
    """``name`` (one of :data:`_ACTIVATION_PARAMS`) applied to ``x``."""
    if name not in _ACTIVATION_PARAMS:
        raise NotExpandable(f"unknown activation '{name}'")
    missing = [p for p in _ACTIVATION_PARAMS[name] if p not in params]
    if missing:
        raise NotExpandable(f"activation '{name}' needs its {', '.join(missing)} parameter(s)")
    p = {k: float(v) for k, v in params.items()}
    if name in ("Relu", "Tanh", "Sigmoid", "Softsign", "Softplus"):
        b.op(name, [x], out)
    elif name in ("LeakyRelu", "Elu", "Celu", "ThresholdedRelu"):
        b.op(name, [x], out, alpha=p["alpha"])
    elif name == "HardSigmoid":
        b.op(name, [x], out, alpha=p["alpha"], beta=p["beta"])
    elif name == "Selu":
        b.op(name, [x], out, alpha=p["alpha"], gamma=p["gamma"])
    elif name == "Clip":
        if b.opset >= 11:
            b.op("Clip", [x, _scalar(b, p["min"], dtype), _scalar(b, p["max"], dtype)], out)
        else:
            b.op("Clip", [x], out, min=p["min"], max=p["max"])
    else:  # ScaledTanh, ParametricSoftplus: alpha f(beta x)
        inner = b.op("Tanh" if name == "ScaledTanh" else "Softplus", [b.op("Mul", [x, _scalar(b, p["beta"], dtype)])])
        b.op("Mul", [inner, _scalar(b, p["alpha"], dtype)], out)


def expand_fused_conv(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    x, w, bias, z = _args(node.input, 4)
    attrs = _attrs(node)
    conv_attrs = {k: v for k, v in attrs.items() if k in ("auto_pad", "dilations", "group", "kernel_shape", "pads",
                                                          "strides")}
    y = b.op("Conv", [x, w, bias] if bias else [x, w], **conv_attrs)
    if z:
        y = b.op("Add", [y, z])
    name = attrs.get("activation", "")
    if not name:
        _copy(b, y, node.output[0])
        return
    values = list(attrs.get("activation_params", []))
    names = _ACTIVATION_PARAMS.get(name, ())
    if len(values) > len(names):
        raise NotExpandable(f"activation '{name}' takes {len(names)} activation_params, not {len(values)}")
    _activation(b, name, dict(zip(names, values)), y, _dtype(state, x), node.output[0])


def expand_fused_gemm(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    attrs = _attrs(node)
    gemm_attrs = {k: v for k, v in attrs.items() if k in ("alpha", "beta", "transA", "transB")}
    y = b.op("Gemm", list(node.input), **gemm_attrs)
    name = attrs.get("activation", "")
    if not name:
        _copy(b, y, node.output[0])
        return
    params = {k.removeprefix("activation_"): v for k, v in attrs.items()
              if k in ("activation_alpha", "activation_beta", "activation_gamma")}
    _activation(b, name, params, y, _dtype(state, node.input[0]), node.output[0])


# --- normalizations -----------------------------------------------------------------------------


def _layer_norm(b: Builder, x: str, gamma: str, beta: str, epsilon: float, outputs: Sequence[str],
                axis: int = -1, stash_type: int = 1) -> None:
    """ONNX LayerNormalization of ``x`` into ``outputs`` (Y, Mean, InvStdDev; '' where unwanted)."""
    if b.opset < 17:
        raise NotExpandable(f"it becomes LayerNormalization, which needs default-domain opset >= 17 (the model's "
                            f"opset {b.opset} could not be converted)")
    y, mean, inv = _args(outputs, 3)
    wanted = [y or b.fresh("normalized"), mean, inv]
    while not wanted[-1]:
        wanted.pop()
    b.multi("LayerNormalization", [x, gamma, beta] if beta else [x, gamma], wanted, axis=axis, epsilon=epsilon,
            stash_type=stash_type)


def _rms_norm(b: Builder, state: "FoldedGraph", x: str, scale: str, epsilon: float, y_out: str, inv_out: str = "",
              axis: int = -1, stash_type: int = 1, like: str = "") -> None:
    """x / sqrt(mean(x^2 over axis..) + epsilon) * scale; statistics in float32 for half inputs with stash_type 1.

    ``like`` names a value of x's type and shape that ``state`` knows (x itself by default).
    """
    dtype, rank = _dtype(state, like or x), _rank(state, like or x, "the input")
    stash = dtype.itemsize < 4 and stash_type == 1
    if stash:
        x = b.op("Cast", [x], to=onnx.TensorProto.FLOAT)
    acc = np.dtype(np.float32) if stash else dtype
    axes = list(range(axis % rank, rank)) if rank else []
    mean_square = _reduce(b, "ReduceMean", b.op("Mul", [x, x]), axes, keepdims=1)
    root = b.op("Sqrt", [b.op("Add", [mean_square, _scalar(b, epsilon, acc)])])
    normalized = b.op("Div", [x, root])
    scale_type = helper.np_dtype_to_tensor_dtype(_dtype(state, scale))
    if stash or scale_type != helper.np_dtype_to_tensor_dtype(acc):
        normalized = b.op("Cast", [normalized], to=scale_type)
    b.op("Mul", [normalized, scale], y_out)
    if inv_out:
        b.op("Reciprocal", [root], inv_out)


def expand_skip_layer_norm(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    simplified = node.op_type == "SkipSimplifiedLayerNormalization"
    if simplified:
        x, skip, gamma, bias = _args(node.input, 4)
        beta = ""
    else:
        x, skip, gamma, beta, bias = _args(node.input, 5)
    y, mean, inv, total_out = _args(node.output, 4)
    if simplified and mean:
        raise NotExpandable("SkipSimplifiedLayerNormalization has no mean output (onnxruntime leaves it unset)")
    epsilon = _attrs(node).get("epsilon", 1e-12)
    total = b.op("Add", [x, skip])
    if bias:
        total = b.op("Add", [total, bias])
    _copy(b, total, total_out)
    if simplified:
        _rms_norm(b, state, total, gamma, epsilon, y, inv, like=x)
    else:
        _layer_norm(b, total, gamma, beta, epsilon, [y, mean, inv])


def expand_simplified_layer_norm(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    attrs = _attrs(node)
    x, scale = node.input[:2]
    y, inv = _args(node.output, 2)
    _rms_norm(b, state, x, scale, attrs.get("epsilon", 1e-5), y, inv, attrs.get("axis", -1),
              attrs.get("stash_type", 1))


def expand_layer_norm(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    attrs = _attrs(node)
    x, scale, bias = _args(node.input, 3)
    _layer_norm(b, x, scale, bias, attrs.get("epsilon", 1e-5), node.output, attrs.get("axis", -1),
                attrs.get("stash_type", 1))


def expand_embed_layer_norm(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    ids, segment_ids, word, position, segment, gamma, beta, mask, position_ids = _args(node.input, 9)
    y, mask_index, embedding_sum = _args(node.output, 3)
    batch, length = _shape(state, ids, "input_ids", 2)
    if bool(segment_ids) != bool(segment):
        raise NotExpandable("segment_ids and segment_embedding must be given together")
    if not position_ids:
        position_ids = b.const(np.arange(length, dtype=np.int64)[None, :], "position_ids")
    total = b.op("Add", [b.op("Gather", [word, ids], axis=0), b.op("Gather", [position, position_ids], axis=0)])
    if segment:
        total = b.op("Add", [total, b.op("Gather", [segment, segment_ids], axis=0)])
    _copy(b, total, embedding_sum)
    _layer_norm(b, total, gamma, beta, _attrs(node).get("epsilon", 1e-12), [y])
    if mask_index and mask:
        b.op("Cast", [_reduce(b, "ReduceSum", mask, [1], keepdims=0)], mask_index, to=onnx.TensorProto.INT32)
    elif mask_index:  # onnxruntime reports zeros without a mask
        b.op("Identity", [b.const(np.zeros(batch, np.int32), "mask_index")], mask_index)


# --- attention ---------------------------------------------------------------------------------


def _mask_bias(b: Builder, state: "FoldedGraph", mask: str, batch: int, q_len: int, kv_len: int, fill: float,
               dtype: np.dtype) -> str:
    """``fill`` where ``mask`` masks a key, else 0, broadcastable to scores [batch, heads, q_len, kv_len]."""
    shape = _shape(state, mask, "the mask")
    if shape == (batch,):  # key lengths: right-side padding
        keys = b.const(np.arange(kv_len, dtype=np.int64)[None, :], "key_positions")
        lengths = b.unsqueeze(b.op("Cast", [mask], to=onnx.TensorProto.INT64), [1])
        keep, axes = b.op("Less", [keys, lengths]), [1, 2]
    elif shape == (batch, kv_len):
        keep, axes = b.op("Greater", [mask, b.const(np.zeros((), _dtype(state, mask)), "zero")]), [1, 2]
    elif shape == (batch, q_len, kv_len):
        keep, axes = b.op("Greater", [mask, b.const(np.zeros((), _dtype(state, mask)), "zero")]), [1]
    else:
        raise NotExpandable(f"mask shape {list(shape)} (supported: [batch], [batch, kv_length], "
                            f"[batch, q_length, kv_length] with batch {batch}, q_length {q_len}, kv_length {kv_len})")
    bias = b.op("Where", [keep, _scalar(b, 0.0, dtype), _scalar(b, fill, dtype)])
    return b.unsqueeze(bias, axes)


def _heads(b: Builder, x: str, heads: int, size: int) -> str:
    """[batch, length, heads * size] -> [batch, heads, length, size]."""
    return b.transpose(b.op("Reshape", [x, b.ints([0, 0, heads, size], "shape")]), [0, 2, 1, 3])


def _attend(b: Builder, q: str, k_heads: str, v_heads: str, heads: int, q_size: int, v_size: int, scale: float,
            biases: Sequence[str], dtype: np.dtype, out: str) -> None:
    """softmax(Q K^T scale + biases) V per head, back to [batch, length, heads * v_size]."""
    scores = b.op("MatMul", [_heads(b, q, heads, q_size), b.transpose(k_heads, [0, 1, 3, 2])])
    scores = b.op("Mul", [scores, _scalar(b, scale, dtype)])
    for bias in biases:
        scores = b.op("Add", [scores, bias])
    context = b.op("MatMul", [b.op("Softmax", [scores], axis=-1 if b.opset >= 13 else 3), v_heads])
    b.op("Reshape", [b.transpose(context, [0, 2, 1, 3]), b.ints([0, 0, heads * v_size], "shape")], out)


def _score_biases(b: Builder, state: "FoldedGraph", attrs: dict[str, Any], mask: str, attention_bias: str,
                  batch: int, q_len: int, kv_len: int, dtype: np.dtype) -> list[str]:
    fill = attrs.get("mask_filter_value", _DEFAULT_MASK_FILTER)
    biases = [_mask_bias(b, state, mask, batch, q_len, kv_len, fill, dtype)] if mask else []
    if attrs.get("unidirectional", 0):
        if q_len != kv_len:
            raise NotExpandable(f"unidirectional attention of {q_len} queries over {kv_len} keys (onnxruntime's "
                                "causal mask for unequal lengths is not matched)")
        # onnxruntime leaves the keys after each query out entirely: the lowest value, not mask_filter_value.
        causal = np.triu(np.ones((q_len, kv_len), bool), 1)
        biases.append(b.const(np.where(causal, np.finfo(dtype).min, 0).astype(dtype), "causal_mask"))
    if attention_bias:
        biases.append(attention_bias)
    return biases


def _head_size(hidden: int, heads: int, label: str) -> int:
    if heads <= 0 or hidden % heads:
        raise NotExpandable(f"the {label} hidden size {hidden} is not a multiple of num_heads {heads}")
    return hidden // heads


def _scale(attrs: dict[str, Any], q_size: int) -> float:
    scale = attrs.get("scale", 0.0)
    return scale if scale else 1 / math.sqrt(q_size)  # 0 (onnxruntime's "unset") means 1/sqrt(head size)


def expand_attention(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    x, weights, bias, mask, past, attention_bias, past_length = _args(node.input, 7)
    out, present = _args(node.output, 2)
    attrs = _attrs(node)
    if past or present or past_length or attrs.get("past_present_share_buffer", 0):
        raise NotExpandable("past/present state is not supported")
    if attrs.get("do_rotary", 0):
        raise NotExpandable("do_rotary is not supported")
    batch, length, _ = _shape(state, x, "input", 3)
    projected = _shape(state, weights, "weights", 2)[1]
    sizes = list(attrs.get("qkv_hidden_sizes", [])) or [projected // 3] * 3
    if len(sizes) != 3 or sizes[0] != sizes[1] or sum(sizes) != projected:
        raise NotExpandable(f"qkv_hidden_sizes {sizes} do not split the {projected} projected columns as Q=K, V")
    heads = attrs["num_heads"]
    q_size, v_size = _head_size(sizes[0], heads, "Q/K"), _head_size(sizes[2], heads, "V")
    dtype = _dtype(state, x)
    qkv = b.op("MatMul", [x, weights])
    if bias:
        qkv = b.op("Add", [qkv, bias])
    q, k, v = b.split(qkv, sizes, 2)
    biases = _score_biases(b, state, attrs, mask, attention_bias, batch, length, length, dtype)
    _attend(b, q, _heads(b, k, heads, q_size), _heads(b, v, heads, v_size), heads, q_size, v_size,
            _scale(attrs, q_size), biases, dtype, out)


def expand_multi_head_attention(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    query, key, value, bias, mask, attention_bias, past_key, past_value, past_length, indirection = \
        _args(node.input, 10)
    out, present_key, present_value, qk = _args(node.output, 4)
    attrs = _attrs(node)
    if past_key or past_value or past_length or indirection:
        raise NotExpandable("past state (past_key/past_value/past_sequence_length/cache_indirection) "
                            "is not supported")
    if qk:
        raise NotExpandable("the qk output is not supported")
    if not key or not value:
        raise NotExpandable("packed QKV (no key/value inputs) is not supported")
    batch, q_len, q_hidden = _shape(state, query, "query (packed QKV is not supported)", 3)
    _, kv_len, k_hidden = _shape(state, key, "key (packed KV or past-style BNSH keys are not supported)", 3)
    v_hidden = _shape(state, value, "value (BNSH values are not supported)", 3)[2]
    heads = attrs["num_heads"]
    q_size, v_size = _head_size(q_hidden, heads, "query"), _head_size(v_hidden, heads, "value")
    if k_hidden != q_hidden:
        raise NotExpandable(f"key hidden size {k_hidden} differs from the query's {q_hidden}")
    dtype = _dtype(state, query)
    if bias:
        q_bias, k_bias, v_bias = b.split(bias, [q_hidden, k_hidden, v_hidden], 0)
        query, key, value = b.op("Add", [query, q_bias]), b.op("Add", [key, k_bias]), b.op("Add", [value, v_bias])
    k_heads, v_heads = _heads(b, key, heads, q_size), _heads(b, value, heads, v_size)
    _copy(b, k_heads, present_key)
    _copy(b, v_heads, present_value)
    biases = _score_biases(b, state, attrs, mask, attention_bias, batch, q_len, kv_len, dtype)
    _attend(b, query, k_heads, v_heads, heads, q_size, v_size, _scale(attrs, q_size), biases, dtype, out)


# --- rotary embedding --------------------------------------------------------------------------------


def expand_rotary_embedding(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    x, position_ids, cos_cache, sin_cache = node.input
    attrs = _attrs(node)
    if attrs.get("is_packed_batching", 0):
        raise NotExpandable("is_packed_batching is not supported")
    shape = _shape(state, x, "input")
    half = _shape(state, cos_cache, "cos_cache", 2)[1]
    rotated = attrs.get("rotary_embedding_dim", 0) or 2 * half
    if len(shape) == 4:  # [batch, heads, length, head]
        length, head, seq_axis = shape[2], shape[3], 2
        heads_x = x
    elif len(shape) == 3:  # [batch, length, heads * head]
        heads = attrs.get("num_heads", 0) or shape[2] // (2 * half)
        length, head, seq_axis = shape[1], _head_size(shape[2], heads, "input"), 1
        heads_x = b.op("Reshape", [x, b.ints([0, 0, heads, head], "shape")])
    else:
        raise NotExpandable(f"input of rank {len(shape)} (3 or 4 expected)")
    if rotated > head or rotated % 2 or rotated // 2 != half:
        # onnxruntime reads a cache wider than rotary_embedding_dim / 2 by rows of that width: not followed.
        raise NotExpandable(f"rotary_embedding_dim {rotated} does not fit head size {head} and cos/sin cache "
                            f"width {half}")
    positions = b.op("Cast", [position_ids], to=onnx.TensorProto.INT64)
    if _shape(state, position_ids, "position_ids") in ((), (1,)):  # the first position; the others follow it
        positions = b.op("Add", [positions, b.const(np.arange(length, dtype=np.int64)[None, :], "positions")])
    trig = []
    for cache in (cos_cache, sin_cache):
        table = b.op("Gather", [cache, positions], axis=0)  # [batch | 1, length, half]
        trig.append(b.unsqueeze(table, [1 if seq_axis == 2 else 2]))
    cos, sin = trig
    part = b.slice(heads_x, 0, rotated, 3)
    if attrs.get("interleaved", 0):  # (x0, x1), (x2, x3), ... are the pairs
        pairs = b.op("Reshape", [part, b.ints([0, 0, 0, rotated // 2, 2], "shape")])
        first, second = b.gather(pairs, 0, 4), b.gather(pairs, 1, 4)
    else:  # the halves are the pairs
        first, second = b.slice(part, 0, rotated // 2, 3), b.slice(part, rotated // 2, rotated, 3)
    out_first = b.op("Sub", [b.op("Mul", [first, cos]), b.op("Mul", [second, sin])])
    out_second = b.op("Add", [b.op("Mul", [second, cos]), b.op("Mul", [first, sin])])
    if attrs.get("interleaved", 0):
        result = b.op("Reshape", [b.stack([out_first, out_second], 4), b.ints([0, 0, 0, rotated], "shape")])
    else:
        result = b.concat([out_first, out_second], 3)
    if rotated < head:
        result = b.concat([result, b.slice(heads_x, rotated, head, 3)], 3)
    b.op("Reshape", [result, b.ints(list(shape), "shape")], node.output[0])


EXPANDERS: dict[str, Callable[[onnx.NodeProto, "FoldedGraph", Builder], None]] = {
    "Gelu": expand_gelu, "BiasGelu": expand_bias_gelu, "FastGelu": expand_fast_gelu, "QuickGelu": expand_quick_gelu,
    "BiasAdd": expand_bias_add, "FusedMatMul": expand_fused_matmul, "FusedConv": expand_fused_conv,
    "FusedGemm": expand_fused_gemm, "SkipLayerNormalization": expand_skip_layer_norm,
    "SkipSimplifiedLayerNormalization": expand_skip_layer_norm,
    "SimplifiedLayerNormalization": expand_simplified_layer_norm, "LayerNormalization": expand_layer_norm,
    "EmbedLayerNormalization": expand_embed_layer_norm, "Attention": expand_attention,
    "MultiHeadAttention": expand_multi_head_attention, "RotaryEmbedding": expand_rotary_embedding,
    "MatMulNBits": expand_matmul_nbits,
}
