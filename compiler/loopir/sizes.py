"""Sizes: tensor dimensions and loop extents that are either ints or expressions over size variables.

A ``SizeVar`` is a symbolic dimension of the model (``batch``, ``sequence``),
bound once per run from the shapes of the inputs. A size is an ``int`` (the
static case, unchanged from a fully static compile) or an int64 loop IR
expression over size variables (``sequence``, ``batch * sequence``, ``(h + 1) / 2``),
so the same expression machinery serves index arithmetic and sizes, and the
code generators evaluate a symbolic extent like any other index expression.

Every size variable has a ``SizeRange``: the run-time values it may take,
from the user's ``dim_bounds`` or the default range. Kernels, the memory plan
and the ABI are correct for every value in the range; the runtime refuses the
others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Union

from compiler.dtypes import DType
from compiler.loopir.expr import (COMPARE_OPS, Binary, Const, Expr, Select, Var, add, binary, compare, div, mul,
                                  select, walk)

Size = Union[int, Expr]

#: Largest value of a size variable without a user bound: far beyond any batch or sequence, and small
#: enough that products of a few such sizes, in bytes, stay within int64 index arithmetic.
DEFAULT_MAX_SIZE = 1 << 20


@dataclass(frozen=True)
class SizeVar(Var):
    """A symbolic dimension (int64), bound for a whole run from the input shapes."""


@dataclass(frozen=True)
class ValueVar(SizeVar):
    """A value size: a size variable read from an input's data (``ValueSource``), which, unlike a
    dimension, may be negative (an axis from the end, a negative pad, a Slice start)."""


@dataclass(frozen=True)
class IterVar(SizeVar):
    """The counter of a loop of the run (``run_loops.RunLoop``, a Loop/Scan/recurrence kept as a loop):
    ``tilec_run`` sets it before each iteration. Kernels of the loop's body read it like a dim (an index
    offset: the step's slice of a scan input, its row of a scan output); no shape depends on it."""


@dataclass(frozen=True)
class ConditionVar(Var):
    """An If's condition computed from tensor data: the one-element bool value ``name`` (``Graph.conditions``),
    which ``tilec_run`` reads from its buffer after the kernel computing it and before the kernels it guards.
    It appears in guards only, never in a dim (nothing can be sized by it before the run)."""


def has_conditions(e: Expr) -> bool:
    """Whether ``e`` (a guard) reads a condition computed in the run."""
    return any(isinstance(x, ConditionVar) for x in walk(e))


def has_values(d: Size) -> bool:
    """Whether ``d`` depends on a value size."""
    return not isinstance(d, int) and any(isinstance(e, ValueVar) for e in walk(d))


#: Bound on the magnitude of a value size (see ``ValueSource``): sums of a few such values and sizes stay within
#: int64, so a Slice bound or a pad is clamped by the code before anything can overflow.
VALUE_LIMIT = 1 << 62


@dataclass(frozen=True)
class ValueSource:
    """Where the runtime reads a size variable that is no dimension but a *value*: element ``index`` (row-major)
    of the integer graph input ``input``, a shape-setting operand given at run time (Reduce's axes, Pad's pads,
    Slice's starts, Reshape's shape). Such a variable may be negative."""

    input: str
    index: int


@dataclass(frozen=True)
class SizeRange:
    lo: int = 1
    hi: int = DEFAULT_MAX_SIZE
    source: ValueSource | None = None

    def __post_init__(self) -> None:
        if not self.lo <= self.hi or (self.lo < 0 and self.source is None):
            raise ValueError(f"empty size range [{self.lo}, {self.hi}]")

    @staticmethod
    def of_value(source: ValueSource) -> "SizeRange":
        return SizeRange(-VALUE_LIMIT, VALUE_LIMIT, source)

    def __str__(self) -> str:
        return f"{self.lo}..{self.hi}"


def static_value(d: Size) -> int | None:
    """``d`` as an int, or None when it depends on a size variable."""
    if isinstance(d, int):
        return d
    return int(d.value) if isinstance(d, Const) else None


def as_size(d: "Size | Expr") -> Size:
    """``d`` with constant expressions turned back into ints (the static spelling)."""
    value = static_value(d)
    return d if value is None else value


