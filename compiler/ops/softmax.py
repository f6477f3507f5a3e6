"""Softmax, LogSoftmax and Hardmax-free softmax family, as max / sum-of-exp / normalize.

Before opset 13 the op works on the input coerced to 2-D at ``axis`` (all
trailing dims are one row); from 13 on it normalizes along ``axis`` alone.
``softmax_over`` is the shared building block (SoftmaxCrossEntropyLoss uses it too).
"""

from __future__ import annotations

from compiler.loopir.expr import Expr, call, cast, const
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.reduce import accumulator_type, reduced_space, source_index
from compiler.ops.registry import OpDef, defop


def softmax_over(ctx: LoweringContext, x: Tensor, axes: list[int], log: bool) -> Tensor:
    """Softmax (or its log) of ``x`` normalized over ``axes``, same shape and type as ``x``."""
    stat_shape, extents, _ = reduced_space(x.shape, axes)

    def row(i: Index, r: Index) -> Expr:
        return x[source_index(x.rank, axes, True, i, r)]

    def stat(i: Index) -> Index:
        return tuple(0 if d in axes else i[d] for d in range(x.rank))

    peak = ctx.reduce(stat_shape, extents, row, "max", name="softmax_max", materialize=True)
    # Half-precision exps (each rounded, like the numerators) are summed in float32, rounded once.
    work = accumulator_type(x.dtype)

    def exps(i: Index, r: Index) -> Expr:
        return cast(call("exp", row(i, r) - peak[i]), work)

    if log:
        total = ctx.reduce(stat_shape, extents, exps, "sum", lambda acc, i: cast(acc, x.dtype), name="softmax_sum",
                           materialize=True)
        return ctx.compute(x.shape, lambda i: x[i] - peak[stat(i)] - call("log", total[stat(i)]),
                           dtype=x.dtype, name="logsoftmax")
    # Each exp once: stored, then summed and scaled (a pass over the row is cheaper than a second exp).
    numerators = ctx.compute(x.shape, lambda i: call("exp", x[i] - peak[stat(i)]), dtype=x.dtype,
                             name="softmax_exp", materialize=True)

    def numerator(i: Index, r: Index) -> Expr:
        return cast(numerators[source_index(x.rank, axes, True, i, r)], work)

    if x.dtype is not work:  # half precision: divide by the rounded sum, as the reference rounds each op
        total = ctx.reduce(stat_shape, extents, numerator, "sum", lambda acc, i: cast(acc, x.dtype),
                           name="softmax_sum", materialize=True)
        return ctx.compute(x.shape, lambda i: numerators[i] / total[stat(i)], dtype=x.dtype, name="softmax")
    # One division per row: the numerators are scaled by the reciprocal of their sum.
    inverse = ctx.reduce(stat_shape, extents, numerator, "sum", lambda acc, i: const(1.0, work) / acc,
                         name="softmax_inverse_sum", materialize=True)
    return ctx.compute(x.shape, lambda i: numerators[i] * inverse[stat(i)], dtype=x.dtype, name="softmax")


def _softmax(log: bool):
    def lower(ctx: LoweringContext) -> list[Tensor]:
        x = ctx.input(0)
        default_axis = -1 if ctx.opset >= 13 else 1
        axis = ctx.axis(ctx.attr("axis", default_axis), x.rank) if x.rank else 0
        axes = [axis] if ctx.opset >= 13 else list(range(axis, x.rank))
        return [softmax_over(ctx, x, axes, log)]

    return lower


OPS: list[OpDef] = [defop("Softmax", _softmax(False)), defop("LogSoftmax", _softmax(True))]
