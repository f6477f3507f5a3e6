"""ArgMax / ArgMin (axis, keepdims, select_last_index) and Hardmax: a peak reduction, then an index reduction."""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, cast, compare, const, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.reduce import source_index
from compiler.ops.registry import OpDef, defop


def _peak_index(ctx: LoweringContext, x: Tensor, axis: int, keep: bool, shape, combiner: str, last: bool) -> Tensor:
    """Index along ``axis`` of the first (or last) element equal to the max/min, as int64, in ``shape``."""
    n = x.shape[axis]
    stat_shape = [1 if d == axis else s for d, s in enumerate(x.shape)]

    def stat(i: Index) -> list[Expr]:
        return [Const(0) if d == axis else i[d] for d in range(x.rank)] if keep else \
            [*i[:axis], Const(0), *i[axis:]]

    peak = ctx.reduce(stat_shape, [n], lambda i, r: x[source_index(x.rank, [axis], True, i, r)], combiner,
                      name="arg_peak", materialize=True)
    return ctx.reduce(shape, [n], lambda i, r: select(compare("eq", x[source_index(x.rank, [axis], keep, i, r)],
                                                              peak[stat(i)]), r[0], Const(-1 if last else n)),
                      "max" if last else "min", name="arg_index")


def _arg(combiner: str):
    def lower(ctx: LoweringContext) -> list[Tensor]:
        x, out = ctx.input(0), ctx.output_type(0)
        axis = ctx.axis(ctx.attr("axis", 0), x.rank)
        index = _peak_index(ctx, x, axis, bool(ctx.attr("keepdims", 1)), out.shape, combiner,
                            bool(ctx.attr("select_last_index", 0)))
        return [index]

    return lower


def hardmax(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    if ctx.opset < 13 and ctx.axis(ctx.attr("axis", 1), x.rank) != x.rank - 1:
        ctx.unsupported("Hardmax before opset 13 over several trailing axes")
    axis = ctx.axis(ctx.attr("axis", -1), x.rank)
    shape = [1 if d == axis else s for d, s in enumerate(x.shape)]
    index = _peak_index(ctx, x, axis, True, shape, "max", False)
    index = ctx.compute(shape, lambda i: index[i], dtype=DType.I64, name="hardmax_index", materialize=True)
    return [ctx.compute(x.shape, lambda i: cast(compare("eq", index[[Const(0) if d == axis else i[d]
                                                                        for d in range(x.rank)]], i[axis]), x.dtype),
                        dtype=x.dtype, name="hardmax")]


OPS: list[OpDef] = [defop("ArgMax", _arg("max")), defop("ArgMin", _arg("min")), defop("Hardmax", hardmax)]
