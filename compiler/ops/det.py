"""Det: determinants of ``[*, M, M]`` matrices by Gaussian elimination with partial pivoting.

Elimination step ``k`` is three computations over the whole batch: the pivot's
magnitude (max |a[r, k]| over rows r >= k), the pivot row (the first row
reaching it), and the next matrix (rows k and pivot swapped, the rows below
eliminated). The determinant is the product of the final diagonal, negated once
per actual swap. A zero pivot column leaves the matrix as it is, so a singular
matrix yields 0 rather than a NaN. Half-precision inputs are eliminated in
float32.
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, call, cast, compare, const, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def det(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    m = x.shape[-1]
    if x.rank < 2 or x.shape[-2] != m:
        ctx.unsupported(f"input {list(x.shape)} is not a batch of square matrices")
    work = DType.F64 if x.dtype is DType.F64 else DType.F32
    batch = x.shape[:-2]
    zero = const(0.0, work)
    a = ctx.compute(x.shape, lambda i: cast(x[i], work), dtype=work, name="det_a")
    pivots: list[Tensor] = []
    for k in range(m - 1):
        def column(i: Index, r: Index, a: Tensor = a, k: int = k) -> Expr:
            return call("abs", a[[*i, r[0] + k, Const(k)]])

        peak = ctx.reduce(batch, [m - k], column, "max", name="det_peak", materialize=True)
        pivot = ctx.reduce(batch, [m - k], lambda i, r, column=column, peak=peak, k=k:
                           select(compare("eq", column(i, r), peak[i]), r[0] + k, Const(m)), "min",
                           name="det_pivot", materialize=True)
        pivots.append(pivot)

        def swapped(i: Index, row: Expr, col: Expr, a: Tensor = a, pivot: Tensor = pivot, k: int = k) -> Expr:
            p = pivot[i]
            source = select(compare("eq", row, k), p, select(compare("eq", row, p), Const(k), row))
            return a[[*i, source, col]]

        def eliminate(i: Index, swapped=swapped, k: int = k) -> Expr:
            b, row, col = i[:-2], i[-2], i[-1]
            head = swapped(b, Const(k), Const(k))
            factor = select(compare("eq", head, zero), zero, swapped(b, row, Const(k)) / head)
            below = swapped(b, row, col) - factor * swapped(b, Const(k), col)
            return select(compare("gt", row, k), below, swapped(b, row, col))

        a = ctx.compute(x.shape, eliminate, dtype=work, name="det_step", materialize=True)

    def signed(acc: Expr, i: Index) -> Expr:
        for k, pivot in enumerate(pivots):
            acc = select(compare("eq", pivot[i], k), acc, -acc)
        return cast(acc, out.dtype)

    return [ctx.reduce(batch, [m], lambda i, r: a[[*i, r[0], r[0]]], "prod", signed, name="det")]


OPS: list[OpDef] = [defop("Det", det, since=11)]
