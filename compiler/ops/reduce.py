"""Reduce* ops (axes as attribute or, from opset 13/18, as an input; keepdims; noop_with_empty_axes).

Sums and products of half-precision values accumulate in float32 (``accumulator_type``), each
element rounded to the input type first (as numpy does), and round once at the end.
"""

from __future__ import annotations


import numpy as np

from typing import Callable

from compiler.dtypes import DType
from compiler.loopir.expr import Expr, call, cast
from compiler.loopir.sizes import Size, size_prod
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
        axes = reduce_axes(ctx, x.rank)
        keep = bool(ctx.attr("keepdims", 1))
        out = ctx.output_type(0)
        _, extents, count = reduced_space(x.shape, axes)
        # max/min are exact in any type; sums and products accumulate wider.
        work = x.dtype if combiner in ("max", "min") else accumulator_type(x.dtype)
        return [ctx.reduce(out.shape, extents,
                           lambda i, r: cast(element(x[source_index(x.rank, axes, keep, i, r)]), work), combiner,
                           lambda acc, i: cast(finish(acc, count), out.dtype), name=name.lower())]

    return lower


def _log_sum_exp(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    axes = reduce_axes(ctx, x.rank)
    keep = bool(ctx.attr("keepdims", 1))
    out = ctx.output_type(0)

    def source(i: Index, r: Index) -> list[Expr]:
        return source_index(x.rank, axes, keep, i, r)

    extents = [x.shape[a] for a in axes]
    work = accumulator_type(x.dtype)
    peak = ctx.reduce(out.shape, extents, lambda i, r: x[source(i, r)], "max", name="lse_max", materialize=True)
    return [ctx.reduce(out.shape, extents, lambda i, r: cast(call("exp", x[source(i, r)] - peak[i]), work), "sum",
                       lambda acc, i: cast(call("log", acc) + cast(peak[i], work), out.dtype), name="logsumexp")]


OPS: list[OpDef] = [defop(name, _lower(name)) for name in _REDUCTIONS] + [defop("ReduceLogSumExp", _log_sum_exp)]
