"""Stateful sequence ops: CausalConvWithState and LinearAttention (opset 27).

CausalConvWithState is a depthwise 1-D convolution over ``concat(past_state or
zeros, input)`` along time (one sum-reduction over the kernel taps, bias and the
optional SiLU in its epilogue); ``present_state`` is the last ``k - 1`` steps of
that concatenation, read in place without materializing it.

LinearAttention is a recurrence over time: per step ``t`` the KV-head state
``S (d_k x d_v)`` is decayed (``gated``: ``exp(g_t)``, per key dim or per head),
delta-corrected (``delta``: the written value is ``beta_t * (v_t - S^T k_t)``),
updated with ``k_t ⊗ v_t`` and read by the step's queries (GQA: query head ``h``
reads KV head ``h // group``). The lowering unrolls the steps at compile time
(the delta rules' writes read the previous state, so steps are sequential):
each step is a few small computations, so sequences longer than ``MAX_STEPS``
are refused rather than compiled into a huge kernel. Like onnx's
reference, the state and all arithmetic are float32 whatever the input types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from compiler.dtypes import DType
from compiler.loopir.expr import Buffer, Const, Expr, call, cast, compare, const, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop

#: The longest LinearAttention sequence unrolled into per-step computations.
MAX_STEPS = 128

_ACTIVATIONS = ("none", "silu", "swish")
_UPDATE_RULES = ("linear", "gated", "delta", "gated_delta")


def causal_conv_with_state(ctx: LoweringContext) -> list[Tensor]:
    x, weight = ctx.input(0), ctx.input(1)
    bias = ctx.input(2) if ctx.has_input(2) else None
    past = ctx.input(3) if ctx.has_input(3) else None
    activation = ctx.attr("activation", "none")
    if activation not in _ACTIVATIONS:
        ctx.unsupported(f"activation '{activation}' (one of {', '.join(_ACTIVATIONS)})")
    if x.rank != 3 or weight.rank != 3:
        ctx.unsupported(f"input and weight must be rank 3 (got {x.shape}, {weight.shape})")
    batch, channels, length = x.shape
    taps = weight.shape[2]
    carry = taps - 1
    if weight.shape[:2] != (channels, 1):
        ctx.unsupported(f"weight shape {weight.shape} is not (channels={channels}, 1, k)")
    if past is not None and past.shape != (batch, channels, carry):
        ctx.unsupported(f"past_state shape {past.shape} is not {(batch, channels, carry)}")
    work = DType.F32

    def padded(b: Expr, c: Expr, t: Expr) -> Expr:
        """Step ``t`` of concat(past_state or zeros, input) along time."""
        new = x[b, c, max_(t - carry, Const(0))]
        if carry == 0:
            return new
        old = past[b, c, min_(t, Const(carry - 1))] if past is not None else const(0.0, x.dtype)
        return select(compare("lt", t, carry), old, new)

    def finish(acc: Expr, i: Index) -> Expr:
        v = acc + cast(bias[i[1]], work) if bias is not None else acc
        if activation != "none":
            v = v / (const(1.0, work) + call("exp", -v))  # SiLU: v * sigmoid(v)
        return cast(v, x.dtype)

    out = ctx.reduce(x.shape, [taps], lambda i, r: cast(weight[i[1], 0, r[0]], work) *
                     cast(padded(i[0], i[1], i[2] + r[0]), work), "sum", finish, name="causal_conv")
    present = ctx.compute((batch, channels, carry), lambda i: padded(i[0], i[1], i[2] + length), dtype=x.dtype,
                          name="conv_state")
    return [out, present]


StateReader = Callable[[Expr, Expr, Expr, Expr], Expr]


def _reader(state: Tensor) -> StateReader:
    return lambda b, h, d, m: cast(state[b, h, d, m], DType.F32)


@dataclass(frozen=True)
class _Recurrence:
    """LinearAttention's operands, with readers of one step's rows in float32."""

    q: Tensor
    k: Tensor
    v: Tensor
    decay: Tensor | None
    beta: Tensor | None
    kv_heads: int
    group: int
    dk: int
    dv: int

    def key(self, b: Expr, t: int, h: Expr, d: Expr) -> Expr:
        return cast(self.k[b, t, h * self.dk + d], DType.F32)

    def value(self, b: Expr, t: int, h: Expr, m: Expr) -> Expr:
        return cast(self.v[b, t, h * self.dv + m], DType.F32)

    def gate(self, b: Expr, t: int, h: Expr, d: Expr) -> Expr:
        """exp(g_t): per KV head, or per key dim."""
        g = self.decay[b, t, h] if self.decay.shape[2] == self.kv_heads else self.decay[b, t, h * self.dk + d]
        return call("exp", cast(g, DType.F32))

    def rate(self, b: Expr, t: int, h: Expr) -> Expr:
        """beta_t: per KV head, or one for all heads."""
        return cast(self.beta[b, t, h if self.beta.shape[2] == self.kv_heads else Const(0)], DType.F32)

    def step(self, ctx: LoweringContext, t: int, prev: StateReader, out: Buffer, scale: float) -> Tensor:
        """Step ``t``: the new state (returned) from ``prev``, and the step's output row written into ``out``."""
        batch = self.q.shape[0]

        def decayed(b: Expr, h: Expr, d: Expr, m: Expr) -> Expr:
            s = prev(b, h, d, m)
            return s if self.decay is None else s * self.gate(b, t, h, d)

        written: Callable[[Expr, Expr, Expr], Expr] = lambda b, h, m: self.value(b, t, h, m)  # noqa: E731
        if self.beta is not None:
            # The delta rule writes beta_t * (v_t - S^T k_t), S the decayed previous state.
            retrieved = ctx.reduce((batch, self.kv_heads, self.dv), [self.dk],
                                   lambda i, r: decayed(i[0], i[1], r[0], i[2]) * self.key(i[0], t, i[1], r[0]),
                                   "sum", lambda a, i: self.rate(i[0], t, i[1]) * (self.value(i[0], t, i[1], i[2]) - a),
                                   name="la_delta", materialize=True)
            written = lambda b, h, m: retrieved[b, h, m]  # noqa: E731
        state = ctx.compute((batch, self.kv_heads, self.dk, self.dv),
                            lambda i: decayed(*i) + self.key(i[0], t, i[1], i[2]) * written(i[0], i[1], i[3]),
                            dtype=DType.F32, name="la_state", materialize=True)

        def read(i: Index, r: Index) -> Expr:
            head = i[1] // self.dv
            return cast(self.q[i[0], t, head * self.dk + r[0]], DType.F32) * \
                state[i[0], head // self.group, r[0], i[1] % self.dv]

        row = ctx.reduce((batch, self.q.shape[2] // self.dk * self.dv), [self.dk], read, "sum",
                         lambda a, i: cast(a * const(scale, DType.F32), out.dtype), name="la_out", materialize=True)
        ctx.write_region(out, (0, t, 0), (batch, 1, row.shape[1]), lambda i: row[i[0], i[2]])
        return state


def linear_attention(ctx: LoweringContext) -> list[Tensor]:
    q, k, v = ctx.input(0), ctx.input(1), ctx.input(2)
    past, decay, beta = (ctx.input(i) if ctx.has_input(i) else None for i in (3, 4, 5))
    rule = ctx.attr("update_rule", "gated_delta")
    if rule not in _UPDATE_RULES:
        ctx.unsupported(f"update_rule '{rule}' (one of {', '.join(_UPDATE_RULES)})")
    gating, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if gating != (decay is not None) or delta != (beta is not None):
        ctx.unsupported(f"update_rule '{rule}' {'needs' if gating else 'forbids'} decay and "
                        f"{'needs' if delta else 'forbids'} beta")
    q_heads, kv_heads = int(ctx.attr("q_num_heads", 0) or 0), int(ctx.attr("kv_num_heads", 0) or 0)
    if q_heads <= 0 or kv_heads <= 0 or q_heads % kv_heads:
        ctx.unsupported(f"q_num_heads={q_heads} must be a positive multiple of kv_num_heads={kv_heads}")
    if not q.rank == k.rank == v.rank == 3 or q.shape[2] % q_heads or v.shape[2] % kv_heads:
        ctx.unsupported(f"query/key/value must be (B, T, heads * head_size) (got {q.shape}, {k.shape}, {v.shape})")
    batch, steps, _ = q.shape
    dk, dv = q.shape[2] // q_heads, v.shape[2] // kv_heads
    if k.shape != (batch, steps, kv_heads * dk) or v.shape[:2] != (batch, steps):
        ctx.unsupported(f"key/value shapes {k.shape}, {v.shape} do not match query {q.shape}")
    if steps > MAX_STEPS:
        ctx.unsupported(f"sequence length {steps} > {MAX_STEPS}: the recurrence is unrolled per step")
    state_shape = (batch, kv_heads, dk, dv)
    if past is not None and past.shape != state_shape:
        ctx.unsupported(f"past_state shape {past.shape} is not {state_shape}")
    if decay is not None and (decay.shape[:2] != (batch, steps) or decay.shape[2] not in (kv_heads, kv_heads * dk)):
        ctx.unsupported(f"decay shape {decay.shape}: must be (B, T, kv_num_heads or kv_num_heads * d_k)")
    if beta is not None and (beta.shape[:2] != (batch, steps) or beta.shape[2] not in (kv_heads, 1)):
        ctx.unsupported(f"beta shape {beta.shape}: must be (B, T, kv_num_heads or 1)")
    scale = float(ctx.attr("scale", 0.0) or 0.0) or 1.0 / math.sqrt(dk)

    recurrence = _Recurrence(q, k, v, decay, beta, kv_heads, q_heads // kv_heads, dk, dv)
    state: StateReader = _reader(past) if past is not None else (lambda b, h, d, m: const(0.0, DType.F32))
    out = ctx.temp((batch, steps, q_heads * dv), q.dtype, "linear_attention")
    for t in range(steps):
        state = _reader(recurrence.step(ctx, t, state, out, scale))
    state_type = past.dtype if past is not None else q.dtype
    present = ctx.compute(state_shape, lambda i: cast(state(*i), state_type), dtype=state_type, name="la_present")
    return [Tensor(out), present]


OPS: list[OpDef] = [
    defop("CausalConvWithState", causal_conv_with_state, since=27),
    defop("LinearAttention", linear_attention, since=27),
]
