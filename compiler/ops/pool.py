"""Pooling: MaxPool, AveragePool, LpPool and their global forms, as windowed reductions.

A window position outside the input reads as the combiner's identity: where a
window can reach outside (padding, ceil_mode), the pool reads a copy of the
input padded with that identity, so the pool itself is plain strided loads the
schedule can vectorize (bounds checks per element kept it scalar, 10x slower
than the copy). AveragePool divides by the window size, or, with
count_include_pad=0 and padding, by the count of in-bounds positions.
MaxPool's optional Indices output is a second reduction: the first window
position holding the maximum, as a flat input index.
"""

from __future__ import annotations

import math
from typing import Callable

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, binary, call, cast, compare, const, logical_and, max_, min_, select
from compiler.loopir.sizes import size_prod
from compiler.ops.api import Index, LoweringContext, Tensor, size_value
from compiler.ops.conv import pad_input, spatial_pads
from compiler.ops.reduce import accumulator_type
from compiler.ops.registry import OpDef, defop
from compiler.ops.shape import _ravel, _unravel


def _window(ctx: LoweringContext, x: Tensor) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], list[int]]:
    rank = x.rank - 2
    kernel = tuple(ctx.attr("kernel_shape"))
    strides = tuple(ctx.attr("strides", [1] * rank))
    dilations = tuple(ctx.attr("dilations", [1] * rank))
    pads = spatial_pads(ctx, x.shape[2:], ctx.output_type(0).shape[2:], kernel, strides, dilations)
    return kernel, strides, dilations, pads


def _window_load(x: Tensor, i: Index, r: Index, strides, dilations, begins, fill: float) -> tuple[Expr, Expr]:
    """(value or ``fill`` outside the input, in-bounds predicate) at window offset ``r`` of output ``i``."""
    rank = len(r)
    pos = [i[2 + d] * strides[d] + r[d] * dilations[d] - begins[d] for d in range(rank)]
    inside: Expr = Const(True, x.dtype.BOOL)
    clamped = []
    for d in range(rank):
        inside = logical_and(inside, logical_and(compare("ge", pos[d], 0), compare("lt", pos[d], x.shape[2 + d])))
        clamped.append(min_(max_(pos[d], Const(0)), Const(x.shape[2 + d] - 1)))
    value = x[[i[0], i[1], *clamped]]
    return select(inside, value, const(fill, x.dtype)), inside


