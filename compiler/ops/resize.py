"""Resize (opsets 10-19) and Upsample (7, 9): separable resampling through per-axis sample tables.

Every resized axis gets small tables, computed by their own tiny kernels: for
each output coordinate the source indices (clamped into the input: edge
padding) and, for ``linear``/``cubic``, their weights; with
``tf_crop_and_resize`` also whether the coordinate falls outside the input
(the output there is ``extrapolation_value``). ``nearest`` is then one gather
through the index tables; ``linear``/``cubic`` resample one axis after the
other (shrinking axes first), each pass a weighted sum over that axis's taps,
so the work grows with the sum, not the product, of the axes' tap counts.

Source coordinates are computed in float64, as in the spec's reference, so
``nearest`` rounds exactly as it does. Because the tables are computed at run
time, ``scales``, ``sizes`` and ``roi`` may be run-time inputs (except a
run-time scale with both ``antialias`` and ``tf_crop_and_resize``: the
antialias tap count needs a bound on the scale, see ``_taps``).
Axes a compile-time scale of 1 leaves unchanged are not resampled at all.

Interpolation accumulates in float32 (float64 for float64 and integer
inputs); integer results are rounded half to even and saturated, as
the reference does. Upsample and Resize-10 are ``asymmetric``; their
``nearest`` rounds down along growing axes and up along shrinking ones (what
onnxruntime does; the spec leaves it open).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, binary, call, cast, compare, const, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop

F64 = DType.F64
_COORDINATES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                "tf_half_pixel_for_nn", "tf_crop_and_resize")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@dataclass(frozen=True)
class _Axis:
    dim: int
    size: int  # input length
    out: int  # output length
    scale: Expr  # float64; a Const when known at compile time
    roi: tuple[Expr, Expr]  # float64 crop start/end, fractions of the input (tf_crop_and_resize)


@dataclass(frozen=True)
class _Spec:
    mode: str
    coordinates: str
    nearest: str
    cubic_a: float
    exclude_outside: bool
    antialias: bool
    extrapolation: float
    axes: list[_Axis]


def _f64(value: float) -> Expr:
    return const(float(value), F64)


def _vector(ctx: LoweringContext, i: int) -> list[Expr] | None:
    """Input ``i`` (1-D) as float64 expressions: constants when known, loads otherwise; None if omitted or empty."""
    value = ctx.input_value(i) if ctx.has_input(i) else None
    if value is None or value.type.numel == 0:
        return None
    if value.const is not None:
        return [_f64(v) for v in np.asarray(value.const, dtype=np.float64).reshape(-1)]
    t = ctx.input(i)
    return [cast(t[(k,)], F64) for k in range(t.shape[0])]


def _known(e: Expr) -> float | None:
    return float(e.value) if isinstance(e, Const) else None


def _scales(ctx: LoweringContext, x: Tensor, dims: list[int], scales: list[Expr] | None,
            sizes: list[Expr] | None) -> list[Expr]:
    """One float64 scale per axis in ``dims``, from ``scales`` or from ``sizes`` and keep_aspect_ratio_policy."""
    if (scales is None) == (sizes is None):
        ctx.unsupported("exactly one of 'scales' and 'sizes' must be given")
    given = scales if scales is not None else sizes
    if len(given) != len(dims):
        ctx.unsupported(f"{len(given)} scales/sizes for {len(dims)} axes")
    if scales is not None:
        return scales
    ratios = [s / _f64(x.shape[d]) for s, d in zip(sizes, dims)]
    policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
    if policy == "stretch":
        return ratios
    if policy not in ("not_larger", "not_smaller"):
        ctx.unsupported(f"keep_aspect_ratio_policy={policy!r}")
    pick = min_ if policy == "not_larger" else max_
    common = ratios[0]
    for r in ratios[1:]:
        common = pick(common, r)
    return [common] * len(dims)


def _spec(ctx: LoweringContext, x: Tensor) -> _Spec:
    legacy = ctx.node.op_type == "Upsample" or ctx.opset < 11
    dims = list(range(x.rank))
    roi = None
    if legacy:
        if ctx.node.op_type == "Upsample" and ctx.opset < 9:
            scales = [_f64(s) for s in ctx.attr("scales")]
        else:
            scales = _vector(ctx, 1)
        # What onnxruntime does for these (the spec does not say): asymmetric, and "simple" rounding.
        scale_list, coordinates, nearest = _scales(ctx, x, dims, scales, None), "asymmetric", "simple"
    else:
        if ctx.attr("axes") is not None:
            dims = [ctx.axis(a, x.rank, "axes") for a in ctx.attr("axes")]
            if len(set(dims)) != len(dims):
                ctx.unsupported(f"repeated axes {ctx.attr('axes')}")
        coordinates = ctx.attr("coordinate_transformation_mode", "half_pixel")
        roi = _vector(ctx, 1) if coordinates == "tf_crop_and_resize" else None  # ignored otherwise
        scale_list = _scales(ctx, x, dims, _vector(ctx, 2), _vector(ctx, 3))
        nearest = ctx.attr("nearest_mode", "round_prefer_floor")
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic") or (legacy and mode == "cubic"):
        ctx.unsupported(f"mode={mode!r}")
    if coordinates not in _COORDINATES:
        ctx.unsupported(f"coordinate_transformation_mode={coordinates!r}")
    if nearest not in _NEAREST and not legacy:
        ctx.unsupported(f"nearest_mode={nearest!r}")
    if coordinates == "tf_crop_and_resize" and roi is None:
        ctx.unsupported("coordinate_transformation_mode='tf_crop_and_resize' needs the 'roi' input")
    if roi is not None and len(roi) != 2 * len(dims):
        ctx.unsupported(f"roi has {len(roi)} values for {len(dims)} axes")
    antialias = bool(ctx.attr("antialias", 0)) and mode != "nearest"
    out_shape = ctx.output_type(0).shape
    axes = []
    for k, (d, scale) in enumerate(zip(dims, scale_list)):
        if antialias and coordinates == "tf_crop_and_resize" and _known(scale) is None:
            # The roi changes the output length, so it no longer bounds the scale (see _taps).
            given = [i for i in (2, 3) if ctx.has_input(i) and ctx.input_value(i).type.numel]
            ctx.const_input(given[0], "scales" if given[0] == 2 else "sizes")
        crop = (roi[k], roi[len(dims) + k]) if roi is not None else (_f64(0.0), _f64(1.0))
        ax = _Axis(d, x.shape[d], out_shape[d], scale, crop)
        if not _is_identity(ax, coordinates):
            axes.append(ax)
    for d in range(x.rank):
        if d not in dims and out_shape[d] != x.shape[d]:
            ctx.unsupported(f"output dim {d} is {out_shape[d]}, but the axis is not resized")
    return _Spec(mode, coordinates, nearest, float(ctx.attr("cubic_coeff_a", -0.75)),
                 bool(ctx.attr("exclude_outside", 0)), antialias, float(ctx.attr("extrapolation_value", 0.0)), axes)


def _is_identity(ax: _Axis, coordinates: str) -> bool:
    """An axis a compile-time scale of 1 maps onto itself (the reference skips those too)."""
    scale = _known(ax.scale)
    if ax.out != ax.size or scale is None or not math.isclose(scale, 1.0):
        return False
    if coordinates != "tf_crop_and_resize":
        return True
    start, end = (_known(e) for e in ax.roi)
    return start is not None and end is not None and math.isclose(start, 0.0) and math.isclose(end, 1.0)


def _source(spec: _Spec, ax: _Axis, i: Expr) -> Expr:
    """The input coordinate (float64) output index ``i`` samples, per coordinate_transformation_mode."""
    y, n, s = cast(i, F64), float(ax.size), ax.scale
    width = s * _f64(n)  # the unrounded output length, as the spec's formulas use it
    single = compare("eq", width, _f64(1.0))
    mode = spec.coordinates
    if mode == "half_pixel":
        return (y + 0.5) / s - 0.5
    if mode == "half_pixel_symmetric":
        offset = (n / 2) * (1.0 - _f64(ax.out) / width)
        return offset + ((y + 0.5) / s - 0.5)
    if mode == "pytorch_half_pixel":
        return select(single, _f64(-0.5), (y + 0.5) / s - 0.5)
    if mode == "align_corners":
        return select(single, _f64(0.0), y * (n - 1) / (width - 1.0))
    if mode == "asymmetric":
        return y / s
    if mode == "tf_half_pixel_for_nn":
        return (y + 0.5) / s
    start, end = ax.roi
    span = (end - start) * (n - 1)
    return select(single, span / 2.0, y * span / (width - 1.0)) + start * (n - 1)


def _clamped_index(pos: Expr, n: int) -> Expr:
    """A float64 position as an index into ``[0, n)`` (clamped first, so the conversion is always defined)."""
    return cast(min_(max_(pos, _f64(0.0)), _f64(n - 1)), DType.I64)


def _outside_table(ctx: LoweringContext, spec: _Spec, ax: _Axis) -> Tensor | None:
    """For tf_crop_and_resize: whether each output coordinate lies outside the input (extrapolated)."""
    if spec.coordinates != "tf_crop_and_resize":
        return None

    def outside(i: Index) -> Expr:
        x = _source(spec, ax, i[0])
        return binary("or", compare("lt", x, _f64(0.0)), compare("gt", x, _f64(ax.size - 1)))

    return ctx.compute((ax.out,), outside, dtype=DType.BOOL, name="resize_outside", materialize=True)


def _nearest_table(ctx: LoweringContext, spec: _Spec, ax: _Axis) -> Tensor:
    rounding = {
        "round_prefer_floor": lambda x: call("ceil", x - 0.5),
        "round_prefer_ceil": lambda x: call("floor", x + 0.5),
        "floor": lambda x: call("floor", x),
        "ceil": lambda x: call("ceil", x),
        # Up along a growing axis, down along a shrinking one.
        "simple": lambda x: select(compare("lt", ax.scale, _f64(1.0)), call("ceil", x), call("floor", x)),
    }[spec.nearest]
    return ctx.compute((ax.out,), lambda i: _clamped_index(rounding(_source(spec, ax, i[0])), ax.size),
                       dtype=DType.I64, name="resize_index", materialize=True)


def linear_kernel(t: Expr) -> Expr:
    """The tent filter at distance ``t >= 0`` (GridSample shares it)."""
    return max_(1.0 - t, const(0.0, t.dtype))


def cubic_kernel(a: float) -> Callable[[Expr], Expr]:
    """Keys' cubic convolution filter with coefficient ``a``, at distance ``t >= 0``."""
    def kernel(t: Expr) -> Expr:
        near = ((a + 2) * t - (a + 3)) * t * t + 1.0
        far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
        return select(compare("le", t, const(1.0, t.dtype)), near,
                      select(compare("lt", t, const(2.0, t.dtype)), far, const(0.0, t.dtype)))

    return kernel


