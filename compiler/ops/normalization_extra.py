"""Statistics-based normalizations: Layer/RMS/Instance/Group/Lp/MeanVariance normalization.

Each is: reductions for the statistics over the normalized axes (kept as size-1
dims), then a pointwise formula reading them. Statistics are computed in float32
(``stash_type``) for half-precision inputs.
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, call, cast, compare, const, select
from compiler.ops.api import Index, LoweringContext, Tensor, size_value
from compiler.ops.reduce import accumulator_type, reduced_space, source_index
from compiler.ops.registry import OpDef, defop


def _stats(ctx: LoweringContext, x: Tensor, axes: list[int], acc: DType, eps: float, centered: bool = True):
    """(mean, 1/sqrt(var + eps)) over ``axes``, in keepdims shape; mean is None when not centered (RMS)."""
    stat_shape, extents, count = reduced_space(x.shape, axes)

    def value(i: Index, r: Index) -> Expr:
        return cast(x[source_index(x.rank, axes, True, i, r)], acc)

    mean = None
    if centered:
        mean = ctx.reduce(stat_shape, extents, value, "sum", lambda a, i: a / size_value(count, acc), name="mean",
                          materialize=True)

    def square(i: Index, r: Index) -> Expr:
        d = value(i, r) - mean[i] if mean is not None else value(i, r)
        return d * d

    inv = ctx.reduce(stat_shape, extents, square, "sum",
                     lambda a, i: const(1.0, acc) / call("sqrt", a / size_value(count, acc) + const(eps, acc)),
                     name="inv_std", materialize=True)
    return mean, inv


def _stat_index(i: Index, axes: list[int]) -> list[Expr]:
    return [Const(0) if d in axes else v for d, v in enumerate(i)]


def _acc_type(ctx: LoweringContext, x: Tensor) -> DType:
    return DType.F64 if x.dtype is DType.F64 else DType.F32 if ctx.attr("stash_type", 1) == 1 else x.dtype


def _normalize(ctx: LoweringContext, x: Tensor, axes: list[int], centered: bool, scale, bias) -> list[Tensor]:
    acc = _acc_type(ctx, x)
    mean, inv = _stats(ctx, x, axes, acc, float(ctx.attr("epsilon", 1e-5)), centered)

    def y(i: Index) -> Expr:
        s = _stat_index(i, axes)
        centered_x = cast(x[i], acc) - mean[s] if mean is not None else cast(x[i], acc)
        v = cast(centered_x * inv[s], x.dtype)
        v = v * scale(i) if scale is not None else v
        return v + bias(i) if bias is not None else v

    return [ctx.compute(x.shape, y, dtype=x.dtype, name="normalized"), mean, inv]


def layer_norm(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    axis = ctx.axis(ctx.attr("axis", -1), x.rank)
    scale, bias = ctx.input(1), ctx.input(2) if ctx.has_input(2) else None
    y, mean, inv = _normalize(ctx, x, list(range(axis, x.rank)), True, scale.at_broadcast,
                              bias.at_broadcast if bias is not None else None)
    return [y, mean, inv][:len(ctx.node.outputs)]


def rms_norm(ctx: LoweringContext) -> list[Tensor]:
    x, scale = ctx.input(0), ctx.input(1)
    axis = ctx.axis(ctx.attr("axis", -1), x.rank)
    return _normalize(ctx, x, list(range(axis, x.rank)), False, scale.at_broadcast, None)[:1]


def instance_norm(ctx: LoweringContext) -> list[Tensor]:
    """Statistics in float32 for half-precision inputs (it has no stash_type): as onnxruntime computes them,
    and a float16 count or sum overflows past 65504 elements per instance."""
    x, scale, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    return _normalize(ctx, x, list(range(2, x.rank)), True, lambda i: scale[(i[1],)], lambda i: bias[(i[1],)])[:1]


def group_norm(ctx: LoweringContext) -> list[Tensor]:
    x, scale, bias = ctx.input(0), ctx.input(1), ctx.input(2)
    groups, channels = int(ctx.attr("num_groups")), x.shape[1]
    per = channels // groups
    acc = _acc_type(ctx, x)
    eps = float(ctx.attr("epsilon", 1e-5))
    spatial = list(x.shape[2:])
    extents = [per, *spatial]
    count = per
    for s in spatial:
        count *= s

    def value(i: Index, r: Index) -> Expr:
        return cast(x[[i[0], i[1] * per + r[0], *r[1:]]], acc)

    mean = ctx.reduce([x.shape[0], groups], extents, value, "sum", lambda a, i: a / size_value(count, acc),
                      name="group_mean", materialize=True)

    def square(i: Index, r: Index) -> Expr:
        d = value(i, r) - mean[i]
        return d * d

    inv = ctx.reduce([x.shape[0], groups], extents, square, "sum",
                     lambda a, i: const(1.0, acc) / call("sqrt", a / size_value(count, acc) + const(eps, acc)),
                     name="group_inv_std", materialize=True)
    by_group = scale.shape[0] != channels  # opset 18: one scale/bias per group

    def y(i: Index) -> Expr:
        g = i[1] // per
        v = cast((cast(x[i], acc) - mean[(i[0], g)]) * inv[(i[0], g)], x.dtype)
        c = g if by_group else i[1]
        return v * scale[(c,)] + bias[(c,)]

    return [ctx.compute(x.shape, y, dtype=x.dtype, name="group_norm")]


def lp_norm(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    axis, p = ctx.axis(ctx.attr("axis", -1), x.rank), int(ctx.attr("p", 2))
    if p not in (1, 2):
        ctx.unsupported(f"p={p} (only 1 and 2 are defined)")
    stat_shape = [1 if d == axis else s for d, s in enumerate(x.shape)]

    def element(i: Index, r: Index) -> Expr:
        v = x[source_index(x.rank, [axis], True, i, r)]
        return call("abs", v) if p == 1 else v * v

    norm = ctx.reduce(stat_shape, [x.shape[axis]], element, "sum",
                      (lambda a, i: a) if p == 1 else (lambda a, i: call("sqrt", a)), name="lp", materialize=True)

    def y(i: Index) -> Expr:
        n = norm[_stat_index(i, [axis])]
        return select(compare("eq", n, const(0.0, x.dtype)), const(0.0, x.dtype), x[i] / n)  # 0/0 is 0

    return [ctx.compute(x.shape, y, dtype=x.dtype, name="lp_norm")]


def mean_variance_norm(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    axes = sorted(ctx.axes(ctx.attr("axes", [0, 2, 3]), x.rank))
    stat_shape, extents, count = reduced_space(x.shape, axes)
    work = accumulator_type(x.dtype)

    def value(i: Index, r: Index) -> Expr:
        return cast(x[source_index(x.rank, axes, True, i, r)], work)

    mean = ctx.reduce(stat_shape, extents, value, "sum", lambda a, i: a / size_value(count, work), name="mvn_mean",
                      materialize=True)
    sq = ctx.reduce(stat_shape, extents, lambda i, r: value(i, r) * value(i, r), "sum",
                    lambda a, i: a / size_value(count, work), name="mvn_sq", materialize=True)

    def y(i: Index) -> Expr:
        s = _stat_index(i, axes)
        std = call("sqrt", sq[s] - mean[s] * mean[s])
        return cast((cast(x[i], work) - mean[s]) / (std + const(1e-9, work)), x.dtype)

    return [ctx.compute(x.shape, y, dtype=x.dtype, name="mvn")]


OPS: list[OpDef] = [
    defop("LayerNormalization", layer_norm),
    defop("RMSNormalization", rms_norm),
    defop("InstanceNormalization", instance_norm),
    defop("GroupNormalization", group_norm),
    defop("LpNormalization", lp_norm),
    defop("MeanVarianceNormalization", mean_variance_norm),
]
