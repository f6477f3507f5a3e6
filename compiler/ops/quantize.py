"""Linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
QLinearMatMul and QLinearConv.

``y = saturate(round(x / scale) + zero_point)`` and ``x = (y - zero_point) * scale``,
where rounding is half to even (``round`` is llvm.roundeven) and saturation clamps
to the quantized type's range before converting, so out-of-range values never
reach an undefined float-to-int conversion. Scales and zero points are per tensor,
per axis (1-D along ``axis``) or blocked (x's rank, one entry per ``block_size``
elements along ``axis``): ``quant_param`` reads either at an element of x.

Which types can hold quantized values is ``quantized_range``'s business alone: a
new integer type only needs its range there (float targets such as float8 would
add "clamp to the finite range, then let the conversion round"). The integer
products accumulate in int32 and requantize in float64, as onnx's reference does
(an int32 accumulator times a float scale is float64 in numpy).
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, call, cast, compare, const, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.conv import integer_conv, per_channel
from compiler.ops.linalg import matmul_of
from compiler.ops.registry import OpDef, defop


def quantized_range(ctx: LoweringContext, dtype: DType) -> tuple[int, int]:
    """The values of quantized type ``dtype``; refuses types tilec cannot quantize to."""
    if not dtype.is_int or dtype.bits > 16:
        ctx.unsupported(f"quantized values of type {dtype.value} are not supported "
                        f"(supported: 2- to 16-bit integers, float8, float4)")
    if dtype.is_signed:
        return -(1 << (dtype.bits - 1)), (1 << (dtype.bits - 1)) - 1
    return 0, (1 << dtype.bits) - 1


def quantize(ctx: LoweringContext, scaled: Expr, zero_point: Expr | None, dtype: DType) -> Expr:
    """``saturate(round(scaled) + zero_point)`` as ``dtype`` (``scaled`` is a float).

    float8/float4 targets round and saturate (attribute ``saturate``) in the conversion itself.
    """
    if dtype.is_float:
        wide = cast(scaled, DType.F32) if scaled.dtype is not DType.F64 else scaled
        if zero_point is not None:
            wide = wide + cast(zero_point, wide.dtype)
        return cast(wide, dtype, saturate=bool(ctx.attr("saturate", 1)))
    lo, hi = quantized_range(ctx, dtype)
    rounded = call("round", scaled)
    # float16 cannot hold every 16-bit zero point: add it in float32 (exact for these ranges).
    wide = cast(rounded, DType.F64 if scaled.dtype is DType.F64 else DType.F32)
    if zero_point is not None:
        wide = wide + cast(zero_point, wide.dtype)
    return cast(min_(max_(wide, const(lo, wide.dtype)), const(hi, wide.dtype)), dtype)


def quant_param(ctx: LoweringContext, t: Tensor | None, x_shape: tuple[int, ...], i: Index, axis: int,
                block_size: int = 0) -> Expr | None:
    """A scale or zero point at element ``i`` of x: per tensor, per ``axis`` or blocked along it."""
    if t is None:
        return None
    if t.buffer.numel == 1 and t.rank <= 1:
        return t[[Const(0)] * t.rank]
    if block_size > 0:
        expected = tuple(-(-n // block_size) if d == axis else n for d, n in enumerate(x_shape))
        if t.shape != expected:
            ctx.unsupported(f"blocked quantization parameter of shape {t.shape}, expected {expected}")
        return t[[i[d] // block_size if d == axis else i[d] for d in range(len(x_shape))]]
    if t.rank != 1 or t.shape[0] != x_shape[axis]:
        ctx.unsupported(f"per-axis quantization parameter of shape {t.shape} for axis {axis} of {x_shape}")
    return t[i[axis]]


def _axis(ctx: LoweringContext, rank: int) -> int:
    axis = int(ctx.attr("axis", 1))
    return axis + rank if axis < 0 else axis


def _optional(ctx: LoweringContext, i: int) -> Tensor | None:
    return ctx.input(i) if ctx.has_input(i) else None


def _promote(*dtypes: DType) -> DType:
    """numpy's result type of dividing these (int32 with a float is float64)."""
    if any(not d.is_float for d in dtypes) or DType.F64 in dtypes:
        return DType.F64
    return dtypes[0] if all(d is dtypes[0] for d in dtypes) else DType.F32


