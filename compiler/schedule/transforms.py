"""Schedule transforms: loop IR → loop IR rewrites that keep the computed values.

Loops are addressed by variable name. A transform applies to every loop with
that name, so a split's remainder (tail) nest, whose loops keep the names of
the main nest, is scheduled the same way. Transforms that do not find their
loops leave the tree as it is, which lets default schedules be written once
for every shape an op can take. A symbolic extent (an expression over size
variables) is split into a symbolic count of whole parts and a tail of static
chunks of halving sizes (``halving_chunks``); register tiles are only built over
static extents.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from compiler.loopir.compute import combine
from compiler.loopir.expr import Buffer, Const, Expr, Load, Var, div, map_loads, mul, sub
from compiler.loopir.sizes import Size, as_size, size_expr, size_mul, static_value
from compiler.loopir.stmt import Alloc, For, ForKind, Seq, Stmt, Store, map_stmts, seq, substitute_stmt


def parts_of(extent: Size, factor: int) -> tuple[Size, Size]:
    """``divmod(extent, factor)``, for a symbolic extent too."""
    if isinstance(extent, int):
        return divmod(extent, factor)
    count = as_size(div(extent, Const(factor)))
    return count, as_size(sub(extent, mul(div(extent, Const(factor)), Const(factor))))


def split(s: Stmt, name: str, factor: int) -> Stmt:
    """``for v in 0..n`` → ``for v_o in 0..n/f { for v_i in 0..f }`` plus a ``for v_i in 0..n%f`` tail."""

    def rewrite(node: Stmt) -> Stmt | None:
        if not (isinstance(node, For) and node.var.name == name):
            return None
        known = static_value(node.extent)
        if known is not None and known <= factor:
            return None
        outer, inner = Var(f"{name}_o"), Var(f"{name}_i")
        count, rest = parts_of(node.extent, factor)
        main = For(inner, factor, substitute_stmt(node.body, {node.var: outer * factor + inner}))
        parts: list[Stmt] = [For(outer, count, main, node.kind) if static_value(count) != 1
                             else substitute_stmt(main, {outer: Const(0)})]
        start = size_expr(count) * factor
        if isinstance(rest, int):
            if rest:
                parts.append(For(inner, rest, substitute_stmt(node.body, {node.var: inner + start})))
        else:
            # A symbolic tail: chunks of halving static sizes, each a loop ``inner`` the split's callers
            # schedule like the main one (a vectorized 8, 4, 2, 1 after 16 lanes, not a scalar loop).
            parts.extend(halving_chunks(rest, factor, start, name, lambda f, first: For(
                inner, f, substitute_stmt(node.body, {node.var: inner + first}))))
        return seq(*parts)

    return map_stmts(s, rewrite)


def halving_chunks(rest: Expr, factor: int, start: Expr, name: str, chunk: Callable[[int, Expr], Stmt]) -> list[Stmt]:
    """The last ``rest < factor`` (symbolic) iterations of a loop as chunks of halving static sizes: for each
    power of two ``f < factor``, a loop that runs once when bit ``f`` of ``rest`` is set, around
    ``chunk(f, first)``: ``f`` iterations (vectorizable: a static extent) from ``first``, which is
    ``start`` plus what the larger chunks took."""
    chunks: list[Stmt] = []
    f = 1 << ((factor - 1).bit_length() - 1)
    while f >= 1:
        if 2 * f >= factor:  # the largest chunk: nothing before it, its bit is rest / f
            taken: Expr = Const(0)
            bit = div(rest, Const(f))
        else:
            taken = mul(div(rest, Const(2 * f)), Const(2 * f))
            bit = sub(div(rest, Const(f)), mul(div(rest, Const(2 * f)), Const(2)))
        chunks.append(For(Var(f"{name}_c{f}"), as_size(bit), chunk(f, start + taken)))
        f //= 2
    return chunks


def _perfect_chain(loop: For, names: set[str]) -> list[For]:
    chain = [loop]
    while isinstance(chain[-1].body, For) and chain[-1].body.var.name in names:
        chain.append(chain[-1].body)
    return chain


def reorder(s: Stmt, names: list[str]) -> Stmt:
    """Permute perfectly nested loops named in ``names`` into that order (outermost first).

    A named loop around a sequence (as a split's main part and tail) is first
    distributed over it; that is sound because reorder is for spatial loops,
    whose iterations write disjoint outputs.
    """
    wanted = set(names)

    def visit(node: Stmt) -> Stmt:
        if isinstance(node, For) and node.var.name in wanted:
            chain = _perfect_chain(node, wanted)
            if isinstance(chain[-1].body, Seq):
                return seq(*(visit(_wrap(chain, c)) for c in chain[-1].body.stmts))
            body = visit(chain[-1].body)
            for loop in sorted(chain, key=lambda f: names.index(f.var.name), reverse=True):
                body = replace(loop, body=body)
            return body
        if isinstance(node, (For, Alloc)):
            return replace(node, body=visit(node.body))
        if isinstance(node, Seq):
            return seq(*(visit(c) for c in node.stmts))
        return node

    return visit(s)


def merge_siblings(s: Stmt, name: str) -> Stmt:
    """In every sequence, merge the loops named ``name`` (equal extents) into the first one.

    ``seq(for v {A}, B, for v {C})`` → ``seq(for v {A; C}, B)``. Sound for the spatial loops of
    one computation (what ``reorder`` distributed over a split's tail), whose parts write
    disjoint outputs and read none of them: it undoes the distribution where it split a loop
    that should run once, e.g. a column-panel loop that must stream each panel once for the
    main row tiles and the row tail together.
    """

    def rewrite(node: Stmt) -> Stmt | None:
        if not isinstance(node, Seq):
            return None
        loops = [c for c in node.stmts if isinstance(c, For) and c.var.name == name]
        if len(loops) < 2 or len({f.extent for f in loops}) != 1:
            return None
        merged = replace(loops[0], body=seq(*(f.body for f in loops)))
        return seq(*(merged if c is loops[0] else c for c in node.stmts if not any(c is f for f in loops[1:])))

    return map_stmts(s, rewrite)


def annotate(s: Stmt, name: str, kind: ForKind) -> Stmt:
    """Mark loops ``name`` as parallel, vectorized, unrolled or serial."""
    return map_stmts(s, lambda n: replace(n, kind=kind) if isinstance(n, For) and n.var.name == name else None)


def fuse(s: Stmt, outer: str, inner: str, fused: str | None = None) -> Stmt:
    """``for a { for b { S } }`` → ``for ab in 0..A*B { S[a := ab / B, b := ab % B] }``."""

    def rewrite(node: Stmt) -> Stmt | None:
        if not (isinstance(node, For) and node.var.name == outer and isinstance(node.body, For)
                and node.body.var.name == inner):
            return None
        b = node.body
        v = Var(fused or f"{outer}_{inner}")
        body = substitute_stmt(b.body, {node.var: v // b.extent, b.var: v % b.extent})
        return For(v, node.extent * b.extent, body, node.kind)

    return map_stmts(s, rewrite)


def collapse(loops: list[For], body: Stmt, kind: ForKind = ForKind.SERIAL) -> Stmt:
    """The perfect nest ``loops`` (their own bodies ignored) around ``body`` as one loop over the product
    of their extents, each var recovered by division and remainder: ``for a { for b { S } }`` → ``for
    a_b in 0..A*B { S[a := a_b / B, b := a_b % B] }``. A nest of symbolic extents (a batch, blocks of a
    sequence) is then one loop the thread pool can split whatever the run's sizes (batch 1 included)."""
    if len(loops) == 1:
        return replace(loops[0], body=body, kind=kind)
    fused = Var("_".join(loop.var.name for loop in loops))
    mapping: dict[Var, Expr] = {}
    inner: Size = 1
    for k, loop in enumerate(reversed(loops)):
        position = fused if inner == 1 else div(fused, size_expr(inner))
        mapping[loop.var] = position if k == len(loops) - 1 else position % size_expr(loop.extent)
        inner = size_mul(inner, loop.extent)
    return For(fused, inner, substitute_stmt(body, mapping), kind)


def blocks_inside(outer: For, group: int) -> Stmt:
    """``for b in 0..n { for p in 0..m { S } }`` → ``for b_o in 0..n/g { for p { for b_i in 0..g { S[b := b_o*g
    + b_i] } } }`` and the last ``n % g`` values of ``b`` the same way. ``p`` keeps its kind (the pool's
    loop), ``b`` runs serially: each ``p`` iteration (a GEMM's column panel) serves ``g`` consecutive ``b``
    iterations (row blocks) while its data is cached, instead of being fetched again for every one."""
    inner = outer.body
    assert isinstance(inner, For)
    count, rest = parts_of(outer.extent, group)
    block_o, block_i = Var(f"{outer.var.name}_o"), Var(f"{outer.var.name}_i")

    def nest(extent: Size, first: Expr) -> Stmt:
        return replace(inner, body=For(block_i, extent, substitute_stmt(inner.body, {outer.var: first + block_i})))

    parts: list[Stmt] = [For(block_o, count, nest(group, block_o * group))] if static_value(count) != 0 else []
    if static_value(rest) != 0:
        parts.append(nest(rest, size_expr(count) * group))
    return seq(*parts)


def _retarget_accumulator(s: Stmt, old: Buffer, new: Buffer, index: tuple[Expr, ...]) -> Stmt:
    def rewrite(node: Stmt) -> Stmt | None:
        if isinstance(node, Store):
            target, idx = (new, index) if node.buffer == old else (node.buffer, node.indices)
            return Store(target, idx, map_loads(node.value, lambda ld: Load(new, index) if ld.buffer == old else None))
        return None

    return map_stmts(s, rewrite)


def _wrap(loops: list[For], body: Stmt) -> Stmt:
    for loop in reversed(loops):
        body = replace(loop, body=body)
    return body


def hoist_reduction(s: Stmt, names: list[str]) -> Stmt:
    """Register-tile a reduction: move spatial loops ``names`` inside its reduction loops.

    ``for i { for j { acc = init; for k { acc += f } ; out = g(acc) } }`` becomes
    ``acc[I, J] = init; for k { for i { for j { acc[i, j] += f } } }; for i { for j { out = g(acc[i, j]) } }``,
    so the accumulator tile stays in registers while ``k`` streams.
    """
    wanted = set(names)

    def rewrite(node: Stmt) -> Stmt | None:
        if not (isinstance(node, For) and node.var.name == names[0]):
            return None
        chain = _perfect_chain(node, wanted)
        inner = chain[-1].body
        if {f.var.name for f in chain} != wanted or not isinstance(inner, Alloc) or inner.buffer.shape != (1,):
            return None
        if not all(isinstance(f.extent, int) for f in chain):
            return None  # a loop of symbolic extent keeps its scalar accumulator
        parts = inner.body.stmts if isinstance(inner.body, Seq) else (inner.body,)
        if len(parts) != 3:
            return None
        init, update, final = parts
        acc = inner.buffer
        tile = Buffer(acc.name, acc.dtype, tuple(f.extent for f in chain), "local")
        index = tuple(f.var for f in chain)
        spatial = [replace(f, body=Seq(())) for f in chain]
        red_loops: list[For] = []
        cursor = update
        while isinstance(cursor, For):
            red_loops.append(replace(cursor, body=Seq(())))
            cursor = cursor.body
        new_update = _wrap(red_loops, _wrap(spatial, _retarget_accumulator(cursor, acc, tile, index)))
        return Alloc(tile, seq(
            _wrap(spatial, _retarget_accumulator(init, acc, tile, index)),
            new_update,
            _wrap(spatial, _retarget_accumulator(final, acc, tile, index)),
        ))

    return map_stmts(s, rewrite)


def vectorize_reduction(s: Stmt, name: str, width: int, combiner: str, init: Const) -> Stmt:
    """Reduce along the innermost reduction loop ``name`` ``width`` elements at a time (an rfactor).

    ``acc = init; for r { acc = acc (+) f(r) }`` becomes ``part[W] = init; for r_o { for r_i
    (vectorized) { part[r_i] = part[r_i] (+) f(r_o*W + r_i) } }; acc (+)= f(tail)...`` followed by a
    tree fold of ``part`` (halving vectors) into ``acc``: for reductions along a contiguous axis
    (a GEMV's dot products, a row sum, LayerNorm's statistics) whose outputs cannot be vectorized.
    It reassociates the reduction, as any vectorized sum does.
    """

    def rewrite(node: Stmt) -> Stmt | None:
        if not (isinstance(node, Alloc) and node.buffer.shape == (1,) and isinstance(node.body, Seq)
                and len(node.body.stmts) == 3):
            return None
        first, update, final = node.body.stmts
        chain: list[For] = []
        cursor = update
        while isinstance(cursor, For) and (not chain or chain[-1].var.name != name):
            chain.append(cursor)
            cursor = cursor.body
        if not chain or chain[-1].var.name != name or not isinstance(cursor, Store):
            return None
        loop, acc = chain[-1], node.buffer
        count, rest = parts_of(loop.extent, width)
        if static_value(count) == 0:
            return None
        part = Buffer(f"{acc.name}_lanes", acc.dtype, (width,), "local")
        outer, lane, tail = Var(f"{name}_o"), Var(f"{name}_i"), Var(f"{name}_t")
        lanes_update = _retarget_accumulator(substitute_stmt(cursor, {loop.var: outer * width + lane}), acc, part, (lane,))
        main: Stmt = For(lane, width, lanes_update, ForKind.VECTORIZED)
        main = For(outer, count, main) if static_value(count) != 1 else substitute_stmt(main, {outer: Const(0)})
        parts = [main]
        start = size_expr(count) * width
        if isinstance(rest, int):
            if rest:
                parts.append(For(tail, rest, substitute_stmt(cursor, {loop.var: tail + start})))
        else:
            # A symbolic tail goes into the lanes too, in chunks of halving static sizes.
            def chunk(f: int, first: Expr) -> Stmt:
                update = _retarget_accumulator(substitute_stmt(cursor, {loop.var: first + lane}), acc, part, (lane,))
                return For(lane, f, update, ForKind.VECTORIZED) if f > 1 else substitute_stmt(update, {lane: Const(0)})

            parts.extend(halving_chunks(rest, width, start, f"{name}_t", chunk))
        folds: list[Stmt] = []
        half = width // 2
        while half >= 1:
            k = Var(f"{name}_fold{half}")
            step = Store(part, (k,), combine(combiner, Load(part, (k,)), Load(part, (k + half,))))
            folds.append(For(k, half, step, ForKind.VECTORIZED) if half > 1 else substitute_stmt(step, {k: Const(0)}))
            half //= 2
        fill = Var(f"{name}_init")
        return Alloc(acc, Alloc(part, seq(
            first,
            For(fill, width, Store(part, (fill,), init), ForKind.VECTORIZED),
            _wrap(chain[:-1], seq(*parts)),
            *folds,
            Store(acc, (Const(0),), combine(combiner, Load(acc, (Const(0),)), Load(part, (Const(0),)))),
            final,
        )))

    return map_stmts(s, rewrite)


def outermost_loop(s: Stmt) -> For | None:
    """The first loop reached from the root through sequences and allocations."""
    if isinstance(s, For):
        return s
    if isinstance(s, Alloc):
        return outermost_loop(s.body)
    if isinstance(s, Seq) and s.stmts:
        return outermost_loop(s.stmts[0])
    return None


def loop_vars_outside_in(s: Stmt) -> list[Var]:
    """Variables of the perfectly nested loops at the top of ``s``, outermost first."""
    out: list[Var] = []
    while isinstance(s, For):
        out.append(s.var)
        s = s.body
    return out


__all__ = ["annotate", "collapse", "fuse", "hoist_reduction", "loop_vars_outside_in", "merge_siblings", "outermost_loop", "reorder",
           "split", "vectorize_reduction"]
