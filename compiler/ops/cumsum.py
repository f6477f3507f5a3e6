"""CumSum / CumProd: out[i] = combine of x[.., j, ..] over j <= i[axis] (exclusive: j < i; reverse: from the end).

Written as a reduction over the whole axis with the elements outside the prefix
replaced by the identity (0 or 1): O(n^2) along the axis, but declarative. An axis given at run time
(a value size) makes the scanned axis a condition per axis, chosen per run.
"""

from __future__ import annotations

import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, compare, const, select
from compiler.loopir.sizes import as_size, choose, size_sum
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def _cumulative(combiner: str, identity: int):
    def lower(ctx: LoweringContext) -> list[Tensor]:
        x = ctx.input(0)
        exclusive, reverse = bool(ctx.attr("exclusive", 0)), bool(ctx.attr("reverse", 0))
        axis = _scan_axis(ctx, x)
        n = size_sum(choose(f, d, 0) for f, d in zip(axis, x.shape))

        def body(i: Index, r: Index) -> Expr:
            j, at = r[0], _pick(axis, i)
            if reverse:
                inside = compare("gt", j, at) if exclusive else compare("ge", j, at)
            else:
                inside = compare("lt", j, at) if exclusive else compare("le", j, at)
            v = x[[select(flag, j, i[d]) for d, flag in enumerate(axis)]]
            return select(inside, v, const(identity, x.dtype))

        return [ctx.reduce(x.shape, [n], body, combiner, name=combiner == "sum" and "cumsum" or "cumprod")]

    return lower


def _scan_axis(ctx: LoweringContext, x: Tensor) -> list[Expr]:
    """For each axis of ``x``, whether it is the scanned one: constants, or conditions on a run-time axis."""
    if x.rank == 1:  # the only valid axis: it may be known only at run time
        return [Const(True, DType.BOOL)]
    given = np.asarray(ctx.const_input(1, "axis")).reshape(-1)
    if given.dtype == object:
        return ctx.run_time_axes([as_size(given[0])], x.rank, "axis")
    axis = ctx.axis(given[0], x.rank)
    return [Const(d == axis, DType.BOOL) for d in range(x.rank)]


def _pick(axis: list[Expr], i: Index) -> Expr:
    """The scanned axis's entry of index ``i``."""
    picked: Expr = Const(0)
    for flag, v in zip(axis, i):
        picked = select(flag, v, picked)
    return picked


OPS: list[OpDef] = [defop("CumSum", _cumulative("sum", 0)), defop("CumProd", _cumulative("prod", 1))]
