"""The contraction schedule: a register-tiled micro-kernel over packed operand panels.

For ``out[.., i, j] = sum_r A(i, r) * B(r, j)`` (recognised by access pattern, see
``compiler.schedule.defaults``), with ``j`` the vectorized column var and ``i`` the row var:

- register tile: ``mr`` rows (unrolled) × ``nr`` columns (one or two vectors), accumulators
  kept in registers while the reduction streams (``hoist_reduction``);
- packing (when the caller can place packed buffers): B into ``nr``-wide column panels
  ``Bp[j // nr, r, j % nr]`` and A into ``mr``-row panels ``Ap[i // mr, r, i % mr]``, so each
  micro-kernel reads two contiguous streams (no 4 KiB-strided rows fighting over L1 sets). A
  constant operand is packed at compile time, another one per call when enough panels of the
  other operand reuse it to repay the copy;
- loop order: one operand's panel loops outside the other's, chosen by the bytes each order
  reads from beyond L2 (``_outer_order``): usually B's column panels outside, so one B
  micro-panel (``K × nr``) stays in L2 while the row tiles stream past it;
- the outermost loop runs on the thread pool when there is enough work.

Integer contractions ``sum_r int32(A(i, r)) * int32(B(r, j))`` of a uint8 A and an int8 B (the
quantized lowerings bring every 8-bit pair to that form, zero points as compensation terms in the
epilogue), and ``sum_r float32(A(i, r)) * float32(B(r, j))`` of two bfloat16 operands (what
``precision="bf16"`` makes of float contractions), are first rewritten into word dot products over
words of four (two) consecutive ``r`` (``dot_product_form``), then get the same tile, packing and loop
order: a vector lane of accumulators per output column, one ``vpdpbusd`` (``vdpbf16ps``) per vector
per word on targets that have it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Callable

from compiler.codegen.target import Target, vector_parts
from dataclasses import replace

from compiler.dtypes import DType
from compiler.loopir.compute import Computation, ReduceAxis, build_loops
from compiler.loopir.expr import (WORD_DOT_PARTS, Binary, Buffer, Cast, Const, Expr, Load, PackWord, Var, WordDot, compare,
                                  const, flat_index, free_vars, linear_coefficient, min_, select, substitute, walk)
from compiler.loopir.sizes import may_exceed_one, nominal
from compiler.loopir.stmt import For, ForKind, Prefetch, Stmt, map_stmts, seq, stmt_exprs
from compiler.schedule.packing import pack_operand
from compiler.schedule.simplify import simplify_indices
from compiler.schedule.transforms import annotate, hoist_reduction, merge_siblings, reorder, split

# Vector registers left for the B vectors and the broadcast A value next to the accumulators.
SPARE_REGISTERS = 4
# Pack an operand per call only when at least this many panels of the other operand reuse it
# and it holds at least this many elements (smaller ones stay in L1 unpacked).
MIN_PANEL_REUSE = 4
MIN_RUNTIME_PACK = 1 << 14
# Bytes of an operand that stay cached while the other operand's panels stream past them
# (half the 1 MiB L2 of a Zen 4 core; most current x86 and Arm cores have at least that).
L2_BUDGET = 1 << 19


@dataclass(frozen=True)
class Tile:
    row: Var | None
    col: Var
    rows: int
    width: int


def _coefficient(load: Load, v: Var) -> int | None:
    return linear_coefficient(flat_index(load.buffer, load.indices), v)


def _registers_per_row(width: int, lanes: int) -> int:
    """Vector registers one tile row of ``width`` lanes takes, as the code generator splits it."""
    return sum(-(-w // lanes) for w, _ in vector_parts(width))


def max_tile_rows(c: Computation, target: Target, lanes: int, col: Var) -> int:
    """The most rows a register tile over ``col`` (vector lanes) can have on ``target``."""
    extents = dict(zip(c.index, c.space))
    width = min(extents[col], 2 * lanes)
    # The tail tile (extent % width columns) shares the row count: size rows for the wider of the two.
    tail = extents[col] % width
    vectors = max(_registers_per_row(width, lanes), _registers_per_row(tail, lanes) if tail else 0)
    return max(1, (target.vector_registers - SPARE_REGISTERS) // vectors)


def choose_tile(c: Computation, target: Target, lanes: int, col: Var, row: Var | None) -> Tile:
    extents = dict(zip(c.index, c.space))
    width = min(extents[col], 2 * lanes)
    if row is None:
        return Tile(None, col, 1, width)
    max_rows = max_tile_rows(c, target, lanes, col)
    # Balance the row tiles (64 rows → 13+13+13+13+12 rather than 14*4 + an 8-row tail).
    rows = -(-extents[row] // -(-extents[row] // max_rows))
    return Tile(row, col, rows, width)


def _pack_name(load: Load, blocked: Var, block: int, c: Computation) -> str:
    # Equal names must mean equal layouts: the layout is a function of the load, the blocked var, the
    # block and the extents of the loop vars the load uses, in their order, so hash exactly those. Not
    # the other extents: the strip-mined blocks of a contraction over a symbolic row count (14 rows,
    # then 8, 4, 2, 1) read one packed copy of their constant weights, not one copy each.
    used = set().union(*(free_vars(i) for i in load.indices))
    extents = tuple((v, n) for v, n in zip(c.index, c.space) if v in used) + tuple(
        (a.var, a.extent) for a in c.axes if a.var in used)
    digest = hashlib.sha1(repr((load.indices, blocked, block, extents)).encode()).hexdigest()[:8]
    return f"{load.buffer.name}_pk{block}_{digest}"


def pack_operands(c: Computation, tile: Tile, is_constant: Callable[[str], bool],
                  runtime_packs: bool = True) -> tuple[Computation, list[Computation]]:
    """Pack B into column panels and A into row panels; see the module docstring. ``runtime_packs=False``
    packs constants only."""
    extents = dict(zip(c.index, c.space))
    loads = list(dict.fromkeys(e for e in walk(c.body) if isinstance(e, Load)))
    # The bytes of a dot product's word are read together (one 32-bit load): a panel per byte would part them.
    in_words = {ld for e in walk(c.body) if isinstance(e, PackWord) for p in e.parts for ld in walk(p)}
    red = math.prod(nominal(a.extent) for a in c.axes)
    packs: list[Computation] = []
    for load in loads:
        if load in in_words:
            continue
        if any(isinstance(e, Load) for index in load.indices for e in walk(index)):
            continue  # a gather (a tree's leaf weights at the leaf it reached): its rows follow data, not loops
        along_col = _coefficient(load, tile.col)
        along_row = 0 if tile.row is None else _coefficient(load, tile.row)
        if along_col == 1 and along_row == 0:
            # B: column panels. Only constants: copying activations into panels measured slower than
            # reading their rows in place (vector loads of whole cache lines, prefetched).
            if not is_constant(load.buffer.name):
                continue
            blocked, block, reuse, size = tile.col, tile.width, 0, 0
        elif along_col == 0 and along_row not in (0, None) and tile.row is not None:
            # A: row panels, re-read once per column panel.
            blocked, block = tile.row, tile.rows
            reuse, size = extents[tile.col] // tile.width, extents[tile.row] * red
        else:
            continue
        if not is_constant(load.buffer.name) and (not runtime_packs or reuse < MIN_PANEL_REUSE
                                                  or size < MIN_RUNTIME_PACK):
            continue
        packed = pack_operand(c, load, blocked, block, _pack_name(load, blocked, block, c))
        if packed is not None:
            c, pack = packed
            packs.append(pack)
    return c, packs


def _outer_order(c: Computation, tile: Tile, others: list[Var]) -> list[str]:
    """The loops around the micro-kernel, outermost first: one operand's panels outside the other's.

    The operand whose panel loops run outside is read from memory once; the other is read
    again for each of those panels, cheaply when it fits in L2. Loops only A (B) depends on go
    with A's (B's) panel loop, loops both or neither depend on outside everything.
    """
    extents = dict(zip(c.index, c.space))
    loads = list(dict.fromkeys(e for e in walk(c.body) if isinstance(e, Load)))
    b_loads = [ld for ld in loads if _coefficient(ld, tile.col) != 0]
    a_loads = [ld for ld in loads if ld not in b_loads and _coefficient(ld, tile.row) != 0]

    def uses(group: list[Load], v: Var) -> bool:
        return any(_coefficient(ld, v) != 0 for ld in group)

    a_side = [v for v in others if uses(a_loads, v) and not uses(b_loads, v)]
    b_side = [v for v in others if uses(b_loads, v) and not uses(a_loads, v)]
    shared = [v.name for v in others if v not in a_side and v not in b_side]
    a_loops = [v.name for v in a_side] + [f"{tile.row.name}_o"]
    b_loops = [v.name for v in b_side] + [f"{tile.col.name}_o"]
    a_panels = math.prod(extents[v] for v in a_side) * -(-extents[tile.row] // tile.rows)
    b_panels = math.prod(extents[v] for v in b_side) * -(-extents[tile.col] // tile.width)
    ranges = {**{v: nominal(n) for v, n in extents.items()}, **{a.var: nominal(a.extent) for a in c.axes}}

    def footprint(ld: Load) -> int:
        # The bytes the nest reads of it: at most one element per combination of the vars its index uses
        # (a stride-2 1x1 conv reads a quarter of its input), at most the whole buffer.
        used = set().union(*(free_vars(i) for i in ld.indices)) & ranges.keys()
        return min(nominal(ld.buffer.numel), math.prod(ranges[v] for v in used)) * ld.buffer.dtype.itemsize

    a_bytes = sum(footprint(ld) for ld in dict.fromkeys(a_loads))
    b_bytes = sum(footprint(ld) for ld in dict.fromkeys(b_loads))
    b_outside = b_bytes + a_bytes * (b_panels if a_bytes > L2_BUDGET else 1)
    a_outside = a_bytes + b_bytes * (a_panels if b_bytes > L2_BUDGET else 1)
    return shared + (a_loops + b_loops if a_outside < b_outside else b_loops + a_loops)


def tiled_contraction(c: Computation, tile: Tile) -> Stmt:
    """The register-tiled nest of ``c`` (its loads possibly already rewritten to packed panels)."""
    live = [(v, n) for v, n in zip(c.index, c.space) if n > 1]
    extents = dict(live)
    col, row = tile.col, tile.row
    s = split(build_loops(c), col.name, tile.width)
    col_inner = f"{col.name}_i" if extents[col] > tile.width else col.name
    others = [v.name for v, _ in live if v not in (row, col)]
    if row is None:
        s = reorder(s, others + [f"{col.name}_o", col_inner])
        s = hoist_reduction(s, [col_inner])
        return simplify_indices(annotate(s, col_inner, ForKind.VECTORIZED))
    s = split(s, row.name, tile.rows)
    row_inner = f"{row.name}_i" if extents[row] > tile.rows else row.name
    outer = _outer_order(c, tile, [v for v, _ in live if v not in (row, col)])
    s = reorder(s, outer + [row_inner, col_inner])
    # reorder distributed the outer loops over the split tails: run each outer iteration once,
    # tails included, so a panel loaded for the main tiles is still in cache for the tails.
    for name in outer:
        s = merge_siblings(s, name)
    s = hoist_reduction(s, [row_inner, col_inner])
    s = annotate(s, row_inner, ForKind.UNROLLED)
    s = simplify_indices(annotate(s, col_inner, ForKind.VECTORIZED))
    return _prefetch_next_panel(s, c, tile)


# Bytes of a cache line: the unit a prefetch brings in.
CACHE_LINE = 64


def _prefetch_next_panel(s: Stmt, c: Computation, tile: Tile) -> Stmt:
    """Each step of the reduction also prefetches the same row of the next B column panel, when B is
    too large to stay in L2 across its panels (a 16 MiB vocabulary projection: its panels come from
    DRAM, and the first row tile of each panel waited on them: 10% of a 128x512x8192 MatMul). By the
    time the panel loop reaches that panel, it is in L2."""
    col_outer = f"{tile.col.name}_o"
    axes = {a.var for a in c.axes}

    def panel_rows(loop: For) -> list[Load]:
        return list(dict.fromkeys(
            ld for e in stmt_exprs(loop.body) for ld in walk(e)
            if isinstance(ld, Load) and len(ld.indices) == 3 and isinstance(ld.indices[0], Var)
            and ld.indices[0].name == col_outer and ld.indices[1] == loop.var
            and ld.buffer.shape[2] == tile.width and isinstance(ld.buffer.shape[0], int)
            and nominal(ld.buffer.numel) * ld.buffer.dtype.bits // 8 > L2_BUDGET))

    def rewrite(node: Stmt) -> Stmt | None:
        if not (isinstance(node, For) and node.var in axes and node.kind is ForKind.SERIAL):
            return None
        hints: list[Stmt] = []
        for ld in panel_rows(node):
            panels, width = ld.buffer.shape[0], ld.buffer.shape[2]
            following = min_(ld.indices[0] + 1, Const(panels - 1, DType.I64))
            per_line = max(1, CACHE_LINE * 8 // ld.buffer.dtype.bits)
            hints += [Prefetch(Load(ld.buffer, (following, ld.indices[1], Const(k, DType.I64))))
                      for k in range(0, width, per_line)]
        return replace(node, body=seq(*hints, node.body)) if hints else None

    return map_stmts(s, rewrite)


# --- contractions as word dot products (bytes in fours, bf16 in pairs) -------------------------------


@dataclass(frozen=True)
class _Operands:
    form: str  # the WordDot form
    axis: ReduceAxis  # the reduction axis cut into words
    a: Expr  # uint8 / int8 / bfloat16, read along the rows
    b: Expr  # int8 / bfloat16, along the vectorized columns: packed into words
    # Where A's words come from: ``in place`` (consecutive elements of a row), else a word pack of A's
    # buffer along dim ``a_dim`` (a conv's input channels).
    a_dim: int | None

    @property
    def parts(self) -> int:
        return WORD_DOT_PARTS[self.form]


def _a_layout(a: Expr, axis: ReduceAxis) -> tuple[bool, int | None] | None:
    """(read in place, dim to pack along) for A's words over ``axis``; None if neither works."""
    if not isinstance(a, Load):
        return None
    if _coefficient(a, axis.var) == 1:
        return True, None
    dims = [d for d, index in enumerate(a.indices) if axis.var in free_vars(index)]
    if len(dims) == 1 and a.indices[dims[0]] == axis.var and a.buffer.shape[dims[0]] == axis.extent:
        return False, dims[0]
    return None


