"""Narrow float encodings (float8, float4, float8e8m0) ↔ float registers, as LLVM IR.

Contract: ``encode(b, v, fmt, saturate, round_mode)`` turns a float32 value
into its code in ``fmt`` (an i32, sign bit at bit ``fmt.magnitude_bits``; other
sources reach float32 first, wider ones rounded to odd so that the value rounds once);
``decode(b, code, fmt)`` turns a code back into
the float32 value it stands for (every such value is exact in float32). Both
emit straight-line integer bit manipulation on scalars or vectors alike, so a
vectorized loop stays vectorized; no libm, no lookup tables.

The results are bit-exact with the Cast spec's rules as the constant folder computes them
(``compiler/frontend/narrow_cast.py``): round to nearest even, the overflow and NaN encodings of
the tables in the Cast specification, no negative zero in the FNUZ formats, and for E2M1 (which has
no NaN) a zero whose sign is the NaN's flipped; float8e8m0 follows
``onnx.numpy_helper.to_float8e8m0``'s rounding modes.
"""

from __future__ import annotations

import llvmlite.ir as ir

from compiler.codegen.llvm.types import vectorized
from compiler.dtypes import FloatFormat

F32 = ir.FloatType()
_QUIET_NAN_F32 = 0x7FC00000
_INF_F32 = 0x7F800000


def _lanes(v: ir.Value) -> int | None:
    return v.type.count if isinstance(v.type, ir.VectorType) else None


def _k(t: ir.Type, value: int) -> ir.Constant:
    """An integer constant of ``t`` (a scalar or vector integer type), splatted across lanes."""
    if isinstance(t, ir.VectorType):
        return ir.Constant(t, [ir.Constant(t.element, value)] * t.count)
    return ir.Constant(t, value)


def encode(b: ir.IRBuilder, v: ir.Value, fmt: FloatFormat, saturate: bool, round_mode: str = "up") -> ir.Value:
    """The code of float32 ``v`` in ``fmt``; see the module docstring."""
    lanes = _lanes(v)
    if fmt.specials == "e8m0":
        return _encode_e8m0(b, v, lanes, saturate, round_mode)
    it = vectorized(ir.IntType(32), lanes)
    k = lambda x: _k(it, x)  # noqa: E731
    src_man, src_bias = 23, 127
    m = fmt.mantissa_bits

    bits = b.bitcast(v, it)
    sign = b.lshr(bits, k(31))
    sign_bit = b.shl(sign, k(fmt.magnitude_bits))
    absolute = b.and_(bits, k(0x7FFFFFFF))
    exponent = b.lshr(absolute, k(src_man))
    is_nan = b.icmp_unsigned(">", absolute, k(_INF_F32))

    # Target exponent field of the value's leading bit (a source subnormal has exponent 1, no implicit bit).
    src_zero_exp = b.icmp_unsigned("==", exponent, k(0))
    target_exp = b.sub(b.select(src_zero_exp, k(1), exponent), k(src_bias - fmt.bias))
    normal = b.icmp_signed(">", target_exp, k(0))
    # Normal results: round the whole magnitude (a carry moves into the exponent), then rebias.
    # Subnormal results: round the mantissa with its implicit bit, shifted further by the missing
    # exponent; past src_man + 2 bits everything rounds to zero, so the shift is clamped there.
    mantissa = b.or_(b.and_(absolute, k((1 << src_man) - 1)), b.select(src_zero_exp, k(0), k(1 << src_man)))
    sub_shift = b.sub(k(src_man - m + 1), target_exp)
    sub_shift = b.select(b.icmp_signed(">", sub_shift, k(src_man + 2)), k(src_man + 2), sub_shift)
    x = b.select(normal, absolute, mantissa)
    shift = b.select(normal, k(src_man - m), sub_shift)
    rounded = _round_shift_right(b, x, shift, k)
    magnitude = b.select(normal, b.sub(rounded, k((src_bias - fmt.bias) << m)), rounded)

    overflow = b.icmp_unsigned(">", magnitude, k(fmt.max_magnitude))
    all_ones = (1 << fmt.magnitude_bits) - 1
    fnuz_nan = k(1 << fmt.magnitude_bits)
    if saturate or fmt.saturation == "always":
        over = b.or_(sign_bit, k(fmt.max_magnitude))
    elif fmt.specials == "ieee":
        over = b.or_(sign_bit, k(fmt.max_magnitude + 1))  # infinity
    elif fmt.specials == "fn":
        over = b.or_(sign_bit, k(all_ones))
    else:
        over = fnuz_nan
    code = b.select(overflow, over, b.or_(sign_bit, magnitude))
    if fmt.specials == "fnuz":
        code = b.select(b.icmp_unsigned("==", magnitude, k(0)), k(0), code)  # no negative zero

    if fmt.specials == "ieee":
        nan = b.or_(sign_bit, k(fmt.max_magnitude + 1 + (1 << (m - 1))))  # the quiet NaN
    elif fmt.specials == "fn":
        nan = b.or_(sign_bit, k(all_ones))
    elif fmt.specials == "fnuz":
        nan = fnuz_nan
    else:
        nan = b.shl(b.xor(sign, k(1)), k(fmt.magnitude_bits))
    return b.select(is_nan, nan, code)


