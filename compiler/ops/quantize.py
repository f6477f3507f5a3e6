"""Linear quantization: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
QLinearMatMul and QLinearConv; and tilec's BlockDequantize, the 2- or 4-bit weights of a weight-only
quantized product (com.microsoft MatMulNBits, a DequantizeLinear of constant codes) decoded where the
product reads them.

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

from dataclasses import dataclass
from typing import Callable

import numpy as np

from compiler.dtypes import DType
from compiler.graph.ir import PHI_DOMAIN as TILEC_DOMAIN
from compiler.loopir.expr import Const, Expr, call, cast, compare, const, max_, min_, select
from compiler.loopir.sizes import Size
from compiler.ops.api import Index, LoweringContext, Tensor, size_value
from compiler.ops.conv import dot_activation_type, integer_conv, per_channel
from compiler.ops.linalg import batch_index
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
    if zero_point is not None and not (isinstance(zero_point, Const) and zero_point.value == 0):
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

    known = ctx.input_value(1).const
    # Dividing by a power of two is multiplying by its reciprocal, exactly (a fused requantization's unit scale).
    reciprocal = None if known is None or not _powers_of_two(known) else ctx.add_constant(
        (1 / np.asarray(known, np.float64)).astype(scale.dtype.numpy), "inverse_scale")

    unit = known is not None and bool(np.all(np.asarray(known) == 1))

    def value(i: Index) -> Expr:
        if unit:
            scaled = cast(x[i], work)
        elif reciprocal is not None:
            scaled = cast(x[i], work) * cast(quant_param(ctx, reciprocal, x.shape, i, axis, block), work)
        else:
            scaled = cast(x[i], work) / cast(quant_param(ctx, scale, x.shape, i, axis, block), work)
        return quantize(ctx, scaled, quant_param(ctx, zero, x.shape, i, axis, block), out.dtype)

    return [ctx.compute(out.shape, value, dtype=out.dtype, name="quantize")]


def _powers_of_two(values: np.ndarray) -> bool:
    values = np.asarray(values, np.float64)
    return bool(values.size) and bool(np.all(np.isfinite(values) & (values > 0) & (np.frexp(values)[0] == 0.5)))


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


@dataclass(frozen=True)
class _ByteOperand:
    """A MatMulInteger operand brought to the dot product's type (``dot_activation_type`` for a, int8
    for b) by adding ``offset`` (0, or +-128: the other signedness), and its zero point moved by the
    same offset."""

    tensor: Tensor
    offset: int
    zero: Tensor | None
    known_zero: np.ndarray | None  # the moved zero point where it is a compile-time constant

    def zero_at(self, index: list[Expr]) -> Expr:
        """The moved zero point (int32) of the element at ``index`` of the operand."""
        if self.zero is None:
            return const(self.offset, DType.I32)
        return cast(self.zero.at_broadcast(index), DType.I32) + self.offset

    @property
    def zero_is_nil(self) -> bool:
        return self.known_zero is not None and not self.known_zero.any()


def _byte_operand(ctx: LoweringContext, at: int, zero_at: int, dtype: DType, is_a: bool) -> _ByteOperand:
    t, zero = ctx.input(at), _optional(ctx, zero_at)
    if t.dtype not in (DType.U8, DType.I8):
        ctx.unsupported(f"integer matmul of {t.dtype.value} values (uint8 and int8 only)")
    if zero is not None and zero.dtype is not t.dtype:
        ctx.invalid(f"zero point of type {zero.dtype.value} for {t.dtype.value} values")
    offset = 0 if t.dtype is dtype else (128 if dtype is DType.U8 else -128)
    if offset:
        # x + 128 as uint8 / x - 128 as int8: the same products, moved into the dot product's types.
        source = t
        t = ctx.compute(t.shape, lambda i: cast(cast(source[i], DType.I32) + offset, dtype), dtype=dtype,
                        name="rebiased", materialize=is_a)  # a real buffer: its rows are read as words
    known = np.zeros((), np.int64) if zero is None else ctx.input_value(zero_at).const
    return _ByteOperand(t, offset, zero, None if known is None else np.asarray(known).astype(np.int64) + offset)


def integer_matmul(ctx: LoweringContext, a_at: int, za_at: int, b_at: int, zb_at: int, out_shape: tuple[Size, ...],
                   epilogue: Callable[[Expr, Index], Expr] | None, name: str) -> Tensor:
    """``(a - za) @ (b - zb)`` in int32 as ``a' @ b'`` of a uint8 (or, see ``dot_activation_type``, int8)
    ``a'`` and an int8 ``b'`` (the forms the contraction schedule runs as 4-way dot products), the zero
    points as compensation terms in the epilogue:
    ``sum (a'-za')(b'-zb') = sum a'b' - zb' rowsum(a') - za' colsum(b') + K za' zb'`` (exact: int32 wraps
    alike on both sides). A constant b's column sums are computed here; ``epilogue`` comes after."""
    a = _byte_operand(ctx, a_at, za_at, dot_activation_type(ctx), True)
    b = _byte_operand(ctx, b_at, zb_at, DType.I8, False)
    at, bt = a.tensor, b.tensor
    k_extent = at.shape[-1]
    rank = len(out_shape)

    def operand_index(t: Tensor, i: Index, k: Expr, is_a: bool) -> list[Expr]:
        batch = i[: rank - (at.rank > 1) - (bt.rank > 1)]
        if t.rank == 1:
            return [k]
        row_or_col = i[len(batch)] if is_a else i[-1]
        outer = batch_index(batch, t.shape[:-2])
        return [*outer, row_or_col, k] if is_a else [*outer, k, row_or_col]

    def a_zero(i: Index) -> Expr:
        # One per row ([M]) is indexed by the row; [..., M, 1] and scalars broadcast against a's element.
        if a.zero is not None and a.zero.rank == 1 and a.zero.buffer.numel > 1:
            return cast(a.zero[i[rank - 1 - (bt.rank > 1)]], DType.I32) + a.offset
        return a.zero_at(operand_index(at, i, Const(0), True))

    def b_zero(i: Index) -> Expr:
        return b.zero_at(operand_index(bt, i, Const(0), False))

    row_sums = None if b.zero_is_nil else ctx.reduce(
        at.shape[:-1], [k_extent], lambda i, r: cast(at[[*i, r[0]]], DType.I32), name="row_sums", materialize=True)
    col_sums = None
    if not a.zero_is_nil:
        known = ctx.input_value(b_at).const
        if known is not None:
            moved = np.asarray(known).astype(np.int64) + b.offset
            col_sums = ctx.add_constant(moved.sum(axis=-2 if moved.ndim > 1 else 0).astype(np.int32), "col_sums")
        else:
            shape = (*bt.shape[:-2], bt.shape[-1]) if bt.rank > 1 else ()
            col_sums = ctx.reduce(shape, [k_extent], lambda i, r: cast(
                bt[[*i[:-1], r[0], i[-1]]] if bt.rank > 1 else bt[[r[0]]], DType.I32), name="col_sums",
                materialize=True)
    k_value = size_value(k_extent, DType.I32)

    def compensated(acc: Expr, i: Index) -> Expr:
        value = acc
        if row_sums is not None:
            index = operand_index(at, i, Const(0), True)[:-1]
            value = value - b_zero(i) * row_sums[index]
        if col_sums is not None:
            index = operand_index(bt, i, Const(0), False)
            index = [*index[:-2], index[-1]] if bt.rank > 1 else [Const(0)] * col_sums.rank
            value = value - a_zero(i) * col_sums[index]
            if row_sums is not None:
                value = value + k_value * a_zero(i) * b_zero(i)
        return value if epilogue is None else epilogue(value, i)

    def body(i: Index, r: Index) -> Expr:
        return (cast(at[operand_index(at, i, r[0], True)], DType.I32)
                * cast(bt[operand_index(bt, i, r[0], False)], DType.I32))

    inner = bt.shape[0 if bt.rank == 1 else -2]
    if isinstance(inner, int) and isinstance(k_extent, int) and inner != k_extent:
        ctx.unsupported(f"inner dimensions differ: {at.shape} @ {bt.shape}")
    ctx.require(k_extent, "==", inner, "the inner dimensions of a MatMul must agree")
    return ctx.reduce(out_shape, [k_extent], body, "sum", compensated, name=name)


