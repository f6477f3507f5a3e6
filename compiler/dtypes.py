"""Element types shared by the graph IR, the loop IR and the codegens.

One table maps each type to its ONNX enum, its numpy dtype, its size and its
ONNX type string (``tensor(float)``), so no other module keeps its own mapping.

Narrow types (ONNX's float8 / float4 / int4 / int2 families) follow two rules
every stage relies on:

* Narrow floats (``is_narrow_float``: bfloat16, the float8s, float4e2m1,
  float8e8m0) are computed in float32 registers and only take their own
  encoding in memory. ``FLOAT_FORMATS`` describes each encoding (exponent and
  mantissa widths, bias, how it spells NaN / infinity and whether it saturates),
  which is all the codegen needs for ONNX Cast's bit-exact conversions.
* Sub-byte types (``elements_per_byte`` > 1: int4, uint4, float4e2m1, int2,
  uint2) are packed in memory, element ``k`` of the flat row-major order in
  bits ``[b*(k % n), b*(k % n) + b)`` of byte ``k // n`` (low bits first, as
  ONNX's raw_data), so a tensor takes ``nbytes(numel)`` bytes.

String tensors (``STRING``) have one axis more than ONNX gives them: the last one holds
each string's Unicode code points, zero-padded to the longest, as numpy's ``<U`` arrays
store them; so a ``[N]`` tensor of strings is an ``[N, chars]`` tensor of 4-byte code
points whose ``chars`` is a size like any other (static where the strings come from
the model, a size variable where they come from an input). ``storage`` is the type
kernels compute them in (uint32); a string's value ends at its first zero code point.

Compile-time constants of the new types are ml_dtypes arrays (one element per
byte, self-describing, so ``.astype(np.float32)`` gives their values);
``storage_bytes`` turns any IR constant into the bytes a kernel reads.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import ml_dtypes
import numpy as np
from onnx import TensorProto


class DType(enum.Enum):
    BOOL = "bool"
    I8 = "int8"
    I16 = "int16"
    I32 = "int32"
    I64 = "int64"
    U8 = "uint8"
    U16 = "uint16"
    U32 = "uint32"
    U64 = "uint64"
    F16 = "float16"
    BF16 = "bfloat16"
    F32 = "float32"
    F64 = "float64"
    # The narrow types take ml_dtypes' names, so an ml_dtypes array's dtype.name is its DType value.
    F8E4M3FN = "float8_e4m3fn"
    F8E4M3FNUZ = "float8_e4m3fnuz"
    F8E5M2 = "float8_e5m2"
    F8E5M2FNUZ = "float8_e5m2fnuz"
    F8E8M0 = "float8_e8m0fnu"
    F4E2M1 = "float4_e2m1fn"
    I4 = "int4"
    U4 = "uint4"
    I2 = "int2"
    U2 = "uint2"
    # Text: each element a string of UTF-32 code points on one trailing axis of the tensor (see the module docstring).
    STRING = "string"

    @property
    def itemsize(self) -> int:
        """Bytes of one element as numpy / ml_dtypes hold it (1 for the packed sub-byte types)."""
        return _ITEMSIZE.get(self, 1)

    @property
    def elements_per_byte(self) -> int:
        """How many elements share one byte in memory (2 for 4-bit, 4 for 2-bit types, else 1)."""
        return 8 // self.bits if self.bits in (2, 4) else 1

    def nbytes(self, numel: int) -> int:
        """Bytes that ``numel`` elements take in an artifact (packed types round up to whole bytes)."""
        per = self.elements_per_byte
        return -(-numel // per) if per > 1 else numel * self.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.F16, DType.BF16, DType.F32, DType.F64) or self in FLOAT_FORMATS

    @property
    def is_narrow_float(self) -> bool:
        """Computed in float32 registers, stored in a narrower encoding (see the module docstring)."""
        return self is DType.BF16 or self in FLOAT_FORMATS

    @property
    def is_int(self) -> bool:
        return not self.is_float and self not in (DType.BOOL, DType.STRING)

    @property
    def storage(self) -> "DType":
        """The type kernels load and store this one as: uint32 code points for strings, else itself."""
        return DType.U32 if self is DType.STRING else self

    @property
    def is_signed(self) -> bool:
        return self.is_float or self in (DType.I2, DType.I4, DType.I8, DType.I16, DType.I32, DType.I64)

    @property
    def bits(self) -> int:
        """Width of the encoding: 1 for bool, 4 for int4/float4, 8 for float8, ..."""
        return 1 if self is DType.BOOL else _BITS.get(self, 8 * self.itemsize)

    @property
    def format(self) -> "FloatFormat | None":
        """The encoding of a float8 / float4 type (None for every other type)."""
        return FLOAT_FORMATS.get(self)

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype of this type's compile-time arrays (bfloat16 is carried as uint16 bits)."""
        if self is DType.BF16:
            return np.dtype("uint16")
        if self is DType.STRING:
            return np.dtype("uint32")
        if self in _ML_DTYPES:
            return np.dtype(getattr(ml_dtypes, self.value))
        return np.dtype(self.value)

    @property
    def onnx(self) -> int:
        return _TO_ONNX[self]

    @property
    def onnx_type_string(self) -> str:
        """onnxruntime's NodeArg.type spelling, e.g. ``tensor(float)``, ``tensor(float8e4m3fn)``."""
        return f"tensor({_ORT_NAME.get(self, self.value)})"

    @staticmethod
    def from_onnx(elem_type: int) -> "DType":
        try:
            return _FROM_ONNX[elem_type]
        except KeyError:
            name = TensorProto.DataType.Name(elem_type) if elem_type in TensorProto.DataType.values() else elem_type
            raise KeyError(f"ONNX element type {name} is not supported") from None

    @staticmethod
    def from_numpy(dtype: np.dtype) -> "DType":
        return DType(np.dtype(dtype).name)


