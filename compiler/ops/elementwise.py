"""Elementwise ops: one scalar formula each, applied with numpy broadcasting.

Every entry is ``name: formula(ctx, *operands) -> Expr``; ``_broadcasting``
turns a formula into a lowering, so adding an op is one line.
"""

from __future__ import annotations

import math
from typing import Callable

from compiler.dtypes import DType
from compiler.loopir.expr import Expr, binary, call, cast, compare, const, logical_and, max_, min_, select
from compiler.loopir.sizes import is_one
from compiler.ops.api import LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop
from compiler.ops.text import string_equal

Formula = Callable[..., Expr]


def _broadcasting(formula: Formula) -> Callable[[LoweringContext], list[Tensor]]:
    def lower(ctx: LoweringContext) -> list[Tensor]:
        operands = [ctx.input(i) for i in range(len(ctx.node.inputs)) if ctx.has_input(i)]
        out = ctx.output_type(0)
        for x in operands:
            for dim, wide in zip(x.shape[::-1], out.shape[::-1]):
                if not is_one(dim):
                    ctx.require(dim, "==", wide, "operands must broadcast")
        return [ctx.compute(out.shape, lambda i: formula(ctx, *(x.at_broadcast(i) for x in operands)),
                            dtype=out.dtype, name=ctx.node.op_type.lower())]

    return lower


def _c(x: Expr, value: float) -> Expr:
    return const(value, x.dtype)


def _alpha(ctx: LoweringContext, default: float) -> float:
    return float(ctx.attr("alpha", default))


def _sigmoid(x: Expr) -> Expr:
    return _c(x, 1.0) / (_c(x, 1.0) + call("exp", -x))


def _clip(ctx: LoweringContext, x: Expr, *bounds: Expr) -> Expr:
    if ctx.opset < 11:
        lo, hi = ctx.attr("min", -math.inf), ctx.attr("max", math.inf)
        return min_(max_(x, _c(x, lo)), _c(x, hi))
    # Clip-11+: optional min/max inputs; an omitted one is absent from ``bounds``.
    present = [i for i in (1, 2) if ctx.has_input(i)]
    for which, bound in zip(present, bounds):
        x = max_(x, bound) if which == 1 else min_(x, bound)
    return x


def _pow(ctx: LoweringContext, a: Expr, b: Expr) -> Expr:
    if a.dtype.is_float:
        return binary("pow", a, cast(b, a.dtype))
    # Integer bases: exact in float64 for every result up to 2**53; the cast back truncates,
    # as numpy's float-to-int conversion does.
    return cast(binary("pow", cast(a, DType.F64), cast(b, DType.F64)), a.dtype)


def _variadic(op: Callable[[Expr, Expr], Expr]) -> Formula:
    def formula(ctx: LoweringContext, *xs: Expr) -> Expr:
        acc = xs[0]
        for x in xs[1:]:
            acc = op(acc, x)
        return acc

    return formula


def _mean(ctx: LoweringContext, *xs: Expr) -> Expr:
    return _variadic(lambda a, b: a + b)(ctx, *xs) / _c(xs[0], len(xs))


def _gelu(ctx: LoweringContext, x: Expr) -> Expr:
    half, one = _c(x, 0.5), _c(x, 1.0)
    if ctx.attr("approximate", "none") == "tanh":
        inner = _c(x, math.sqrt(2 / math.pi)) * (x + _c(x, 0.044715) * x * x * x)
        return half * x * (one + call("tanh", inner))
    return half * x * (one + call("erf", x * _c(x, 1 / math.sqrt(2))))


def _div(ctx: LoweringContext, a: Expr, b: Expr) -> Expr:
    return a / b


def _hardswish(ctx: LoweringContext, x: Expr) -> Expr:
    return x * max_(_c(x, 0.0), min_(_c(x, 1.0), x * _c(x, 1 / 6) + _c(x, 0.5)))


UNARY: dict[str, Formula] = {
    "Relu": lambda ctx, x: max_(x, _c(x, 0)) if x.dtype.is_float else max_(x, const(0, x.dtype)),
    "Sigmoid": lambda ctx, x: _sigmoid(x),
    "Tanh": lambda ctx, x: call("tanh", x),
    "Exp": lambda ctx, x: call("exp", x),
    "Log": lambda ctx, x: call("log", x),
    "Sqrt": lambda ctx, x: call("sqrt", x),
    "Abs": lambda ctx, x: call("abs", x),
    "Neg": lambda ctx, x: -x,
    "Floor": lambda ctx, x: call("floor", x),
    "Ceil": lambda ctx, x: call("ceil", x),
    "Reciprocal": lambda ctx, x: _c(x, 1.0) / x,
    "Erf": lambda ctx, x: call("erf", x),
    "LeakyRelu": lambda ctx, x: select(compare("lt", x, _c(x, 0)), x * _c(x, _alpha(ctx, 0.01)), x),
    "Elu": lambda ctx, x: select(compare("lt", x, _c(x, 0)), _c(x, _alpha(ctx, 1.0)) * (call("exp", x) - _c(x, 1)), x),
    "Softplus": lambda ctx, x: call("log", call("exp", x) + _c(x, 1.0)),
    "Softsign": lambda ctx, x: x / (_c(x, 1.0) + call("abs", x)),
    "HardSigmoid": lambda ctx, x: max_(_c(x, 0), min_(_c(x, 1), x * _c(x, _alpha(ctx, 0.2))
                                                       + _c(x, float(ctx.attr("beta", 0.5))))),
    "HardSwish": _hardswish,
    "Gelu": _gelu,
    "Clip": _clip,
}
BINARY: dict[str, Formula] = {
    "Add": lambda ctx, a, b: a + b,
    "Sub": lambda ctx, a, b: a - b,
    "Mul": lambda ctx, a, b: a * b,
    "Div": _div,
    "Pow": _pow,
    "PRelu": lambda ctx, x, slope: select(compare("lt", x, _c(x, 0)), x * slope, x),
    "Max": _variadic(max_),
    "Min": _variadic(min_),
    "Sum": _variadic(lambda a, b: a + b),
    "Mean": _mean,
    "Equal": lambda ctx, a, b: compare("eq", a, b),
    "Less": lambda ctx, a, b: compare("lt", a, b),
    "Greater": lambda ctx, a, b: compare("gt", a, b),
    "LessOrEqual": lambda ctx, a, b: compare("le", a, b),
    "GreaterOrEqual": lambda ctx, a, b: compare("ge", a, b),
    "And": lambda ctx, a, b: logical_and(a, b),
    "Where": lambda ctx, c, a, b: select(c, a, b),
}


def _with_strings(numeric: Callable[[LoweringContext], list[Tensor]]) -> Callable[[LoweringContext], list[Tensor]]:
    """Equal: of strings too, compared over their code points (ops/text.py)."""
    def lower(ctx: LoweringContext) -> list[Tensor]:
        return string_equal(ctx) if ctx.input_value(0).dtype is DType.STRING else numeric(ctx)

    return lower


OPS: list[OpDef] = [defop(name, _with_strings(_broadcasting(f)) if name == "Equal" else _broadcasting(f), "elementwise")
                    for name, f in {**UNARY, **BINARY}.items()]
