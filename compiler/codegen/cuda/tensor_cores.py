"""Tensor-core GPU schedule for float16 / bfloat16 contractions (MatMul, Gemm, Conv as implicit GEMM...).

Contract: ``tile_contraction_tc(c, target)`` returns the loop IR of a block-tiled
kernel whose inner products run on tensor cores (warp-level 16 × 16 × 16
matrix multiply-accumulate, ``tl_wmma``: the ``nvcuda::wmma`` API, see
codegen_templates/cuda/wmma.cuh.j2), or None when ``c`` is not a contraction
(``tiling.as_contraction``) of two float16 or two bfloat16 operands (or of
float32 values exactly widened from them: lowerings multiply float16 in
float32, ``float32(a) * float32(b)``, and the staged tiles store them back
unchanged), is below
the tiling thresholds, or the target has no tensor cores for its type (the
caller then uses ``tiling.tile_contraction``). float32 contractions never come
here: tensor cores would round their operands to TF32.

Products are accumulated in float and the result is rounded once, to the
output type, by the epilogue's store. The kernel (``WARPS_M`` × ``WARPS_N``
warps per block, each owning ``FM`` × ``FN`` accumulator fragments)::

    block for blk in 0..batch * ceil(M/BM) * ceil(N/BN):
      alloc a_tile[BK, BM + PAD], b_tile[BK, BN + PAD] (16-bit), c_tile[BM, BN + C_PAD] (float) shared
      thread for t in 0..32 * WARPS_M * WARPS_N:
        alloc acc[FM, FN] fragment
          fill acc with 0
          for ko in 0..ceil(K/BK):
            a_tile, b_tile = the operands' slices, 0 outside the matrix   (tiling.stage_tile)
            barrier
            warp mma acc += a_tile[:, warp rows] x b_tile[:, warp cols]   (BK/16 steps)
            barrier
          store acc to c_tile[warp rows, warp cols]
        barrier
        for l: out[...] = epilogue(c_tile[r, col]) where inside the matrix   (consecutive threads: consecutive cols)

The zero-filled tiles make M, N and K that are not multiples of 16 exact: the
padded products add zeros and the guarded store drops the padded outputs.
The three warp-level statements are defined here (the loop IR has no notion
of fragments) and rendered by the emitter from codegen_templates/cuda/warp_ops.cu.j2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import ml_dtypes
import numpy as np

from compiler.codegen.cuda import tiling
from compiler.dtypes import DType
from compiler.loopir.compute import Computation
from compiler.loopir.expr import Buffer, Cast, Const, Expr, Load, Select, Var
from compiler.loopir.stmt import Alloc, Barrier, For, ForKind, Stmt, seq

FRAGMENT = 16  # m = n = k of one wmma operation
WARP = 32
WARPS_M = WARPS_N = 2  # warps per block along rows / cols
MAX_FRAGMENTS = 2  # accumulator fragments per warp along rows and along cols
BK = 32  # reduction slice staged in shared memory per step: two fragment steps
# Row padding of the shared tiles (elements): rows start on different banks, and every fragment
# still starts 32-byte aligned with a leading dimension that is a multiple of 16 bytes (wmma's rules).
PAD, C_PAD = 8, 4
# Operand types with tensor-core support and the compute capability that brings it.
TENSOR_CORE_TYPES = {DType.F16: (7, 0), DType.BF16: (8, 0)}
_NUMPY_TYPES = {DType.F16: np.float16, DType.BF16: ml_dtypes.bfloat16}


@dataclass(frozen=True)
class FragmentFill(Stmt):
    """Every accumulator fragment of ``acc`` (scope ``fragment``) of the calling warp := ``value``."""

    acc: Buffer
    value: float = 0.0

    def format_line(self, fmt: Callable[[Expr], str]) -> str:
        return f"fill fragments {self.acc.name} with {self.value}"


@dataclass(frozen=True)
class WarpMma(Stmt):
    """The calling warp: ``acc[i, j] += A_i B_j`` over the whole staged slice, where ``A_i`` is rows
    ``row + 16 i``.. of ``a_tile`` (stored k-major: ``a_tile[k, m]``) and ``B_j`` cols ``col + 16 j``.. of
    ``b_tile[k, n]``. Every thread of a warp passes the same ``row`` / ``col``."""

    acc: Buffer
    a_tile: Buffer
    b_tile: Buffer
    row: Expr
    col: Expr

    def format_line(self, fmt: Callable[[Expr], str]) -> str:
        return (f"warp mma {self.acc.name} += {self.a_tile.name}[:, {fmt(self.row)}..] x "
                f"{self.b_tile.name}[:, {fmt(self.col)}..]")


@dataclass(frozen=True)
class FragmentStore(Stmt):
    """The calling warp stores its fragments: ``out[row + 16 i.., col + 16 j..] = acc[i, j]``."""

    acc: Buffer
    out: Buffer
    row: Expr
    col: Expr

    def format_line(self, fmt: Callable[[Expr], str]) -> str:
        return f"{self.out.name}[{fmt(self.row)}.., {fmt(self.col)}..] = fragments {self.acc.name}"


def _narrowed(e: Expr, d: DType) -> Expr | None:
    """``e`` computed in ``d`` (float16 / bfloat16) with the same value, or None if some value of ``e`` may not be
    exact in ``d``: ``e`` itself of type ``d``, float widenings of such values, selects of them, exact constants."""
    if e.dtype is d:
        return e
    if isinstance(e, Cast) and e.type.is_float and e.type.bits > d.bits:
        return _narrowed(e.value, d)
    if isinstance(e, Select):
        t, f = _narrowed(e.true_value, d), _narrowed(e.false_value, d)
        return None if t is None or f is None else Select(e.cond, t, f)
    if isinstance(e, Const) and e.dtype.is_float:
        v = float(e.value)
        return Const(v, d) if float(_NUMPY_TYPES[d](v)) == v else None
    return None


def _fragments(extent: int, warps: int) -> int:
    return max(1, min(MAX_FRAGMENTS, -(-extent // (FRAGMENT * warps))))


def tile_contraction_tc(c: Computation, compute_capability: tuple[int, int]) -> Stmt | None:
    g = tiling.as_contraction(c)
    if g is None or not g.rows or not g.cols or not g.red:
        return None
    for d, needs in TENSOR_CORE_TYPES.items():
        a, b = _narrowed(g.a, d), _narrowed(g.b, d)
        if a is not None and b is not None and compute_capability >= needs:
            g = replace(g, a=a, b=b)
            break
    else:
        return None
    if g.m < tiling.MIN_ROWS or g.n < tiling.MIN_COLS or g.k < tiling.MIN_REDUCTION:
        return None
    fm, fn = _fragments(g.m, WARPS_M), _fragments(g.n, WARPS_N)
    bm, bn = WARPS_M * fm * FRAGMENT, WARPS_N * fn * FRAGMENT
    m_blocks, n_blocks, k_steps = -(-g.m // bm), -(-g.n // bn), -(-g.k // BK)
    batch = math.prod(n for _, n in g.batch)
    threads = WARPS_M * WARPS_N * WARP
    name = c.output.name

    blk, t, ko, la, lb, lc = (Var(f"{name}_{s}") for s in ("blk", "t", "ko", "la", "lb", "lc"))
    batch_of, mb, nb = tiling.block_coords(g, blk, m_blocks, n_blocks)
    warp = t // WARP
    warp_row = (warp // WARPS_N) * (fm * FRAGMENT)
    warp_col = (warp % WARPS_N) * (fn * FRAGMENT)

    a_tile = Buffer(f"{name}_a_tile", g.a.dtype, (BK, bm + PAD), "shared")
    b_tile = Buffer(f"{name}_b_tile", g.b.dtype, (BK, bn + PAD), "shared")
    # Holds float values: the emitter computes float16 / bfloat16 in float, so the epilogue reads the
    # unrounded sums and its store rounds once.
    c_tile = Buffer(f"{name}_c_tile", c.body.dtype, (bm, bn + C_PAD), "shared")
    acc = Buffer(f"{name}_acc", DType.F32, (fm, fn), "fragment")

    step = seq(
        tiling.stage_tile(g, batch_of, a_tile, g.a, g.rows, mb * bm, bm, ko, BK, t, threads, la),
        tiling.stage_tile(g, batch_of, b_tile, g.b, g.cols, nb * bn, bn, ko, BK, t, threads, lb),
        Barrier(),
        WarpMma(acc, a_tile, b_tile, warp_row, warp_col),
        Barrier(),
    )
    product = Alloc(acc, seq(FragmentFill(acc), For(ko, k_steps, step), FragmentStore(acc, c_tile, warp_row, warp_col)))
    e = lc * threads + t
    r, col = e // bn, e % bn
    out = tiling.store_output(c, g, batch_of, mb * bm + r, nb * bn + col, Load(c_tile, (r, col)), bm, bn)
    per_thread = seq(product, Barrier(), For(lc, bm * bn // threads, out))
    return For(blk, batch * m_blocks * n_blocks,
               Alloc(a_tile, Alloc(b_tile, Alloc(c_tile, For(t, threads, per_thread, ForKind.GPU_THREAD)))),
               ForKind.GPU_BLOCK)
