"""RoiAlign (opsets 10, 16): bilinear samples on a fixed grid per output bin, averaged or max-pooled.

Each output bin ``(roi, c, ph, pw)`` is a reduction over its ``sampling_ratio^2``
sample points; a point's position comes from the run-time ROI box, and its value
is the bilinear blend of its four neighbours (clamped at the far edges), or 0
for a point more than one pixel outside the map. ``mode="max"`` takes, as the
reference does, the max over the four weighted neighbours and then over the
points. ``coordinate_transformation_mode`` (opset 16) shifts by half a pixel
("half_pixel") or, as before opset 16 ("output_half_pixel"), not, and then forces
boxes to at least 1x1. The adaptive grid (``sampling_ratio=0``, a per-ROI sample
count) has no static extent and is refused.
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, binary, call, cast, compare, const, logical_and, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.indexing import require_values_in
from compiler.ops.registry import OpDef, defop


def roi_align(ctx: LoweringContext) -> list[Tensor]:
    x, rois, batch_index = ctx.input(0), ctx.input(1), ctx.input(2)
    out = ctx.output_type(0)
    require_values_in(ctx, 2, [(0, x.shape[0])], noun="a batch index")
    grid = int(ctx.attr("sampling_ratio", 0))
    if grid <= 0:
        ctx.unsupported("sampling_ratio=0 (a sample grid sized by each run-time ROI)")
    mode = str(ctx.attr("mode", "avg")).lower()
    if mode not in ("avg", "max"):
        ctx.unsupported(f"mode={mode!r}")
    half_pixel = ctx.opset >= 16 and ctx.attr("coordinate_transformation_mode", "half_pixel") == "half_pixel"
    scale = float(ctx.attr("spatial_scale", 1.0))
    height, width = x.shape[2], x.shape[3]
    pooled = out.shape[2:]
    dt = x.dtype
    c = lambda v: const(v, dt)  # noqa: E731

    def axis_sample(n: Expr, start_col: int, bin_index: Expr, step: Expr, size: int,
                    bins: int) -> tuple[Expr, Expr, Expr, Expr, Expr]:
        """Along one axis: (inside the map, low, high neighbour, weight of low, weight of high)."""
        start = rois[n, Const(start_col)] * c(scale) - c(0.5 if half_pixel else 0.0)
        end = rois[n, Const(start_col + 2)] * c(scale) - c(0.5 if half_pixel else 0.0)
        extent = end - start if half_pixel else max_(end - start, c(1.0))
        bin_size = extent / c(bins)
        pos = start + cast(bin_index, dt) * bin_size + (cast(step, dt) + c(0.5)) * bin_size / c(grid)
        inside = logical_and(compare("ge", pos, c(-1.0)), compare("le", pos, c(size)))
        pos = max_(pos, c(0.0))
        low = min_(cast(call("floor", pos), DType.I64), Const(size - 1))
        high = min_(low + 1, Const(size - 1))
        frac = select(compare("ge", low, size - 1), c(0.0), pos - cast(low, dt))
        return inside, low, high, c(1.0) - frac, frac

    def sample(i: Index, r: Index) -> Expr:
        n, ch = i[0], i[1]
        batch = min_(max_(cast(batch_index[(n,)], DType.I64), 0), x.shape[0] - 1)
        in_y, y0, y1, wy0, wy1 = axis_sample(n, 1, i[2], r[0], height, pooled[0])
        in_x, x0, x1, wx0, wx1 = axis_sample(n, 0, i[3], r[1], width, pooled[1])
        terms = [wy * wx * x[[batch, ch, y, xx]]
                 for y, wy in ((y0, wy0), (y1, wy1)) for xx, wx in ((x0, wx0), (x1, wx1))]
        if mode == "avg":
            value = terms[0] + terms[1] + terms[2] + terms[3]
        else:
            value = binary("max", binary("max", terms[0], terms[1]), binary("max", terms[2], terms[3]))
        return select(logical_and(in_y, in_x), value, c(0.0))

    count = c(grid * grid)
    if mode == "avg":
        return [ctx.reduce(out.shape, [grid, grid], sample, "sum", lambda acc, i: acc / count, name="roi_align")]
    return [ctx.reduce(out.shape, [grid, grid], sample, "max", name="roi_align")]


OPS: list[OpDef] = [defop("RoiAlign", roi_align, since=10)]