def quantize_linear(ctx: LoweringContext) -> list[Tensor]:
    x, scale, zero = ctx.input(0), ctx.input(1), _optional(ctx, 2)
    out = ctx.output_type(0)
    axis, block = _axis(ctx, x.rank), int(ctx.attr("block_size", 0))
    precision = ctx.attr("precision", 0)
    work = DType.from_onnx(precision) if precision else _promote(x.dtype, scale.dtype)

    def value(i: Index) -> Expr:
        s = quant_param(ctx, scale, x.shape, i, axis, block)
        scaled = cast(x[i], work) / cast(s, work)
        return quantize(ctx, scaled, quant_param(ctx, zero, x.shape, i, axis, block), out.dtype)

    return [ctx.compute(out.shape, value, dtype=out.dtype, name="quantize")]


def dequantize_linear(ctx: LoweringContext) -> list[Tensor]:
    x, scale, zero = ctx.input(0), ctx.input(1), _optional(ctx, 2)
    out = ctx.output_type(0)
    if not (x.dtype.is_int or x.dtype.is_narrow_float):
        ctx.unsupported(f"dequantizing {x.dtype.value} values is not supported")
    axis, block = _axis(ctx, x.rank), int(ctx.attr("block_size", 0))
    # float32 holds every 8/16-bit difference exactly; int32 inputs need float64.
    work = DType.F64 if x.dtype.bits > 16 else DType.F32

    def value(i: Index) -> Expr:
        v = cast(x[i], work)
        z = quant_param(ctx, zero, x.shape, i, axis, block)
        if z is not None:
            v = v - cast(z, work)
        return cast(v * cast(quant_param(ctx, scale, x.shape, i, axis, block), work), out.dtype)

    return [ctx.compute(out.shape, value, dtype=out.dtype, name="dequantize")]


def dynamic_quantize_linear(ctx: LoweringContext) -> list[Tensor]:
    """uint8 quantization with the scale and zero point that map [min(x, 0), max(x, 0)] onto [0, 255]."""
    x = ctx.input(0)
    if x.dtype is not DType.F32:
        ctx.unsupported(f"input of type {x.dtype.value} (float32 only)")
    f32 = DType.F32
    zero = const(0.0, f32)
    hi = ctx.reduce((), x.shape, lambda i, r: x[r], "max", lambda acc, i: max_(acc, zero), name="qmax",
                    materialize=True)
    lo = ctx.reduce((), x.shape, lambda i, r: x[r], "min", lambda acc, i: min_(acc, zero), name="qmin",
                    materialize=True)

    def scale_value(i: Index) -> Expr:
        span = hi[()] - lo[()]
        # All zeros: any scale works; onnx's reference takes 1/255.
        return select(compare("eq", span, zero), const(1.0, f32), span) / const(255.0, f32)

    scale = ctx.compute((), scale_value, dtype=f32, name="qscale", materialize=True)
    zero_point = ctx.compute((), lambda i: call("round", min_(max_(-lo[()] / scale[()], zero), const(255.0, f32))),
                             dtype=f32, name="qzero", materialize=True)
    y = ctx.compute(x.shape, lambda i: quantize(ctx, x[i] / scale[()], zero_point[()], DType.U8), dtype=DType.U8,
                    name="dynquant")
    return [y, scale, ctx.compute((), lambda i: cast(zero_point[()], DType.U8), dtype=DType.U8, name="qzero_u8")]


# --- integer matmul and conv --------------------------------------------------------------------


