"""Data movement: views (Reshape, Flatten, Squeeze, Unsqueeze, Identity), Transpose, Concat, Cast.

Views are ``kind="view"``: the driver gives their output the input's storage
and emits no kernel. Their lowering, a row-major re-indexing copy, is used only
where a copy is required (a view that is itself a graph output).
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, cast
from compiler.loopir.printer import format_size
from compiler.loopir.sizes import Size, choose, equals, has_values, normalize, size_add, size_prod, size_sum
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def _unravel(flat: Expr, shape: tuple[int, ...]) -> list[Expr]:
    index: list[Expr] = []
    for k, dim in enumerate(shape):
        inner = 1
        for d in shape[k + 1:]:
            inner *= d
        index.append(Const(0) if dim == 1 else (flat // inner) % dim if k else flat // inner)
    return index


def _ravel(index: Index, shape: tuple[int, ...]) -> Expr:
    flat: Expr = Const(0)
    for i, dim in zip(index, shape):
        flat = flat * dim + i
    return flat


def reshape_copy(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    out = ctx.output_type(0)
    if ctx.node.op_type == "Reshape" and any(has_values(d) for d in out.shape):
        _require_reshape(ctx, x, out.shape)
    if x.shape == out.shape:
        return [ctx.compute(out.shape, lambda i: x[i], dtype=x.dtype, name="copy")]
    return [ctx.compute(out.shape, lambda i: x[_unravel(_ravel(i, out.shape), x.shape)], dtype=x.dtype,
                        name="reshape")]


def _require_reshape(ctx: LoweringContext, x: Tensor, shape: tuple[Size, ...]) -> None:
    """A Reshape to a shape read at run time must keep the element count, with at most one -1 and no other
    negative entry (``sizes.reshaped_dims`` reads the entries)."""
    entries = ctx.size_input(1, "shape")
    for k, s in enumerate(entries):
        if has_values(s):
            ctx.require(-1, "<=", s, f"shape[{k}] must be -1 or more")
    holes = size_sum(choose(equals(s, -1), 1, 0) for s in entries)
    ctx.require(holes, "<=", 1, "at most one entry of the shape may be -1", show=False)
    ctx.require(size_prod(shape), "==", size_prod(x.shape), f"the shape must keep the input's "
                f"{format_size(normalize(size_prod(x.shape)))} elements", show=False)


def transpose(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    perm = [int(p) for p in ctx.attr("perm", list(range(x.rank))[::-1])]
    if sorted(perm) != list(range(x.rank)):
        ctx.invalid(f"perm {perm} is not a permutation of the {x.rank} axes of its input")

    def value(i: Index) -> Expr:
        src: list[Expr] = [Const(0)] * x.rank
        for k, p in enumerate(perm):
            src[p] = i[k]
        return x[src]

    return [ctx.compute(ctx.output_type(0).shape, value, dtype=x.dtype, name="transpose")]


def concat(ctx: LoweringContext) -> list[Tensor]:
    out = ctx.output_type(0)
    axis = ctx.axis(ctx.attr("axis"), len(out.shape))
    result = ctx.temp(out.shape, out.dtype, "concat")
    offset = 0
    for k in range(len(ctx.node.inputs)):
        if not ctx.has_input(k) or 0 in ctx.input(k).shape:
            continue
        x = ctx.input(k)
        offsets = [offset if d == axis else 0 for d in range(len(out.shape))]
        ctx.write_region(result, offsets, x.shape, lambda i, x=x: x[i])
        offset = size_add(offset, x.shape[axis])
    return [Tensor(result)]


def onnx_cast(ctx: LoweringContext, value: Expr, dtype: DType) -> Expr:
    """``value`` converted as ONNX Cast / CastLike do, with the node's ``saturate`` (opset 19+, default 1:
    float8 results clamp instead of overflowing to inf/NaN) and ``round_mode`` (opset 24+, float8e8m0 only)."""
    round_mode = ctx.attr("round_mode", "up")
    if round_mode not in ("up", "down", "nearest"):
        ctx.unsupported(f"round_mode={round_mode!r} (expected up, down or nearest)")
    return cast(value, dtype, saturate=bool(ctx.attr("saturate", 1)), round_mode=round_mode)


def cast_op(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    out = ctx.output_type(0)
    return [ctx.compute(out.shape, lambda i: onnx_cast(ctx, x[i], out.dtype), dtype=out.dtype, name="cast")]


VIEW_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity")

OPS: list[OpDef] = [defop(name, reshape_copy, "view") for name in VIEW_OPS] + [
    defop("Transpose", transpose),
    defop("Concat", concat),
    defop("Cast", cast_op, "elementwise"),
]
