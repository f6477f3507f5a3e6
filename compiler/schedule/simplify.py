"""Range-aware simplification of integer index arithmetic in a scheduled loop nest.

Contract: ``simplify_indices(s)`` returns ``s`` with every ``e // d`` and ``e % d``
(``d`` a positive constant, ``e`` affine in loop variables) rewritten without the
division where the loop extents prove it exact, e.g. ``(j_o * 32 + j_i) // 32`` →
``j_o`` and ``(j_o * 32 + j_i) % 32`` → ``j_i`` inside ``for j_i in 0..32``. Packed
operand layouts (``compiler.schedule.packing``) index with such quotients and
remainders; after this pass the codegen sees plain affine indices, so it emits
contiguous vector loads instead of per-lane divisions and gathers.
"""

from __future__ import annotations

from compiler.loopir.expr import Binary, Const, Expr, Var, add, children, mul, rebuild
from compiler.loopir.stmt import For, Prefetch, Stmt, Store, stmt_children, with_children, with_held_exprs

Affine = tuple[dict[Var, int], int]


def affine_terms(e: Expr) -> Affine | None:
    """``e`` as ({var: coefficient}, constant), or None if it is not an affine int64 expression."""
    if isinstance(e, Var) and e.dtype.is_int:
        return {e: 1}, 0
    if isinstance(e, Const) and e.dtype.is_int and not isinstance(e.value, bool):
        return {}, int(e.value)
    if not isinstance(e, Binary):
        return None
    if e.op in ("add", "sub"):
        a, b = affine_terms(e.a), affine_terms(e.b)
        if a is None or b is None:
            return None
        sign = 1 if e.op == "add" else -1
        terms = dict(a[0])
        for v, k in b[0].items():
            terms[v] = terms.get(v, 0) + sign * k
        return {v: k for v, k in terms.items() if k}, a[1] + sign * b[1]
    if e.op == "mul":
        for x, y in ((e.a, e.b), (e.b, e.a)):
            if isinstance(y, Const):
                inner = affine_terms(x)
                if inner is None:
                    return None
                k = int(y.value)
                return {v: c * k for v, c in inner[0].items() if c * k}, inner[1] * k
    return None


def _build(terms: dict[Var, int], constant: int) -> Expr:
    out: Expr = Const(0)
    for v, k in terms.items():
        out = add(out, mul(v, Const(k)))
    return add(out, Const(constant))


def _bounds(terms: dict[Var, int], constant: int, ranges: dict[Var, int]) -> tuple[int, int]:
    lo = hi = constant
    for v, k in terms.items():
        lo += min(0, k * (ranges[v] - 1))
        hi += max(0, k * (ranges[v] - 1))
    return lo, hi


def _divmod(e: Binary, ranges: dict[Var, int]) -> Expr | None:
    d = int(e.b.value)
    form = affine_terms(e.a)
    if form is None or d <= 0 or any(v not in ranges for v in form[0]):
        return None
    terms, constant = form
    if _bounds(terms, constant, ranges)[0] < 0:
        return None  # truncating division: only exact as floor division for a non-negative numerator
    high = {v: k // d for v, k in terms.items() if k % d == 0}
    low = {v: k for v, k in terms.items() if k % d}
    lo, hi = _bounds(low, constant % d, ranges)
    if lo < 0 or hi >= d:
        return None
    return _build(high, constant // d) if e.op == "div" else _build(low, constant % d)


def simplify_expr(e: Expr, ranges: dict[Var, int]) -> Expr:
    kids = children(e)
    if kids:
        new = tuple(simplify_expr(k, ranges) for k in kids)
        if new != kids:
            e = rebuild(e, new)
    if (isinstance(e, Binary) and e.op in ("div", "rem") and e.dtype.is_int and isinstance(e.b, Const)
            and not isinstance(e.b.value, bool)):
        return _divmod(e, ranges) or e
    return e


def simplify_indices(s: Stmt, ranges: dict[Var, int] | None = None) -> Stmt:
    ranges = dict(ranges or {})
    if isinstance(s, (Store, Prefetch)):
        return with_held_exprs(s, lambda e: simplify_expr(e, ranges))
    if isinstance(s, For):
        ranges[s.var] = s.extent
    kids = stmt_children(s)
    return with_children(s, tuple(simplify_indices(k, ranges) for k in kids)) if kids else s
