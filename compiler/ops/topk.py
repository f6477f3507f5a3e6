"""TopK (opsets 1, 10, 11+: k as attribute or input; largest/smallest; axis) as a rank-and-select.

Each element's rank along the axis is the number of elements that come before it
in the output order: larger (or smaller) values first, equal values by lower
index, as the spec requires. Ranks are a permutation, so output position ``p``
takes the one element of rank ``p``. That is O(n^2) per row, but declarative and
exact; ``sorted=0`` (order unspecified) returns the sorted order too.

NaN orders above every number, as numpy's sort (the reference) has it: first for
largest, last for smallest. ``k`` is the output's extent along the axis, so a
run-time ``k`` input is read as a value size (checked against the axis per run).
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, binary, call, cast, compare, logical_and, select
from compiler.loopir.printer import format_size
from compiler.loopir.sizes import has_values
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def _isnan(e: Expr) -> Expr:
    return call("isnan", e, dtype=DType.BOOL)


def _above(a: Expr, b: Expr) -> Expr:
    """``a`` sorts above ``b`` (NaN above numbers)."""
    greater = compare("gt", a, b)
    if not a.dtype.is_float:
        return greater
    nan_over_number = logical_and(_isnan(a), call("not", _isnan(b)))
    return binary("or", greater, nan_over_number)


def _same(a: Expr, b: Expr) -> Expr:
    equal = compare("eq", a, b)
    if not a.dtype.is_float:
        return equal
    return binary("or", equal, logical_and(_isnan(a), _isnan(b)))


def topk(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    axis = ctx.axis(ctx.attr("axis", -1), x.rank)
    n, k = x.shape[axis], out.shape[axis]
    given = ctx.attr("k") if ctx.opset < 10 else None
    if ctx.opset >= 10 and ctx.input_value(1).const is not None:
        given = ctx.size_input(1, "k")[0]
    if has_values(k):  # k read at run time
        ctx.require(0, "<=", k, "k must not be negative")
        ctx.require(k, "<=", n, f"k must be at most the {format_size(n)} elements of axis {axis}")
    elif given is not None and int(given) != k:
        ctx.unsupported(f"k={given} but the output has {k} elements along axis {axis}")
    largest = bool(ctx.attr("largest", 1))

    def at(i: Index, position: Expr) -> list[Expr]:
        return [position if d == axis else i[d] for d in range(x.rank)]

    def before(i: Index, r: Index) -> Expr:
        # Element r[0] comes before element i (same row) in the output order.
        other, mine = x[at(i, r[0])], x[i]
        ahead = _above(other, mine) if largest else _above(mine, other)
        return cast(binary("or", ahead, logical_and(_same(other, mine), compare("lt", r[0], i[axis]))), DType.I64)

    rank = ctx.reduce(x.shape, [n], before, "sum", name="topk_rank", materialize=True)
    # Exactly one element has each rank: summing the matching positions picks it.
    indices = ctx.reduce(out.shape, [n], lambda i, r: select(compare("eq", rank[at(i, r[0])], i[axis]), r[0],
                                                             Const(0)), "sum", name="topk_indices")
    values = ctx.compute(out.shape, lambda i: x[at(i, indices[i])], dtype=x.dtype, name="topk_values")
    return [values, indices]


OPS: list[OpDef] = [defop("TopK", topk)]