def _taps(spec: _Spec, ax: _Axis) -> tuple[int, Expr]:
    """(taps per output coordinate, factor on the tap distances): antialias widens the kernel by 1/scale.

    With a run-time scale the tap count comes from the smallest scale the output length allows
    (``floor`` or round-half-up of ``size * scale`` is ``out``); taps beyond the actual kernel's
    reach then weigh 0.
    """
    support = 1 if spec.mode == "linear" else 2
    if not spec.antialias:
        return 2 * support, _f64(1.0)
    known = _known(ax.scale)
    lowest = known if known is not None else max(ax.out - 0.5, 0.5) / ax.size
    return 2 - 2 * (math.floor(-support / min(lowest, 1.0)) + 1), min_(ax.scale, _f64(1.0))


def _weight_tables(ctx: LoweringContext, spec: _Spec, ax: _Axis, acc: DType) -> tuple[Tensor, Tensor, int]:
    """(source index and weight tables of shape (out, taps), taps) for linear/cubic along ``ax``.

    Taps sit at integer positions around the source coordinate x, the first at
    ``ceil(x) - taps/2`` (an integer x counts as the right end of its cell, as
    in the reference); each weighs kernel(distance * stretch).
    """
    taps, stretch = _taps(spec, ax)
    kernel = linear_kernel if spec.mode == "linear" else cubic_kernel(spec.cubic_a)
    first = 1 - taps // 2

    def position(i: Index) -> tuple[Expr, Expr]:
        """(tap position in the input, tap minus source coordinate) for output i[0], tap i[1]."""
        x = _source(spec, ax, i[0])
        pos = call("ceil", x) - 1.0 + cast(i[1] + first, F64)
        return pos, pos - x

    def raw(i: Index) -> Expr:
        pos, dist = position(i)
        w = kernel(call("abs", dist * stretch))
        if spec.exclude_outside:
            inside = binary("and", compare("ge", pos, _f64(0.0)), compare("le", pos, _f64(ax.size - 1)))
            w = select(inside, w, _f64(0.0))
        return w

    index = ctx.compute((ax.out, taps), lambda i: _clamped_index(position(i)[0], ax.size), dtype=DType.I64,
                        name="resize_index", materialize=True)
    if spec.antialias or spec.exclude_outside:
        total = ctx.reduce((ax.out,), (taps,), lambda i, r: raw((i[0], r[0])), "sum", name="resize_weight_sum",
                           materialize=True)

        def weight(i: Index) -> Expr:
            t = total[(i[0],)]
            return cast(raw(i) / select(compare("eq", t, _f64(0.0)), _f64(1.0), t), acc)
    else:
        def weight(i: Index) -> Expr:
            return cast(raw(i), acc)

    return index, ctx.compute((ax.out, taps), weight, dtype=acc, name="resize_weight", materialize=True), taps


