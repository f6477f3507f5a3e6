"""Computations: what an op lowering declares, and how it becomes a loop nest.

A ``Computation`` says ``output[index] = epilogue(reduce(combiner, body over
axes))`` (or ``output[index] = body`` without axes). Op lowerings only build
these; ``build_loops`` turns one into the canonical loop nest, which the
schedules in ``compiler.schedule`` then transform. Loops of extent 1 are not
built: their variable is replaced by 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

from compiler.dtypes import DType
from compiler.loopir.expr import Binary, Buffer, Const, Expr, Var, binary, const, substitute
from compiler.loopir.sizes import Size, may_exceed_one, static_value
from compiler.loopir.stmt import Alloc, For, Stmt, Store, seq

COMBINERS = ("sum", "prod", "max", "min")


@dataclass(frozen=True)
class ReduceAxis:
    var: Var
    extent: Size


@dataclass(frozen=True)
class Computation:
    output: Buffer
    index: tuple[Var, ...]
    body: Expr
    axes: tuple[ReduceAxis, ...] = ()
    combiner: str | None = None
    # In terms of ``index`` and ``acc_var(self)``: applied to the reduced value before the store.
    epilogue: Expr | None = None
    # Writes only the box ``offsets + [0, extents)`` of ``output`` (default: all of it).
    extents: tuple[Size, ...] | None = None
    offsets: tuple[Size, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.index) != len(self.output.shape):
            raise ValueError(f"{self.output.name}: {len(self.index)} index vars for rank {len(self.output.shape)}")
        if bool(self.axes) != (self.combiner is not None):
            raise ValueError("a reduction needs both axes and a combiner")
        if self.combiner is not None and self.combiner not in COMBINERS:
            raise ValueError(f"unknown combiner {self.combiner}")

    @property
    def writes_whole_output(self) -> bool:
        return self.extents is None or (self.extents == self.output.shape and not any(self.offsets or ()))

    @property
    def space(self) -> tuple[Size, ...]:
        """The iteration space: one extent per index var."""
        return self.extents if self.extents is not None else self.output.shape

    @property
    def is_static(self) -> bool:
        """Whether every extent (iteration space, reduction axes, output) is an int."""
        sizes = (*self.space, *(a.extent for a in self.axes), *self.output.shape, *(self.offsets or ()))
        return all(isinstance(d, int) for d in sizes)

    @property
    def is_reduction(self) -> bool:
        return bool(self.axes)

    @property
    def flops(self) -> int:
        """Arithmetic of the reduction, for profiles: 2 per multiply-accumulate, 1 per other reduction step."""
        if not self.is_reduction or not self.is_static:
            return 0  # symbolic: a profile counts the work of each run from its own extents
        steps = math.prod(self.space) * math.prod(a.extent for a in self.axes)
        is_mac = self.combiner == "sum" and isinstance(self.body, Binary) and self.body.op == "mul"
        return steps * (2 if is_mac else 1)

    @property
    def acc(self) -> Var:
        return acc_var(self.body.dtype)

    @property
    def exprs(self) -> list[Expr]:
        """The expressions it evaluates: the body, and the epilogue when there is one."""
        return [self.body] + ([self.epilogue] if self.epilogue is not None else [])

    def map_exprs(self, fn: Callable[[Expr], Expr]) -> "Computation":
        """The same computation with ``fn`` applied to its body and epilogue."""
        return replace(self, body=fn(self.body), epilogue=None if self.epilogue is None else fn(self.epilogue))

    def value_expr(self) -> Expr:
        """For a pointwise computation: the stored value, epilogue applied."""
        assert not self.is_reduction
        return self.body if self.epilogue is None else substitute(self.epilogue, {self.acc: self.body})


def acc_var(dtype: DType) -> Var:
    """The placeholder an epilogue uses for the reduced value."""
    return Var("acc", dtype)


def reduce_init(combiner: str, dtype: DType) -> Const:
    if combiner == "sum":
        return const(0, dtype)
    if combiner == "prod":
        return const(1, dtype)
    if dtype.is_float:
        return const(-math.inf if combiner == "max" else math.inf, dtype)
    if dtype is DType.BOOL:
        return const(combiner == "min", dtype)
    bits = dtype.bits
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if dtype.is_signed else (0, (1 << bits) - 1)
    return const(lo if combiner == "max" else hi, dtype)


def combine(combiner: str, acc: Expr, value: Expr) -> Expr:
    op = {"sum": "add", "prod": "mul", "max": "max", "min": "min"}[combiner]
    return binary(op, acc, value)


def build_loops(c: Computation) -> Stmt:
    """The canonical nest: spatial loops outside, the reduction (if any) inside with a scalar accumulator."""
    if any(static_value(n) == 0 for n in c.space):
        return seq()  # an empty tensor: nothing to store (dropping its loops would leave their vars unbound)
    unit = {v: Const(0) for v, n in zip(c.index, c.space) if static_value(n) == 1}
    unit.update({a.var: Const(0) for a in c.axes if static_value(a.extent) == 1})
    offsets = c.offsets or (0,) * len(c.index)
    index = tuple(substitute(v + k, unit) for v, k in zip(c.index, offsets))
    body = substitute(c.body, unit)
    if not c.is_reduction:
        inner: Stmt = Store(c.output, index, substitute(c.value_expr(), unit))
    else:
        acc_buf = Buffer(f"{c.output.name}_acc", body.dtype, (1,), "local")
        acc = acc_buf[0]
        # A reduction over an empty range is its initial value: no update at all.
        empty = any(static_value(a.extent) == 0 for a in c.axes)
        update: Stmt = seq() if empty else Store(acc_buf, (Const(0),), combine(c.combiner, acc, body))
        for axis in reversed(c.axes):
            if may_exceed_one(axis.extent):
                update = For(axis.var, axis.extent, update)
        result = acc if c.epilogue is None else substitute(substitute(c.epilogue, unit), {c.acc: acc})
        inner = Alloc(acc_buf, seq(Store(acc_buf, (Const(0),), reduce_init(c.combiner, body.dtype)),
                                   update, Store(c.output, index, result)))
    for var, extent in reversed(list(zip(c.index, c.space))):
        if may_exceed_one(extent):
            inner = For(var, extent, inner)
    return inner