def size_expr(d: Size) -> Expr:
    return Const(int(d)) if isinstance(d, int) else d


def size_add(a: Size, b: Size) -> Size:
    return as_size(add(size_expr(a), size_expr(b)))


def size_mul(a: Size, b: Size) -> Size:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    return as_size(mul(size_expr(a), size_expr(b)))


def size_ceil_div(a: Size, b: int) -> Size:
    if isinstance(a, int):
        return -(-a // b)
    return as_size(div(add(a, Const(b - 1)), Const(b)))


def size_sum(terms: Iterable[Size]) -> Size:
    total: Size = 0
    for t in terms:
        total = size_add(total, t)
    return total


def size_prod(dims: Iterable[Size]) -> Size:
    total: Size = 1
    for d in dims:
        total = size_mul(total, d)
    return total


def size_vars(*sizes: Size) -> set[SizeVar]:
    return {e for d in sizes if not isinstance(d, int) for e in walk(d) if isinstance(e, SizeVar)}


def is_one(d: Size) -> bool:
    return static_value(d) == 1


def may_exceed_one(d: Size) -> bool:
    """Whether a loop of extent ``d`` can have more than one iteration (a symbolic one always may)."""
    value = static_value(d)
    return value is None or value > 1


_EVAL = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
         "div": lambda x, y: x // y, "rem": lambda x, y: x % y, "min": min, "max": max}
# Conditions inside sizes (which axes a run-time ``axes`` input names): comparisons, and/or of them, Select.
_CONDITIONS = {"lt": lambda x, y: x < y, "le": lambda x, y: x <= y, "gt": lambda x, y: x > y,
               "ge": lambda x, y: x >= y, "eq": lambda x, y: x == y, "ne": lambda x, y: x != y,
               "and": lambda x, y: bool(x and y), "or": lambda x, y: bool(x or y)}


def evaluate_size(d: Size, values: Mapping[str, int]) -> int:
    """The value of ``d`` with each size variable set from ``values`` (by name)."""
    if isinstance(d, int):
        return d
    if isinstance(d, Const):
        return int(d.value)
    if isinstance(d, SizeVar):
        return int(values[d.name])
    if isinstance(d, Binary) and d.op in _EVAL and d.dtype is DType.I64:
        return _EVAL[d.op](evaluate_size(d.a, values), evaluate_size(d.b, values))
    if isinstance(d, Binary) and d.op in _CONDITIONS and (d.op in COMPARE_OPS or d.dtype is DType.BOOL):
        return int(_CONDITIONS[d.op](evaluate_size(d.a, values), evaluate_size(d.b, values)))
    if isinstance(d, Select):
        return evaluate_size(d.true_value if evaluate_size(d.cond, values) else d.false_value, values)
    raise ValueError(f"not a size expression: {d}")


def nominal(d: Size, ranges: Mapping[str, SizeRange] | None = None, typical: int = 64) -> int:
    """A representative value of ``d`` for schedule heuristics: each variable at ``typical``, within its range."""
    ranges = ranges or {}
    values = {}
    for v in size_vars(d):
        r = ranges.get(v.name, SizeRange())
        values[v.name] = min(max(typical, r.lo), r.hi)
    return evaluate_size(d, values)


def size_nbytes(dtype: DType, numel: Size) -> Size:
    """``dtype.nbytes(numel)`` for a symbolic element count too."""
    if isinstance(numel, int):
        return dtype.nbytes(numel)
    per = dtype.elements_per_byte
    return size_ceil_div(numel, per) if per > 1 else size_mul(numel, dtype.itemsize)


# --- axes given at run time -----------------------------------------------------------------------
# A Reduce's or CumSum's axes may be value sizes: which axes they name is a condition per axis, and every
# dimension that depends on it a Select over those conditions.


def named_axes(axes: Iterable[Size], rank: int) -> list[Expr]:
    """For each axis of a rank-``rank`` tensor, the condition that one of ``axes`` (each in ``[-rank, rank)``,
    an int or a value size) names it."""
    flags: list[Expr] = []
    for axis in range(rank):
        flag: Expr = Const(False, DType.BOOL)
        for a in axes:
            if isinstance(a, int):
                hit: Expr = Const(a in (axis, axis - rank), DType.BOOL)
            else:
                hit = binary("or", compare("eq", a, axis), compare("eq", a, axis - rank))
            flag = _either(flag, hit)
        flags.append(flag)
    return flags


def _either(a: Expr, b: Expr) -> Expr:
    if isinstance(a, Const):
        return b if not a.value else a
    if isinstance(b, Const):
        return a if not b.value else b
    return binary("or", a, b)


def slice_axis(n: Size, start: Size, end: Size, step: Size) -> tuple[Size, Size]:
    """(first index, length) of a Slice of an axis of ``n`` elements, as the spec clamps ``start`` and ``end``
    (negative ones count from the end); ints where all are, else sizes chosen per run. ``step`` is not 0."""
    if all(isinstance(v, int) for v in (n, start, end, step)):
        picked = range(*slice(start, end, step).indices(n))
        return picked.start, len(picked)
    n_, st = size_expr(n), size_expr(step)
    forward = compare("gt", st, 0) if not isinstance(step, int) else Const(step > 0, DType.BOOL)
    lo, hi = select(forward, Const(0), Const(-1)), select(forward, n_, n_ - 1)

    def clamp(v: Size) -> Expr:
        v_ = size_expr(v)
        return binary("min", binary("max", select(compare("lt", v_, 0), v_ + n_, v_), lo), hi)

    first, last = clamp(start), clamp(end)
    span = select(forward, last - first, first - last)
    stride = select(forward, st, Const(0) - st)
    length = binary("max", div(span + stride - 1, stride), Const(0))
    return as_size(first), as_size(length)


def slice_geometry(data: "list[Size]", starts: "list[Size]", ends: "list[Size]", axes: "list[Size] | None",
                   steps: "list[Size] | None") -> tuple[list[Size], list[Size], list[Size]]:
    """A Slice of a tensor of dims ``data`` as (first index, step, length) per axis; the operands may be value
    sizes (the axes too: each axis then takes the entries of the one that names it, chosen per run)."""
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    flags = [named_axes([a], len(data)) for a in axes]
    first: list[Size] = []
    stride: list[Size] = []
    length: list[Size] = []
    for d, n in enumerate(data):
        if all(isinstance(f[d], Const) and not f[d].value for f in flags):  # an axis no entry names
            first.append(0), stride.append(1), length.append(n)
            continue
        start: Size = 0
        end: Size = n
        step: Size = 1
        for k, f in enumerate(flags):
            start, end, step = choose(f[d], starts[k], start), choose(f[d], ends[k], end), choose(f[d], steps[k], step)
        begin, count = slice_axis(n, start, end, step)
        first.append(begin), stride.append(step), length.append(count)
    return first, stride, length


def equals(v: Size, k: int) -> Expr:
    """The condition ``v == k``: a constant where ``v`` is an int."""
    return Const(v == k, DType.BOOL) if isinstance(v, int) else compare("eq", v, k)


def differs(v: Size, k: int) -> Expr:
    """The condition ``v != k``: a constant where ``v`` is an int."""
    return Const(v != k, DType.BOOL) if isinstance(v, int) else compare("ne", v, k)


def reshaped_dims(data: "list[Size]", shape: "list[Size]", allowzero: bool) -> list[Size]:
    """Reshape's result dims for a ``shape`` of ints and value sizes, as the spec reads it per run: 0 copies the
    input's dim (unless ``allowzero``), one -1 takes what the others leave of the element count."""
    entries = [s if allowzero else choose(equals(s, 0), data[k] if k < len(data) else 0, s) for k, s in enumerate(shape)]
    known = size_prod(choose(equals(s, -1), 1, e) for s, e in zip(shape, entries))
    hole = as_size(div(size_expr(size_prod(data)), binary("max", size_expr(known), Const(1))))
    return [choose(equals(s, -1), hole, e) for s, e in zip(shape, entries)]


def expanded_dims(data: "list[Size]", shape: "list[Size]") -> list[Size]:
    """Expand's result dims for a ``shape`` of ints and value sizes: a dim of 1 of the input takes the shape's
    entry, any other keeps its own (the entry must then be 1 or that dim: the lowering checks it)."""
    rank = max(len(data), len(shape))
    data, shape = [1] * (rank - len(data)) + list(data), [1] * (rank - len(shape)) + list(shape)
    return [s if d == 1 else d for d, s in zip(data, shape)]


def range_length(start: Size, limit: Size, delta: Size) -> Size:
    """Range's element count, ``max(ceil((limit - start) / delta), 0)``, for a ``delta`` that is not 0."""
    span, step = size_expr(size_add(limit, size_mul(start, -1))), size_expr(delta)
    forward = compare("gt", step, 0)
    span, step = select(forward, span, Const(0) - span), select(forward, step, Const(0) - step)
    return as_size(binary("max", div(span + step - 1, step), Const(0)))


def pads_per_axis(pads: "list[Size]", axes: "Iterable[Size] | None", rank: int) -> tuple[list[Size], list[Size]]:
    """Pad's ``pads`` (begins of the listed ``axes``, then their ends) as (before, after) per axis of a
    rank-``rank`` tensor; ints, or sizes chosen per run where the pads or the axes are value sizes."""
    axes = list(range(rank)) if axes is None else list(axes)
    flags = [named_axes([a], rank) for a in axes]
    before = [size_sum(choose(flags[k][d], pads[k], 0) for k in range(len(axes))) for d in range(rank)]
    after = [size_sum(choose(flags[k][d], pads[len(axes) + k], 0) for k in range(len(axes))) for d in range(rank)]
    return before, after


def choose(flag: Expr, if_true: Size, if_false: Size) -> Size:
    """``if_true`` where ``flag`` holds at run time, else ``if_false``, as a size."""
    return as_size(select(flag, size_expr(if_true), size_expr(if_false)))


# --- conditions of an If over sizes -------------------------------------------------------------------
# An If whose condition is a size predicate (a bool graph input read as a value size, a comparison of symbolic
# dims) runs one branch: its nodes carry the predicate, or its negation, as their guard.

_INVERSE = {"lt": "ge", "ge": "lt", "gt": "le", "le": "gt", "eq": "ne", "ne": "eq"}


def negation(cond: Expr) -> Expr:
    """``not cond`` for a size predicate, as a comparison again where it is one (guards print readably)."""
    if isinstance(cond, Const):
        return Const(not cond.value, DType.BOOL)
    if isinstance(cond, Binary) and cond.op in _INVERSE:
        return Binary(_INVERSE[cond.op], cond.a, cond.b)
    if isinstance(cond, Binary) and cond.op in ("and", "or"):
        return Binary("or" if cond.op == "and" else "and", negation(cond.a), negation(cond.b))
    return compare("eq", select(cond, Const(1), Const(0)), 0)


def predicate(d: Size) -> Expr:
    """A size element read as a condition: a bool predicate as it is, an integer (a value size) as ``!= 0``."""
    e = size_expr(d)
    if e.dtype is DType.BOOL:
        return e
    return Const(e.value != 0, DType.BOOL) if isinstance(e, Const) else compare("ne", e, 0)


def kept_axes_before(flags: list[Expr], axis: int) -> Size:
    """How many of the axes before ``axis`` are not named (the position of ``axis`` once the named ones are
    dropped, as a Reduce with ``keepdims=0`` drops them)."""
    return size_sum(choose(f, 0, 1) for f in flags[:axis])


def kept_dims(shape: "list[Size] | tuple[Size, ...]", flags: list[Expr], count: int) -> list[Size]:
    """The dims of ``shape`` with the ``count`` axes that ``flags`` name dropped: result dim ``j`` is the
    dim of the ``j``-th axis not named."""
    dims: list[Size] = []
    for j in range(len(shape) - count):
        dim: Size = 0
        for axis, (d, flag) in enumerate(zip(shape, flags)):
            at_j = compare("eq", size_expr(kept_axes_before(flags, axis)), j)
            dim = choose(flag, dim, choose(at_j, d, dim))
        dims.append(dim)
    return dims


# --- canonical form -------------------------------------------------------------------------------
# Sizes built along different paths (batch*seq from a Reshape, seq*batch from a Flatten) must compare
# equal: a size is normalized to a sum of monomials with integer coefficients, in a fixed order; a
# division, remainder, min or max of normalized operands is an opaque factor of a monomial.

Monomial = tuple[Expr, ...]  # sorted factors (size variables and opaque atoms), () for the constant term


def _poly(e: Size) -> dict[Monomial, int]:
    if isinstance(e, int):
        return {(): e} if e else {}
    if isinstance(e, Const):
        return {(): int(e.value)} if e.value else {}
    if isinstance(e, Binary) and e.op in ("add", "sub", "mul"):
        a, b = _poly(e.a), _poly(e.b)
        if e.op == "mul":
            out: dict[Monomial, int] = {}
            for ma, ca in a.items():
                for mb, cb in b.items():
                    m = tuple(sorted(ma + mb, key=repr))
                    out[m] = out.get(m, 0) + ca * cb
            return {m: c for m, c in out.items() if c}
        sign = 1 if e.op == "add" else -1
        out = dict(a)
        for m, c in b.items():
            out[m] = out.get(m, 0) + sign * c
        return {m: c for m, c in out.items() if c}
    if isinstance(e, Binary):
        atom = Binary(e.op, size_expr(normalize(e.a)), size_expr(normalize(e.b)))
        folded = _fold_atom(atom)
        return _poly(folded) if folded is not None else {(atom,): 1}
    return {(e,): 1}


def _fold_atom(atom: Binary) -> Size | None:
    """A division, remainder, min or max that normalization can settle: constant operands, x / 1, x % 1."""
    a, b = static_value(atom.a), static_value(atom.b)
    if a is not None and b is not None and atom.op in _EVAL and (atom.op not in ("div", "rem") or b > 0):
        return _EVAL[atom.op](a, b)
    if b == 1 and atom.op == "div":
        return atom.a
    if b == 1 and atom.op == "rem":
        return 0
    if atom.op in ("min", "max") and atom.a == atom.b:
        return atom.a
    return None


def _from_poly(poly: dict[Monomial, int]) -> Size:
    terms: list[Expr] = []
    constant = poly.get((), 0)
    for m in sorted((m for m in poly if m), key=repr):
        term: Expr = Const(poly[m]) if poly[m] != 1 else m[0]
        for k, factor in enumerate(m):
            if poly[m] == 1 and k == 0:
                continue
            term = Binary("mul", term, factor)
        terms.append(term)
    if not terms:
        return constant
    total = terms[0]
    for t in terms[1:]:
        total = Binary("add", total, t)
    return total if not constant else Binary("add", total, Const(constant))


def normalize(d: Size) -> Size:
    """The canonical form of ``d`` (an int when it is one)."""
    return _from_poly(_poly(d))


def same_size(a: Size, b: Size) -> bool:
    """Whether ``a`` and ``b`` are provably the same size."""
    return normalize(a) == normalize(b)


def exact_quotient(a: Size, b: Size) -> Size | None:
    """``a / b`` when ``b`` divides ``a`` as polynomials with ``b`` a monomial (``batch*seq*768 / (seq*12)``), else None."""
    pa, pb = _poly(a), _poly(b)
    if len(pb) != 1:
        return None
    (mb, cb), = pb.items()
    out: dict[Monomial, int] = {}
    for ma, ca in pa.items():
        rest = list(ma)
        for factor in mb:
            if factor not in rest:
                return None
            rest.remove(factor)
        if ca % cb:
            return None
        out[tuple(rest)] = out.get(tuple(rest), 0) + ca // cb
    return _from_poly({m: c for m, c in out.items() if c})


@dataclass(frozen=True)
class SizeConstraint:
    """What a run's sizes must satisfy for the code to be right: ``lhs == rhs`` (operands that broadcast or
    contract together) or ``lhs <= rhs`` (a loop reads a buffer along a dim at least as long); the native
    code checks every one before the run (``tilec_sizes``) and the runtime reports ``message``."""

    lhs: Size
    relation: str  # "==" or "<="
    rhs: Size
    message: str
    # Only where this size predicate holds (the guard of the If branch whose node needs it); None: always.
    when: Expr | None = None