def matmul_integer(ctx: LoweringContext) -> list[Tensor]:
    return [integer_matmul(ctx, 0, 2, 1, 3, ctx.output_type(0).shape, None, "matmulinteger")]


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
    out = ctx.output_type(0)
    y_zero = _scalar(ctx, _optional(ctx, 7), "y_zero_point")
    y_s = _scalar(ctx, y_scale, "y_scale")

    def epilogue(acc: Expr, i: Index) -> Expr:
        a_s = a_scale[i[-2]] if a_scale.rank == 1 and a_scale.buffer.numel > 1 else a_scale.at_broadcast(i)
        return _requantize(ctx, acc, a_s * b_scale.at_broadcast(i) / y_s, y_zero, out.dtype)

    return [integer_matmul(ctx, 0, 2, 3, 5, out.shape, epilogue, "qlinearmatmul")]


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


def block_dequantize(ctx: LoweringContext) -> list[Tensor]:
    """``codes * scale + offset`` in the type ``to``: DequantizeLinear with the zero point folded into
    ``offset = -zero_point * scale`` at compile time (one multiply-add per weight), the parameters per tensor,
    per ``axis`` or in blocks of ``block_size`` along it (``quant_param``). Made for 2- and 4-bit weights
    (MatMulNBits, DequantizeLinear of constant codes): fusion puts it in the group of the node that reads it,
    which then streams the codes instead of float weights."""
    codes, scale, offset = ctx.input(0), ctx.input(1), ctx.input(2)
    axis, block = _axis(ctx, codes.rank), int(ctx.attr("block_size", 0))
    if offset.shape != scale.shape:
        ctx.invalid(f"offsets of shape {offset.shape} for scales of shape {scale.shape}")
    out = ctx.output_type(0)

    def value(i: Index) -> Expr:
        s, o = (quant_param(ctx, t, codes.shape, i, axis, block) for t in (scale, offset))
        return cast(cast(codes[i], DType.F32) * cast(s, DType.F32) + cast(o, DType.F32), out.dtype)

    return [ctx.compute(out.shape, value, dtype=out.dtype, name="weights")]


OPS: list[OpDef] = [
    defop("BlockDequantize", block_dequantize, "elementwise", domain=TILEC_DOMAIN),
    defop("QuantizeLinear", quantize_linear, "elementwise", since=10),
    defop("DequantizeLinear", dequantize_linear, "elementwise", since=10),
    defop("DynamicQuantizeLinear", dynamic_quantize_linear, since=11),
    defop("MatMulInteger", matmul_integer, since=10),
    defop("QLinearMatMul", qlinear_matmul, since=10),
    defop("QLinearConv", qlinear_conv, since=10),
]
