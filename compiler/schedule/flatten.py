"""Flatten a computation's innermost output dims into one where every access allows it.

Contract: ``flatten_inner(c)`` returns ``c`` with its last two live index vars ``a, b``
(extents ``A, B``) replaced by one var ``a_b`` of extent ``A*B``, repeatedly, as long as
every buffer access that uses ``a`` or ``b`` indexes two adjacent dims of extents
``(A, B)`` with exactly ``(a, b)``: those dims then merge into one indexed by ``a_b``
(the same bytes, read as a reshaped view). Otherwise the computation is returned as it is.

Why: a 1x1 convolution over a 14x14 image is a GEMM with 196 contiguous columns, but
vectorized over its 14-wide rows it fills 14 of 16 lanes in three partial vectors; a Relu
over ``[1, 64, 56, 56]`` becomes one 200 704-element stream instead of 56-wide rows.
"""

from __future__ import annotations

from dataclasses import replace

from compiler.loopir.compute import Computation
from compiler.loopir.expr import Buffer, Const, Expr, Load, Var, free_vars, map_loads, substitute


def _merged(buffer: Buffer, indices: tuple[Expr, ...], a: Var, b: Var, fused: Var) -> tuple[Buffer, tuple[Expr, ...]] | None:
    """The access with dims (a, b) merged, the same access if it uses neither, None if it cannot merge."""
    uses = [k for k, e in enumerate(indices) if free_vars(e) & {a, b}]
    if not uses:
        return buffer, indices
    if len(uses) != 2 or indices[uses[0]] != a or uses[1] != uses[0] + 1 or indices[uses[1]] != b:
        return None
    k = uses[0]
    shape = buffer.shape[:k] + (buffer.shape[k] * buffer.shape[k + 1],) + buffer.shape[k + 2:]
    return replace(buffer, shape=shape), indices[:k] + (fused,) + indices[k + 2:]


def _flatten_once(c: Computation) -> Computation | None:
    live = [(k, v, n) for k, (v, n) in enumerate(zip(c.index, c.space)) if n > 1]
    if len(live) < 2 or not c.writes_whole_output:
        return None
    (ka, a, na), (kb, b, nb) = live[-2], live[-1]
    if kb != ka + 1 or c.output.shape[ka:kb + 1] != (na, nb):
        return None
    fused = Var(f"{a.name}_{b.name}")
    out = _merged(c.output, c.index, a, b, fused)
    if out is None:
        return None
    ok = True

    def rewrite(ld: Load) -> Load | None:
        nonlocal ok
        merged = _merged(ld.buffer, ld.indices, a, b, fused)
        if merged is None:
            ok = False
            return None
        return Load(*merged)

    flat = c.map_exprs(lambda e: map_loads(e, rewrite))
    # A var used outside load indices (an iota, a triangular mask) keeps its own loop.
    if not ok or any(free_vars(e) & {a, b} for e in flat.exprs):
        return None
    space = c.space[:ka] + (na * nb,) + c.space[kb + 1:]
    return replace(flat, output=out[0], index=out[1], extents=None if c.extents is None else space, offsets=None)


def flatten_inner(c: Computation) -> Computation:
    # Extent-1 vars are 0 (as in build_loops): a 1x1 conv's x[n, ci, oh + kh, ow + kw] is x[n, ci, oh, ow].
    unit = {v: Const(0) for v, n in zip(c.index, c.space) if n == 1} | {a.var: Const(0) for a in c.axes if a.extent == 1}
    c = c.map_exprs(lambda e: substitute(e, unit))
    while (flat := _flatten_once(c)) is not None:
        c = flat
    return c
