"""Cooperative GPU schedule for reductions over long contiguous rows (ReduceSum/Mean/Max, Softmax, LayerNorm...).

Contract: ``reduce_rows(c)`` returns the loop IR of a kernel in which a warp
(``WARP_ROW_MIN`` <= K) or a whole block (``BLOCK_ROW_MIN`` <= K) reduces one
output element's K = prod(reduced extents) terms together, or None when
``c`` is not a reduction, its row is shorter, or its operands do not walk the
reduced axes contiguously (the caller keeps one thread per output element:
then consecutive threads read consecutive addresses instead).

A warp per row (``ROWS_PER_BLOCK`` rows per block of ``THREADS``)::

    block for blk in 0..ceil(rows / ROWS_PER_BLOCK):
      thread for t in 0..THREADS:
        row = blk * ROWS_PER_BLOCK + t / 32, lane = t % 32
        acc = init
        for l in 0..ceil(K / 32): if row < rows and l*32 + lane < K: acc = combine(acc, body(row, l*32 + lane))
        warp reduce acc                                 (__shfl_down_sync: lane 0 gets the row's value)
        if lane == 0 and row < rows: out[row] = epilogue(acc)

A block per row: each thread reduces K / THREADS terms, each warp its 32
partials, lane 0 of each warp writes one to ``__shared__`` memory, and after a
barrier the first warp reduces those. Lanes step through the row together, so
each step reads one contiguous stretch (coalesced). Partial results combine in
a tree instead of left to right: float sums may differ from the serial order
by rounding only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from compiler.codegen.cuda.tiling import unflatten
from compiler.loopir.compute import Computation, combine, reduce_init
from compiler.loopir.expr import (Buffer, Const, Expr, Load, Var, compare, flat_index, free_vars, linear_coefficient,
                                  logical_and, select, substitute, walk)
from compiler.loopir.stmt import Alloc, Barrier, For, ForKind, If, Stmt, Store, seq

WARP = 32
THREADS = 256
ROWS_PER_BLOCK = THREADS // WARP
WARPS = THREADS // WARP
# A warp per row from this many terms (at least a couple per lane); a block per row from this many.
WARP_ROW_MIN = 64
BLOCK_ROW_MIN = 2048


@dataclass(frozen=True)
class WarpReduce(Stmt):
    """The calling warp combines ``acc[0]`` of its 32 lanes; lane 0 ends with the result. Each step
    moves a lane's value into ``other[0]`` of the lane ``offset`` below it (``__shfl_down_sync``),
    then runs ``update`` (``acc[0] = combine(acc[0], other[0])``). Every lane of the warp must run it."""

    acc: Buffer
    other: Buffer
    update: Stmt

    def format_line(self, fmt: Callable[[Expr], str]) -> str:
        return f"warp reduce {self.acc.name} ({fmt(self.update.value) if isinstance(self.update, Store) else ''})"


def _contiguous(c: Computation) -> bool:
    """Whether consecutive terms of the innermost reduced axis sit next to each other in every operand that
    walks it (so lanes reading consecutive terms read consecutive addresses)."""
    inner = [a.var for a in c.axes if a.extent > 1][-1]
    walking = [ld for ld in walk(c.body) if isinstance(ld, Load) and ld.buffer.scope == "global"
               and inner in free_vars(flat_index(ld.buffer, ld.indices))]
    return bool(walking) and all(linear_coefficient(flat_index(ld.buffer, ld.indices), inner) == 1 for ld in walking)


def reduce_rows(c: Computation) -> Stmt | None:
    if not c.is_reduction or 0 in c.space or any(a.extent == 0 for a in c.axes):
        return None
    red = tuple((a.var, a.extent) for a in c.axes if a.extent > 1)
    k = math.prod(n for _, n in red)
    if not red or k < WARP_ROW_MIN or not _contiguous(c):
        return None
    name = c.output.name
    dtype = c.body.dtype
    unit = {v: Const(0) for v, n in zip(c.index, c.space) if n == 1}
    unit.update({a.var: Const(0) for a in c.axes if a.extent == 1})
    live = tuple((v, n) for v, n in zip(c.index, c.space) if n > 1)
    rows = math.prod(n for _, n in live)

    blk, t, l = Var(f"{name}_blk"), Var(f"{name}_t"), Var(f"{name}_l")
    acc = Buffer(f"{name}_acc", dtype, (1,), "local")
    other = Buffer(f"{name}_other", dtype, (1,), "local")
    lane, warp = t % WARP, t // WARP
    per_block = k >= BLOCK_ROW_MIN
    # Block per row: the block's threads stride through the row; warp per row: the warp's lanes do.
    row = blk if per_block else blk * ROWS_PER_BLOCK + warp
    stride, first = (THREADS, t) if per_block else (WARP, lane)
    kidx = l * stride + first

    def guarded(body: Stmt, conds: list[Expr]) -> Stmt:
        conds = [cnd for cnd in conds if not (isinstance(cnd, Const) and cnd.value)]
        if not conds:
            return body
        cond = conds[0]
        for part in conds[1:]:
            cond = logical_and(cond, part)
        return If(cond, body)

    where = {**unit, **unflatten(row, live)}
    term = substitute(c.body, {**where, **unflatten(kidx, red)})
    accumulate = Store(acc, (Const(0),), combine(c.combiner, Load(acc, (Const(0),)), term))
    row_inside = [] if per_block or rows % ROWS_PER_BLOCK == 0 else [compare("lt", row, rows)]
    k_inside = [compare("lt", kidx, k)] if k % stride else []
    steps = For(l, -(-k // stride), guarded(accumulate, row_inside + k_inside))
    init = Store(acc, (Const(0),), reduce_init(c.combiner, dtype))
    warp_reduce = WarpReduce(acc, other, Store(acc, (Const(0),), combine(c.combiner, Load(acc, (Const(0),)),
                                                                          Load(other, (Const(0),)))))
    offsets = c.offsets or (0,) * len(c.index)
    out_index = tuple(substitute(v + o, where) for v, o in zip(c.index, offsets))
    value: Expr = Load(acc, (Const(0),))
    if c.epilogue is not None:
        value = substitute(substitute(c.epilogue, where), {c.acc: value})
    store = guarded(Store(c.output, out_index, value), [compare("eq", lane, 0)] + row_inside)

    if per_block:
        partials = Buffer(f"{name}_partials", dtype, (WARPS,), "shared")
        per_thread = seq(
            init, steps, warp_reduce,
            If(compare("eq", lane, 0), Store(partials, (warp,), Load(acc, (Const(0),)))),
            Barrier(),
            If(compare("eq", warp, 0), seq(
                Store(acc, (Const(0),), select(compare("lt", lane, WARPS), Load(partials, (lane,)),
                                               reduce_init(c.combiner, dtype))),
                warp_reduce, store)))
        threads: Stmt = For(t, THREADS, Alloc(acc, Alloc(other, per_thread)), ForKind.GPU_THREAD)
        return For(blk, rows, Alloc(partials, threads), ForKind.GPU_BLOCK)
    per_thread = seq(init, steps, warp_reduce, store)
    return For(blk, -(-rows // ROWS_PER_BLOCK), For(t, THREADS, Alloc(acc, Alloc(other, per_thread)), ForKind.GPU_THREAD),
               ForKind.GPU_BLOCK)
