"""Strings in lowerings: comparing and joining code-point rows (Equal of strings, StringConcat), and string
outputs gathered from compile-time tables (``strings_at``: class labels, LabelEncoder values).

A string tensor reaches a lowering as a uint32 tensor with one more, last axis: each string's code points,
zero-padded to that axis's length (``compiler/dtypes.py``), which is a size variable for a graph input's
strings. Two strings are equal when their rows agree over both lengths, a row read as 0 past its end;
``mismatches`` computes that as two max-reductions (one over each row's length), so rows of different
lengths (an input's against a table's) compare without being padded to one width first.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from compiler.dtypes import DType, string_codes
from compiler.loopir.expr import Const, Expr, compare, const, max_, min_, select
from compiler.loopir.sizes import Size, is_one
from compiler.ops.api import Index, LoweringContext, Tensor, size_value
from compiler.ops.registry import OpDef, defop

IndexMap = Callable[[Index], Sequence[Expr]]


def code_at(strings: Tensor, index: Sequence[Expr], c: Expr) -> Expr:
    """Code point ``c`` of the string of ``strings`` at ``index`` (all but the last axis); 0 past its row."""
    length = size_value(strings.shape[-1], DType.I64)
    inside = compare("lt", c, length)
    return select(inside, strings[(*index, min_(c, length - const(1, DType.I64)))], const(0, DType.U32))


def mismatches(ctx: LoweringContext, shape: Sequence[Size], a: Tensor, a_at: IndexMap, b: Tensor, b_at: IndexMap,
               name: str = "string_mismatch") -> Tensor:
    """``[shape]`` uint8: 1 where the string of ``a`` at ``a_at(i)`` differs from ``b``'s at ``b_at(i)``, else 0."""
    one, zero = const(1, DType.U8), const(0, DType.U8)

    def differs(x: Tensor, x_at: IndexMap, y: Tensor, y_at: IndexMap) -> Callable[[Index, Index], Expr]:
        return lambda i, r: select(compare("ne", x[(*x_at(i), r[0])], code_at(y, y_at(i), r[0])), one, zero)

    past_a = ctx.reduce(shape, [a.shape[-1]], differs(a, a_at, b, b_at), "max", name=f"{name}_a", materialize=True)
    return ctx.reduce(shape, [b.shape[-1]], differs(b, b_at, a, a_at), "max",
                      epilogue=lambda acc, i: max_(acc, past_a[i]),
                      name=name, materialize=True)


def strings_at(ctx: LoweringContext, strings: np.ndarray, shape: Sequence[Size], row: Callable[[Index], Expr],
               name: str) -> Tensor:
    """The node's string output 0, ``[shape]``: at each index the string ``strings[row(index)]`` of a compile-time
    table, its code points padded to the output's code-point axis (``frontend/strings.output_chars``)."""
    chars = ctx.output_type(0).shape[-1]
    codes = string_codes(strings)
    if not isinstance(chars, int) or codes.shape[1] > chars:
        ctx.unsupported(f"the output holds {chars} code points per string, its strings need {codes.shape[1]}")
    table = ctx.add_constant(np.pad(codes, ((0, 0), (0, chars - codes.shape[1]))), f"{name}_table")
    return ctx.compute((*shape, chars), lambda i: table[row(i[:-1]), i[-1]], dtype=DType.U32, name=name)


def _broadcast(ctx: LoweringContext, t: Tensor, out_shape: Sequence[Size]) -> IndexMap:
    """The index of ``t``'s string read for an output index, numpy's broadcasting over all but its last axis."""
    dims = t.shape[:-1]
    offset = len(out_shape) - len(dims)
    for dim, wide in zip(dims[::-1], out_shape[::-1]):
        if not is_one(dim):
            ctx.require(dim, "==", wide, "operands must broadcast")
    return lambda i: [Const(0) if is_one(d) else i[offset + k] for k, d in enumerate(dims)]


def string_equal(ctx: LoweringContext) -> list[Tensor]:
    """Equal over two string tensors."""
    a, b = ctx.input(0), ctx.input(1)
    out = ctx.output_type(0)
    differ = mismatches(ctx, out.shape, a, _broadcast(ctx, a, out.shape), b, _broadcast(ctx, b, out.shape),
                        name="string_equal_mismatch")
    return [ctx.compute(out.shape, lambda i: compare("eq", differ[i], const(0, DType.U8)), dtype=DType.BOOL,
                        name="string_equal")]


def string_concat(ctx: LoweringContext) -> list[Tensor]:
    """StringConcat: each string of ``a`` followed by ``b``'s (broadcasting); ``a``'s length is where its
    last non-zero code point ends."""
    a, b = ctx.input(0), ctx.input(1)
    shape = ctx.output_type(0).shape[:-1]
    a_at, b_at = _broadcast(ctx, a, shape), _broadcast(ctx, b, shape)
    lengths = ctx.reduce(shape, [a.shape[-1]], lambda i, r: select(compare("ne", a[(*a_at(i), r[0])],
                                                                             const(0, DType.U32)), r[0] + 1, Const(0)),
                         "max", name="string_length", materialize=True)

    def code(i: Index) -> Expr:
        c, n = i[-1], lengths[i[:-1]]
        return select(compare("lt", c, n), code_at(a, a_at(i[:-1]), c), code_at(b, b_at(i[:-1]), max_(c - n, Const(0))))

    return [ctx.compute((*shape, a.shape[-1] + b.shape[-1]), code, dtype=DType.U32, name="string_concat")]


OPS: list[OpDef] = [defop("StringConcat", string_concat, since=20)]
