"""Matrix products: MatMul (numpy semantics, batch broadcasting, 1-D operands) and Gemm.

Both are one sum-reduction over K; the default schedule recognises the
contraction and register-tiles it, and the driver fuses bias and activation
consumers into the store as an epilogue. Half-precision products accumulate
in float32 and round once to the output type (as numpy and Conv do): summing
in half precision would round after every addition.
"""

from __future__ import annotations

from typing import Callable

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, cast, const
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.reduce import accumulator_type
from compiler.ops.registry import OpDef, defop


def batch_index(batch: Index, shape: tuple[int, ...]) -> list[Expr]:
    """Indices into an operand's batch dims, right-aligned with the output's, broadcasting size-1 dims."""
    offset = len(batch) - len(shape)
    return [Const(0) if dim == 1 else batch[offset + k] for k, dim in enumerate(shape)]


def matmul_of(ctx: LoweringContext, a: Tensor, b: Tensor, out_shape: tuple[int, ...], acc_dtype: DType,
              epilogue: Callable[[Expr, Index], Expr] | None = None, name: str = "matmul") -> Tensor:
    """``a @ b`` with numpy's MatMul semantics, operands cast to ``acc_dtype`` and summed in it."""
    k_extent = a.shape[-1]
    inner = b.shape[0 if b.rank == 1 else -2]
    if isinstance(inner, int) and isinstance(k_extent, int) and inner != k_extent:
        ctx.unsupported(f"inner dimensions differ: {a.shape} @ {b.shape}")
    ctx.require(k_extent, "==", inner, "the inner dimensions of a MatMul must agree")
    rank = len(out_shape)

    def body(i: Index, r: Index) -> Expr:
        k = r[0]
        batch = i[: rank - (a.rank > 1) - (b.rank > 1)]
        a_idx = [k] if a.rank == 1 else [*batch_index(batch, a.shape[:-2]), i[len(batch)], k]
        b_idx = [k] if b.rank == 1 else [*batch_index(batch, b.shape[:-2]), k, i[-1]]
        return cast(a[a_idx], acc_dtype) * cast(b[b_idx], acc_dtype)

    return ctx.reduce(out_shape, [k_extent], body, "sum", epilogue, name=name)


def matmul(ctx: LoweringContext) -> list[Tensor]:
    out = ctx.output_type(0)
    acc = accumulator_type(out.dtype)
    return [matmul_of(ctx, ctx.input(0), ctx.input(1), out.shape, acc,
                      None if acc is out.dtype else lambda value, i: cast(value, out.dtype))]


def gemm(ctx: LoweringContext) -> list[Tensor]:
    a, b = ctx.input(0), ctx.input(1)
    out = ctx.output_type(0)
    trans_a, trans_b = bool(ctx.attr("transA", 0)), bool(ctx.attr("transB", 0))
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    k_extent = a.shape[0] if trans_a else a.shape[1]
    c = ctx.input(2) if ctx.has_input(2) else None

    work = accumulator_type(out.dtype)

    def body(i: Index, r: Index) -> Expr:
        k = r[0]
        x = a[k, i[0]] if trans_a else a[i[0], k]
        y = b[i[1], k] if trans_b else b[k, i[1]]
        return cast(x, work) * cast(y, work)

    def epilogue(acc: Expr, i: Index) -> Expr:
        value = acc if alpha == 1.0 else acc * const(alpha, acc.dtype)
        if c is not None and beta != 0.0:
            bias = cast(c.at_broadcast(i), work)
            value = value + (bias if beta == 1.0 else bias * const(beta, acc.dtype))
        return cast(value, out.dtype)

    return [ctx.reduce(out.shape, [k_extent], body, "sum", epilogue, name="gemm")]


OPS: list[OpDef] = [defop("MatMul", matmul), defop("Gemm", gemm)]
