"""Conv, ConvTranspose, ConvInteger, QLinearConv (1-D to 3-D) as one sum-reduction; DeformConv.

Every variant is the same reduction (``conv_sum``) over an input that was padded
once into a zero-bordered copy, so the inner loop has no bounds checks, and
over weights in the packed layout ``[C/group, k..., M]`` so output channels are
contiguous: the default schedule can then vectorize over channels (strided
convs, small images) or over output columns (stride 1), whichever fills the
vector registers better. Constant weights are repacked at compile time; weights
given at run time are repacked by a small copy kernel first, so both take the
same fast reduction.

ConvTranspose is the conv of the input spread out by the strides (zeros in
between), padded by ``dilation * (k - 1) - pad``, with the kernel flipped and
its channel axes swapped per group. The integer convs subtract zero points
while padding and packing and accumulate in int32 (QLinearConv's requantizing
epilogue lives in quantize.py). DeformConv gathers its interpolated samples
into a ``[N, C, k..., o...]`` tensor first, then contracts it with the weights.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from compiler.codegen.target import dot_product_forms
from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, call, cast, compare, const, logical_and, max_, min_, select
from compiler.loopir.sizes import Size, same_size
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop

# (output channel m, input channel within the group c, kernel taps) → the weight value in conv terms.
WeightLoad = Callable[[Expr, Expr, Index], Expr]


#: ONNX's auto_pad values ("" is what some exporters write for NOTSET; onnxruntime takes it too).
AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "")


def spatial_pads(ctx: LoweringContext, in_spatial: tuple[int, ...], out_spatial: tuple[int, ...],
                 kernel: tuple[int, ...], strides: tuple[int, ...], dilations: tuple[int, ...]) -> list[int]:
    """Begin pads followed by end pads, resolving auto_pad as ONNX defines it."""
    rank = len(kernel)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        ctx.invalid(f"auto_pad {auto_pad!r} is none of {', '.join(AUTO_PADS[:-1])}")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if not all(isinstance(n, int) for n in (*in_spatial, *out_spatial)):
            ctx.unsupported(f"auto_pad={auto_pad} over symbolic spatial dims (its pads depend on the size); "
                            "bind them with input_shapes= / --input-shape")
        begins, ends = [], []
        for i in range(rank):
            total = max(0, (out_spatial[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - in_spatial[i])
            small = total // 2
            begins.append(small if auto_pad == "SAME_UPPER" else total - small)
            ends.append(total - begins[-1])
        return begins + ends
    if auto_pad == "VALID":
        return [0] * (2 * rank)
    return list(ctx.attr("pads", [0] * (2 * rank)))


def _fill(fill: float | Expr, dtype: DType) -> Expr:
    return fill if isinstance(fill, Expr) else const(fill, dtype)


def pad_input(ctx: LoweringContext, x: Tensor, begins: list[int], ends: list[int], fill: float | Expr,
              spread: tuple[int, ...] | None = None) -> Tensor:
    """A copy of ``x`` with ``fill`` (a number, or a scalar expression: a zero point) around its spatial
    dims (dims 2..).

    ``spread`` puts ``s - 1`` fill values between neighbours along each spatial dim
    (ConvTranspose's strides). Negative pads crop.
    """
    rank = len(begins)
    spread = spread or (1,) * rank
    if not any(begins) and not any(ends) and all(s == 1 for s in spread):
        return x
    if all(s == 1 for s in spread) and min(begins + ends) >= 0:
        return _pad_by_regions(ctx, x, begins, ends, fill)
    spread_len = [(x.shape[2 + d] - 1) * spread[d] + 1 for d in range(rank)]
    shape = (*x.shape[:2], *(spread_len[d] + begins[d] + ends[d] for d in range(rank)))

    def value(i: Index) -> Expr:
        inside: Expr = Const(True, DType.BOOL)
        src = []
        for d in range(rank):
            q = i[2 + d] - begins[d]
            inside = logical_and(inside, logical_and(compare("ge", q, 0), compare("lt", q, spread_len[d])))
            if spread[d] > 1:
                inside = logical_and(inside, compare("eq", q % spread[d], 0))
                q = q // spread[d]
            src.append(_clamp(q, x.shape[2 + d]))
        return select(inside, x[[i[0], i[1], *src]], _fill(fill, x.dtype))

    return ctx.compute(shape, value, dtype=x.dtype, name="padded", materialize=True)


def _pad_by_regions(ctx: LoweringContext, x: Tensor, begins: list[int], ends: list[int], fill: float | Expr) -> Tensor:
    """The padded copy as plain region writes: each border slab filled once, the interior copied.

    Every write is contiguous along the last dim, so all of them vectorize (one select with clamped
    indices per element kept the copy scalar; for a stride-2 pool the copy was most of the time).
    """
    rank = len(begins)
    inner = x.shape[2:]
    shape = (*x.shape[:2], *(inner[d] + begins[d] + ends[d] for d in range(rank)))
    out = ctx.temp(shape, x.dtype, "padded")
    for d in range(rank):
        for start, size in ((0, begins[d]), (begins[d] + inner[d], ends[d])):
            if size:
                # dims before d: the interior only (their borders are other slabs); after d: everything.
                offsets = (0, 0, *begins[:d], start, *(0,) * (rank - d - 1))
                extents = (*x.shape[:2], *inner[:d], size, *shape[3 + d:])
                ctx.write_region(out, offsets, extents, lambda i: _fill(fill, x.dtype))
    ctx.write_region(out, (0, 0, *begins), x.shape, lambda i: x[i])
    return Tensor(out)


def _clamp(e: Expr, n: int) -> Expr:
    return min_(max_(e, Const(0)), Const(n - 1))


@dataclass(frozen=True)
class ConvShape:
    """The geometry of a (forward) conv over an already padded input."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    group: int
    in_per_group: int  # C / group
    out_channels: int  # M

    @property
    def rank(self) -> int:
        return len(self.kernel)


def conv_attrs(ctx: LoweringContext, rank: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """(strides, dilations, group) with ONNX's defaults."""
    group = int(ctx.attr("group", 1))
    if group < 1:
        ctx.invalid(f"group {group} is not a positive number of groups")
    return (tuple(ctx.attr("strides", [1] * rank)), tuple(ctx.attr("dilations", [1] * rank)), group)


def check_operands(ctx: LoweringContext, x: Tensor, w: Tensor) -> None:
    """Input ``[N, C, spatial...]`` and weights of the same rank whose taps match ``kernel_shape`` if given."""
    if x.rank < 3 or w.rank != x.rank:
        ctx.invalid(f"input of shape {list(x.shape)} and weights of shape {list(w.shape)}: a conv needs "
                    "[N, C, spatial...] and weights of the same rank")
    kernel = ctx.attr("kernel_shape")
    if kernel is not None and [int(k) for k in kernel] != list(w.shape[2:]):
        ctx.invalid(f"kernel_shape {list(kernel)} does not match the weights' taps {list(w.shape[2:])}")


def check_groups(ctx: LoweringContext, channels: int, weight_channels: int, out_channels: int, group: int) -> None:
    """A forward conv's weights ``[M, C/group, k...]`` must fit its ``C`` input channels and ``group``."""
    if channels != weight_channels * group or out_channels % group:
        ctx.invalid(f"{channels} input channels and weights for {weight_channels} input and {out_channels} output "
                    f"channels per group do not make {group} group(s) (C = C/group * group, M divisible by group)")


def packed_weights(ctx: LoweringContext, known: np.ndarray | None, shape: ConvShape, load: WeightLoad,
                   dtype: DType) -> Tensor:
    """Conv weights as ``[C/group, k..., M]``.

    ``known`` is the ``[M, C/group, k...]`` array when it is a compile-time constant
    (repacked here); otherwise ``load`` describes each weight and a materialized copy
    repacks them at run time.
    """
    if known is not None:
        return ctx.add_constant(np.moveaxis(known.astype(dtype.numpy, copy=False), 0, -1), "conv_w", dtype)
    packed_shape = (shape.in_per_group, *shape.kernel, shape.out_channels)
    return ctx.compute(packed_shape, lambda i: load(i[-1], i[0], i[1:-1]), dtype=dtype, name="conv_w",
                       materialize=True)


def conv_sum(ctx: LoweringContext, xp: Tensor, packed: Tensor, shape: ConvShape, out_shape: tuple[int, ...],
             epilogue: Callable[[Expr, Index], Expr] | None = None, name: str = "conv",
             integer: bool = False) -> Tensor:
    """``out[n, m, o...] = epilogue(sum over c, k of xp[n, group(m) c, o*s + k*d] * packed[c, k..., m])``.

    16-bit floats accumulate in float32 (``epilogue`` sees the float32 sum) and are
    rounded once at the end to the node's output type, as onnxruntime does, instead of at every
    product (a bfloat16 conv writing float32, see ``graph.passes.precision``, is not rounded at all).
    ``integer``: 8-bit operands, summed in int32 (the epilogue's result is stored as it is).
    """
    m_per_group = shape.out_channels // shape.group
    acc_type = DType.I32 if integer else DType.F32 if xp.dtype in (DType.F16, DType.BF16) else xp.dtype
    out_type = ctx.output_type(0).dtype

    def body(i: Index, r: Index) -> Expr:
        n, m, spatial = i[0], i[1], i[2:]
        c, ks = r[0], r[1:]
        channel = c if shape.group == 1 else (m // m_per_group) * shape.in_per_group + c
        pos = [spatial[d] * shape.strides[d] + ks[d] * shape.dilations[d] for d in range(shape.rank)]
        return cast(xp[[n, channel, *pos]], acc_type) * cast(packed[[c, *ks, m]], acc_type)

    wide = acc_type is not out_type and not integer

    def finish(acc: Expr, i: Index) -> Expr:
        value = epilogue(acc, i) if epilogue is not None else acc
        return cast(value, out_type) if wide else value

    return ctx.reduce(out_shape, [shape.in_per_group, *shape.kernel], body, "sum",
                      finish if wide or epilogue is not None else None, name=name)


def checked_bias(ctx: LoweringContext, k: int, channels: Size) -> Tensor | None:
    """Input ``k``, a bias of one value per output channel, or None where omitted; another shape is invalid."""
    if not ctx.has_input(k):
        return None
    bias = ctx.input(k)
    if bias.rank != 1 or not same_size(bias.shape[0], channels):
        ctx.invalid(f"the bias has shape {list(bias.shape)}; it must be [{channels}], one value per output channel")
    return bias


def add_bias(bias: Tensor | None) -> Callable[[Expr, Index], Expr] | None:
    """The epilogue adding a per-output-channel bias (in the accumulator's type)."""
    if bias is None:
        return None
    return lambda acc, i: acc + cast(bias[i[1]], acc.dtype)


def per_channel(t: Tensor | None, m: Expr) -> Expr | None:
    """A per-output-channel parameter (scalar, ``[1]`` or ``[M]``) at channel ``m``."""
    if t is None:
        return None
    return t[[Const(0)] * t.rank] if t.buffer.numel == 1 else t[m]


# --- Conv ---------------------------------------------------------------------------------------


def conv_operands(ctx: LoweringContext, x: Tensor, w: Tensor, fill: float,
                  known_w: np.ndarray | None, load: WeightLoad, dtype: DType) -> tuple[Tensor, Tensor, ConvShape]:
    """(padded input, packed weights, geometry) of a forward conv whose weights are ``[M, C/group, k...]``."""
    check_operands(ctx, x, w)
    rank = x.rank - 2
    kernel = tuple(w.shape[2:])
    strides, dilations, group = conv_attrs(ctx, rank)
    check_groups(ctx, x.shape[1], w.shape[1], w.shape[0], group)
    pads = spatial_pads(ctx, x.shape[2:], ctx.output_type(0).shape[2:], kernel, strides, dilations)
    shape = ConvShape(kernel, strides, dilations, group, w.shape[1], w.shape[0])
    xp = pad_input(ctx, x, pads[:rank], pads[rank:], fill)
    return xp, packed_weights(ctx, known_w, shape, load, dtype), shape


def conv(ctx: LoweringContext) -> list[Tensor]:
    x, w = ctx.input(0), ctx.input(1)
    bias = checked_bias(ctx, 2, ctx.output_type(0).shape[1])
    xp, packed, shape = conv_operands(ctx, x, w, 0.0, ctx.input_value(1).const,
                                      lambda m, c, ks: w[[m, c, *ks]], x.dtype)
    return [conv_sum(ctx, xp, packed, shape, ctx.output_type(0).shape, add_bias(bias))]


# --- ConvTranspose --------------------------------------------------------------------------------


def _transpose_begin_pads(ctx: LoweringContext, x: Tensor, kernel: tuple[int, ...], strides: tuple[int, ...],
                          dilations: tuple[int, ...], out_spatial: tuple[int, ...]) -> list[int]:
    """ConvTranspose's begin pads (the end pads follow from the output shape).

    Explicit pads win; SAME_* split the total padding that yields the output shape
    (the extra one at the end for SAME_UPPER), as onnx's reference does.
    """
    rank = len(kernel)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if ctx.attr("pads") is not None and auto_pad in ("NOTSET", ""):
        return list(ctx.attr("pads")[:rank])
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return [0] * rank
    output_padding = ctx.attr("output_padding", [0] * rank)
    begins = []
    for d in range(rank):
        total = (strides[d] * (x.shape[2 + d] - 1) + output_padding[d] + (kernel[d] - 1) * dilations[d] + 1
                 - out_spatial[d])
        begins.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
    return begins


def conv_transpose(ctx: LoweringContext) -> list[Tensor]:
    x, w = ctx.input(0), ctx.input(1)
    out = ctx.output_type(0)
    bias = checked_bias(ctx, 2, out.shape[1])
    check_operands(ctx, x, w)
    rank = x.rank - 2
    kernel = tuple(w.shape[2:])
    strides, dilations, group = conv_attrs(ctx, rank)
    if x.shape[1] != w.shape[0] or x.shape[1] % group:
        ctx.invalid(f"{x.shape[1]} input channels, weights for {w.shape[0]} input channels and {group} group(s) "
                    "do not fit (weights [C, M/group, k...], C divisible by group)")
    c_per_group, m_per_group = x.shape[1] // group, w.shape[1]
    begins = _transpose_begin_pads(ctx, x, kernel, strides, dilations, out.shape[2:])
    # The equivalent forward conv: stride 1, pads dilation*(k-1) - pad around the spread input.
    halo = [dilations[d] * (kernel[d] - 1) for d in range(rank)]
    conv_begins = [halo[d] - begins[d] for d in range(rank)]
    conv_ends = [out.shape[2 + d] + halo[d] - conv_begins[d] - (x.shape[2 + d] - 1) * strides[d] - 1
                 for d in range(rank)]
    xp = pad_input(ctx, x, conv_begins, conv_ends, 0.0, spread=strides)
    shape = ConvShape(kernel, (1,) * rank, dilations, group, c_per_group, m_per_group * group)

    def load(m: Expr, c: Expr, ks: Index) -> Expr:
        flipped = [kernel[d] - 1 - ks[d] for d in range(rank)]
        return w[[(m // m_per_group) * c_per_group + c, m % m_per_group, *flipped]]

    known = ctx.input_value(1).const
    if known is not None:
        # [C, M/g, k...] → per group [M/g, C/g, k...] with the taps reversed → [M, C/g, k...].
        grouped = known.reshape(group, c_per_group, m_per_group, *kernel)
        flipped = np.flip(grouped, axis=tuple(range(3, 3 + rank)))
        known = np.swapaxes(flipped, 1, 2).reshape(group * m_per_group, c_per_group, *kernel)
    packed = packed_weights(ctx, known, shape, load, x.dtype)
    return [conv_sum(ctx, xp, packed, shape, out.shape, add_bias(bias), name="convtranspose")]


# --- integer convs --------------------------------------------------------------------------------


def dot_activation_type(ctx: LoweringContext) -> DType:
    """The type integer contractions move their activation operand into: int8 where the target's byte
    dot product multiplies int8 by int8 only (aarch64's ``sdot`` without I8MM's ``usdot``), else uint8
    (x86's ``vpdpbusd``, ``usdot``, and the widened form elsewhere). Weights are int8 either way."""
    forms = dot_product_forms(ctx.target)
    return DType.I8 if "s8s8" in forms and "u8s8" not in forms else DType.U8


def integer_conv(ctx: LoweringContext, inputs: tuple[int, int, int, int],
                 epilogue: Callable[[Expr, Index], Expr] | None = None) -> Tensor:
    """The int32 conv of ``(x - x_zero_point) * (w - w_zero_point)``.

    ``inputs`` are the node's input positions of x, w and their optional zero points (x's a scalar,
    w's a scalar or one per output channel). As for MatMulInteger (``quantize.integer_matmul``), it is
    the conv of a uint8 ``x'`` and an int8 ``w'`` (each moved by 128 where its type is the other one,
    its zero point with it; int8 ``x'`` where the target's dot product takes int8 only: see
    ``dot_activation_type``), the zero points as compensation terms in the epilogue:
    ``sum (x'-zx')(w'-zw') = sum x'w' - zw' windowsum(x') - zx' sum(w') + K zx' zw'``, x' padded with
    zx' (so a pad contributes nothing), window sums only where w's zero point is not 0.
    """
    x_at, w_at, x_zp_at, w_zp_at = inputs
    x, w = ctx.input(x_at), ctx.input(w_at)
    x_zero = ctx.input(x_zp_at) if ctx.has_input(x_zp_at) else None
    w_zero = ctx.input(w_zp_at) if ctx.has_input(w_zp_at) else None
    if x_zero is not None and x_zero.buffer.numel != 1:
        ctx.unsupported("the input's zero point must be a scalar")
    for t in (x, w):
        if t.dtype not in (DType.U8, DType.I8):
            ctx.unsupported(f"integer conv of {t.dtype.value} values (uint8 and int8 only)")
    x_type = dot_activation_type(ctx)
    x_offset = 0 if x.dtype is x_type else (128 if x_type is DType.U8 else -128)
    w_offset = -128 if w.dtype is DType.U8 else 0
    zx = const(x_offset, DType.I32) if x_zero is None else cast(x_zero[[Const(0)] * x_zero.rank], DType.I32) + x_offset

    def zw(m: Expr) -> Expr:
        return const(w_offset, DType.I32) if w_zero is None else cast(per_channel(w_zero, m), DType.I32) + w_offset

    known_zw = np.zeros((), np.int64) if w_zero is None else ctx.input_value(w_zp_at).const
    zw_is_nil = known_zw is not None and not (np.asarray(known_zw).astype(np.int64) + w_offset).any()
    known_zx = np.zeros((), np.int64) if x_zero is None else ctx.input_value(x_zp_at).const
    zx_is_nil = known_zx is not None and not (np.asarray(known_zx).astype(np.int64) + x_offset).any()
    moved_x = x if not x_offset else ctx.compute(
        x.shape, lambda i: cast(cast(x[i], DType.I32) + x_offset, x_type), dtype=x_type, name="rebiased",
        materialize=True)  # a real buffer: the conv's words pack it
    known = ctx.input_value(w_at).const
    known_moved = None if known is None else (known.astype(np.int64) + w_offset).astype(np.int8)

    def load(m: Expr, c: Expr, ks: Index) -> Expr:
        return cast(cast(w[[m, c, *ks]], DType.I32) + w_offset, DType.I8)

    xp, packed, shape = conv_operands(ctx, moved_x, w, cast(zx, x_type), known_moved, load, DType.I8)
    out_shape = ctx.output_type(0).shape
    rank = shape.rank
    m_per_group = shape.out_channels // shape.group
    terms = shape.in_per_group * int(np.prod(shape.kernel))
    window_sums = None
    if not zw_is_nil:
        def window(i: Index, r: Index) -> Expr:
            channel = i[1] * shape.in_per_group + r[0]
            pos = [i[2 + d] * shape.strides[d] + r[1 + d] * shape.dilations[d] for d in range(rank)]
            return cast(xp[[i[0], channel, *pos]], DType.I32)

        window_sums = ctx.reduce((out_shape[0], shape.group, *out_shape[2:]), [shape.in_per_group, *shape.kernel],
                                 window, name="window_sums", materialize=True)
    weight_sums = None
    if not zx_is_nil:
        if known_moved is not None:
            weight_sums = ctx.add_constant(known_moved.astype(np.int32).reshape(shape.out_channels, -1).sum(axis=1)
                                           .astype(np.int32), "weight_sums")
        else:
            weight_sums = ctx.reduce((shape.out_channels,), [shape.in_per_group, *shape.kernel],
                                     lambda i, r: cast(packed[[*r, i[0]]], DType.I32), name="weight_sums",
                                     materialize=True)

    def compensated(acc: Expr, i: Index) -> Expr:
        m = i[1]
        value = acc
        if window_sums is not None:
            value = value - zw(m) * window_sums[[i[0], m // m_per_group, *i[2:]]]
        if weight_sums is not None:
            value = value - zx * weight_sums[m]
            if window_sums is not None:
                value = value + const(terms, DType.I32) * zx * zw(m)
        return value if epilogue is None else epilogue(value, i)

    return conv_sum(ctx, xp, packed, shape, out_shape, compensated, name="convinteger", integer=True)


def conv_integer(ctx: LoweringContext) -> list[Tensor]:
    return [integer_conv(ctx, (0, 1, 2, 3))]


# --- DeformConv -----------------------------------------------------------------------------------


def _sample(x: Tensor, n: Expr, channel: Expr, pos: list[Expr]) -> Expr:
    """x[n, channel] at fractional position ``pos``, interpolated (bi/tri)linearly; outside reads 0."""
    zero, one = const(0.0, x.dtype), const(1.0, x.dtype)
    base = [call("floor", p) for p in pos]
    frac = [p - b for p, b in zip(pos, base)]
    total: Expr | None = None
    for corner in itertools.product((0, 1), repeat=len(pos)):
        weight: Expr = one
        inside: Expr = Const(True, DType.BOOL)
        index = []
        for d, bit in enumerate(corner):
            k = cast(base[d], DType.I64) + bit
            weight = weight * (frac[d] if bit else one - frac[d])
            inside = logical_and(inside, logical_and(compare("ge", k, 0), compare("lt", k, x.shape[2 + d])))
            index.append(_clamp(k, x.shape[2 + d]))
        term = weight * select(inside, x[[n, channel, *index]], zero)
        total = term if total is None else total + term
    return total


def deform_conv(ctx: LoweringContext) -> list[Tensor]:
    """Conv whose taps sample x at learned fractional offsets (times an optional mask).

    The samples ``[N, C, k..., o...]`` are gathered once (they depend on the input
    channel only through its offset group), then contracted with the weights.
    """
    x, w, offset = ctx.input(0), ctx.input(1), ctx.input(2)
    mask = ctx.input(4) if ctx.has_input(4) else None
    out = ctx.output_type(0)
    bias = checked_bias(ctx, 3, out.shape[1])
    check_operands(ctx, x, w)
    rank = x.rank - 2
    kernel = tuple(w.shape[2:])
    strides, dilations, group = conv_attrs(ctx, rank)
    check_groups(ctx, x.shape[1], w.shape[1], w.shape[0], group)
    offset_groups = int(ctx.attr("offset_group", 1))
    if offset_groups < 1 or x.shape[1] % offset_groups:
        ctx.invalid(f"offset_group {offset_groups} does not divide the {x.shape[1]} input channels")
    begins = list(ctx.attr("pads", [0] * (2 * rank)))[:rank]
    channels_per_offset_group = x.shape[1] // offset_groups
    taps = int(np.prod(kernel))
    out_spatial = out.shape[2:]

    def sampled(i: Index) -> Expr:
        n, channel, ks, os = i[0], i[1], i[2:2 + rank], i[2 + rank:]
        tap = ks[0]
        for d in range(1, rank):
            tap = tap * kernel[d] + ks[d]
        slot = (channel // channels_per_offset_group) * taps + tap
        pos = [cast(os[d] * strides[d] + ks[d] * dilations[d] - begins[d], x.dtype)
               + offset[[n, slot * rank + d, *os]] for d in range(rank)]
        value = _sample(x, n, channel, pos)
        return value * mask[[n, slot, *os]] if mask is not None else value

    samples = ctx.compute((*x.shape[:2], *kernel, *out_spatial), sampled, dtype=x.dtype, name="deform_samples",
                          materialize=True)
    c_per_group, m_per_group = w.shape[1], w.shape[0] // group

    def body(i: Index, r: Index) -> Expr:
        m, c, ks = i[1], r[0], r[1:]
        channel = c if group == 1 else (m // m_per_group) * c_per_group + c
        return samples[[i[0], channel, *ks, *i[2:]]] * w[[m, c, *ks]]

    return [ctx.reduce(out.shape, [c_per_group, *kernel], body, "sum", add_bias(bias), name="deformconv")]


OPS: list[OpDef] = [
    defop("Conv", conv),
    defop("ConvTranspose", conv_transpose),
    defop("ConvInteger", conv_integer, since=10),
    defop("DeformConv", deform_conv, since=19),
]