@dataclass(frozen=True)
class FloatFormat:
    """A float8 / float4 encoding: sign bit, ``exponent_bits``, ``mantissa_bits``, exponent ``bias``.

    ``specials`` says how the encoding spells non-finite values:

    * ``"ieee"``: the all-ones exponent is infinity (mantissa 0) or NaN (E5M2);
    * ``"fn"``: no infinity; only the all-ones magnitude is NaN (E4M3FN);
    * ``"fnuz"``: no infinity and no negative zero; the negative-zero code 0x80 is NaN (the FNUZ types);
    * ``"none"``: finite values only (E2M1);
    * ``"e8m0"``: an unsigned power of two, 0xFF is NaN (E8M0; converted by ONNX's own rounding modes).

    ``saturation`` says when out-of-range values clamp to the largest finite value: ``"attribute"``
    (ONNX Cast's ``saturate``, default on) or ``"always"`` (E2M1, which cannot spell anything else).
    """

    exponent_bits: int
    mantissa_bits: int
    bias: int
    specials: str
    saturation: str = "attribute"

    @property
    def magnitude_bits(self) -> int:
        return self.exponent_bits + self.mantissa_bits

    @property
    def max_magnitude(self) -> int:
        """The code of the largest finite value, sign bit clear."""
        ones = (1 << self.magnitude_bits) - 1
        if self.specials == "ieee":
            return ones - (1 << self.mantissa_bits)  # the all-ones exponent is reserved
        if self.specials in ("fn", "e8m0"):
            return ones - 1
        return ones

    @property
    def has_sign(self) -> bool:
        return self.specials != "e8m0"


FLOAT_FORMATS: dict[DType, FloatFormat] = {
    DType.F8E4M3FN: FloatFormat(4, 3, 7, "fn"),
    DType.F8E4M3FNUZ: FloatFormat(4, 3, 8, "fnuz"),
    DType.F8E5M2: FloatFormat(5, 2, 15, "ieee"),
    DType.F8E5M2FNUZ: FloatFormat(5, 2, 16, "fnuz"),
    DType.F8E8M0: FloatFormat(8, 0, 127, "e8m0"),
    DType.F4E2M1: FloatFormat(2, 1, 1, "none", saturation="always"),
}


def constant_values(array: np.ndarray, dtype: DType) -> np.ndarray:
    """A compile-time array of ``dtype`` as numbers numpy computes with (bfloat16's uint16 bits read as
    ``ml_dtypes.bfloat16``)."""
    return np.asarray(array).view(ml_dtypes.bfloat16) if dtype is DType.BF16 else np.asarray(array)


def constant_storage(values: np.ndarray, dtype: DType) -> np.ndarray:
    """Numbers rounded to ``dtype`` as its compile-time arrays hold them (inverse of ``constant_values``)."""
    if dtype is DType.BF16:
        return np.asarray(values).astype(ml_dtypes.bfloat16).view(np.uint16)
    return np.asarray(values).astype(dtype.numpy)


