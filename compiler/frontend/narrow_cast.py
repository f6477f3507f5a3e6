"""Cast into the narrow types at compile time, by the ONNX spec's rules rather than ml_dtypes'.

Contract: ``narrow_cast(array, dst, saturate, round_mode)`` returns ``array`` converted to ``dst``
(one of the float8 / float4 / bfloat16 / int4 / uint4 / int2 / uint2 types) as the ml_dtypes array
the rest of the compiler carries constants in, holding the codes the generated code computes for
the same values (compiler/codegen/llvm/narrow.py and the emitter's ``cast``). Constant folding uses
it for Cast and CastLike, so a folded conversion and a run-time one agree, whatever ml_dtypes
release is installed: ml_dtypes 0.7 changed its out-of-range int4 results, and its float64
conversions round through float32 in some releases and not in others.

The rules, from the Cast operator's text:

* float8 (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ) and float4 (E2M1): the source value, exactly, rounded
  to nearest even on the target's grid; ``[x] > FLT_MAX`` and infinities follow the spec's two
  tables (saturate on: the largest finite value; off: infinity in E5M2, NaN in the others); the
  FNUZ formats have no negative zero. E2M1 has neither infinity nor NaN and always saturates;
  for a NaN source, which the spec leaves open, it gives the zero whose sign is the NaN's flipped
  (the convention of the reference at the time the generated code was written).
* bfloat16: the source value rounded to nearest even; NaN stays NaN.
* int4 / uint4 / int2 / uint2: a float source truncates toward zero, as every float-to-integer
  Cast does; the integer then keeps its low bits (two's complement), the spec's rule for integer
  sources that are out of range. For a float out of range the spec says "undefined": tilec
  defines it so, matching the integer rule (and the wider integer types, whose conversion wraps).
* float8e8m0 follows ``onnx.numpy_helper.to_float8e8m0`` (onnx's own rounding modes, no ml_dtypes).

Compile time only; the values are exact, since every source value is exact in float64 (integer
sources beyond 2**53 excepted, which no narrow float can tell apart from their float64 rounding).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import numpy_helper

from compiler.dtypes import DType, FloatFormat

#: The types this module converts into (the rest of Cast's targets keep numpy's conversions).
NARROW_TARGETS = frozenset(d for d in DType if d.is_narrow_float or d.elements_per_byte > 1)


def narrow_cast(array: np.ndarray, dst: DType, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """``array`` (any numeric numpy / ml_dtypes array) converted to ``dst`` by the rules above."""
    if dst not in NARROW_TARGETS:
        raise ValueError(f"{dst.value} is not a narrow type")
    x = exact_values(np.asarray(array))
    if dst is DType.F8E8M0:
        return numpy_helper.to_float8e8m0(x.astype(np.float32), saturate, round_mode).astype(dst.numpy)
    if dst is DType.BF16:
        return _bfloat16_codes(x).view(ml_dtypes.bfloat16)
    if dst.format is not None:
        return encode(x, dst.format, saturate).view(dst.numpy)
    return _integer_codes(x, dst).view(dst.numpy)


def encode(x: np.ndarray, fmt: FloatFormat, saturate: bool) -> np.ndarray:
    """uint8 codes of the float64 values ``x`` in the float8 / float4 format ``fmt``."""
    magnitudes = decode(np.arange(fmt.max_magnitude + 1, dtype=np.uint8), fmt)
    # One more grid point past the largest finite value: rounding up to it is overflow.
    grid = np.append(magnitudes, 2 * magnitudes[-1] - magnitudes[-2])
    a = np.abs(x)
    finite = np.isfinite(a)
    a_finite = np.where(finite, a, 0.0)
    low = np.clip(np.searchsorted(grid, a_finite, side="right") - 1, 0, grid.size - 2)
    below, above = a_finite - grid[low], grid[low + 1] - a_finite
    up = (above < below) | ((above == below) & (low % 2 == 1))  # a tie goes to the even code
    index = np.where(a_finite >= grid[-1], grid.size - 1, low + up)
    overflow = (index > fmt.max_magnitude) | np.isinf(a)

    sign = np.signbit(x).astype(np.uint16) << fmt.magnitude_bits
    all_ones = (1 << fmt.magnitude_bits) - 1
    if saturate or fmt.saturation == "always":
        over = sign | fmt.max_magnitude
    elif fmt.specials == "ieee":
        over = sign | (fmt.max_magnitude + 1)  # infinity
    elif fmt.specials == "fn":
        over = sign | all_ones  # NaN
    else:
        over = np.full_like(sign, 1 << fmt.magnitude_bits)  # the FNUZ NaN
    code = np.where(overflow, over, sign | np.minimum(index, fmt.max_magnitude))
    if fmt.specials == "fnuz":
        code = np.where(~overflow & (index == 0), 0, code)  # no negative zero

    if fmt.specials == "ieee":
        nan = sign | (fmt.max_magnitude + 1 + (1 << (fmt.mantissa_bits - 1)))
    elif fmt.specials == "fn":
        nan = sign | all_ones
    elif fmt.specials == "fnuz":
        nan = np.full_like(sign, 1 << fmt.magnitude_bits)
    else:
        nan = (sign ^ (1 << fmt.magnitude_bits))
    return np.where(np.isnan(x), nan, code).astype(np.uint8)


def decode(codes: np.ndarray, fmt: FloatFormat) -> np.ndarray:
    """float64 values of the ``fmt`` codes (uint8) ``codes``, from the format's definition."""
    c = codes.astype(np.int64)
    m = fmt.mantissa_bits
    magnitude = c & ((1 << fmt.magnitude_bits) - 1)
    exponent, mantissa = magnitude >> m, magnitude & ((1 << m) - 1)
    value = np.where(exponent == 0, mantissa * 2.0 ** (1 - fmt.bias - m),
                     (1 + mantissa * 2.0 ** -m) * 2.0 ** (exponent - fmt.bias))
    negative = (c >> fmt.magnitude_bits) & 1 == 1
    if fmt.specials == "ieee":
        top = exponent == (1 << fmt.exponent_bits) - 1
        value = np.where(top, np.where(mantissa == 0, np.inf, np.nan), value)
    elif fmt.specials == "fn":
        value = np.where(magnitude == (1 << fmt.magnitude_bits) - 1, np.nan, value)
    elif fmt.specials == "fnuz":
        value = np.where(negative & (magnitude == 0), np.nan, value)
    return np.where(negative, -value, value)


