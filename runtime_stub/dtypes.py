"""The element types the runtime knows: manifest name → how arrays cross the API and the native ABI.

Contract (numpy only; ml_dtypes is never imported, so this works with any numpy >= 1.24):

* ``element_type(name)`` is the ``ElementType`` for a manifest ``dtype`` name, or None.
* At the API, numpy's own types are themselves; bfloat16 is uint16 bit patterns; the
  float8 types (float8_e4m3fn, ..., float8_e8m0fnu) are uint8 codes; the sub-byte types
  (int4, uint4, float4_e2m1fn, int2, uint2) are uint8 codes too, one element per byte in
  its low bits, the layout of ml_dtypes' arrays (and so of ONNX's test data). Outputs come
  back in that form; inputs may also be arrays of the ml_dtypes type itself, recognised by
  ``dtype.name`` and a one-element itemsize.
* Strings (``string``): at the API, numpy arrays of ``str`` (``<U`` or object; outputs are object
  arrays, as onnxruntime returns them); in native buffers, each string's Unicode code points as uint32
  on one more, last axis, zero-padded to the longest (numpy's ``<U`` layout; ``code_axis``), so a
  string ends at its first zero code point.
* In native buffers, sub-byte elements are packed ``8 // bits`` to a byte, element k of
  the flat row-major order in bits ``bits * (k % per)`` and up of byte ``k // per``.
"""

from __future__ import annotations

import functools
import math

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ElementType:
    name: str  # as the manifest spells it
    api_dtype: np.dtype  # the dtype of the arrays run() takes and returns
    bits: int
    ort_name: str  # onnxruntime's spelling in NodeArg.type, tensor(<ort_name>)
    code_axis: bool = False  # the native buffer has one more axis: a string's code points

    @functools.cached_property  # read several times per run for every input and output
    def elements_per_byte(self) -> int:
        return 8 // self.bits if self.bits < 8 else 1

    def nbytes(self, numel: int) -> int:
        per = self.elements_per_byte
        return -(-numel // per) if per > 1 else numel * self.api_dtype.itemsize

    def shape_nbytes(self, shape: Sequence[int]) -> int:
        """The bytes of a native buffer of this shape."""
        return self.nbytes(math.prod(int(d) for d in shape))  # Python ints: an int64 product could wrap

    def as_api_array(self, array: np.ndarray) -> np.ndarray | None:
        """``array`` in the API dtype if it is this type's API form or its ml_dtypes form, else None."""
        if array.dtype == self.api_dtype:
            return array
        carried = self.name != self.api_dtype.name  # a type numpy lacks, carried in uint8 / uint16
        if carried and array.dtype.name == self.name and array.dtype.itemsize == self.api_dtype.itemsize:
            return array.view(self.api_dtype)  # ml_dtypes (bfloat16, float8_*, int4, ...): the same bits
        return None

    def to_native(self, array: np.ndarray) -> np.ndarray:
        """An API-form array as the C-contiguous buffer the native code reads (packed for sub-byte types)."""
        per = self.elements_per_byte
        if per == 1:
            return np.require(array, requirements=("C_CONTIGUOUS", "ALIGNED"))
        codes = np.zeros(self.nbytes(array.size) * per, dtype=np.uint8)
        codes[:array.size] = array.reshape(-1)
        codes &= (1 << self.bits) - 1
        lanes = codes.reshape(-1, per)
        packed = lanes[:, 0].copy()
        for k in range(1, per):
            packed |= lanes[:, k] << np.uint8(self.bits * k)
        return packed

    def native_empty(self, shape: list[int]) -> np.ndarray:
        """An output buffer the native code can fill."""
        if self.elements_per_byte == 1:
            return np.empty(shape, dtype=self.api_dtype)
        return np.empty(self.shape_nbytes(shape), dtype=np.uint8)

    def native_view(self, raw: np.ndarray, shape: list[int]) -> np.ndarray:
        """``native_empty``'s buffer on the bytes ``raw`` (uint8, ``shape_nbytes(shape)`` of them)."""
        return raw.view(self.api_dtype).reshape(shape) if self.elements_per_byte == 1 else raw

    def from_native(self, buffer: np.ndarray, shape: list[int]) -> np.ndarray:
        """The API-form array of an output buffer from ``native_empty`` or ``native_view``."""
        per = self.elements_per_byte
        if per == 1:
            return buffer
        numel = int(np.prod(shape, dtype=np.int64))
        mask = np.uint8((1 << self.bits) - 1)
        codes = np.stack([(buffer >> np.uint8(self.bits * k)) & mask for k in range(per)], axis=-1)
        return codes.reshape(-1)[:numel].reshape(shape)


class StringType(ElementType):
    """Strings: code points on a last native axis (see the module docstring)."""

    def nbytes(self, numel: int) -> int:
        return numel * 4

    def as_api_array(self, array: np.ndarray) -> np.ndarray | None:
        if array.dtype.kind == "U":
            return array
        if array.dtype.kind == "O" and all(isinstance(v, str) for v in array.reshape(-1)):
            return array
        return None

    def to_native(self, array: np.ndarray) -> np.ndarray:
        text = np.asarray(array, dtype=str)
        chars = max(text.dtype.itemsize // 4, 1)
        text = np.array(text, dtype=f"<U{chars}", order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
        return text.reshape(-1).view(np.uint32).reshape(*text.shape, chars)

    def native_empty(self, shape: list[int]) -> np.ndarray:
        return np.empty(shape, dtype=np.uint32)

    def native_view(self, raw: np.ndarray, shape: list[int]) -> np.ndarray:
        return raw.view(np.uint32).reshape(shape)

    def from_native(self, buffer: np.ndarray, shape: list[int]) -> np.ndarray:
        codes = np.ascontiguousarray(buffer, dtype=np.uint32).reshape(shape)
        if shape[-1] == 0:
            return np.full(shape[:-1], "", dtype=object)
        return codes.view(f"<U{shape[-1]}").reshape(shape[:-1]).astype(object)


def _table() -> dict[str, ElementType]:
    native = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
              "float16", "float32", "float64"]
    ort = {"float32": "float", "float64": "double"}
    table = {n: ElementType(n, np.dtype(n), 8 * np.dtype(n).itemsize, ort.get(n, n)) for n in native}
    table["bfloat16"] = ElementType("bfloat16", np.dtype("uint16"), 16, "bfloat16")
    narrow = {"float8_e4m3fn": (8, "float8e4m3fn"), "float8_e4m3fnuz": (8, "float8e4m3fnuz"),
              "float8_e5m2": (8, "float8e5m2"), "float8_e5m2fnuz": (8, "float8e5m2fnuz"),
              "float8_e8m0fnu": (8, "float8e8m0"), "float4_e2m1fn": (4, "float4e2m1"),
              "int4": (4, "int4"), "uint4": (4, "uint4"), "int2": (2, "int2"), "uint2": (2, "uint2")}
    for name, (bits, ort_name) in narrow.items():
        table[name] = ElementType(name, np.dtype("uint8"), bits, ort_name)
    table["string"] = StringType("string", np.dtype(object), 32, "string", code_axis=True)
    return table


ELEMENT_TYPES: dict[str, ElementType] = _table()


def element_type(name: str) -> ElementType | None:
    return ELEMENT_TYPES.get(name)
