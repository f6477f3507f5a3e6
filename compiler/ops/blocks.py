"""CenterCropPad and Col2Im (opset 18): moving windows of an image around by index.

CenterCropPad centers the input in the output along each of ``axes``:
cropping the middle of a longer axis, zero-padding around a shorter one (an
odd difference leaves the extra element at the end). The target lengths are
the output's shape, so the ``shape`` input may be known at run time only.

Col2Im is the inverse of im2col: input ``(N, C * prod(block), L)`` holds one
column per sliding block position; each output pixel sums, over the kernel
offsets, the column entries whose block covers it (a reduction over the kernel
with an in-grid test, not a scatter). The image shape is the output's; a
run-time ``block_shape`` makes the reduction visit every offset of the longest
kernel that fits, each tested against the actual block.
"""

from __future__ import annotations

import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, binary, cast, compare, const, logical_and, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def center_crop_pad(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    out = ctx.output_type(0).shape
    axes = ctx.attr("axes")
    axes = list(range(x.rank)) if axes is None else ctx.axes(axes, x.rank)
    for d in range(x.rank):
        if d not in axes and out[d] != x.shape[d]:
            ctx.unsupported(f"output dim {d} is {out[d]}, but the axis is not cropped or padded")
    # Input index = output index + start: the crop's first kept element, or minus the leading padding.
    start = [(n - m) // 2 if n >= m else -((m - n) // 2) for n, m in zip(x.shape, out)]

    def read(i: Index) -> Expr:
        src, inside = [], const(True, DType.BOOL)
        for d in range(x.rank):
            j = i[d] + start[d]
            if out[d] > x.shape[d]:
                inside = logical_and(inside, logical_and(compare("ge", j, 0), compare("lt", j, x.shape[d])))
                j = min_(max_(j, Const(0)), Const(x.shape[d] - 1))
            src.append(j)
        return select(inside, x[src], const(0, x.dtype))

    return [ctx.compute(out, read, dtype=x.dtype, name="center_crop_pad")]


def _block_shape(ctx: LoweringContext, rank: int, reach: list[int]) -> tuple[list[Expr], list[int]]:
    """(block length per dim, as an int64 expression, and the static range of kernel offsets to visit).

    A run-time block_shape is read from its input; its offsets are then visited up to the longest
    kernel that fits the padded image (``reach``), each tested against the actual length.
    """
    value = ctx.input_value(2)
    if value is not None and value.const is not None:
        block = [int(b) for b in np.asarray(value.const).reshape(-1)]
        return [Const(b) for b in block], block
    shape = ctx.input(2)
    if shape.shape != (rank,):
        ctx.unsupported(f"block_shape of shape {shape.shape} for a {rank}-D image")
    return [cast(shape[(d,)], DType.I64) for d in range(rank)], reach


def col2im(ctx: LoweringContext) -> list[Tensor]:
    cols = ctx.input(0)
    out = ctx.output_type(0).shape
    image = out[2:]
    rank = len(image)
    dilations = [int(v) for v in ctx.attr("dilations", [1] * rank)]
    strides = [int(v) for v in ctx.attr("strides", [1] * rank)]
    pads = [int(v) for v in ctx.attr("pads", [0] * (2 * rank))]
    padded = [image[d] + pads[d] + pads[rank + d] for d in range(rank)]
    kernel = cols.shape[1] // max(out[1], 1)
    if cols.rank != 3 or cols.shape[1] != out[1] * kernel:
        ctx.unsupported(f"columns of shape {cols.shape} for {out[1]} channels")
    reach = [min(kernel, (padded[d] - 1) // dilations[d] + 1) for d in range(rank)]
    block, extents = _block_shape(ctx, rank, reach)
    # Sliding positions per dim: (padded - dilation * (block - 1) - 1) // stride + 1.
    grid = [(padded[d] - 1 - (block[d] - 1) * dilations[d]) // strides[d] + 1 for d in range(rank)]

    def term(i: Index, k: Index) -> Expr:
        covered, position, offset = const(True, DType.BOOL), Const(0), Const(0)
        for d in range(rank):
            # The block position whose kernel offset k[d] lands on pixel i[2 + d], if it is on the grid.
            q = i[2 + d] + pads[d] - k[d] * dilations[d]
            on_grid = logical_and(compare("ge", q, 0), compare("lt", q, grid[d] * strides[d]))
            if strides[d] > 1:
                on_grid = logical_and(on_grid, compare("eq", binary("rem", max_(q, Const(0)), Const(strides[d])), 0))
            if not isinstance(block[d], Const):
                on_grid = logical_and(on_grid, compare("lt", k[d], block[d]))
            covered = logical_and(covered, on_grid)
            b = max_(q, Const(0)) // strides[d]
            position = position * grid[d] + b
            offset = offset * block[d] + k[d]
        # Clamped so that entries left out by ``covered`` still read inside the columns.
        position = min_(max_(position, Const(0)), Const(cols.shape[2] - 1))
        offset = min_(max_(offset, Const(0)), Const(kernel - 1))
        value = cols[(i[0], i[1] * kernel + offset, position)]
        return select(covered, value, const(0, cols.dtype))

    return [ctx.reduce(out, extents, term, "sum", name="col2im")]


OPS: list[OpDef] = [defop("CenterCropPad", center_crop_pad, since=18), defop("Col2Im", col2im, since=18)]