def _factors(c: Computation, forms: frozenset[str], is_constant: Callable[[str], bool]) -> tuple[str, Expr, Expr] | None:
    """(form, A, B) of ``sum int32(u8 a) * int32(s8 b)``, ``sum int32(s8 a) * int32(s8 b)`` or
    ``sum float32(bf16 a) * float32(bf16 b)``."""
    body = c.body
    if not (isinstance(body, Binary) and body.op == "mul" and isinstance(body.a, Cast) and isinstance(body.b, Cast)):
        return None
    x, y = body.a.value, body.b.value
    if c.body.dtype is DType.I32 and "u8s8" in forms and {x.dtype, y.dtype} == {DType.U8, DType.I8}:
        return ("u8s8", x, y) if x.dtype is DType.U8 else ("u8s8", y, x)
    same = {(DType.I32, DType.I8): "s8s8", (DType.F32, DType.BF16): "bf16"}.get((c.body.dtype, x.dtype))
    if same in forms and y.dtype is x.dtype:
        # B, packed into words once: the weights (the one operand reading constants only), else the one
        # the innermost output index reads (a product of two activations: attention's).
        constant = [all(is_constant(name) for name in _pack_sources(f)) for f in (x, y)]
        if constant.count(True) != 1:
            col = c.index[-1] if c.index else None
            constant = [col in free_vars(f) for f in (x, y)]
        if constant == [False, True]:
            return same, x, y
        if constant == [True, False]:
            return same, y, x
    return None