def _store(value: Expr, dtype: DType) -> Expr:
    """An interpolated value as the output type: integers round half to even and saturate."""
    if not dtype.is_int:
        return cast(value, dtype)
    info = np.iinfo(dtype.numpy)
    lo, hi = const(float(info.min), value.dtype), const(float(info.max), value.dtype)
    return cast(min_(max_(call("round", value), lo), hi), dtype)


def _fill(value: float, dtype: DType) -> Expr:
    if dtype.is_int:
        info = np.iinfo(dtype.numpy)
        return const(int(np.clip(np.round(value), info.min, info.max)), dtype)
    return const(value, dtype)


def _nearest(ctx: LoweringContext, spec: _Spec, x: Tensor, out_shape: tuple[int, ...]) -> Tensor:
    tables = {ax.dim: (_nearest_table(ctx, spec, ax), _outside_table(ctx, spec, ax)) for ax in spec.axes}

    def read(i: Index) -> Expr:
        src, outside = list(i), None
        for d, (index, out_of_input) in tables.items():
            src[d] = index[(i[d],)]
            if out_of_input is not None:
                flag = out_of_input[(i[d],)]
                outside = flag if outside is None else binary("or", outside, flag)
        value = x[src]
        return value if outside is None else select(outside, _fill(spec.extrapolation, x.dtype), value)

    return ctx.compute(out_shape, read, dtype=x.dtype, name="resize")


