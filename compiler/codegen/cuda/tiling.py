"""Shared-memory tiled GPU schedule for contractions (MatMul, Gemm, Conv, Einsum, attention products...).

Contract: ``tile_contraction(c)`` returns the loop IR of a block-tiled kernel
for a computation that is a sum of products of two operands, or None when
``c`` is not one or is too small to gain from tiling (the caller then gives it
one thread per output element).

Recognition works on the computation, not on op names: the body must be
``a * b`` (after extent-1 variables are set to 0), and the live output index
variables split into *rows* (read by ``a`` only), *cols* (read by ``b``
only) and *batch* (read by both or neither). That is the implicit GEMM
``out[batch, M, N] = sum_K A[batch, M, K] * B[batch, K, N]`` with M, N and K
the row-major flattenings of rows, cols and the reduction axes; a Conv's
"A" is its (padded) input gathered at ``o*s + k*d``, which is never
materialised: each tile element is ``a`` evaluated at that (batch, row, k).

The kernel (``TY`` × ``TX`` threads per block, each owning an ``RM`` × ``RN``
register tile spread at strides ``TY`` / ``TX``, so neighbouring threads
store neighbouring outputs and read distinct shared-memory banks)::

    block for blk in 0..batch * ceil(M/BM) * ceil(N/BN):
      alloc a_tile[BK, BM], b_tile[BK, BN] shared
      thread for t in 0..TY*TX:
        acc[RM, RN] = 0
        for ko in 0..ceil(K/BK):
          a_tile[...] = a(...) or 0 outside the matrix   (all threads together, RM loads each)
          b_tile[...] = b(...) or 0
          barrier
          for kk in 0..BK: a_reg = a_tile[kk, rows]; b_reg = b_tile[kk, cols]; acc += a_reg (x) b_reg
          barrier
        out[...] = epilogue(acc) where inside the matrix

Per-thread tiles shrink (down to 1) for small M or N, so a 20-row product
does not run 44 idle rows. Out-of-range guards are only emitted where the
extent is not a multiple of the tile.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.dtypes import DType
from compiler.loopir.compute import Computation, combine, reduce_init
from compiler.loopir.expr import (Binary, Buffer, Const, Expr, Load, Var, compare, const, flat_index, free_vars,
                                  linear_coefficient, logical_and, select, substitute, walk)
from compiler.loopir.stmt import Alloc, Barrier, For, ForKind, If, Stmt, Store, seq, substitute_stmt

TY = TX = 16  # threads per block along rows / cols
BK = 16  # reduction slice staged in shared memory per step
MAX_REGISTER_TILE = 4  # per-thread outputs along rows and along cols
# Below these sizes staging costs more than it saves: one thread per output instead.
MIN_ROWS = MIN_COLS = 16
MIN_REDUCTION = 8
# Each thread stages a whole number of tile elements: RM * BK / TX of A's tile, RN * BK / TY of B's.
assert BK % TX == 0 and BK % TY == 0

Dims = tuple[tuple[Var, int], ...]


@dataclass(frozen=True)
class Contraction:
    """``c`` seen as a batched GEMM: operand ``a`` over (batch, rows, red), ``b`` over (batch, red, cols)."""

    a: Expr
    b: Expr
    batch: Dims
    rows: Dims
    cols: Dims
    red: Dims
    unit: dict[Var, Expr]  # extent-1 variables, fixed at 0

    @property
    def m(self) -> int:
        return math.prod(n for _, n in self.rows)

    @property
    def n(self) -> int:
        return math.prod(n for _, n in self.cols)

    @property
    def k(self) -> int:
        return math.prod(n for _, n in self.red)


def as_contraction(c: Computation) -> Contraction | None:
    """``c`` as a batched GEMM, or None if its body is not a product splitting the index variables."""
    if not c.is_reduction or c.combiner != "sum" or c.body.dtype is DType.BOOL:
        return None
    unit: dict[Var, Expr] = {v: Const(0) for v, n in zip(c.index, c.space) if n == 1}
    unit.update({ax.var: Const(0) for ax in c.axes if ax.extent == 1})
    body = substitute(c.body, unit)
    if not (isinstance(body, Binary) and body.op == "mul"):
        return None
    live = [(v, n) for v, n in zip(c.index, c.space) if n > 1]
    in_a, in_b = free_vars(body.a), free_vars(body.b)
    rows = tuple((v, n) for v, n in live if v in in_a and v not in in_b)
    cols = tuple((v, n) for v, n in live if v in in_b and v not in in_a)
    batch = tuple((v, n) for v, n in live if (v in in_a) == (v in in_b))
    red = tuple((ax.var, ax.extent) for ax in c.axes if ax.extent > 1)
    a, b = body.a, body.b
    if live and live[-1] in rows:
        # The innermost output dim goes to the cols, which consecutive threads walk: coalesced stores.
        a, b, rows, cols = b, a, cols, rows
    return Contraction(a, b, batch, rows, cols, red, unit)


def unflatten(flat: Expr, dims: Dims) -> dict[Var, Expr]:
    """Row-major coordinates of ``flat`` in ``dims`` (the first one unbounded, so tails need a guard)."""
    out: dict[Var, Expr] = {}
    rest = flat
    for k, (v, n) in reversed(list(enumerate(dims))):
        out[v] = rest if k == 0 else rest % n
        rest = rest // n
    return out


def _register_tile(extent: int, threads: int) -> int:
    return max(1, min(MAX_REGISTER_TILE, -(-extent // threads)))


def _fastest_first(operand: Expr, inner: Var | None) -> bool:
    """Whether consecutive tile elements should walk ``inner`` (a row/col var) rather than the reduction."""
    loads = [e for e in walk(operand) if isinstance(e, Load) and e.buffer.scope == "global"]
    return inner is not None and any(linear_coefficient(flat_index(ld.buffer, ld.indices), inner) == 1
                                     for ld in loads)


def block_coords(g: Contraction, blk: Var, m_blocks: int, n_blocks: int) -> tuple[dict[Var, Expr], Expr, Expr]:
    """Batch coordinates, row block and col block of block ``blk = (batch * m_blocks + mb) * n_blocks + nb``."""
    batch_of = unflatten(blk // (m_blocks * n_blocks), g.batch)
    mb = (blk // n_blocks) % m_blocks if m_blocks > 1 else Const(0)
    nb = blk % n_blocks if n_blocks > 1 else Const(0)
    return batch_of, mb, nb


def stage_tile(g: Contraction, batch_of: dict[Var, Expr], tile: Buffer, operand: Expr, dims: Dims, first: Expr,
               width: int, ko: Var, bk: int, t: Var, threads: int, lv: Var) -> Stmt:
    """The block's threads copy the operand's [bk, width] slice at rows/cols ``first``.. and reduction step ``ko``
    into ``tile[kpos, pos]`` (``width * bk / threads`` elements each), zeros outside the matrix."""
    e = lv * threads + t
    if _fastest_first(operand, dims[-1][0] if dims else None):
        pos, kpos = e % width, e // width
    else:
        pos, kpos = e // bk, e % bk
    index, kidx = first + pos, ko * bk + kpos
    extent = math.prod(n for _, n in dims)
    inside = []
    if extent % width:
        inside.append(compare("lt", index, extent))
    if g.k % bk:
        inside.append(compare("lt", kidx, g.k))
    value = substitute(operand, {**g.unit, **batch_of, **unflatten(index, dims), **unflatten(kidx, g.red)})
    cond = Const(True, DType.BOOL)
    for part in inside:
        cond = logical_and(cond, part)
    store = Store(tile, (kpos, pos), select(cond, value, const(0, operand.dtype)))
    return _unrolled(lv, width * bk // threads, store)


def store_output(c: Computation, g: Contraction, batch_of: dict[Var, Expr], row: Expr, col: Expr, value: Expr,
                 row_tile: int, col_tile: int) -> Stmt:
    """``c``'s output at GEMM position (row, col) = its epilogue of the reduced ``value``, guarded where the
    row / col tiles do not divide M / N."""
    where = {**g.unit, **batch_of, **unflatten(row, g.rows), **unflatten(col, g.cols)}
    offsets = c.offsets or (0,) * len(c.index)
    out_index = tuple(substitute(v + k, where) for v, k in zip(c.index, offsets))
    if c.epilogue is not None:
        value = substitute(substitute(c.epilogue, where), {c.acc: value})
    store: Stmt = Store(c.output, out_index, value)
    guards = ([compare("lt", row, g.m)] if g.m % row_tile else []) + ([compare("lt", col, g.n)] if g.n % col_tile else [])
    if guards:
        store = If(guards[0] if len(guards) == 1 else logical_and(*guards), store)
    return store


def tile_contraction(c: Computation) -> Stmt | None:
    g = as_contraction(c)
    if g is None or not g.rows or not g.cols or not g.red:
        return None
    if g.m < MIN_ROWS or g.n < MIN_COLS or g.k < MIN_REDUCTION:
        return None
    rm, rn = _register_tile(g.m, TY), _register_tile(g.n, TX)
    bm, bn = TY * rm, TX * rn
    m_blocks, n_blocks, k_steps = -(-g.m // bm), -(-g.n // bn), -(-g.k // BK)
    batch = math.prod(n for _, n in g.batch)
    threads = TY * TX
    name = c.output.name
    dtype = c.body.dtype

    blk, t, ko, kk, i, j, la, lb = (Var(f"{name}_{s}") for s in ("blk", "t", "ko", "kk", "i", "j", "la", "lb"))
    batch_of, mb, nb = block_coords(g, blk, m_blocks, n_blocks)
    ty, tx = t // TX, t % TX

    a_tile = Buffer(f"{name}_a_tile", g.a.dtype, (BK, bm), "shared")
    b_tile = Buffer(f"{name}_b_tile", g.b.dtype, (BK, bn), "shared")
    acc = Buffer(f"{name}_acc", dtype, (rm, rn), "local")
    a_reg = Buffer(f"{name}_a_reg", g.a.dtype, (rm,), "local")
    b_reg = Buffer(f"{name}_b_reg", g.b.dtype, (rn,), "local")

    step = seq(
        stage_tile(g, batch_of, a_tile, g.a, g.rows, mb * bm, bm, ko, BK, t, threads, la),
        stage_tile(g, batch_of, b_tile, g.b, g.cols, nb * bn, bn, ko, BK, t, threads, lb),
        Barrier(),
        # kk stays a plain loop (NVRTC unrolls it partly by itself): unrolling all BK steps costs a third
        # more compile time for the whole module; i and j are unrolled so the tiles live in registers.
        For(kk, BK, seq(
            _unrolled(i, rm, Store(a_reg, (i,), Load(a_tile, (kk, ty + i * TY)))),
            _unrolled(j, rn, Store(b_reg, (j,), Load(b_tile, (kk, tx + j * TX)))),
            _unrolled(i, rm, _unrolled(j, rn, Store(acc, (i, j), combine("sum", Load(acc, (i, j)),
                                                                           Load(a_reg, (i,)) * Load(b_reg, (j,)))))))),
        Barrier(),
    )
    init = _unrolled(i, rm, _unrolled(j, rn, Store(acc, (i, j), reduce_init("sum", dtype))))
    row, col = mb * bm + ty + i * TY, nb * bn + tx + j * TX
    final = _unrolled(i, rm, _unrolled(j, rn, store_output(c, g, batch_of, row, col, Load(acc, (i, j)), bm, bn)))
    per_thread = Alloc(acc, Alloc(a_reg, Alloc(b_reg, seq(init, For(ko, k_steps, step), final))))
    return For(blk, batch * m_blocks * n_blocks,
               Alloc(a_tile, Alloc(b_tile, For(t, threads, per_thread, ForKind.GPU_THREAD))), ForKind.GPU_BLOCK)


def _unrolled(v: Var, extent: int, body: Stmt) -> Stmt:
    """``for v in 0..extent`` unrolled; a single iteration is just the body at v = 0."""
    return For(v, extent, body, ForKind.UNROLLED) if extent > 1 else substitute_stmt(body, {v: Const(0)})
