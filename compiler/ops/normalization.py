"""Normalizations: BatchNormalization (inference) and LRN.

A BatchNormalization that did not fold into a Conv becomes ``x * a[c] + b[c]``
with ``a`` and ``b`` precomputed at compile time (or, when its statistics are
run-time inputs, the textbook formula per element), an elementwise op that
fuses like any other.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.dtypes import constant_storage, constant_values
from compiler.loopir.expr import Const, Expr, binary, call, compare, const, logical_and, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def batch_norm(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    if ctx.attr("training_mode", 0):
        ctx.unsupported("training_mode=1 (batch statistics) is not an inference computation")
    eps = float(ctx.attr("epsilon", 1e-5))
    channel = 1 if x.rank > 1 else 0
    params = [ctx.input_value(i).const for i in range(1, 5)]
    if any(p is None for p in params):
        # Statistics given at run time: the same formula, evaluated per element.
        scale, bias, mean, var = (ctx.input(i) for i in range(1, 5))

        def y(i: Index) -> Expr:
            c = (i[channel],)
            return (x[i] - mean[c]) * (scale[c] / call("sqrt", var[c] + const(eps, x.dtype))) + bias[c]

        return [ctx.compute(x.shape, y, dtype=x.dtype, name="bn")]
    scale, bias, mean, var = (constant_values(p, ctx.input_value(k).dtype).astype(np.float64)
                              for k, p in enumerate(params, 1))
    a = scale / np.sqrt(var + eps)
    b = bias - mean * a
    a_t = ctx.add_constant(constant_storage(a, x.dtype), "bn_scale", x.dtype)
    b_t = ctx.add_constant(constant_storage(b, x.dtype), "bn_shift", x.dtype)
    return [ctx.compute(x.shape, lambda i: x[i] * a_t[i[channel]] + b_t[i[channel]], dtype=x.dtype, name="bn")]


def lrn(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    size = int(ctx.attr("size"))
    alpha, beta, bias = (float(ctx.attr(k, d)) for k, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    before = (size - 1) // 2
    channels = x.shape[1]

    def body(i: Index, r: Index) -> Expr:
        c = i[1] + r[0] - before
        inside = logical_and(compare("ge", c, 0), compare("lt", c, channels))
        v = x[[i[0], min_(max_(c, Const(0)), Const(channels - 1)), *i[2:]]]
        return select(inside, v * v, const(0.0, x.dtype))

    def epilogue(acc: Expr, i: Index) -> Expr:
        base = const(bias, x.dtype) + const(alpha / size, x.dtype) * acc
        return x[i] / binary("pow", base, const(beta, x.dtype))

    return [ctx.reduce(x.shape, [size], body, "sum", epilogue, name="lrn")]


OPS: list[OpDef] = [defop("BatchNormalization", batch_norm, "elementwise"), defop("LRN", lrn)]