def _interpolate(ctx: LoweringContext, spec: _Spec, x: Tensor, out_shape: tuple[int, ...]) -> Tensor:
    if x.dtype is DType.BOOL:
        ctx.unsupported(f"mode={spec.mode!r} on a bool tensor")
    # Integers round at the end, so ties must come out as exactly as the float64 reference's.
    acc = F64 if x.dtype is F64 or x.dtype.is_int else DType.F32
    current, shape = x, list(x.shape)
    # Shrinking axes first keeps the intermediate results small.
    order = sorted(spec.axes, key=lambda a: a.out / a.size)
    for step, ax in enumerate(order):
        index, weight, taps = _weight_tables(ctx, spec, ax, acc)
        outside = _outside_table(ctx, spec, ax)
        shape[ax.dim] = ax.out
        last = step == len(order) - 1
        dtype = x.dtype if last else acc

        def body(i: Index, r: Index, src: Tensor = current, d: int = ax.dim, index: Tensor = index,
                 weight: Tensor = weight) -> Expr:
            at = list(i)
            at[d] = index[(i[d], r[0])]
            return cast(src[at], acc) * weight[(i[d], r[0])]

        def finish(total: Expr, i: Index, d: int = ax.dim, outside: Tensor | None = outside,
                   dtype: DType = dtype) -> Expr:
            value = total if outside is None else select(outside[(i[d],)], const(spec.extrapolation, acc), total)
            return _store(value, dtype)

        current = ctx.reduce(tuple(shape), (taps,), body, "sum", finish, name="resize")
    return current


def resize(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    out_shape = ctx.output_type(0).shape
    if len(out_shape) != x.rank:
        ctx.unsupported(f"output rank {len(out_shape)} differs from the input's {x.rank}")
    spec = _spec(ctx, x)
    if not spec.axes:
        return [ctx.compute(out_shape, lambda i: x[i], dtype=x.dtype, name="resize")]
    if spec.mode == "nearest":
        return [_nearest(ctx, spec, x, out_shape)]
    return [_interpolate(ctx, spec, x, out_shape)]


OPS: list[OpDef] = [defop("Resize", resize, since=10), defop("Upsample", resize, since=7)]
