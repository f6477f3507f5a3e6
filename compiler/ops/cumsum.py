"""CumSum / CumProd: out[i] = combine of x[.., j, ..] over j <= i[axis] (exclusive: j < i; reverse: from the end).

Written as a reduction over the whole axis with the elements outside the prefix
replaced by the identity (0 or 1): O(n^2) along the axis, but declarative.
"""

from __future__ import annotations

import numpy as np

from compiler.loopir.expr import Expr, compare, const, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def _cumulative(combiner: str, identity: int):
    def lower(ctx: LoweringContext) -> list[Tensor]:
        x = ctx.input(0)
        if x.rank == 1:  # the only valid axis: it may be known only at run time
            axis = 0
        else:
            axis = ctx.axis(np.asarray(ctx.const_input(1, "axis")).reshape(-1)[0], x.rank)
        exclusive, reverse = bool(ctx.attr("exclusive", 0)), bool(ctx.attr("reverse", 0))
        n = x.shape[axis]

        def body(i: Index, r: Index) -> Expr:
            j = r[0]
            if reverse:
                inside = compare("gt", j, i[axis]) if exclusive else compare("ge", j, i[axis])
            else:
                inside = compare("lt", j, i[axis]) if exclusive else compare("le", j, i[axis])
            v = x[[j if d == axis else i[d] for d in range(x.rank)]]
            return select(inside, v, const(identity, x.dtype))

        return [ctx.reduce(x.shape, [n], body, combiner, name=combiner == "sum" and "cumsum" or "cumprod")]

    return lower


OPS: list[OpDef] = [defop("CumSum", _cumulative("sum", 0)), defop("CumProd", _cumulative("prod", 1))]
