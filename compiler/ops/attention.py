"""Scaled dot-product attention: ONNX Attention (opsets 23-25) and ai.onnx.preview FlexAttention.

Lowered as the spec's pattern, one declarative step each:

* ``scores[b, h, i, j] = softcap(sum_d (Q*sqrt(scale))[b,h,i,d] * (K*sqrt(scale))[b,h/g,j,d]) + bias``
  where ``g`` is the GQA group (query heads per KV head) and ``bias`` is 0 where
  key ``j`` is attendable and ``-inf`` where it is not (or the float mask value);
* a max and a sum-of-exp reduction per row, and the normalized probabilities;
* ``Y[b, h, i, e] = sum_j probs[b,h,i,j] * V[b,h/g,j,e]``.

3-D inputs (``batch, sequence, heads * head_size``) are read in place through
``_Heads``; no transpose is materialized. ``past_key``/``past_value`` are
concatenated with K/V into the ``present_*`` tensors, which the scores then read.

The bias combines ``attn_mask`` (bool: True attends; float: added; a last dim
shorter than the total sequence is padded with "masked"), ``is_causal``
(bottom-right aligned: ``j <= i + offset``), the opset-25 sliding window and the
opset-24 ``nonpad_kv_seqlen`` padding. ``offset`` is the past length, or
``nonpad_kv_seqlen[b] - q_len`` for an external cache, else 0. A row whose bias
is all ``-inf`` (no attendable key) yields zero probabilities and a zero output
row, as the spec and onnx's reference require, even when its logits are NaN.

Precision: half-precision inputs are computed in float32 and rounded once when
stored (like the normalizations' ``stash_type``); softmax runs in float64 when
``softmax_precision`` (or the input type) is double, else in float32.
``qk_matmul_output`` follows the spec: mode 0 the raw ``Q·K^T`` (scaled), 1 after
softcap, 2 after adding the bias, 3 the probabilities, cast to the input type.

FlexAttention is the same core without masks (4-D, GQA, ``softmax_precision``);
a node with ``score_mod``/``prob_mod`` subgraphs never gets here: the frontend
inlines its schema's function body instead (compiler/frontend/functions.py), so
the lowering refuses them only in graphs built without the frontend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import ml_dtypes
import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Expr, call, cast, compare, const, logical_and, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop

Bias = Callable[[Expr, Expr, Expr, Expr], Expr]

_Y, _PRESENT_KEY, _PRESENT_VALUE, _QK_OUTPUT = range(4)


@dataclass(frozen=True)
class _Heads:
    """Q, K or V read as ``(batch, heads, sequence, head_size)`` whether stored 4-D or 3-D
    (``batch, sequence, heads * head_size``)."""

    tensor: Tensor
    shape: tuple[int, int, int, int]

    def at(self, b: Expr, h: Expr, s: Expr, d: Expr) -> Expr:
        if self.tensor.rank == 4:
            return self.tensor[b, h, s, d]
        return self.tensor[b, s, h * self.shape[3] + d]


def heads_view(ctx: LoweringContext, t: Tensor, heads_attr: str) -> _Heads:
    if t.rank == 4:
        return _Heads(t, t.shape)
    heads = int(ctx.attr(heads_attr, 0) or 0)
    if t.rank != 3 or heads <= 0:
        ctx.unsupported(f"inputs must be 4-D, or 3-D with the {heads_attr} attribute (got rank {t.rank})")
    if t.shape[2] % heads:
        ctx.unsupported(f"hidden size {t.shape[2]} is not a multiple of {heads_attr}={heads}")
    return _Heads(t, (t.shape[0], heads, t.shape[1], t.shape[2] // heads))


def round_to(value: float, dtype: DType) -> float:
    """``value`` as the nearest number of ``dtype`` (the spec casts scale factors to the input type)."""
    numpy_type = ml_dtypes.bfloat16 if dtype is DType.BF16 else dtype.numpy
    return float(np.asarray(value, np.float64).astype(numpy_type))


def output_wanted(ctx: LoweringContext, k: int) -> bool:
    """Whether the node has output ``k``: an omitted output in the middle is a placeholder of shape (0,)."""
    return k < len(ctx.node.outputs) and ctx.output_type(k).numel > 0


def softmax_rows(ctx: LoweringContext, scores: Tensor, blocked: Tensor | None, dtype: DType) -> Tensor:
    """Row softmax of the 4-D ``scores`` over the last axis, in ``dtype``; rows where ``blocked`` holds
    (no attendable key) are all zero. Like onnx's reference, an all ``-inf`` row does not produce NaN."""
    rows, length = scores.shape[:3], scores.shape[3]
    peak = ctx.reduce(rows, [length], lambda i, r: scores[(*i, r[0])], "max",
                      lambda a, i: select(compare("eq", a, -math.inf), const(0.0, a.dtype), a),
                      name="attn_max", materialize=True)
    total = ctx.reduce(rows, [length], lambda i, r: call("exp", scores[(*i, r[0])] - peak[i]), "sum",
                       lambda a, i: select(compare("eq", a, 0.0), const(1.0, a.dtype), a),
                       name="attn_sum", materialize=True)

    def prob(i: Index) -> Expr:
        row = i[:3]
        p = cast(call("exp", scores[i] - peak[row]) / total[row], dtype)
        return p if blocked is None else select(blocked[row], const(0.0, dtype), p)

    return ctx.compute(scores.shape, prob, dtype=dtype, name="attn_probs", materialize=True)