def _shifted(ctx: LoweringContext, t: Tensor, zero: Tensor | None, per_row: bool) -> Tensor:
    """``int32(t) - zero_point`` with MatMulInteger's zero point layouts: scalar, one per row of a
    (``[M]``, or ``[..., M, 1]``) or one per column of b (``[N]``, ``[..., 1, N]``)."""
    def value(i: Index) -> Expr:
        v = cast(t[i], DType.I32)
        if zero is None:
            return v
        if per_row and zero.rank == 1 and zero.buffer.numel > 1:
            z = zero[i[-2]]
        else:
            z = zero.at_broadcast(i)
        return v - cast(z, DType.I32)

    # Pointwise: the driver inlines it into the matmul's loads.
    return ctx.compute(t.shape, value, dtype=DType.I32, name="zero_shifted")


def matmul_integer(ctx: LoweringContext) -> list[Tensor]:
    a = _shifted(ctx, ctx.input(0), _optional(ctx, 2), per_row=True)
    b = _shifted(ctx, ctx.input(1), _optional(ctx, 3), per_row=False)
    return [matmul_of(ctx, a, b, ctx.output_type(0).shape, DType.I32, name="matmulinteger")]


def _requantize(ctx: LoweringContext, acc: Expr, multiplier: Expr, zero_point: Expr | None, dtype: DType) -> Expr:
    """An int32 accumulator times the combined scale (computed in the scales' type), quantized."""
    return quantize(ctx, cast(acc, DType.F64) * cast(multiplier, DType.F64), zero_point, dtype)


def _scalar(ctx: LoweringContext, t: Tensor | None, what: str) -> Expr | None:
    if t is None:
        return None
    if t.buffer.numel != 1:
        ctx.unsupported(f"{what} must be a scalar (per-tensor quantization)")
    return t[[Const(0)] * t.rank]


def qlinear_matmul(ctx: LoweringContext) -> list[Tensor]:
    a_scale, b_scale, y_scale = ctx.input(1), ctx.input(4), ctx.input(6)
    a = _shifted(ctx, ctx.input(0), _optional(ctx, 2), per_row=True)
    b = _shifted(ctx, ctx.input(3), _optional(ctx, 5), per_row=False)
    out = ctx.output_type(0)
    y_zero = _scalar(ctx, _optional(ctx, 7), "y_zero_point")
    y_s = _scalar(ctx, y_scale, "y_scale")

    def epilogue(acc: Expr, i: Index) -> Expr:
        a_s = a_scale[i[-2]] if a_scale.rank == 1 and a_scale.buffer.numel > 1 else a_scale.at_broadcast(i)
        return _requantize(ctx, acc, a_s * b_scale.at_broadcast(i) / y_s, y_zero, out.dtype)

    return [matmul_of(ctx, a, b, out.shape, DType.I32, epilogue, name="qlinearmatmul")]


def qlinear_conv(ctx: LoweringContext) -> list[Tensor]:
    x_scale, w_scale = _scalar(ctx, ctx.input(1), "x_scale"), ctx.input(4)
    y_scale, y_zero = _scalar(ctx, ctx.input(6), "y_scale"), _scalar(ctx, _optional(ctx, 7), "y_zero_point")
    bias = _optional(ctx, 8)
    out = ctx.output_type(0)

    def epilogue(acc: Expr, i: Index) -> Expr:
        m = i[1]
        total = acc + bias[m] if bias is not None else acc
        return _requantize(ctx, total, x_scale * per_channel(w_scale, m) / y_scale, y_zero, out.dtype)

    return [integer_conv(ctx, (0, 3, 2, 5), epilogue)]


OPS: list[OpDef] = [
    defop("QuantizeLinear", quantize_linear, "elementwise", since=10),
    defop("DequantizeLinear", dequantize_linear, "elementwise", since=10),
    defop("DynamicQuantizeLinear", dynamic_quantize_linear, since=11),
    defop("MatMulInteger", matmul_integer, since=10),
    defop("QLinearMatMul", qlinear_matmul, since=10),
    defop("QLinearConv", qlinear_conv, since=10),
]
