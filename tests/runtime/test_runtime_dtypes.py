"""runtime_stub/dtypes.py: the element-type table and the packing of sub-byte types at the native ABI."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest

from compiler.dtypes import DType, pack_codes
from runtime_stub.dtypes import ELEMENT_TYPES, element_type


def test_every_compiler_dtype_is_known_to_the_runtime():
    for dtype in DType:
        etype = element_type(dtype.value)
        assert etype is not None, dtype
        assert f"tensor({etype.ort_name})" == dtype.onnx_type_string
        assert etype.bits == (8 if dtype is DType.BOOL else dtype.bits)
        assert etype.nbytes(7) == dtype.nbytes(7)
    assert set(ELEMENT_TYPES) == {d.value for d in DType}


@pytest.mark.parametrize("name", ["int4", "uint4", "float4_e2m1fn", "int2", "uint2"])
@pytest.mark.parametrize("numel", [1, 2, 3, 5, 8, 13])
def test_sub_byte_packing_matches_onnx_raw_data(name, numel):
    etype = element_type(name)
    codes = np.random.default_rng(numel).integers(0, 1 << etype.bits, size=numel).astype(np.uint8)
    native = etype.to_native(codes)
    # ONNX's own raw_data packing of the same values is the reference layout.
    proto = onnx.numpy_helper.from_array(codes.view(getattr(ml_dtypes, name)))
    assert native.tobytes() == proto.raw_data
    assert native.tobytes() == pack_codes(codes, etype.bits).tobytes()
    out = etype.from_native(native, [numel])
    np.testing.assert_array_equal(out, codes)


def test_inputs_accept_ml_dtypes_arrays_and_codes_only():
    etype = element_type("float8_e4m3fn")
    x = np.array([1.0, -2.0], dtype=ml_dtypes.float8_e4m3fn)
    np.testing.assert_array_equal(etype.as_api_array(x), x.view(np.uint8))
    assert etype.as_api_array(x.view(np.uint8)) is not None
    assert etype.as_api_array(x.view(np.int8)) is None
    assert etype.as_api_array(x.astype(ml_dtypes.float8_e5m2)) is None
    # numpy's own types match exactly: a byte-swapped float32 is not silently accepted.
    assert element_type("float32").as_api_array(np.zeros(2, ">f4")) is None


@pytest.mark.parametrize("values", [["a", "", "héllo", "🐈x"], [["ab"], ["c"]], "zero-d", []])
def test_strings_cross_as_code_points(values):
    """str / object arrays in, numpy's <U code points (one more, last axis) natively, object arrays of str out."""
    etype = element_type("string")
    text = np.array("zero-d") if values == "zero-d" else np.array(values, dtype=object)
    native = etype.to_native(etype.as_api_array(text))
    assert native.dtype == np.uint32 and native.shape == (*text.shape, max(1, max((len(s) for s in text.reshape(-1)),
                                                                                  default=1)))
    assert native.reshape(-1, native.shape[-1])[:, 0].tolist() == [ord(s[0]) if s else 0 for s in text.reshape(-1)]
    back = etype.from_native(native, list(native.shape))
    assert back.dtype == object and back.shape == text.shape and back.tolist() == text.tolist()
    assert etype.as_api_array(np.array(["a", 1], dtype=object)) is None
    assert etype.as_api_array(np.array([b"a"])) is None and etype.as_api_array(np.array([1])) is None