def exact_values(array: np.ndarray) -> np.ndarray:
    """The values of ``array`` as float64, narrow types decoded from their definitions (exact for
    every float and bool source and integers below 2**53)."""
    name = array.dtype.name
    if name not in _BY_NAME:
        return array.astype(np.float64)
    dtype = _BY_NAME[name]
    codes = array.view(np.uint16 if dtype is DType.BF16 else np.uint8).astype(np.int64)
    if dtype is DType.BF16:
        with np.errstate(invalid="ignore"):  # signalling NaN codes stay NaN
            return (codes.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype is DType.F8E8M0:
        return np.where(codes == 0xFF, np.nan, np.ldexp(1.0, codes - 127))
    if dtype.format is not None:
        return decode(codes, dtype.format)
    sign_bit = 1 << (dtype.bits - 1)
    return (codes - 2 * (codes & sign_bit) if dtype.is_signed else codes).astype(np.float64)


_BY_NAME = {d.value: d for d in NARROW_TARGETS}


def _bfloat16_codes(x: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 codes of float64 ``x``, rounded once: to odd in float32, which keeps every bit
    a later round to nearest even (to 8 bits) needs, then to nearest even."""
    with np.errstate(over="ignore"):
        near = x.astype(np.float32)
    bits = near.view(np.uint32).copy()
    inexact = (near.astype(np.float64) != x) & ~np.isnan(x)
    bits[inexact & (np.abs(near.astype(np.float64)) > np.abs(x))] -= 1
    bits |= inexact.astype(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & 1)) >> 16
    return np.where(np.isnan(x), (bits >> 16) | 0x40, rounded).astype(np.uint16)


def _integer_codes(x: np.ndarray, dst: DType) -> np.ndarray:
    """int4 / uint4 / int2 / uint2 codes (uint8, low bits) of float64 ``x``: truncated, then wrapped."""
    # fmod by 256 is exact and keeps the low bits of integers of any size (NaN and inf give code 0).
    low_byte = np.fmod(np.trunc(np.where(np.isfinite(x), x, 0.0)), 256.0).astype(np.int64)
    return (low_byte & ((1 << dst.bits) - 1)).astype(np.uint8)
