"""Strip-mining a symbolic extent into static blocks, so static schedules apply to symbolic computations.

Contract: ``strip_mine(c, var, block)`` splits computation ``c`` along its spatial index var ``var``
(of symbolic extent ``n``) into

* ``block_computation``: ``c`` restricted to the ``block`` consecutive values of ``var`` starting at
  ``block_var * block``, with every other symbolic index var ``u`` not in ``keep`` fixed to one
  value ``base(u)``: a computation whose iteration space is ints but for the ``keep`` vars (its
  stores are at offsets that are expressions of the outer vars, its buffers may keep symbolic
  shapes, its reduction may stay symbolic);
* ``outer``: the loops that bind them: one per other symbolic var (outermost, in index order) and
  the block loop ``for block_var in 0..n / block``, which ``wrap`` collapses into one parallel loop;
* ``rest``: ``c`` over the last ``n % block`` values of ``var`` (symbolic extent: the caller
  schedules it as any symbolic computation).

Each element of the output is written by exactly one of the two, so running the scheduled block
nest inside the outer loops, then the rest, computes ``c``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from compiler.loopir.compute import Computation
from compiler.loopir.expr import Const, Expr, Var, mul, substitute
from compiler.loopir.sizes import Size, size_expr
from compiler.loopir.stmt import For, ForKind, Seq, Stmt
from compiler.schedule.transforms import collapse, parts_of


@dataclass(frozen=True)
class StripMined:
    block_computation: Computation
    outer: tuple[For, ...]  # bodies empty: wrap the scheduled block nest with ``wrap``
    rest: Computation | None

    def wrap(self, body: Stmt) -> Stmt:
        """``body`` inside the outer loops, collapsed into one loop for the thread pool."""
        return collapse(list(self.outer), body, ForKind.PARALLEL)


def _region(c: Computation, shifts: dict[Var, Expr], space: tuple[Size, ...]) -> Computation:
    """``c`` over ``space`` with each var ``v`` of ``shifts`` read and written at ``v + shift``."""
    offsets = c.offsets or (0,) * len(c.index)
    moved = tuple(size_expr(k) + shifts[v] if v in shifts else k for v, k in zip(c.index, offsets))
    shifted = c.map_exprs(lambda e: substitute(e, {v: v + s for v, s in shifts.items()}))
    return replace(shifted, extents=space, offsets=moved)


def at_extents(c: Computation, extents: dict[Var, Size]) -> Computation:
    """``c`` with the given index vars over other extents (a probe for schedule decisions)."""
    return _region(c, {}, tuple(extents.get(v, n) for v, n in zip(c.index, c.space)))


def strip_mine(c: Computation, var: Var, block: int, keep: frozenset[Var] = frozenset()) -> StripMined:
    space = dict(zip(c.index, c.space))
    extent = space[var]
    others = [v for v in c.index if v != var and v not in keep and not isinstance(space[v], int)]
    bases = {v: Var(f"{v.name}_at") for v in others}
    block_var = Var(f"{var.name}_blk")
    count, rest = parts_of(extent, block)
    shifts: dict[Var, Expr] = {**bases, var: mul(block_var, Const(block))}
    block_space = tuple(block if v == var else 1 if v in bases else n for v, n in zip(c.index, c.space))
    outer = tuple(For(bases[v], space[v], Seq(())) for v in others) + (For(block_var, count, Seq(()), ForKind.PARALLEL),)
    remainder = None
    if rest != 0:
        start = size_expr(count) * block
        rest_space = tuple(rest if v == var else n for v, n in zip(c.index, c.space))
        remainder = _region(c, {var: start}, rest_space)
    return StripMined(_region(c, shifts, block_space), outer, remainder)


def serial_top(s: Stmt) -> Stmt:
    """``s`` with its top loop serial: the pool goes to the parallel loops inside it."""
    return replace(s, kind=ForKind.SERIAL, work=None) if isinstance(s, For) else s
