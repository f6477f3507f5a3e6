"""Default schedules: pick transforms for a computation from its shape and the target.

Three classes, recognised from the computation itself rather than from op names:

- contraction: a sum of products whose innermost output index is contiguous in
  one operand and absent from another (MatMul, Gemm, Conv, ConvTranspose-as-
  gather...). It gets a register tile: ``rows`` × ``lanes`` accumulators kept in
  vector registers while the reduction streams (``hoist_reduction``), rows
  unrolled, lanes vectorized. An output index read through a division (a grouped
  conv's channel) is first split into group and member indices. An 8-bit integer
  one (uint8 x int8 into int32) or a bfloat16 one (into float32) is first
  rewritten into word dot products where the target has them
  (``contraction.dot_product_form``: VNNI, AVX512-BF16).
- other reductions and pointwise computations: innermost loop vectorized where
  its store is contiguous and every load contiguous, invariant or a short stride
  along it (a stride-2 pool's window); failing that, a reduction is vectorized
  along its innermost reduction axis when that is contiguous (a row sum, a GEMV).
- every computation: the outermost loop runs on the thread pool when there is
  enough work to pay for a fork/join.

A computation with symbolic extents (``Computation.is_static`` false): a
contraction is strip-mined into static blocks (``compiler.schedule.strip_mine``)
that get the contraction schedule above; anything else gets the pointwise /
reduction schedule with its symbolic loops kept whole (a split of one ends in
halving static chunks). Heuristics read symbolic sizes at their nominal value
(each size variable 64); whether a symbolic outer loop uses the thread pool is
decided per run from the run's sizes (``For.work``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from compiler.codegen.target import MAX_SHUFFLED_LOAD_STRIDE, Target, dot_product_forms
from compiler.loopir.compute import Computation, build_loops, reduce_init
from compiler.loopir.expr import Expr, Load, Var, flat_index, linear_coefficient, walk
from compiler.loopir.sizes import Size, may_exceed_one, nominal, size_expr, size_prod, static_value
from compiler.loopir.stmt import For, ForKind, Stmt, map_stmts, seq, walk_stmts
from compiler.schedule.flatten import flatten_inner, flatten_reduction
from compiler.schedule.groups import split_grouped_index
from compiler.schedule.contraction import (L2_BUDGET, choose_tile, dot_product_form, dot_product_operands_packable,
                                           max_tile_rows, pack_operands, tiled_contraction)
from compiler.schedule.strip_mine import at_extents, serial_top, strip_mine
from compiler.schedule.transforms import (annotate, blocks_inside, collapse, hoist_reduction, outermost_loop, reorder,
                                         split, vectorize_reduction)

# Below this much work (scalar operations: output elements × reduction extent) a kernel runs
# on the calling thread. A fork/join of the pool costs about 1 us on an idle 2-core Zen 4;
# these keep it under ~10% of the serial time: pointwise kernels stream memory at a few
# elements per ns, contractions retire ~50 multiply-adds per ns.
MIN_PARALLEL_WORK = 1 << 15
MIN_PARALLEL_CONTRACTION = 1 << 19
# Reductions shorter than this (multiply-adds per output) count as short for the choice of the
# vector var: a 14x32 tile stored lane by lane costs ~450 stores, next to 14 x 32 x R / 32 FMA cycles.
SHORT_REDUCTION = 256


def _loads(c: Computation) -> list[Load]:
    return [e for e in walk(c.body) if isinstance(e, Load)]


def _coefficients(c: Computation, v: Var) -> list[int | None]:
    return [linear_coefficient(flat_index(ld.buffer, ld.indices), v) for ld in _loads(c)]


def _live_index(c: Computation) -> list[tuple[Var, Size]]:
    return [(v, n) for v, n in zip(c.index, c.space) if may_exceed_one(n)]


def _vectorizable(c: Computation, v: Var, max_stride: int = 1) -> bool:
    """Every load is invariant along ``v`` or steps at most ``max_stride`` elements forward."""
    return all(k is not None and 0 <= k <= max_stride for k in _coefficients(c, v))


def _work(c: Computation) -> int:
    """Scalar operations (output elements × reduction extent), symbolic sizes at their nominal value."""
    total = math.prod(nominal(n) for n in c.space)
    for axis in c.axes:
        total *= nominal(axis.extent)
    return total


def _contraction_rows(c: Computation, lanes_var: Var) -> Var | None:
    """The index var to block rows on: one some operand does not depend on (so it is reused across rows).

    Prefer one along which every vector operand (those varying along ``lanes_var``) is invariant:
    then a tile's rows share their vector loads and only the broadcast operand changes per row,
    the GEMM micro-kernel (for an NCHW conv: rows over output channels, not output rows).
    """
    loads = _loads(c)
    vector_loads = [ld for ld in loads if linear_coefficient(flat_index(ld.buffer, ld.indices), lanes_var) != 0]
    candidates = [v for v, _ in reversed(_live_index(c)) if v != lanes_var
                  and any(linear_coefficient(flat_index(ld.buffer, ld.indices), v) == 0 for ld in loads)]
    for v in candidates:
        if all(linear_coefficient(flat_index(ld.buffer, ld.indices), v) == 0 for ld in vector_loads):
            return v
    return candidates[0] if candidates else None


def _is_contraction(c: Computation) -> bool:
    return c.combiner == "sum" and len(_loads(c)) >= 2 and c.body.dtype.is_float


def _is_dot_product(c: Computation, target: Target, is_constant: Callable[[str], bool] | None,
                    runtime_packs: bool = True) -> bool:
    """A u8 x s8 or bf16 x bf16 contraction one of the target's dot product instructions takes
    (``dot_product_form``)."""
    forms = dot_product_forms(target)
    return (c.is_reduction and bool(forms) and len(_loads(c)) >= 2
            and dot_product_operands_packable(c, forms, is_constant, runtime_packs))


def _store_coefficient(c: Computation, v: Var) -> int | None:
    offsets = c.offsets or (0,) * len(c.index)
    return linear_coefficient(flat_index(c.output, tuple(i + k for i, k in zip(c.index, offsets))), v)


def _contraction_lanes(c: Computation, lanes: int) -> Var | None:
    """The index var to vectorize a contraction over: every operand contiguous or invariant along it.

    Prefer the one that fills the most vector lanes (up to two registers), then one whose
    output store is contiguous (so e.g. a 7-wide conv output row loses to 64 channels).
    """
    # A short reduction (a first conv over 3 input channels) leaves little work per tile to hide a
    # scattered store of the tile behind: there, a var with a contiguous store may vectorize over
    # strided loads (a stride-2 conv's output columns) rather than lose to one with unit loads.
    short = math.prod(nominal(a.extent) for a in c.axes) < SHORT_REDUCTION
    best, best_key = None, None
    for v, n in _live_index(c):
        contiguous_store = _store_coefficient(c, v) == 1
        if not _vectorizable(c, v, MAX_SHUFFLED_LOAD_STRIDE if short and contiguous_store else 1):
            continue
        key = (min(n, 2 * lanes), contiguous_store)
        if best_key is None or key > best_key:
            best, best_key = v, key
    return best


def _vectorize_along_reduction(c: Computation, s: Stmt, lanes: int) -> Stmt:
    """Vectorize the innermost reduction axis when it is contiguous in the loads (rfactor)."""
    live = [a for a in c.axes if may_exceed_one(a.extent)]
    if not live or nominal(live[-1].extent) < lanes:
        return s
    axis = live[-1]
    if not _vectorizable(c, axis.var, MAX_SHUFFLED_LOAD_STRIDE) or not any(_coefficients(c, axis.var)):
        return s
    # Two registers of partial sums only where the scalar tail stays short next to the vector part.
    width = 2 * lanes if nominal(axis.extent) >= 4 * lanes else lanes
    return vectorize_reduction(s, axis.var.name, width, c.combiner, reduce_init(c.combiner, c.body.dtype))


# A transposed copy walks this many rows of its strided operand per block, so the block's cache lines
# (rows x one vector's lanes) stay in L1 while the vectors are gathered from them.
TRANSPOSE_BLOCK_ROWS = 64


def _transposed_vectors(c: Computation, s: Stmt, lanes: int) -> Stmt:
    """A pointwise nest whose contiguous store runs across a strided operand (a Transpose, a layout
    change): vectors along the store's axis, gathered from the strided operand, with a loop along
    which that operand is contiguous inside the vector blocks, so each gathered cache line serves
    the block's next vectors from L1 instead of being fetched again per element."""
    live = _live_index(c)
    if len(live) < 2:
        return s
    inner, extent = live[-1]
    if _store_coefficient(c, inner) != 1 or nominal(extent) < lanes:
        return s
    steps = _coefficients(c, inner)
    if any(k is None or k < 0 for k in steps):
        return s
    strided = [ld for ld, k in zip(_loads(c), steps) if k > MAX_SHUFFLED_LOAD_STRIDE]
    if not strided:
        return s
    across = next((v for v, _ in reversed(live[:-1])
                   if all(linear_coefficient(flat_index(ld.buffer, ld.indices), v) == 1 for ld in strided)), None)
    if across is None:
        return s
    between = [v.name for v, _ in live[[v for v, _ in live].index(across):-1]]
    known = static_value(extent)
    if known is not None and known <= lanes:  # one vector: it is the innermost loop already
        return annotate(s, inner.name, ForKind.VECTORIZED)
    s = split(s, inner.name, lanes)
    rows = dict(live)[across]
    if nominal(rows) > TRANSPOSE_BLOCK_ROWS:
        s = split(s, across.name, TRANSPOSE_BLOCK_ROWS)
        between = [f"{across.name}_i" if n == across.name else n for n in between]
    s = reorder(s, [f"{inner.name}_o", *between])
    return annotate(s, f"{inner.name}_i", ForKind.VECTORIZED)