def _round_shift_right(b: ir.IRBuilder, x: ir.Value, shift: ir.Value, k) -> ir.Value:
    """``x >> shift`` rounded to nearest, ties to even (``shift`` >= 1): add half minus one, plus the kept LSB."""
    half_less_one = b.sub(b.shl(k(1), b.sub(shift, k(1))), k(1))
    kept_lsb = b.and_(b.lshr(x, shift), k(1))
    return b.lshr(b.add(x, b.add(half_less_one, kept_lsb)), shift)


def _encode_e8m0(b: ir.IRBuilder, v: ir.Value, lanes: int | None, saturate: bool, round_mode: str) -> ir.Value:
    """onnx.numpy_helper.to_float8e8m0, step for step: the float32 exponent, rounded by ``round_mode``."""
    it = vectorized(ir.IntType(32), lanes)
    k = lambda x: _k(it, x)  # noqa: E731
    bits = b.bitcast(v, it)
    exponent = b.and_(b.lshr(bits, k(23)), k(0xFF))
    nonzero = lambda mask: b.icmp_unsigned("!=", b.and_(bits, k(mask)), k(0))  # noqa: E731
    if round_mode == "up":
        round_up = nonzero(0x7FFFFF)
    elif round_mode == "nearest":
        # Guard bit set and (round or sticky bits, or an odd result: the reference's "exponent > 0").
        tie_breaks_up = b.or_(nonzero(0x3FFFFF), b.icmp_unsigned(">", exponent, k(0)))
        round_up = b.and_(nonzero(0x400000), tie_breaks_up)
    elif round_mode == "down":
        round_up = b.icmp_unsigned("!=", k(0), k(0))
    else:
        raise ValueError(f"unknown float8e8m0 round_mode {round_mode!r}")
    if saturate:
        round_up = b.and_(round_up, b.icmp_unsigned("!=", exponent, k(0xFE)))
    rounded = b.add(exponent, b.zext(round_up, it))
    return b.select(b.icmp_unsigned("==", exponent, k(0xFF)), k(0xFF), rounded)


def decode(b: ir.IRBuilder, code: ir.Value, fmt: FloatFormat) -> ir.Value:
    """The float32 value of ``code`` (an integer of any width holding a ``fmt`` code in its low bits)."""
    lanes = _lanes(code)
    it = vectorized(ir.IntType(32), lanes)
    ft = vectorized(F32, lanes)
    k = lambda x: _k(it, x)  # noqa: E731
    width = code.type.element.width if lanes else code.type.width
    c = code if width == 32 else b.zext(code, it) if width < 32 else b.trunc(code, it)
    if fmt.specials == "e8m0":
        # 2**(c - 127); c == 0 is the float32 subnormal 2**-127.
        bits = b.select(b.icmp_unsigned("==", c, k(0)), k(1 << 22), b.shl(c, k(23)))
        bits = b.select(b.icmp_unsigned("==", c, k(0xFF)), k(_QUIET_NAN_F32), bits)
        return b.bitcast(bits, ft)
    m = fmt.mantissa_bits
    all_ones = (1 << fmt.magnitude_bits) - 1
    magnitude = b.and_(c, k(all_ones))
    exponent = b.lshr(magnitude, k(m))
    mantissa = b.and_(magnitude, k((1 << m) - 1))
    normal = b.or_(b.shl(b.add(exponent, k(127 - fmt.bias)), k(23)), b.shl(mantissa, k(23 - m)))
    # Subnormals: mantissa * 2**(1 - bias - m), exact in float32.
    scale = ir.Constant(F32, 2.0 ** (1 - fmt.bias - m))
    subnormal = b.fmul(b.uitofp(mantissa, ft), ir.Constant(ft, [scale] * lanes) if lanes else scale)
    bits = b.select(b.icmp_unsigned("==", exponent, k(0)), b.bitcast(subnormal, it), normal)
    if fmt.specials == "ieee":
        special = b.select(b.icmp_unsigned("==", mantissa, k(0)), k(_INF_F32), k(_QUIET_NAN_F32))
        bits = b.select(b.icmp_unsigned("==", exponent, k((1 << fmt.exponent_bits) - 1)), special, bits)
    elif fmt.specials == "fn":
        bits = b.select(b.icmp_unsigned("==", magnitude, k(all_ones)), k(_QUIET_NAN_F32), bits)
    bits = b.or_(bits, b.shl(b.lshr(c, k(fmt.magnitude_bits)), k(31)))
    if fmt.specials == "fnuz":
        bits = b.select(b.icmp_unsigned("==", c, k(1 << fmt.magnitude_bits)), k(_QUIET_NAN_F32), bits)
    return b.bitcast(bits, ft)
