"""Split an output index that the computation reads through a division into (group, member) indices.

Contract: ``split_grouped_index(c)`` returns ``c`` with the first index var ``m`` (extent ``M``)
that appears as ``m // k`` (``k`` a proper divisor of ``M``) replaced by two vars ``m_g`` (extent
``M / k``) and ``m_w`` (extent ``k``), ``m = m_g * k + m_w``, when after range-aware simplification no
division or remainder of them is left. The output is read as the reshaped view with that dim split
(the same bytes). Otherwise ``c`` is returned as it is.

Why: a grouped convolution reads input channel ``(m // (M / group)) * (C / group) + c``; as a
division of the output channel that index is not affine in ``m``, so the contraction schedule found
no row variable and ran a one-row tile (20 GFLOP/s on ShuffleNet's grouped 1x1 convs). Split, the
member index ``m_w`` does not move the input at all: a GEMM row within each group.
"""

from __future__ import annotations

from dataclasses import replace

from compiler.loopir.compute import Computation
from compiler.loopir.expr import Binary, Const, Expr, Var, free_vars, substitute, walk
from compiler.schedule.simplify import simplify_expr


def _divisors_of(c: Computation, v: Var) -> list[int]:
    found = {int(e.b.value) for x in c.exprs for e in walk(x)
             if isinstance(e, Binary) and e.op == "div" and isinstance(e.b, Const) and v in free_vars(e.a)}
    return sorted(found)


def _has_division_of(e: Expr, vs: set[Var]) -> bool:
    return any(isinstance(x, Binary) and x.op in ("div", "rem") and free_vars(x.a) & vs for x in walk(e))


def split_grouped_index(c: Computation) -> Computation:
    if not c.writes_whole_output:
        return c
    ranges = {v: n for v, n in zip(c.index, c.space)} | {a.var: a.extent for a in c.axes}
    for pos, (v, n) in enumerate(zip(c.index, c.space)):
        for k in _divisors_of(c, v):
            if not 1 < k < n or n % k:
                continue
            group, member = Var(f"{v.name}_g"), Var(f"{v.name}_w")
            split_ranges = {u: r for u, r in ranges.items() if u != v} | {group: n // k, member: k}
            rewrite = lambda e: simplify_expr(substitute(e, {v: group * k + member}), split_ranges)  # noqa: E731
            split = c.map_exprs(rewrite)
            if any(_has_division_of(e, {group, member}) for e in split.exprs):
                continue
            shape = c.output.shape[:pos] + (n // k, k) + c.output.shape[pos + 1:]
            return replace(split, output=replace(c.output, shape=shape),
                           index=c.index[:pos] + (group, member) + c.index[pos + 1:])
    return c
