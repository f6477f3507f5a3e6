"""Flatten a computation's innermost output dims into one where every access allows it.

Contract: ``flatten_inner(c)`` returns ``c`` with its last two live index vars ``a, b``
(extents ``A, B``) replaced by one var ``a_b`` of extent ``A*B``, repeatedly, as long as
every buffer access that uses ``a`` or ``b`` indexes two adjacent dims of extents
``(A, B)`` with exactly ``(a, b)``: those dims then merge into one indexed by ``a_b``
(the same bytes, read as a reshaped view). Otherwise the computation is returned as it is.
``flatten_reduction(c)`` does the same with its last two reduction axes.

Why: a 1x1 convolution over a 14x14 image is a GEMM with 196 contiguous columns, but
vectorized over its 14-wide rows it fills 14 of 16 lanes in three partial vectors; a Relu
over ``[1, 64, 56, 56]`` becomes one 200 704-element stream instead of 56-wide rows; a
global average pool over 7x7 sums 49 contiguous elements, which vectorize, not 7 rows of 7.
"""

from __future__ import annotations

from dataclasses import replace

from compiler.loopir.compute import Computation, ReduceAxis
from compiler.loopir.expr import Buffer, Const, Expr, Load, Var, free_vars, map_loads, substitute
from compiler.loopir.sizes import is_one, may_exceed_one


def _merged(buffer: Buffer, indices: tuple[Expr, ...], a: Var, b: Var, fused: Var,
            extents: tuple[int, int]) -> tuple[Buffer, tuple[Expr, ...]] | None:
    """The access with dims (a, b) merged, the same access if it uses neither, None if it cannot merge
    (a dim of another extent than its var's, e.g. a slice read in place, is not a reshape)."""
    uses = [k for k, e in enumerate(indices) if free_vars(e) & {a, b}]
    if not uses:
        return buffer, indices
    if len(uses) != 2 or indices[uses[0]] != a or uses[1] != uses[0] + 1 or indices[uses[1]] != b:
        return None
    k = uses[0]
    if buffer.shape[k:k + 2] != extents:
        return None
    shape = buffer.shape[:k] + (buffer.shape[k] * buffer.shape[k + 1],) + buffer.shape[k + 2:]
    return replace(buffer, shape=shape), indices[:k] + (fused,) + indices[k + 2:]


def _merged_loads(c: Computation, a: Var, b: Var, fused: Var, extents: tuple[int, int]) -> Computation | None:
    """``c`` with every load's (a, b) dims merged into ``fused``; None where an access or a use outside
    load indices (an iota, a triangular mask, ArgMax's position) keeps them apart."""
    ok = True

    def rewrite(ld: Load) -> Load | None:
        nonlocal ok
        merged = _merged(ld.buffer, ld.indices, a, b, fused, extents)
        if merged is None:
            ok = False
            return None
        return Load(*merged)

    flat = c.map_exprs(lambda e: map_loads(e, rewrite))
    return flat if ok and not any(free_vars(e) & {a, b} for e in flat.exprs) else None


def _flatten_once(c: Computation) -> Computation | None:
    live = [(k, v, n) for k, (v, n) in enumerate(zip(c.index, c.space)) if may_exceed_one(n)]
    if len(live) < 2:
        return None
    (ka, a, na), (kb, b, nb) = live[-2], live[-1]
    offsets = c.offsets or (0,) * len(c.index)
    # The two dims must be written whole: the whole output, or (a strip-mined block of a symbolic
    # computation: one image of a batch) a box offset only along other dims.
    if not c.writes_whole_output and c.is_static:
        return None
    if (kb != ka + 1 or c.output.shape[ka:kb + 1] != (na, nb) or offsets[ka] != 0 or offsets[kb] != 0
            or not all(isinstance(n, int) for n in (na, nb))):
        return None
    fused = Var(f"{a.name}_{b.name}")
    out = _merged(c.output, c.index, a, b, fused, (na, nb))
    flat = _merged_loads(c, a, b, fused, (na, nb)) if out is not None else None
    if flat is None:
        return None
    space = c.space[:ka] + (na * nb,) + c.space[kb + 1:]
    moved = None if c.offsets is None else offsets[:ka] + (0,) + offsets[kb + 1:]
    return replace(flat, output=out[0], index=out[1], extents=None if c.extents is None else space, offsets=moved)


def _unit_vars_zero(c: Computation) -> Computation:
    """Extent-1 vars are 0 (as in build_loops): a 1x1 conv's x[n, ci, oh + kh, ow + kw] is x[n, ci, oh, ow]."""
    unit = ({v: Const(0) for v, n in zip(c.index, c.space) if is_one(n)}
            | {a.var: Const(0) for a in c.axes if is_one(a.extent)})
    return c.map_exprs(lambda e: substitute(e, unit))


def flatten_inner(c: Computation) -> Computation:
    c = _unit_vars_zero(c)
    while (flat := _flatten_once(c)) is not None:
        c = flat
    return c


def _flatten_reduction_once(c: Computation) -> Computation | None:
    live = [axis for axis in c.axes if may_exceed_one(axis.extent)]
    if len(live) < 2:
        return None
    a, b = live[-2], live[-1]
    fused = Var(f"{a.var.name}_{b.var.name}")
    flat = _merged_loads(c, a.var, b.var, fused, (a.extent, b.extent))
    if flat is None:
        return None
    return replace(flat, axes=(*live[:-2], ReduceAxis(fused, a.extent * b.extent)))


def flatten_reduction(c: Computation) -> Computation:
    c = _unit_vars_zero(c)
    while (flat := _flatten_reduction_once(c)) is not None:
        c = flat
    return c
