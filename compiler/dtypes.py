"""Element types shared by the graph IR, the loop IR and the codegens.

One table maps each type to its ONNX enum, its numpy dtype, its size and its
ONNX type string (``tensor(float)``), so no other module keeps its own mapping.
"""

from __future__ import annotations

import enum

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

    @property
    def itemsize(self) -> int:
        return _ITEMSIZE[self]

    @property
    def is_float(self) -> bool:
        return self in (DType.F16, DType.BF16, DType.F32, DType.F64)

    @property
    def is_int(self) -> bool:
        return not self.is_float and self is not DType.BOOL

    @property
    def is_signed(self) -> bool:
        return self.is_float or self in (DType.I8, DType.I16, DType.I32, DType.I64)

    @property
    def bits(self) -> int:
        return 1 if self is DType.BOOL else 8 * self.itemsize

    @property
    def numpy(self) -> np.dtype:
        """The numpy dtype holding this type's bits (bfloat16 is carried as uint16)."""
        return np.dtype("uint16") if self is DType.BF16 else np.dtype(self.value)

    @property
    def onnx(self) -> int:
        return _TO_ONNX[self]

    @property
    def onnx_type_string(self) -> str:
        """onnxruntime's NodeArg.type spelling, e.g. ``tensor(float)``."""
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


_ITEMSIZE = {
    DType.BOOL: 1, DType.I8: 1, DType.U8: 1, DType.I16: 2, DType.U16: 2, DType.F16: 2, DType.BF16: 2,
    DType.I32: 4, DType.U32: 4, DType.F32: 4, DType.I64: 8, DType.U64: 8, DType.F64: 8,
}
_TO_ONNX = {
    DType.BOOL: TensorProto.BOOL, DType.I8: TensorProto.INT8, DType.I16: TensorProto.INT16,
    DType.I32: TensorProto.INT32, DType.I64: TensorProto.INT64, DType.U8: TensorProto.UINT8,
    DType.U16: TensorProto.UINT16, DType.U32: TensorProto.UINT32, DType.U64: TensorProto.UINT64,
    DType.F16: TensorProto.FLOAT16, DType.BF16: TensorProto.BFLOAT16, DType.F32: TensorProto.FLOAT,
    DType.F64: TensorProto.DOUBLE,
}
_FROM_ONNX = {v: k for k, v in _TO_ONNX.items()}
_ORT_NAME = {DType.F32: "float", DType.F64: "double", DType.BOOL: "bool"}
