"""Conv (1-D to 3-D, groups, dilations, strides, pads, auto_pad) as one sum-reduction.

Padding is materialized once into a zero-bordered copy of the input, so the
reduction's inner loop has no bounds checks. Weights are repacked at compile
time to ``[C/group, k..., M]`` so output channels are contiguous: the default
schedule can then vectorize over channels (strided convs, small images) or
over output columns (stride 1), whichever fills the vector registers better.
"""

from __future__ import annotations

import numpy as np

from compiler.loopir.expr import Const, Expr, compare, const, logical_and, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def spatial_pads(ctx: LoweringContext, in_spatial: tuple[int, ...], out_spatial: tuple[int, ...],
                 kernel: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...]) -> list[int]:
    """Begin pads followed by end pads, resolving auto_pad as ONNX defines it."""
    rank = len(kernel)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for i in range(rank):
            total = max(0, (out_spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_spatial[i])
            small = total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        return begins + ends
    if auto_pad == "VALID":
        return [0] * (2 * rank)
    return list(ctx.attr("pads", [0] * (2 * rank)))


def pad_input(ctx: LoweringContext, x: Tensor, begins: list[int], ends: list[int], fill: float) -> tuple[Tensor, list[int]]:
    """A copy of ``x`` with ``fill`` around its spatial dims (dims 2..); returns it and the begin offsets left."""
    if not any(begins) and not any(ends):
        return x, begins
    rank = len(begins)
    shape = (*x.shape[:2], *(x.shape[2 + i] + begins[i] + ends[i] for i in range(rank)))

    def value(i: Index) -> Expr:
        src = [i[0], i[1]] + [i[2 + d] - begins[d] for d in range(rank)]
        inside = Const(True, x.dtype.BOOL)
        for d in range(rank):
            inside = logical_and(inside, logical_and(compare("ge", src[2 + d], 0),
                                                     compare("lt", src[2 + d], x.shape[2 + d])))
        clamped = [src[0], src[1]] + [_clamp(src[2 + d], x.shape[2 + d]) for d in range(rank)]
        return select(inside, x[clamped], const(fill, x.dtype))

    return ctx.compute(shape, value, dtype=x.dtype, name="padded", materialize=True), [0] * rank


def _clamp(e: Expr, n: int) -> Expr:
    return min_(max_(e, Const(0)), Const(n - 1))


def conv(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    w_value = ctx.const_input(1, "weights")
    out = ctx.output_type(0)
    rank = x.rank - 2
    kernel = tuple(w_value.shape[2:])
    strides = tuple(ctx.attr("strides", [1] * rank))
    dilations = tuple(ctx.attr("dilations", [1] * rank))
    group = int(ctx.attr("group", 1))
    pads = spatial_pads(ctx, x.shape[2:], out.shape[2:], kernel, strides, dilations)
    xp, begins = pad_input(ctx, x, pads[:rank], pads[rank:], 0.0)
    m_total, c_per_group = w_value.shape[0], w_value.shape[1]
    m_per_group = m_total // group
    packed = ctx.add_constant(np.moveaxis(w_value, 0, -1), "conv_w")  # [C/g, k..., M]
    bias = ctx.input(2) if ctx.has_input(2) else None

    def body(i: Index, r: Index) -> Expr:
        n, m, spatial = i[0], i[1], i[2:]
        c, ks = r[0], r[1:]
        channel = c if group == 1 else (m // m_per_group) * c_per_group + c
        pos = [spatial[d] * strides[d] + ks[d] * dilations[d] - begins[d] for d in range(rank)]
        return xp[[n, channel, *pos]] * packed[[c, *ks, m]]

    def epilogue(acc: Expr, i: Index) -> Expr:
        return acc + bias[i[1]] if bias is not None else acc

    return [ctx.reduce(out.shape, [c_per_group, *kernel], body, "sum", epilogue, name="conv")]


OPS: list[OpDef] = [defop("Conv", conv)]