def decoded_strings(values: object) -> np.ndarray:
    """ONNX string data (UTF-8 bytes or str, as objects, nested lists or a scalar) as a numpy ``<U`` array of
    the same shape."""
    array = np.asarray(values, dtype=object)
    text = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in array.reshape(-1)]
    return np.asarray(text, dtype=str).reshape(array.shape)


def string_codes(strings: object) -> np.ndarray:
    """Strings (a nested list or array of ``str``) as a STRING constant: their code points on one more axis."""
    text = np.asarray(strings, dtype=str)
    chars = max(text.dtype.itemsize // 4, 1)
    return text.astype(f"<U{chars}").reshape(-1).view(np.uint32).reshape(*text.shape, chars)


def storage_bytes(array: np.ndarray) -> bytes:
    """An IR constant as the bytes kernels read: sub-byte types packed, everything else as is."""
    array = np.ascontiguousarray(array)
    dtype = DType.from_numpy(array.dtype) if array.dtype.name in _ML_DTYPE_NAMES else None
    if dtype is None or dtype.elements_per_byte == 1:
        return array.tobytes()
    return pack_codes(array.view(np.uint8).reshape(-1), dtype.bits).tobytes()


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Flat ``bits``-wide codes (one per uint8) → packed bytes, element k in byte k // (8 // bits), low bits first."""
    per = 8 // bits
    padded = np.zeros(-(-codes.size // per) * per, dtype=np.uint8)
    padded[:codes.size] = codes.reshape(-1) & ((1 << bits) - 1)
    lanes = padded.reshape(-1, per)
    out = np.zeros(lanes.shape[0], dtype=np.uint8)
    for k in range(per):
        out |= lanes[:, k] << np.uint8(bits * k)
    return out


_BITS = {DType.I4: 4, DType.U4: 4, DType.F4E2M1: 4, DType.I2: 2, DType.U2: 2}
_ITEMSIZE = {
    DType.BOOL: 1, DType.I8: 1, DType.U8: 1, DType.I16: 2, DType.U16: 2, DType.F16: 2, DType.BF16: 2,
    DType.I32: 4, DType.U32: 4, DType.F32: 4, DType.I64: 8, DType.U64: 8, DType.F64: 8, DType.STRING: 4,
}
_ML_DTYPES = (DType.F8E4M3FN, DType.F8E4M3FNUZ, DType.F8E5M2, DType.F8E5M2FNUZ, DType.F8E8M0, DType.F4E2M1,
              DType.I4, DType.U4, DType.I2, DType.U2)
_ML_DTYPE_NAMES = frozenset(d.value for d in _ML_DTYPES)
_TO_ONNX = {
    DType.BOOL: TensorProto.BOOL, DType.I8: TensorProto.INT8, DType.I16: TensorProto.INT16,
    DType.I32: TensorProto.INT32, DType.I64: TensorProto.INT64, DType.U8: TensorProto.UINT8,
    DType.U16: TensorProto.UINT16, DType.U32: TensorProto.UINT32, DType.U64: TensorProto.UINT64,
    DType.F16: TensorProto.FLOAT16, DType.BF16: TensorProto.BFLOAT16, DType.F32: TensorProto.FLOAT,
    DType.F64: TensorProto.DOUBLE, DType.F8E4M3FN: TensorProto.FLOAT8E4M3FN,
    DType.F8E4M3FNUZ: TensorProto.FLOAT8E4M3FNUZ, DType.F8E5M2: TensorProto.FLOAT8E5M2,
    DType.F8E5M2FNUZ: TensorProto.FLOAT8E5M2FNUZ, DType.F8E8M0: TensorProto.FLOAT8E8M0,
    DType.F4E2M1: TensorProto.FLOAT4E2M1, DType.I4: TensorProto.INT4, DType.U4: TensorProto.UINT4,
    DType.I2: TensorProto.INT2, DType.U2: TensorProto.UINT2, DType.STRING: TensorProto.STRING,
}
_FROM_ONNX = {v: k for k, v in _TO_ONNX.items()}
# onnxruntime spells the narrow types as ONNX's enum names in lower case (float8e4m3fn, int4).
_ORT_NAME = {DType.F32: "float", DType.F64: "double", DType.BOOL: "bool",
             **{d: TensorProto.DataType.Name(_TO_ONNX[d]).lower() for d in _ML_DTYPES}}
