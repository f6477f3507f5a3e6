"""GridSample (opsets 16, 20, 22) and AffineGrid (20): sampling an image at given coordinates.

GridSample reads ``X`` of shape ``(N, C, D1..Dr)`` at the normalized
coordinates ``grid[n, h1..hr, :]`` (in ``[-1, 1]``, last spatial dim first).
The coordinates are shared by all channels, so for each spatial dim a small
kernel first turns them into tables of shape ``(N, H1..Hr, taps)``: the input
index of each tap (already folded in by ``padding_mode``) and its weight
(0 for a tap outside the input under ``zeros`` padding). The sampling is then
a gather (``nearest``) or a sum over the taps of all dims (2 per dim for
``linear``, 4 for ``cubic``, Keys' filter with a = -0.75), as PyTorch and the
spec's reference do. Coordinates and weights are float32 (float64 for float64
data). Opset 16 names the modes ``bilinear``/``bicubic`` and is 2-D only.

AffineGrid maps the base grid of the output's spatial size (``[-1, 1]``
spanned corner to corner with align_corners, pixel centers otherwise) through
each batch's affine matrix ``theta``.
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Expr, binary, call, cast, compare, const, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop
from compiler.ops.resize import cubic_kernel, linear_kernel

_MODES = {"bilinear": "linear", "bicubic": "cubic", "linear": "linear", "cubic": "cubic", "nearest": "nearest"}
_TAPS = {"nearest": 1, "linear": 2, "cubic": 4}


def _reflect(v: Expr, lo: float, hi: float) -> Expr:
    """``v`` mirrored at the borders until it lies in ``[lo, hi]`` (PyTorch's reflect_coordinates)."""
    c = lambda value: const(value, v.dtype)  # noqa: E731 - a local constant spelling
    span = hi - lo
    if span <= 0:
        return c(lo)
    below, above = compare("lt", v, c(lo)), compare("gt", v, c(hi))
    overshoot = select(below, c(lo) - v, select(above, v - c(hi), c(0.0)))
    flips = call("trunc", overshoot / span)
    rest = overshoot - flips * span
    even = compare("eq", flips - 2.0 * call("floor", flips / 2.0), c(0.0))
    from_lo, from_hi = c(lo) + rest, c(hi) - rest
    return select(below, select(even, from_lo, from_hi), select(above, select(even, from_hi, from_lo), v))


def _clamp(v: Expr, lo: float, hi: float) -> Expr:
    return min_(max_(v, const(lo, v.dtype)), const(hi, v.dtype))


def _axis_tables(ctx: LoweringContext, x: Tensor, grid: Tensor, d: int, mode: str, padding: str, align: bool,
                 acc: DType) -> tuple[Tensor, Tensor]:
    """(input index, weight) of each tap along spatial dim ``d``, shape ``(N, H1..Hr, taps)``."""
    size = x.shape[2 + d]
    component = x.rank - 3 - d  # the grid lists x (the last dim) first
    lo, hi = (0.0, size - 1.0) if align else (-0.5, size - 0.5)
    taps = _TAPS[mode]
    shape = (*grid.shape[:-1], taps)

    def coordinate(i: Index) -> Expr:
        g = cast(grid[[*i[:-1], component]], acc)
        v = (g + 1.0) / 2.0 * (size - 1) if align else ((g + 1.0) * size - 1.0) / 2.0
        if mode == "nearest":
            v = call("round", v)  # half to even, as PyTorch
        if padding == "border":
            outside = binary("or", compare("lt", v, const(lo, acc)), compare("gt", v, const(hi, acc)))
            v = select(outside, _clamp(v, 0.0, size - 1.0), v)
        elif padding == "reflection":
            v = _reflect(v, lo, hi)
        return v

    def tap(i: Index) -> tuple[Expr, Expr]:
        """(tap position, source coordinate) for table index ``i`` (its last entry is the tap)."""
        v = coordinate(i)
        if mode == "nearest":
            return call("trunc", v), v
        return call("floor", v) + cast(i[-1] - (0 if mode == "linear" else 1), acc), v

    def index(i: Index) -> Expr:
        pos = tap(i)[0]
        if padding == "reflection":
            pos = call("trunc", _reflect(pos, lo, hi))
        return cast(_clamp(pos, 0.0, size - 1.0), DType.I64)

    kernel = linear_kernel if mode == "linear" else cubic_kernel(-0.75)

    def weight(i: Index) -> Expr:
        pos, v = tap(i)
        w = const(1.0, acc) if mode == "nearest" else kernel(call("abs", pos - v))
        if padding == "zeros":
            inside = binary("and", compare("ge", pos, const(0.0, acc)), compare("le", pos, const(size - 1.0, acc)))
            w = select(inside, w, const(0.0, acc))
        return w

    return (ctx.compute(shape, index, dtype=DType.I64, name="grid_index", materialize=True),
            ctx.compute(shape, weight, dtype=acc, name="grid_weight", materialize=True))


def grid_sample(ctx: LoweringContext) -> list[Tensor]:
    x, grid = ctx.input(0), ctx.input(1)
    rank = x.rank - 2
    name = ctx.attr("mode", "bilinear" if ctx.opset < 20 else "linear")
    if name not in (("bilinear", "bicubic", "nearest") if ctx.opset < 20 else ("linear", "cubic", "nearest")):
        ctx.unsupported(f"mode={name!r}")
    mode = _MODES[name]
    padding = ctx.attr("padding_mode", "zeros")
    align = bool(ctx.attr("align_corners", 0))
    if padding not in ("zeros", "border", "reflection"):
        ctx.unsupported(f"padding_mode={padding!r}")
    if rank < 1 or grid.rank != x.rank or grid.shape[-1] != rank or grid.shape[0] != x.shape[0]:
        ctx.unsupported(f"grid of shape {grid.shape} does not fit input of shape {x.shape}")
    if ctx.opset < 20 and rank != 2:
        ctx.unsupported("opset 16 samples 4-D inputs only")
    if mode != "nearest" and not x.dtype.is_float:
        ctx.unsupported(f"mode={mode!r} on {x.dtype.value} data")
    acc = DType.F64 if DType.F64 in (x.dtype, grid.dtype) else DType.F32
    tables = [_axis_tables(ctx, x, grid, d, mode, padding, align, acc) for d in range(rank)]
    out = ctx.output_type(0).shape

    def source(i: Index, taps: Index) -> tuple[Expr, Expr]:
        """(input value, product of the tap weights) for output ``i`` and one tap per dim."""
        at = [*i[2:]]
        weight = None
        src = [i[0], i[1]]
        for (index, w), k in zip(tables, taps):
            src.append(index[[i[0], *at, k]])
            weight = w[[i[0], *at, k]] if weight is None else weight * w[[i[0], *at, k]]
        return x[src], weight

    if mode == "nearest":
        def pick(i: Index) -> Expr:
            value, weight = source(i, (0,) * rank)
            return select(compare("eq", weight, const(0.0, acc)), const(0, x.dtype), value)

        return [ctx.compute(out, pick, dtype=x.dtype, name="grid_sample")]

    def term(i: Index, r: Index) -> Expr:
        value, weight = source(i, r)
        return cast(value, acc) * weight

    return [ctx.reduce(out, [_TAPS[mode]] * rank, term, "sum", lambda total, i: cast(total, x.dtype),
                       name="grid_sample")]


def affine_grid(ctx: LoweringContext) -> list[Tensor]:
    theta = ctx.input(0)
    out = ctx.output_type(0).shape  # (N, D1..Dr, r)
    spatial = out[1:-1]
    rank = len(spatial)
    if theta.shape[1:] != (rank, rank + 1):
        ctx.unsupported(f"theta of shape {theta.shape} for a {rank}-D grid")
    align = bool(ctx.attr("align_corners", 0))

    def base(i: Expr, size: int) -> Expr:
        """The normalized coordinate of index ``i`` along a dim of ``size``, as the reference's arange."""
        k = cast(i, DType.F64)
        if align:
            return const(-1.0, DType.F64) if size == 1 else -1.0 + k * (2.0 / (size - 1))
        step = 2.0 / size
        return (-1.0 + step / 2) + k * step

    def point(i: Index) -> Expr:
        # The homogeneous base point is (x, y[, z], 1): the last spatial dim first.
        total = cast(theta[(i[0], i[-1], rank)], DType.F64)
        for c in range(rank):
            d = rank - 1 - c
            total = total + cast(theta[(i[0], i[-1], c)], DType.F64) * base(i[1 + d], spatial[d])
        return cast(total, theta.dtype)

    return [ctx.compute(out, point, dtype=theta.dtype, name="affine_grid")]


OPS: list[OpDef] = [defop("GridSample", grid_sample, since=16), defop("AffineGrid", affine_grid, since=20)]
