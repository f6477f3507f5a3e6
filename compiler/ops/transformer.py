"""Transformer-block helpers: RotaryEmbedding (opset 23) and SwiGLU (opset 28).

RotaryEmbedding rotates pairs of each head's first ``rotary_embedding_dim``
channels (the two halves, or even/odd neighbours when ``interleaved``) by the
angle whose cos/sin the caches hold for the token's position (``position_ids``
gathers cache rows; without it the caches are already per ``(batch, seq)``).
The remaining channels pass through. Input is 4-D ``(batch, heads, seq, head)``
or 3-D ``(batch, seq, heads * head)`` with ``num_heads``. Half-precision inputs
are computed in float32 and rounded once when stored.

SwiGLU is ``A * sigmoid(alpha * A) * B`` on equal-shaped inputs.
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, call, cast, compare, const, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def _work_type(dtype: DType) -> DType:
    return DType.F64 if dtype is DType.F64 else DType.F32


def rotary_embedding(ctx: LoweringContext) -> list[Tensor]:
    x, cos_cache, sin_cache = ctx.input(0), ctx.input(1), ctx.input(2)
    positions = ctx.input(3) if ctx.has_input(3) else None
    if x.rank == 4:
        head = x.shape[3]
    elif x.rank == 3:
        heads = int(ctx.attr("num_heads", 0) or 0)
        if heads <= 0 or x.shape[2] % heads:
            ctx.unsupported(f"3-D input of hidden size {x.shape[2]} needs num_heads dividing it (got {heads})")
        head = x.shape[2] // heads
    else:
        ctx.unsupported(f"input must be 3-D or 4-D (got rank {x.rank})")
    rotary = int(ctx.attr("rotary_embedding_dim", 0) or 0) or head
    if rotary > head or rotary % 2:
        ctx.unsupported(f"rotary_embedding_dim={rotary} must be even and at most the head size {head}")
    half = rotary // 2
    if cos_cache.shape[-1] != half or sin_cache.shape[-1] != half:
        ctx.unsupported(f"cache last dims {cos_cache.shape[-1]}, {sin_cache.shape[-1]} must be "
                        f"rotary_embedding_dim/2 = {half}")
    interleaved = bool(ctx.attr("interleaved", 0))
    work = _work_type(x.dtype)

    def y(i: Index) -> Expr:
        # (batch, seq) of the token, the channel within its head, and a reader of that head's channels.
        if x.rank == 4:
            b, s, d = i[0], i[2], i[3]
            channel = lambda c: x[i[0], i[1], i[2], c]  # noqa: E731
        else:
            b, s, d = i[0], i[1], i[2] % head
            channel = lambda c: x[i[0], i[1], i[2] - d + c]  # noqa: E731
        inside = min_(d, Const(rotary - 1))  # keeps the pass-through channels' (unused) reads in bounds
        if interleaved:
            k, first = inside // 2, compare("eq", inside % 2, 0)
            x1, x2 = channel(k * 2), channel(k * 2 + 1)
        else:
            k, first = inside % half, compare("lt", inside, half)
            x1, x2 = channel(k), channel(k + half)
        if positions is not None:
            row = (min_(max_(positions[b, s], Const(0)), Const(cos_cache.shape[0] - 1)),)
        else:
            row = (b, s)
        cos, sin = cast(cos_cache[(*row, k)], work), cast(sin_cache[(*row, k)], work)
        x1, x2 = cast(x1, work), cast(x2, work)
        rotated = cast(select(first, cos * x1 - sin * x2, sin * x1 + cos * x2), x.dtype)
        return rotated if rotary == head else select(compare("lt", d, rotary), rotated, x[i])

    return [ctx.compute(x.shape, y, dtype=x.dtype, name="rotary")]


def swiglu(ctx: LoweringContext) -> list[Tensor]:
    a, b = ctx.input(0), ctx.input(1)
    if a.shape != b.shape or a.dtype is not b.dtype:
        ctx.unsupported(f"A and B must have one shape and type (got {a.shape} {a.dtype.value}, "
                        f"{b.shape} {b.dtype.value})")
    alpha = float(ctx.attr("alpha", 1.0))
    work = _work_type(a.dtype)

    def y(i: Index) -> Expr:
        v = cast(a[i], work)
        gate = const(1.0, work) / (const(1.0, work) + call("exp", -(v * const(alpha, work))))
        return cast(v * gate * cast(b[i], work), a.dtype)

    return [ctx.compute(a.shape, y, dtype=a.dtype, name="swiglu")]


OPS: list[OpDef] = [
    defop("RotaryEmbedding", rotary_embedding, since=23),
    defop("SwiGLU", swiglu, "elementwise", since=28),
]
