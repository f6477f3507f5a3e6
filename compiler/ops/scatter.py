"""Scatters with run-time indices: ScatterElements (and its old name Scatter), ScatterND, TensorScatter,
MaxUnpool.

A scatter is written from the output's side: ``out[i]`` is ``data[i]`` combined
with every update whose (run-time) target is ``i``, found by a reduction over the
update positions with a hit condition. That costs O(outputs x updates) but needs
no ordered side effects and is exact for duplicate targets:

* ``reduction`` add/mul/max/min: the updates hitting ``i`` are combined (the
  identity where none hits) and then combined with ``data[i]``; the spec's
  result does not depend on the order, and neither does this one's.
* ``reduction="none"``: the spec leaves duplicates undefined; like the reference
  implementation (updates applied in order), the last update hitting ``i``
  wins: a max-reduction finds its flat position, then one load reads it.

Negative indices count from the end of their axis. TensorScatter writes one
contiguous run per batch row, so it is a plain pointwise select. MaxUnpool
scatters each pooled value to its flat index (into zeros); it scans only the
output's own (n, c) plane of the pooled input, as MaxPool's indices never
point outside their plane.
"""

from __future__ import annotations

import math
from typing import Callable

from compiler.dtypes import DType
from compiler.loopir.compute import reduce_init
from compiler.loopir.expr import Const, Expr, binary, cast, compare, const, logical_and, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.indexing import require_indices_in_range, wrap_index
from compiler.ops.registry import OpDef, defop
from compiler.ops.shape import _ravel, _unravel

# reduction attribute → (combiner over the hitting updates, binary op merging the result with data)
_REDUCTIONS = {"add": ("sum", "add"), "mul": ("prod", "mul"), "max": ("max", "max"), "min": ("min", "min")}


def _clamp(e: Expr, n: int) -> Expr:
    """Keep a load in bounds where its value is discarded by a select (both sides are evaluated)."""
    return min_(max_(e, Const(0)), Const(n - 1))


def _scatter(ctx: LoweringContext, data: Tensor | Expr, shape: tuple[int, ...], extents: tuple[int, ...],
             hit: Callable[[Index, Index], Expr], update: Callable[[Index, Index], Expr]) -> Tensor:
    """``data`` (a tensor of ``shape``, or one value everywhere) with ``update(i, r)`` scattered to every ``i``
    where ``hit(i, r)``, per the node's reduction.

    ``r`` ranges over ``extents``, the update positions; ``update`` must stay in bounds for any
    ``i`` (it is evaluated where ``hit`` is false too).
    """
    def base(i: Index) -> Expr:
        return data[i] if isinstance(data, Tensor) else data

    dtype = data.dtype
    reduction = ctx.attr("reduction", "none")
    if reduction == "none":
        size = math.prod(extents)
        # Flat position of the last update hitting i (-1: none); the reference applies updates in order.
        last = ctx.reduce(shape, extents, lambda i, r: select(hit(i, r), _ravel(r, extents), Const(-1)),
                          "max", name="scatter_last", materialize=True)

        def pick(i: Index) -> Expr:
            j = last[i]
            source = _unravel(_clamp(j, size), extents)
            return select(compare("ge", j, 0), update(i, tuple(source)), base(i))

        return ctx.compute(shape, pick, dtype=dtype, name="scatter")
    if reduction not in _REDUCTIONS:
        ctx.unsupported(f"reduction={reduction!r}")
    if dtype is DType.BOOL:
        ctx.unsupported(f"reduction={reduction!r} on bool data")
    combiner, merge = _REDUCTIONS[reduction]
    identity = reduce_init(combiner, dtype)
    return ctx.reduce(shape, extents, lambda i, r: select(hit(i, r), update(i, r), identity), combiner,
                      lambda acc, i: binary(merge, base(i), acc), name=f"scatter_{reduction}")