def _padded_window(ctx: LoweringContext, x: Tensor, kernel, strides, dilations, pads,
                   fill: float) -> Callable[[Index, Index], Expr]:
    """``(i, r) -> x`` at window offset ``r`` of output ``i``, ``fill`` outside: reads a padded copy
    of ``x`` when some window reaches outside it, else ``x`` itself."""
    rank = len(kernel)
    out_spatial = ctx.output_type(0).shape[2:]
    begins = pads[:rank]
    if all(isinstance(n, int) for n in (*out_spatial, *x.shape[2:])):
        reach = [(out_spatial[d] - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1 for d in range(rank)]
        ends = [max(0, reach[d] - begins[d] - x.shape[2 + d]) for d in range(rank)]
    else:
        # Symbolic sizes: the last window reaches at most the end pad (one stride less one further with
        # ceil_mode) past the input; padding that far may pad more than some sizes need, never less.
        ceil_mode = bool(ctx.attr("ceil_mode", 0))
        ends = [pads[rank + d] + (strides[d] - 1 if ceil_mode else 0) for d in range(rank)]
    source = pad_input(ctx, x, begins, ends, fill)
    return lambda i, r: source[[i[0], i[1], *(i[2 + d] * strides[d] + r[d] * dilations[d] for d in range(rank))]]


def max_pool(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    out = ctx.output_type(0)
    kernel, strides, dilations, pads = _window(ctx, x)
    lowest = -math.inf if x.dtype.is_float else -(1 << (x.dtype.bits - 1)) if x.dtype.is_signed else 0
    with_indices = len(ctx.node.outputs) > 1
    values = ctx.reduce(out.shape, kernel, _padded_window(ctx, x, kernel, strides, dilations, pads, lowest),
                        "max", name="maxpool", materialize=with_indices)
    if not with_indices:
        return [values]
    return [values, _argmax_indices(ctx, x, values, kernel, strides, dilations, pads)]


def _argmax_indices(ctx: LoweringContext, x: Tensor, values: Tensor, kernel, strides, dilations, pads) -> Tensor:
    """MaxPool's Indices: the flat input position of each window's first maximum (in the window's
    row-major scan order, as the reference scans), spatially row- or column-major per storage_order."""
    spatial = x.shape[2:]
    rank = len(spatial)
    none = math.prod(kernel)

    def first_peak(i: Index, r: Index) -> Expr:
        value, inside = _window_load(x, i, r, strides, dilations, pads, 0.0)
        return select(logical_and(inside, compare("eq", value, values[i])), _ravel(r, kernel), Const(none))

    first = ctx.reduce(values.shape, kernel, first_peak, "min", name="maxpool_first")
    column_major = bool(ctx.attr("storage_order", 0))

    def flat(i: Index) -> Expr:
        r = _unravel(first[i], kernel)
        pos = [i[2 + d] * strides[d] + r[d] * dilations[d] - pads[d] for d in range(rank)]
        offset = _ravel(pos[::-1], spatial[::-1]) if column_major else _ravel(pos, spatial)
        return (i[0] * x.shape[1] + i[1]) * math.prod(spatial) + offset

    return ctx.compute(values.shape, flat, dtype=DType.I64, name="maxpool_indices")


def average_pool(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    out = ctx.output_type(0)
    kernel, strides, dilations, pads = _window(ctx, x)
    rank = len(kernel)
    include_pad = bool(ctx.attr("count_include_pad", 0))
    padded = any(pads)
    # Symbolic sizes: whether the last window overhangs depends on the size, so count (always right).
    overhang = not all(isinstance(n, int) for n in (*out.shape[2:], *x.shape[2:])) or any(
        (out.shape[2 + d] - 1) * strides[d] + (kernel[d] - 1) * dilations[d] + 1
        > x.shape[2 + d] + pads[d] + pads[rank + d] for d in range(rank))
    work = accumulator_type(x.dtype)
    window = _padded_window(ctx, x, kernel, strides, dilations, pads, 0.0)

    def term(i: Index, r: Index) -> Expr:
        return cast(window(i, r), work)

    if not overhang and (include_pad or not padded):
        size = const(math.prod(kernel), work)
        return [ctx.reduce(out.shape, kernel, term, "sum", lambda acc, i: cast(acc / size, x.dtype), name="avgpool")]
    # The divisor varies with the position: count the window's positions inside the (padded) input.
    limit_pads = pads if include_pad else [0] * (2 * rank)

    def counted(i: Index, r: Index) -> Expr:
        inside: Expr = Const(True, x.dtype.BOOL)
        for d in range(rank):
            p = i[2 + d] * strides[d] + r[d] * dilations[d] - pads[d]
            inside = logical_and(inside, logical_and(compare("ge", p, -limit_pads[d]),
                                                     compare("lt", p, x.shape[2 + d] + limit_pads[rank + d])))
        return cast(inside, work)

    count = ctx.reduce(out.shape, kernel, counted, "sum", name="avgpool_count", materialize=True)
    return [ctx.reduce(out.shape, kernel, term, "sum", lambda acc, i: cast(acc / count[i], x.dtype), name="avgpool")]


def lp_pool(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    kernel, strides, dilations, pads = _window(ctx, x)
    p = float(ctx.attr("p", 2))
    window = _padded_window(ctx, x, kernel, strides, dilations, pads, 0.0)

    def body(i: Index, r: Index) -> Expr:
        v = window(i, r)
        return call("abs", v) if p == 1 else binary("pow", call("abs", v), const(p, v.dtype))

    return [ctx.reduce(ctx.output_type(0).shape, kernel, body, "sum",
                       lambda acc, i: binary("pow", acc, const(1.0 / p, acc.dtype)), name="lppool")]


def _global(combiner: str, average: bool):
    def lower(ctx: LoweringContext) -> list[Tensor]:
        x = ctx.input(0)
        spatial = x.shape[2:]
        if not average:
            return [ctx.reduce(ctx.output_type(0).shape, spatial, lambda i, r: x[[i[0], i[1], *r]], combiner,
                               name="globalpool")]
        # Half-precision sums accumulate in float32: a float16 count or sum overflows past 65504.
        work = accumulator_type(x.dtype)
        count = size_value(size_prod(spatial), work)
        return [ctx.reduce(ctx.output_type(0).shape, spatial, lambda i, r: cast(x[[i[0], i[1], *r]], work), combiner,
                           lambda acc, i: cast(acc / count, x.dtype), name="globalpool")]

    return lower


OPS: list[OpDef] = [
    defop("MaxPool", max_pool), defop("AveragePool", average_pool), defop("LpPool", lp_pool),
    defop("GlobalAveragePool", _global("sum", True)), defop("GlobalMaxPool", _global("max", False)),
]