@dataclass(frozen=True)
class Scheduled:
    """A scheduled computation: ``body`` reads the outputs of ``packs`` (pointwise operand
    relayouts, see ``compiler.schedule.packing``), which must be computed first."""

    body: Stmt
    packs: tuple[Computation, ...] = ()


def schedule(c: Computation, target: Target, is_constant: Callable[[str], bool] | None = None) -> Scheduled:
    """Schedule ``c``; operands are packed only when ``is_constant`` says which buffers are constants
    (the caller must then place the packed buffers: fold constant packs, run the others first)."""
    if not c.is_static:
        mined = _strip_mined_contraction(c, target, is_constant)
        return mined if mined is not None else Scheduled(_parallelized(c, _schedule_symbolic(c, target), None))
    return _schedule_static(c, target, is_constant)


def _schedule_static(c: Computation, target: Target, is_constant: Callable[[str], bool] | None,
                     runtime_packs: bool = True) -> Scheduled:
    """The schedule of a computation whose iteration space is static (its buffers' shapes need not be)."""
    packs: list[Computation] = []
    if _is_dot_product(c, target, is_constant, runtime_packs):
        # Into dot products over packed words; the contraction schedule below takes it from there.
        c, words, constant = dot_product_form(c, dot_product_forms(target), is_constant)
        packs.extend(words)
        is_constant = _also_constant(is_constant, {p.output.name for p in words}, constant)
    elif c.is_reduction and _is_contraction(c):
        # A 1x1 conv over a small image is a GEMM over its flat pixels (pointwise kernels keep
        # their dims: flattening them is untried, and their goldens show the printer's nests).
        c = flatten_inner(split_grouped_index(c))
    elif c.is_reduction:
        # Contiguous reduction axes (a pool's 7x7 window over a whole plane) read as one long row.
        c = flatten_reduction(c)
    live = _live_index(c)
    lanes = target.vector_lanes(c.body.dtype.itemsize)
    if not live:
        # A reduction to one value (DynamicQuantizeLinear's min and max of a whole tensor) in vector lanes.
        s = build_loops(c)
        return Scheduled(_vectorize_along_reduction(c, s, lanes) if c.is_reduction else s, tuple(packs))
    contraction = c.is_reduction and (_is_contraction(c) or bool(packs))
    tile_var = _contraction_lanes(c, lanes) if contraction else None
    if tile_var is not None:
        tile = choose_tile(c, target, lanes, tile_var, _contraction_rows(c, tile_var))
        if is_constant is not None:
            c, panels = pack_operands(c, tile, is_constant, runtime_packs)
            packs.extend(panels)
        s = tiled_contraction(c, tile)
    else:
        s = build_loops(c)
        inner, inner_extent = live[-1]
        if (_vectorizable(c, inner, MAX_SHUFFLED_LOAD_STRIDE) and _store_coefficient(c, inner) == 1
                and inner_extent >= max(2, lanes // 4)):
            vector_loop = inner.name
            if inner_extent > 2 * lanes:
                s = split(s, inner.name, 2 * lanes)
                vector_loop = f"{inner.name}_i"
            if c.is_reduction:
                # The canonical nest keeps one scalar accumulator inside the spatial loops; a
                # vectorized spatial loop needs one per lane, so move it inside the reduction
                # loops with an accumulator tile indexed by it.
                s = hoist_reduction(s, [vector_loop])
            s = annotate(s, vector_loop, ForKind.VECTORIZED)
        elif c.is_reduction:
            s = _vectorize_along_reduction(c, s, lanes)
        else:
            s = _transposed_vectors(c, s, lanes)
    return Scheduled(_parallelized(c, s, tile_var), tuple(packs))


def _also_constant(is_constant: Callable[[str], bool], made: set[str], constant: frozenset[str]) -> Callable[[str], bool]:
    """``is_constant`` that also knows the packs ``made`` in this schedule (not yet placed by the driver)."""
    return lambda n: n in constant if n in made else is_constant(n)


def _parallelized(c: Computation, s: Stmt, tile_var: Var | None) -> Stmt:
    """``s`` with its outermost loop on the thread pool when ``c`` has the work to pay for a fork/join.
    Symbolic outer loops (a batch that may be 1) are first collapsed with the loop inside them."""
    threshold = MIN_PARALLEL_CONTRACTION if tile_var is not None else MIN_PARALLEL_WORK
    if not c.is_static:
        # Symbolic: whether the pool pays depends on the run's sizes, so the loop decides at run time.
        s = _collapse_symbolic_prefix(s)
        outer = outermost_loop(s)
        if outer is None or not may_exceed_one(outer.extent) or outer.kind not in (ForKind.SERIAL, ForKind.PARALLEL):
            return s
        return _decided_per_run(s, outer, c, threshold)
    if _work(c) >= threshold:
        outer = outermost_loop(s)
        if outer is not None and may_exceed_one(outer.extent) and outer.kind is ForKind.SERIAL:
            s = annotate(s, outer.var.name, ForKind.PARALLEL)
    return s


def _decided_per_run(s: Stmt, loop: For, c: Computation, threshold: int) -> Stmt:
    """``s`` with ``loop`` parallel when the run's sizes give ``c`` at least ``threshold`` operations."""
    decided = replace(loop, kind=ForKind.PARALLEL, work=symbolic_work(c), min_work=threshold)
    return map_stmts(s, lambda n: decided if n is loop else None)


def symbolic_work(c: Computation) -> Expr:
    """Scalar operations of ``c`` (output elements x reduction extent) as a size expression."""
    return size_expr(size_prod([*c.space, *(a.extent for a in c.axes)]))


def _collapse_symbolic_prefix(s: Stmt) -> Stmt:
    """The top perfect nest's leading loops of symbolic extent, and the loop after them, as one loop."""
    chain: list[For] = []
    node = s
    while isinstance(node, For) and node.kind is ForKind.SERIAL:
        chain.append(node)
        if isinstance(node.extent, int):
            break
        node = node.body
    if len(chain) < 2 or isinstance(chain[0].extent, int):
        return s
    return collapse(chain, chain[-1].body)


def _strip_mined_contraction(c: Computation, target: Target,
                             is_constant: Callable[[str], bool] | None) -> Scheduled | None:
    """A contraction over symbolic spatial extents (a batch, a sequence, both sides of attention scores)
    gets the static register-tiled schedule in static blocks: the symbolic vector var (if any) is cut into
    blocks a tile wide, then the symbolic row var into blocks of a tile's rows (or, where the rows run
    along another var, one value per block: an image of a batch), inside loops over the blocks (the
    first on the thread pool) and the other symbolic vars. What is left at the end of a var, fewer than a
    block, is cut again into halving blocks (8, 4, 2, 1 rows after 14), so every element is computed by a
    static tile. The reduction may be symbolic (attention's values over the sequence). None where that
    does not apply."""
    if not (c.is_reduction and (_is_contraction(c) or _is_dot_product(c, target, is_constant, runtime_packs=False))):
        return None
    symbolic = [v for v, n in zip(c.index, c.space) if not isinstance(n, int)]
    if not symbolic:
        return None
    lanes = target.vector_lanes(c.body.dtype.itemsize)
    probe = at_extents(c, {v: 2 * lanes for v in symbolic})  # each symbolic var at a typical block's extent
    col = _contraction_lanes(probe, lanes)
    if col is None:
        return None
    row = _contraction_rows(probe, col)

    def static_blocks(block: Computation) -> Scheduled:
        # Operands are packed only if constant: a per-call pack would run outside the block loops.
        return _schedule_static(block, target, is_constant, runtime_packs=False)

    if col in symbolic:
        # Columns first, keeping the row var symbolic for the blocks' own row tiling.
        def column_blocks(block: Computation) -> Scheduled:
            inner = _strip_mined_contraction(block, target, is_constant)
            return inner if inner is not None else static_blocks(block)

        return _strip_chain(c, col, _halving(2 * lanes), frozenset({row} & set(symbolic)), column_blocks)
    var = row if row in symbolic else symbolic[-1]
    # Blocks of a register tile's rows where the tile's rows run along ``var``; else one value of ``var``
    # per block (an image of a batch: the whole static schedule of one).
    first = max_tile_rows(probe, target, lanes, col) if row == var else 1
    return _strip_chain(c, var, _halving(first), frozenset(), static_blocks,
                        _blocks_per_panel(probe, col, first) if row == var else None)


def _blocks_per_panel(c: Computation, col: Var, rows: int) -> int | None:
    """How many row blocks of ``rows`` rows should share each pass over the column panels: as many as
    keep their rows of the other operand within the L2 budget, where the column operand is too big to
    stay cached from one block to the next (a decoder's vocabulary projection over a prompt). None:
    the blocks may each walk all panels."""
    loads = list(dict.fromkeys(_loads(c)))
    column_side = [ld for ld in loads if linear_coefficient(flat_index(ld.buffer, ld.indices), col) != 0]
    column_bytes = sum(nominal(ld.buffer.numel) * ld.buffer.dtype.itemsize for ld in column_side)
    if column_bytes <= L2_BUDGET:
        return None
    row_bytes = sum(ld.buffer.dtype.itemsize for ld in loads if ld not in column_side) * math.prod(
        nominal(a.extent) for a in c.axes)
    return max(1, L2_BUDGET // max(1, rows * row_bytes))


def _halving(first: int) -> list[int]:
    """``first``, then the powers of two below it: 14 -> 14, 8, 4, 2, 1."""
    blocks, size = [first], 1 << (first.bit_length() - 1)
    if size == first:
        size //= 2
    while size >= 1:
        blocks.append(size)
        size //= 2
    return blocks


def _strip_chain(c: Computation, var: Var, blocks: list[int], keep: frozenset[Var],
                 schedule_block: Callable[[Computation], Scheduled], per_panel: int | None = None) -> Scheduled:
    """``c`` strip-mined along ``var`` by ``blocks[0]``, what is left by ``blocks[1]``, and so on (the last
    block is 1, so nothing is left), each block computation scheduled by ``schedule_block``. With
    ``per_panel``, the first blocks' loop goes inside the column-panel loop of their schedule, that many
    blocks per pass (``blocks_inside``)."""
    parts: list[Stmt] = []
    packs: list[Computation] = []
    current: Computation | None = c
    for block in blocks:
        if current is None:
            break
        mined = strip_mine(current, var, block, keep)
        inner = schedule_block(mined.block_computation)
        if any(isinstance(n, For) and n.kind is ForKind.PARALLEL for n in walk_stmts(inner.body)):
            # The block's own schedule splits it over the pool (a GEMM's column panels): the blocks run in turn.
            nest = serial_top(mined.wrap(inner.body))
            if per_panel is not None and block == blocks[0] and isinstance(nest, For) and isinstance(nest.body, For):
                nest = blocks_inside(nest, per_panel)
            parts.append(nest)
        else:
            nest = mined.wrap(inner.body)
            parts.append(_decided_per_run(nest, nest, current, MIN_PARALLEL_CONTRACTION))
        packs.extend(p for p in inner.packs if p not in packs)
        current = mined.rest
    return Scheduled(seq(*parts), tuple(packs))


def _schedule_symbolic(c: Computation, target: Target) -> Stmt:
    """The nest of a computation with symbolic extents: its innermost loop vectorized where the accesses
    allow (a symbolic one split into whole vectors and a scalar tail), else its innermost reduction."""
    s = build_loops(c)
    live = _live_index(c)
    if not live:
        return s
    lanes = target.vector_lanes(c.body.dtype.itemsize)
    inner, extent = live[-1]
    known = static_value(extent)
    if (_vectorizable(c, inner, MAX_SHUFFLED_LOAD_STRIDE) and _store_coefficient(c, inner) == 1
            and (known is None or known >= max(2, lanes // 4))):
        vector_loop = inner.name
        if known is None or known > 2 * lanes:
            s = split(s, inner.name, 2 * lanes)
            vector_loop = f"{inner.name}_i"
        if c.is_reduction:
            s = hoist_reduction(s, [vector_loop])
        return annotate(s, vector_loop, ForKind.VECTORIZED)
    return _vectorize_along_reduction(c, s, lanes) if c.is_reduction else _transposed_vectors(c, s, lanes)


def schedule_computation(c: Computation, target: Target) -> Stmt:
    """``c``'s loop nest with no packed operands (nothing to place besides its own buffers)."""
    return schedule(c, target).body
