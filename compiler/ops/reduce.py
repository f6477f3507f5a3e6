"""Reduce* ops (axes as attribute or, from opset 13/18, as an input; keepdims; noop_with_empty_axes).

Axes given at run time (a graph input the frontend reads as value sizes) reduce over every axis: axis ``d``'s
reduction extent is its dim where the axes name it and 1 elsewhere, the result's the other way round, so one
loop nest serves every choice of axes, and the run's ``axes`` are checked against the rank before it starts.

Sums and products of half-precision values accumulate in float32 (``accumulator_type``), each
element rounded to the input type first (as numpy does), and round once at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, call, cast, compare, select
from compiler.loopir.sizes import Size, as_size, choose, kept_axes_before, size_expr, size_prod, size_sum
from compiler.ops.api import Index, LoweringContext, Tensor, size_value
from compiler.ops.registry import OpDef, defop

# name: (combiner, per-element map, epilogue(acc, count))
_REDUCTIONS: dict[str, tuple[str, Callable[[Expr], Expr], Callable[[Expr, Size], Expr]]] = {
    "ReduceSum": ("sum", lambda v: v, lambda a, n: a),
    "ReduceMean": ("sum", lambda v: v, lambda a, n: a / size_value(n, a.dtype)),
    "ReduceMax": ("max", lambda v: v, lambda a, n: a),
    "ReduceMin": ("min", lambda v: v, lambda a, n: a),
    "ReduceProd": ("prod", lambda v: v, lambda a, n: a),
    "ReduceL1": ("sum", lambda v: call("abs", v), lambda a, n: a),
    "ReduceL2": ("sum", lambda v: v * v, lambda a, n: call("sqrt", a)),
    "ReduceSumSquare": ("sum", lambda v: v * v, lambda a, n: a),
    "ReduceLogSum": ("sum", lambda v: v, lambda a, n: call("log", a)),
}


def accumulator_type(dtype: DType) -> DType:
    """The type a sum of ``dtype`` values accumulates in: float32 for the half-precision types."""
    return DType.F32 if dtype in (DType.F16, DType.BF16) else dtype


def reduce_axes(ctx: LoweringContext, rank: int, input_index: int = 1) -> list[int]:
    """The reduced axes, normalized and sorted; all axes when none are given (unless noop_with_empty_axes)."""
    axes = ctx.const_input(input_index, "axes") if ctx.has_input(input_index) else ctx.attr("axes")
    if axes is None or len(axes) == 0:
        return [] if ctx.attr("noop_with_empty_axes", 0) else list(range(rank))
    # A repeated axis is reduced once (onnxruntime accepts it).
    return sorted({ctx.axis(a, rank, "axes") for a in np.asarray(axes).reshape(-1).tolist()})


@dataclass(frozen=True)
class Reduction:
    """Where a Reduce reads: the reduction extents, the element count per result, and the input index for
    result index ``i`` and reduction index ``r``."""

    extents: list[Size]
    count: Size
    source: Callable[[Index, Index], list[Expr]]


def reduction(ctx: LoweringContext, x: Tensor) -> Reduction:
    keep = bool(ctx.attr("keepdims", 1))
    given = ctx.const_input(1, "axes") if ctx.has_input(1) else None
    if given is not None and given.dtype == object and given.size:
        return _run_time_axes(ctx, x, [as_size(a) for a in given.reshape(-1)], keep)
    axes = reduce_axes(ctx, x.rank)
    _, extents, count = reduced_space(x.shape, axes)
    return Reduction(extents, count, lambda i, r: source_index(x.rank, axes, keep, i, r))


def _run_time_axes(ctx: LoweringContext, x: Tensor, axes: list[Size], keep: bool) -> Reduction:
    rank = x.rank
    flags = ctx.run_time_axes(axes, rank)
    if not keep and len(axes) > 1:  # the result's rank counts the axes: each must be named once
        named = size_sum(choose(f, 1, 0) for f in flags)
        ctx.require(named, "==", len(axes), "the axes must name distinct axes (keepdims=0 drops one axis each)",
                    show=False)
    extents = [choose(f, d, 1) for f, d in zip(flags, x.shape)]

    def source(i: Index, r: Index) -> list[Expr]:
        if keep:  # one of the two is 0: the extent of the other axis is 1
            return [i[d] + r[d] for d in range(rank)]
        out = []
        for d in range(rank):
            position = size_expr(kept_axes_before(flags, d))
            kept = Const(0)
            for j in range(len(i)):
                kept = select(compare("eq", position, j), i[j], kept)
            out.append(select(flags[d], r[d], kept))
        return out

    return Reduction(extents, size_prod(extents), source)


def reduced_space(shape: tuple[Size, ...], axes: list[int]) -> tuple[list[Size], list[Size], Size]:
    """(keepdims result shape, reduction extents, number of elements reduced into each result)."""
    extents = [shape[a] for a in axes]
    return [1 if d in axes else n for d, n in enumerate(shape)], extents, size_prod(extents)


def source_index(rank: int, axes: list[int], keepdims: bool, i: Index, r: Index) -> list[Expr]:
    """The input index read for output index ``i`` and reduction index ``r``."""
    src, ri, oi = [], iter(r), iter(i)
    for d in range(rank):
        if d in axes:
            src.append(next(ri))
            if keepdims:
                next(oi)
        else:
            src.append(next(oi))
    return src


def _lower(name: str):
    combiner, element, finish = _REDUCTIONS[name]

    def lower(ctx: LoweringContext) -> list[Tensor]:
        x = ctx.input(0)
        space = reduction(ctx, x)
        out = ctx.output_type(0)
        # max/min are exact in any type; sums and products accumulate wider.
        work = x.dtype if combiner in ("max", "min") else accumulator_type(x.dtype)
        return [ctx.reduce(out.shape, space.extents, lambda i, r: cast(element(x[space.source(i, r)]), work), combiner,
                           lambda acc, i: cast(finish(acc, space.count), out.dtype), name=name.lower())]

    return lower


def _log_sum_exp(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    space = reduction(ctx, x)
    out = ctx.output_type(0)
    source, extents = space.source, space.extents
    work = accumulator_type(x.dtype)
    peak = ctx.reduce(out.shape, extents, lambda i, r: x[source(i, r)], "max", name="lse_max", materialize=True)
    return [ctx.reduce(out.shape, extents, lambda i, r: cast(call("exp", x[source(i, r)] - peak[i]), work), "sum",
                       lambda acc, i: cast(call("log", acc) + cast(peak[i], work), out.dtype), name="logsumexp")]


OPS: list[OpDef] = [defop(name, _lower(name)) for name in _REDUCTIONS] + [defop("ReduceLogSumExp", _log_sum_exp)]