def scatter_elements(ctx: LoweringContext) -> list[Tensor]:
    data, idx, upd = ctx.input(0), ctx.input(1), ctx.input(2)
    axis = ctx.axis(ctx.attr("axis", 0), data.rank)
    require_indices_in_range(ctx, 1, [data.shape[axis]])

    def source(i: Index, r: Index) -> list[Expr]:
        # The update row along ``axis`` at the output's other coordinates (clamped: see ``hit``).
        return [r[0] if d == axis else i[d] if idx.shape[d] == data.shape[d] else _clamp(i[d], idx.shape[d])
                for d in range(data.rank)]

    def hit(i: Index, r: Index) -> Expr:
        cond = compare("eq", wrap_index(idx[source(i, r)], data.shape[axis]), i[axis])
        for d in range(data.rank):
            if d != axis and idx.shape[d] < data.shape[d]:  # updates cover only part of this axis
                cond = logical_and(cond, compare("lt", i[d], idx.shape[d]))
        return cond

    return [_scatter(ctx, data, data.shape, (idx.shape[axis],), hit, lambda i, r: upd[source(i, r)])]


def scatter_nd(ctx: LoweringContext) -> list[Tensor]:
    data, idx, upd = ctx.input(0), ctx.input(1), ctx.input(2)
    k = idx.shape[-1]
    extents = idx.shape[:-1]
    require_indices_in_range(ctx, 1, data.shape[:k], along_last_axis=True)

    def hit(i: Index, r: Index) -> Expr:
        cond: Expr = Const(True, DType.BOOL)
        for d in range(k):
            cond = logical_and(cond, compare("eq", wrap_index(idx[[*r, Const(d)]], data.shape[d]), i[d]))
        return cond

    return [_scatter(ctx, data, data.shape, extents, hit, lambda i, r: upd[[*r, *i[k:]]])]


def tensor_scatter(ctx: LoweringContext) -> list[Tensor]:
    past, upd = ctx.input(0), ctx.input(1)
    axis = ctx.axis(ctx.attr("axis", -2), past.rank)
    if axis == 0:
        ctx.unsupported("axis 0 is the batch axis")
    mode = ctx.attr("mode", "linear")
    if mode not in ("linear", "circular"):
        ctx.unsupported(f"mode={mode!r}")
    capacity, length = past.shape[axis], upd.shape[axis]
    writes = ctx.input(2) if ctx.has_input(2) else None

    def value(i: Index) -> Expr:
        start = cast(writes[(i[0],)], DType.I64) if writes is not None else Const(0)
        offset = i[axis] - start
        if mode == "circular":
            offset = ((offset % capacity) + capacity) % capacity
        inside = logical_and(compare("ge", offset, 0), compare("lt", offset, length))
        source = [_clamp(offset, length) if d == axis else i[d] for d in range(past.rank)]
        return select(inside, upd[source], past[i])

    return [ctx.compute(past.shape, value, dtype=past.dtype, name="tensor_scatter")]


def max_unpool(ctx: LoweringContext) -> list[Tensor]:
    x, idx, out = ctx.input(0), ctx.input(1), ctx.output_type(0)
    rank = x.rank - 2
    kernel = list(ctx.attr("kernel_shape"))
    strides = list(ctx.attr("strides", [1] * rank))
    pads = list(ctx.attr("pads", [0] * (2 * rank)))
    # Indices are flat positions in the unpadded unpool shape; a larger output_shape pads it at the end.
    inferred = (*x.shape[:2], *((x.shape[2 + d] - 1) * strides[d] - pads[d] - pads[rank + d] + kernel[d]
                                for d in range(rank)))
    if any(o < n for o, n in zip(out.shape, inferred)):
        ctx.unsupported(f"output shape {list(out.shape)} is smaller than the unpooled shape {list(inferred)}")

    def hit(i: Index, r: Index) -> Expr:
        cond = compare("eq", idx[[i[0], i[1], *r]], _ravel(i, inferred))
        for d in range(2, x.rank):
            if out.shape[d] > inferred[d]:
                cond = logical_and(cond, compare("lt", i[d], inferred[d]))
        return cond

    # Only the (n, c) plane of each output is scanned: MaxPool's indices never leave their plane.
    return [_scatter(ctx, const(0, x.dtype), out.shape, x.shape[2:], hit, lambda i, r: x[[i[0], i[1], *r]])]


OPS: list[OpDef] = [
    defop("ScatterElements", scatter_elements, since=11),
    defop("Scatter", scatter_elements, since=9),
    defop("ScatterND", scatter_nd, since=11),
    defop("TensorScatter", tensor_scatter, since=24),
    defop("MaxUnpool", max_unpool, since=9),
]