def attend(ctx: LoweringContext, probs: Tensor, values: _Heads, group: int, out_3d: bool, dtype: DType) -> Tensor:
    """``Y = probs @ V`` (KV head ``h // group`` for query head ``h``), 4-D or in the 3-D input layout."""
    batch, heads, q_len, kv_len = probs.shape
    dv = values.shape[3]
    shape = (batch, q_len, heads * dv) if out_3d else (batch, heads, q_len, dv)

    def product(i: Index, r: Index) -> Expr:
        b, h, s, e = (i[0], i[2] // dv, i[1], i[2] % dv) if out_3d else i
        return probs[b, h, s, r[0]] * cast(values.at(b, h // group, r[0], e), probs.dtype)

    return ctx.reduce(shape, [kv_len], product, "sum", lambda a, i: cast(a, dtype), name="attn_y")


def _present(ctx: LoweringContext, past: Tensor | None, new: _Heads, name: str) -> _Heads:
    """``concat(past, new)`` along the sequence axis, as the 4-D present cache (``new`` alone without past)."""
    if past is None:
        return new
    b, h, length, d = new.shape
    if past.rank != 4 or (past.shape[0], past.shape[1], past.shape[3]) != (b, h, d):
        ctx.unsupported(f"{name}: past shape {past.shape} does not match the new entries {new.shape}")
    total = ctx.temp((b, h, past.shape[2] + length, d), new.tensor.dtype, name)
    ctx.write_region(total, (0, 0, 0, 0), past.shape, lambda i: past[i])
    ctx.write_region(total, (0, 0, past.shape[2], 0), new.shape, lambda i: new.at(*i))
    return _Heads(Tensor(total), total.shape)


def _bias(ctx: LoweringContext, q_len: int, kv_len: int, past_len: int, dtype: DType) -> Bias | None:
    """The additive bias ``(b, h, i, j) -> 0 | mask value | -inf`` in ``dtype`` (None when nothing is masked)."""
    mask = ctx.input(3) if ctx.has_input(3) else None
    nonpad = ctx.input(6) if ctx.has_input(6) else None
    causal = bool(ctx.attr("is_causal", 0))
    left, right = int(ctx.attr("left_window_size", -1)), int(ctx.attr("right_window_size", -1))
    if left < -1 or right < -1:
        ctx.unsupported(f"window sizes must be -1 or nonnegative (left={left}, right={right})")
    if mask is not None and (mask.rank > 4 or mask.shape[-1] > kv_len):
        ctx.unsupported(f"attn_mask of shape {mask.shape} does not fit the scores' (..., {q_len}, {kv_len})")
    if mask is None and nonpad is None and not causal and left < 0 and right < 0:
        return None
    minus_inf = const(-math.inf, dtype)

    def bias(b: Expr, h: Expr, i: Expr, j: Expr) -> Expr:
        # The query's absolute position: the keys before the query block precede it.
        position = i + (nonpad[b] - q_len if nonpad is not None else past_len)
        allowed = []
        if causal:
            allowed.append(compare("le", j, position))
        if left >= 0:
            allowed.append(compare("le", position - j, left))
        if right >= 0:
            allowed.append(compare("le", j - position, right))
        if nonpad is not None:
            allowed.append(compare("lt", j, nonpad[b]))
        value = const(0.0, dtype)
        if mask is not None:
            mask_len = mask.shape[-1]
            if mask_len < kv_len:  # keys past the mask's end are masked
                allowed.append(compare("lt", j, mask_len))
                j = min_(j, mask_len - 1)
            m = mask.at_broadcast((b, h, i, j))
            value = select(m, value, minus_inf) if m.dtype is DType.BOOL else cast(m, dtype)
        condition = None
        for c in allowed:
            condition = c if condition is None else logical_and(condition, c)
        return value if condition is None else select(condition, value, minus_inf)

    return bias


def attention(ctx: LoweringContext) -> list[Tensor]:
    q_in, k_in, v_in = ctx.input(0), ctx.input(1), ctx.input(2)
    dtype = q_in.dtype
    if not dtype.is_float or k_in.dtype is not dtype or v_in.dtype is not dtype:
        ctx.unsupported(f"Q, K, V must share one float type (got {q_in.dtype.value}, {k_in.dtype.value}, "
                        f"{v_in.dtype.value})")
    if not q_in.rank == k_in.rank == v_in.rank:
        ctx.unsupported(f"Q, K, V ranks differ ({q_in.rank}, {k_in.rank}, {v_in.rank})")
    if q_in.rank == 4 and ctx.opset >= 25 and (ctx.attr("q_num_heads") or ctx.attr("kv_num_heads")):
        ctx.unsupported("q_num_heads/kv_num_heads are only allowed with 3-D inputs (opset 25)")
    q = heads_view(ctx, q_in, "q_num_heads")
    past_key = ctx.input(4) if ctx.has_input(4) else None
    past_value = ctx.input(5) if ctx.has_input(5) else None
    if (past_key is None) != (past_value is None):
        ctx.unsupported("past_key and past_value must be given together")
    if past_key is not None and ctx.has_input(6):
        ctx.unsupported("nonpad_kv_seqlen cannot be combined with past_key/past_value")
    keys = _present(ctx, past_key, heads_view(ctx, k_in, "kv_num_heads"), "present_key")
    values = _present(ctx, past_value, heads_view(ctx, v_in, "kv_num_heads"), "present_value")

    batch, q_heads, q_len, head_size = q.shape
    kv_heads, kv_len = keys.shape[1], keys.shape[2]
    if keys.shape[0] != batch or values.shape[:3] != keys.shape[:3] or keys.shape[3] != head_size:
        ctx.unsupported(f"inconsistent Q/K/V shapes {q.shape}, {keys.shape}, {values.shape}")
    if q_heads % kv_heads:
        ctx.unsupported(f"q_num_heads={q_heads} is not a multiple of kv_num_heads={kv_heads}")
    group = q_heads // kv_heads

    work = DType.F64 if dtype is DType.F64 else DType.F32
    precision = ctx.attr("softmax_precision")
    softmax_type = DType.F64 if (precision is not None and DType.from_onnx(int(precision)) is DType.F64) \
        or work is DType.F64 else DType.F32
    scale = ctx.attr("scale")
    root = const(round_to(math.sqrt(1.0 / math.sqrt(head_size) if scale is None else float(scale)), dtype), work)
    softcap = float(ctx.attr("softcap", 0.0) or 0.0)
    mode = int(ctx.attr("qk_matmul_output_mode", 0))
    if mode not in (0, 1, 2, 3):
        ctx.unsupported(f"qk_matmul_output_mode={mode} (0-3 are defined)")
    want_qk = output_wanted(ctx, _QK_OUTPUT)
    bias = _bias(ctx, q_len, kv_len, past_key.shape[2] if past_key is not None else 0, softmax_type)
    scores_shape = (batch, q_heads, q_len, kv_len)

    def cap(x: Expr) -> Expr:
        return const(softcap, x.dtype) * call("tanh", x / const(softcap, x.dtype)) if softcap > 0 else x

    def biased(logit: Expr, i: Index) -> Expr:
        s = cast(logit, softmax_type)
        return s if bias is None else s + bias(*i)

    def product(i: Index, r: Index) -> Expr:
        b, h, s, j = i
        return (cast(q.at(b, h, s, r[0]), work) * root) * (cast(keys.at(b, h // group, j, r[0]), work) * root)

    outputs: dict[int, Tensor] = {}
    if want_qk and mode in (0, 1):
        logits = ctx.reduce(scores_shape, [head_size], product, "sum",
                            (lambda a, i: cap(a)) if mode == 1 else None, name="attn_qk", materialize=True)
        outputs[_QK_OUTPUT] = ctx.compute(scores_shape, lambda i: cast(logits[i], dtype), dtype=dtype,
                                          name="attn_qk_out")
        after_cap = (lambda i: logits[i]) if mode == 1 else (lambda i: cap(logits[i]))
        scores = ctx.compute(scores_shape, lambda i: biased(after_cap(i), i), dtype=softmax_type,
                             name="attn_scores", materialize=True)
    else:
        scores = ctx.reduce(scores_shape, [head_size], product, "sum", lambda a, i: biased(cap(a), i),
                            name="attn_scores", materialize=True)
        if want_qk and mode == 2:
            outputs[_QK_OUTPUT] = ctx.compute(scores_shape, lambda i: cast(scores[i], dtype), dtype=dtype,
                                              name="attn_qk_out")

    blocked = None
    if bias is not None:  # any mask can leave a row without attendable keys
        blocked = ctx.reduce(scores_shape[:3], [kv_len], lambda i, r: bias(*i, r[0]), "max",
                             lambda a, i: compare("eq", a, -math.inf), name="attn_blocked", materialize=True)
    probs = softmax_rows(ctx, scores, blocked, work)
    if want_qk and mode == 3:
        outputs[_QK_OUTPUT] = ctx.compute(scores_shape, lambda i: cast(probs[i], dtype), dtype=dtype,
                                          name="attn_qk_out")
    outputs[_Y] = attend(ctx, probs, values, group, q_in.rank == 3, dtype)
    for k, cache in ((_PRESENT_KEY, keys), (_PRESENT_VALUE, values)):
        if output_wanted(ctx, k):
            outputs[k] = cache.tensor if past_key is not None else \
                ctx.compute(cache.shape, lambda i, c=cache: c.at(*i), dtype=dtype, name="attn_present")
    return [outputs.get(k) or _placeholder(ctx, k) for k in range(len(ctx.node.outputs))]


def _placeholder(ctx: LoweringContext, k: int) -> Tensor:
    """A value for an omitted (placeholder) output position: nothing reads it."""
    t = ctx.output_type(k)
    return ctx.compute(t.shape, lambda i: const(0, t.dtype), dtype=t.dtype, name="unused")


def flex_attention(ctx: LoweringContext) -> list[Tensor]:
    """ai.onnx.preview FlexAttention: 4-D GQA attention in ``softmax_precision``; score_mod/prob_mod
    subgraphs are refused (the frontend expands such nodes into their function body)."""
    for name in ("score_mod", "prob_mod"):
        if ctx.attr(name) is not None:
            ctx.unsupported(f"the {name} subgraph attribute is not supported")
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    dtype = q.dtype
    if not q.rank == k.rank == v.rank == 4:
        ctx.unsupported(f"Q, K, V must be rank 4 (got {q.shape}, {k.shape}, {v.shape})")
    batch, q_heads, q_len, head_size = q.shape
    kv_heads, kv_len = k.shape[1], k.shape[2]
    if k.shape[3] != head_size or v.shape[:3] != k.shape[:3] or k.shape[0] != batch or q_heads % kv_heads:
        ctx.unsupported(f"inconsistent Q/K/V shapes {q.shape}, {k.shape}, {v.shape}")
    group = q_heads // kv_heads
    precision = ctx.attr("softmax_precision")
    softmax_type = DType.from_onnx(int(precision)) if precision is not None else \
        DType.F64 if dtype is DType.F64 else DType.F32
    # Half-precision softmax is computed in float32 like the rest of the half-precision arithmetic.
    work = DType.F64 if softmax_type is DType.F64 else DType.F32
    scale = ctx.attr("scale")
    scale = 1.0 / math.sqrt(head_size) if scale is None else float(scale)
    # sqrt(scale) is taken in float32, then cast to the input type (as the reference does).
    root = const(round_to(round_to(math.sqrt(round_to(scale, DType.F32)), DType.F32), dtype), work)

    def product(i: Index, r: Index) -> Expr:
        b, h, s, j = i
        return (cast(q[b, h, s, r[0]], work) * root) * (cast(k[b, h // group, j, r[0]], work) * root)

    scores = ctx.reduce((batch, q_heads, q_len, kv_len), [head_size], product, "sum", name="flex_scores",
                        materialize=True)
    probs = softmax_rows(ctx, scores, None, work)
    return [attend(ctx, probs, _Heads(v, v.shape), group, False, dtype)]


OPS: list[OpDef] = [
    defop("Attention", attention, since=23),
    defop("FlexAttention", flex_attention, domain="ai.onnx.preview"),
]