def _dot_operands(c: Computation, forms: frozenset[str], is_constant: Callable[[str], bool]) -> _Operands | None:
    """The factors of a contraction over static axes that one of ``forms`` takes and the axis to cut
    into words, or None. The axis: the one whose words waste the fewest slots (a 3-tap kernel width
    fills two pairs of bfloat16 to 3/4, 256 channels fill every word), then one A is contiguous along
    (its rows read in place) rather than one A's buffer can be packed along, then the longest."""
    if c.combiner != "sum" or not all(isinstance(a.extent, int) for a in c.axes):
        return None
    factors = _factors(c, forms, is_constant)
    if factors is None:
        return None
    form, a, b = factors
    parts = WORD_DOT_PARTS[form]
    options = []
    for axis in c.axes:
        layout = _a_layout(a, axis)
        if layout is not None and axis.extent > 0:
            in_place, dim = layout
            filled = axis.extent / (-(-axis.extent // parts) * parts)
            options.append(((axis.extent >= parts, filled, in_place, axis.extent), _Operands(form, axis, a, b, dim)))
    return max(options, key=lambda o: o[0])[1] if options else None


def _pack_sources(e: Expr) -> list[str]:
    return [x.buffer.name for x in walk(e) if isinstance(x, Load)]


def dot_product_operands_packable(c: Computation, forms: frozenset[str], is_constant: Callable[[str], bool] | None,
                                  runtime_packs: bool) -> bool:
    """Whether ``dot_product_form`` applies to ``c``: a contraction one of ``forms`` takes whose B factor can
    be packed into words, at compile time (it reads constants only) or per call (``runtime_packs``, static
    ``c``)."""
    if is_constant is None:
        return False
    ops = _dot_operands(c, forms, is_constant)
    if ops is None:
        return False
    loop_vars = {*c.index, *(a.var for a in c.axes)}
    if not free_vars(ops.b) <= loop_vars:
        return False  # it varies along loops outside ``c`` (a strip-mined block's batch): no one word pack
    # A's word pack relayouts its whole buffer (whatever loops read it), so it may run per call anywhere,
    # before a strip-mined contraction's block loops too; B's is per index var, so only for a static ``c``.
    return all(is_constant(name) for name in _pack_sources(ops.b)) or (runtime_packs and c.is_static)


def dot_product_form(c: Computation, forms: frozenset[str], is_constant: Callable[[str], bool]
                     ) -> tuple[Computation, list[Computation], frozenset[str]]:
    """``c`` (see ``dot_product_operands_packable``) as a sum of ``WordDot(A word, B word)`` over words of
    ``n`` steps ``n w .. n w + n - 1`` of one reduction axis (``n``: 4 bytes or 2 bfloat16s), with the
    pointwise packs that make the words (B's ``Bw[w, <other axes>, <B's index vars>]``; A's too when it is
    not read in place) and the names of those that read constants only (compile-time packs).

    A read in place reads ``n`` consecutive elements of its row: when ``K % n != 0`` the last word starts
    at ``K - n`` (inside the row) and B's last word zeroes the parts the word before already counted.
    Packed words are aligned, zero past the end of the axis on both sides.
    """
    ops = _dot_operands(c, forms, is_constant)
    assert ops is not None
    n = ops.parts
    r, k_extent = ops.axis.var, ops.axis.extent
    words = -(-k_extent // n)
    in_place = ops.a_dim is None
    extents = dict(zip(c.index, c.space)) | {a.var: a.extent for a in c.axes}
    others = [a.var for a in c.axes if a.var != r]

    def start(w: Expr) -> Expr:
        if not in_place or k_extent % n == 0 or k_extent < n:
            return w * n
        return min_(w * n, Const(k_extent - n))

    def position(w: Expr, k: int) -> Expr:
        # Below n terms, or packed: parts past the end read the last element (and count as zero).
        last = k_extent - 1
        if k_extent < n:
            return Const(min(k, last))
        return start(w) + k if in_place or k_extent % n == 0 else min_(start(w) + k, Const(last))

    def counts(w: Expr, k: int) -> Expr | None:
        """Whether part ``k`` of word ``w`` is a term of its own (None: always)."""
        if k_extent < n:
            return None if k < k_extent else Const(False, DType.BOOL)
        if k_extent % n == 0:
            return None
        return compare("ge", start(w) + k, w * n) if in_place else compare("lt", w * n + k, Const(k_extent))

    def word(e: Expr, w: Expr, mapping: dict[Var, Expr], masked: bool = True) -> PackWord:
        # Unmasked (A read in place): the parts stay plain loads, one 32-bit load; B's zeroes cancel them.
        parts = []
        for k in range(n):
            part = substitute(e, {**mapping, r: position(w, k)})
            keep = counts(w, k) if masked else None
            parts.append(part if keep is None else select(keep, part, const(0, e.dtype)))
        return PackWord(tuple(parts))

    packs: list[Computation] = []
    constant: set[str] = set()

    def pack_of(e: Expr, role: str, vars_: list[Var]) -> tuple[Buffer, Computation]:
        digest = hashlib.sha1(repr((e, r, k_extent, in_place, tuple((v, extents[v]) for v in vars_))).encode()).hexdigest()[:8]
        name = f"{_pack_sources(e)[0]}_{role}_{digest}"
        w = Var(f"{name}_w")
        mapping = {v: Var(f"{name}_{v.name}") for v in vars_}
        unit = {v: Const(0) for v in free_vars(e) if v in extents and not may_exceed_one(extents[v])}
        packed = Buffer(name, DType.I32, (words, *(extents[v] for v in vars_)))
        pack = Computation(packed, (w, *mapping.values()), word(substitute(e, unit), w, mapping))
        if all(is_constant(source) for source in _pack_sources(e)):
            constant.add(name)
        packs.append(pack)
        return packed, pack

    w = Var(f"{r.name}_w")
    if in_place:
        a_word: Expr = word(ops.a, w, {}, masked=False)
    else:
        # A's buffer packed along ``a_dim``: the words of every element, in A's own layout (not per loop var).
        load = ops.a
        assert isinstance(load, Load)
        dims = [Var(f"{load.buffer.name}_d{d}") for d in range(len(load.buffer.shape))]
        source = Load(load.buffer, tuple(r if d == ops.a_dim else v for d, v in enumerate(dims)))
        digest = hashlib.sha1(repr((load.buffer, ops.a_dim)).encode()).hexdigest()[:8]
        name = f"{load.buffer.name}_words_{digest}"
        shape = tuple(words if d == ops.a_dim else size for d, size in enumerate(load.buffer.shape))
        outer = dims[ops.a_dim]
        mapping = {v: v for v in dims}
        pack = Computation(Buffer(name, DType.I32, shape), tuple(dims),
                           word(source, outer, mapping))
        packs.append(pack)
        if is_constant(load.buffer.name):
            constant.add(name)
        a_word = Load(pack.output, tuple(w if d == ops.a_dim else i for d, i in enumerate(load.indices)))
    b_vars = [v for v in (*others, *c.index) if v in free_vars(ops.b) and may_exceed_one(extents[v])]
    b_packed, _ = pack_of(ops.b, f"dot{n}", b_vars)
    body = WordDot(a_word, Load(b_packed, (w, *b_vars)), ops.form)
    axes = tuple(ReduceAxis(w, words) if a.var == r else a for a in c.axes)
    return replace(c, body=body, axes=axes), packs, frozenset(constant)
