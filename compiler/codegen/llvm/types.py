"""LLVM types and constants for loop IR dtypes.

Booleans are ``i1`` in registers and ``i8`` in memory; bfloat16 is stored as
``i16`` and computed in float32 (LLVM's ``bfloat`` is not in llvmlite's IR
builder); the float8 types are stored as their ``i8`` code and float4e2m1 as
an ``i4`` code, both computed in float32. int4/uint4/int2/uint2 are ``i4`` /
``i2`` in registers; in a global buffer they are packed (see
``compiler.dtypes``), which the emitter handles around ``memory_type``.
"""

from __future__ import annotations

import llvmlite.ir as ir

from compiler.dtypes import DType

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()
VOID = ir.VoidType()


def value_type(dtype: DType) -> ir.Type:
    if dtype is DType.BOOL:
        return I1
    if dtype is DType.F16:
        return ir.HalfType()
    if dtype is DType.F32 or dtype.is_narrow_float:
        return ir.FloatType()
    if dtype is DType.F64:
        return ir.DoubleType()
    return ir.IntType(dtype.bits)


def memory_type(dtype: DType) -> ir.Type:
    if dtype is DType.BOOL:
        return I8
    if dtype.is_narrow_float:
        return ir.IntType(dtype.bits)
    return value_type(dtype)


def vectorized(t: ir.Type, lanes: int | None) -> ir.Type:
    return t if lanes is None else ir.VectorType(t, lanes)


def is_vector(v: ir.Value) -> bool:
    return isinstance(v.type, ir.VectorType)


def mangle(t: ir.Type) -> str:
    """The type suffix of overloaded intrinsics: f32, v16f32, i64, v8i1..."""
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{mangle(t.element)}"
    if isinstance(t, ir.FloatType):
        return "f32"
    if isinstance(t, ir.DoubleType):
        return "f64"
    if isinstance(t, ir.HalfType):
        return "f16"
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    raise TypeError(f"no intrinsic suffix for {t}")
