"""Ops on element types other than float32: float64, float16, integers, and the narrow types
(float8, float4, float8e8m0, int4, int2), whose Cast conversions must be bit-exact.

Tolerances: float64 rtol=1e-9 atol=1e-10 (the same math, in double); float16
rtol=atol=1e-2, since float16 has a 2^-11 (~5e-4) unit roundoff and the
compiled code and numpy may round intermediate results differently (numpy
upcasts some float16 ops to float32 internally, the compiled code may not);
MatMul sums 13 products, so its error is a few of those roundings.
Integer results must match exactly.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from compiler.dtypes import DType
from compiler.frontend.narrow_cast import NARROW_TARGETS, exact_values, narrow_cast
from helpers_onnx import compiled, node_model, rand
from runtime_stub import InferenceSession, InvalidInputError

TOL = {"float64": {"rtol": 1e-9, "atol": 1e-10}, "float16": {"rtol": 1e-2, "atol": 1e-2}}

CASES = {
    "Add": lambda dt: ({"a": rand((3, 37), dtype=dt), "b": rand((37,), seed=1, dtype=dt)}, {}, {}),
    "MatMul": lambda dt: ({"a": rand((7, 13), dtype=dt), "b": rand((13, 19), seed=1, dtype=dt)}, {}, {}),
    "Softmax": lambda dt: ({"a": rand((4, 21), dtype=dt)}, {}, {}),
    "ReduceSum": lambda dt: ({"a": rand((6, 21), dtype=dt)}, {}, {"keepdims": 0}),
    "Conv": lambda dt: ({"a": rand((1, 3, 7, 7), dtype=dt)}, {"w": rand((9, 3, 3, 3), seed=2, dtype=dt)},
                        {"pads": [1, 1, 1, 1]}),
    "MaxPool": lambda dt: ({"a": rand((1, 3, 7, 7), dtype=dt)}, {}, {"kernel_shape": [3, 3]}),
    "Sigmoid": lambda dt: ({"a": rand((5, 33), dtype=dt)}, {}, {}),
}


@pytest.mark.parametrize("dtype", ["float64", "float16"])
@pytest.mark.parametrize("op", sorted(CASES))
def test_float_dtypes(check, op, dtype):
    feeds, consts, attrs = CASES[op](dtype)
    model = node_model(op, list(feeds) + list(consts), feeds, consts=consts, attrs=attrs)
    check(model, feeds, **TOL[dtype])


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceSum", "ReduceMin"])
def test_integer_reductions(check, op):
    x = (rand((6, 21), seed=3) * 9).astype(np.int64)
    check(node_model(op, ["x"], {"x": x}, attrs={"keepdims": 0}), {"x": x})


def test_where_int64(check):
    feeds = {"c": rand((6, 21), seed=4) > 0, "a": (rand((6, 21), seed=5) * 9).astype(np.int64),
             "b": (rand((21,), seed=6) * 9).astype(np.int64)}
    check(node_model("Where", ["c", "a", "b"], feeds), feeds)


def test_transpose_uint8_and_concat_bool(check):
    x = (rand((3, 5, 7), seed=7) * 100).astype(np.uint8)
    check(node_model("Transpose", ["x"], {"x": x}, attrs={"perm": [2, 0, 1]}), {"x": x})
    a, b = rand((2, 3), seed=8) > 0, rand((2, 5), seed=9) > 0
    check(node_model("Concat", ["a", "b"], {"a": a, "b": b}, attrs={"axis": 1}), {"a": a, "b": b})


# --- narrow types: float8, float4, float8e8m0, int4, int2 -----------------------------------
#
# Bit-exact against the Cast spec's rules as compiler/frontend/narrow_cast.py computes them in
# numpy (the constant folder's conversions; no ml_dtypes arithmetic, whose results changed between
# releases; test_ops_narrow_spec.py pins those rules to literal codes): every code of each narrow
# type is decoded, and float32 / float16 values around every code (the codes themselves, the ties
# between neighbours and one ulp either side of them, out-of-range values, infinities, NaNs,
# signed zeros) are encoded, under both saturate modes. NaN compares as NaN (the payload of a
# float32 NaN is not part of ONNX's contract); everything else compares bits.

NARROW_OPSET = 25
FLOAT8 = ["FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0"]
SUB_BYTE = ["FLOAT4E2M1", "INT4", "UINT4", "INT2", "UINT2"]
WIDE = {"FLOAT": np.float32, "FLOAT16": np.float16}


def _np_dtype(onnx_name: str) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(getattr(TensorProto, onnx_name)))


def _all_codes(onnx_name: str) -> np.ndarray:
    """Every code of the type, as its ml_dtypes array (shape (1, n): a leading 1 exercises broadcasting loads)."""
    bits = 8 if onnx_name in FLOAT8 else 4 if "4" in onnx_name else 2
    return np.arange(1 << bits, dtype=np.uint8).reshape(1, -1).view(_np_dtype(onnx_name))


def _probe_values(onnx_name: str, wide: type) -> np.ndarray:
    """Values whose conversion to the type exercises every rounding and range decision."""
    codes = _all_codes(onnx_name).reshape(-1)
    grid = np.unique(codes.astype(np.float64))
    grid = grid[np.isfinite(grid)]
    ties = (grid[1:] + grid[:-1]) / 2
    extra = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e6, -1e6, 1e-30, -1e-30, 1e-40, -1e-45, 3e38,
                      65504.0])
    values = np.concatenate([grid, ties, extra]).astype(wide)
    finite = values[np.isfinite(values)]
    nudged = [np.nextafter(finite, wide(np.inf)), np.nextafter(finite, wide(-np.inf))]
    out = np.concatenate([values, *nudged])
    if onnx_name == "FLOAT8E8M0":
        out = out[~np.signbit(out)]  # negative inputs are unspecified for float8e8m0
    if onnx_name in ("INT4", "UINT4", "INT2", "UINT2"):
        out = out[np.isfinite(out)]  # float -> integer is undefined for inf / NaN
        out = out[np.abs(out) < 1e4]
    return out.reshape(1, -1)


def _cast_model(src: str, dst: str, shape: tuple[int, ...], **attrs) -> onnx.ModelProto:
    node = helper.make_node("Cast", ["x"], ["y"], to=getattr(TensorProto, dst), **attrs)
    graph = helper.make_graph([node], "cast", [helper.make_tensor_value_info("x", getattr(TensorProto, src), shape)],
                              [helper.make_tensor_value_info("y", getattr(TensorProto, dst), shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", NARROW_OPSET)])


def _spec_cast(x: np.ndarray, dst: str, saturate: int = 1, round_mode: str = "up") -> np.ndarray:
    """What Cast to ``dst`` gives by the spec's rules (narrow_cast), as the array the reference would return."""
    dtype = DType.from_onnx(getattr(TensorProto, dst))
    if dtype in NARROW_TARGETS:
        return narrow_cast(x, dtype, bool(saturate), round_mode)
    return exact_values(x).astype(_np_dtype(dst))  # from a narrow source: its exact value


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}")


def _assert_same(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """``got`` (runtime_stub's carrier array) equals ``want`` (the reference's array) bit for bit, NaN as NaN."""
    assert got.shape == want.shape, what
    if want.dtype in (np.float32, np.float16):
        assert got.dtype == want.dtype, what
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(got), nan, err_msg=what)
        np.testing.assert_array_equal(_bits(got)[~nan], _bits(want)[~nan], err_msg=what)
        return
    assert got.dtype == np.uint8, what
    np.testing.assert_array_equal(got, _bits(want), err_msg=what)


def _run(model: onnx.ModelProto, feeds: dict, cache, threads: int = 1) -> list[np.ndarray]:
    with InferenceSession(compiled(model, cache), threads=threads) as session:
        return session.run(None, feeds)


@pytest.mark.parametrize("wide", sorted(WIDE))
@pytest.mark.parametrize("narrow", FLOAT8 + SUB_BYTE)
def test_cast_decodes_every_code(compile_cache, narrow, wide):
    x = _all_codes(narrow)
    model = _cast_model(narrow, wide, x.shape)
    (got,) = _run(model, {"x": x}, compile_cache)
    _assert_same(got, _spec_cast(x, wide), f"Cast {narrow} -> {wide}")


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("wide", sorted(WIDE))
@pytest.mark.parametrize("narrow", FLOAT8 + SUB_BYTE)
def test_cast_encodes_bit_exact(compile_cache, narrow, wide, saturate):
    x = _probe_values(narrow, WIDE[wide])
    model = _cast_model(wide, narrow, x.shape, saturate=saturate)
    want = _spec_cast(x, narrow, saturate)
    (got,) = _run(model, {"x": x}, compile_cache)
    _assert_same(got, want, f"Cast {wide} -> {narrow}, saturate={saturate}")


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("narrow", FLOAT8 + SUB_BYTE)
def test_cast_round_trip_in_registers(compile_cache, narrow, saturate):
    """code -> float32 -> code, fused into one kernel, so the conversions meet in registers."""
    x = _all_codes(narrow)
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Cast", ["f"], ["y"], to=getattr(TensorProto, narrow), saturate=saturate)]
    t = getattr(TensorProto, narrow)
    graph = helper.make_graph(nodes, "round_trip", [helper.make_tensor_value_info("x", t, x.shape)],
                              [helper.make_tensor_value_info("y", t, x.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", NARROW_OPSET)])
    want = _spec_cast(_spec_cast(x, "FLOAT"), narrow, saturate)
    (got,) = _run(model, {"x": x}, compile_cache)
    _assert_same(got, want, f"{narrow} round trip, saturate={saturate}")


@pytest.mark.parametrize("saturate", [1, 0])
@pytest.mark.parametrize("round_mode", ["up", "down", "nearest"])
def test_cast_to_e8m0_round_modes(compile_cache, round_mode, saturate):
    x = _probe_values("FLOAT8E8M0", np.float32)
    x = np.concatenate([x, np.array([[0.75, 1.5, 1.25, 3.0, 2.0 ** 127 * 1.5, 2.0 ** -127, 2.0 ** -149]],
                                    np.float32)], axis=1)
    model = _cast_model("FLOAT", "FLOAT8E8M0", x.shape, saturate=saturate, round_mode=round_mode)
    want = _spec_cast(x, "FLOAT8E8M0", saturate, round_mode)
    (got,) = _run(model, {"x": x}, compile_cache)
    _assert_same(got, want, f"Cast -> FLOAT8E8M0 round_mode={round_mode} saturate={saturate}")


@pytest.mark.parametrize("src, dst", [("INT4", "INT8"), ("UINT4", "UINT8"), ("INT2", "INT8"), ("UINT2", "UINT8"),
                                      ("INT8", "INT4"), ("INT32", "UINT2"), ("FLOAT8E4M3FN", "FLOAT8E5M2"),
                                      ("FLOAT8E5M2", "FLOAT8E4M3FNUZ"), ("DOUBLE", "FLOAT8E4M3FN"),
                                      ("INT32", "FLOAT8E5M2"), ("FLOAT4E2M1", "INT4")])
def test_cast_between_other_types(compile_cache, src, dst):
    if src in FLOAT8 + SUB_BYTE:
        x = _all_codes(src)
    elif src == "DOUBLE":
        x = _probe_values(dst, np.float64)
    else:
        info = np.iinfo(_np_dtype(src))
        x = np.arange(max(info.min, -300), min(info.max, 300), 7).astype(_np_dtype(src)).reshape(1, -1)
    model = _cast_model(src, dst, x.shape)
    want = _spec_cast(x, dst)
    (got,) = _run(model, {"x": x}, compile_cache)
    if want.dtype.kind in "iu":
        np.testing.assert_array_equal(got, want)
    else:
        _assert_same(got, want, f"Cast {src} -> {dst}")


@pytest.mark.parametrize("dst", ["INT4", "UINT2", "FLOAT4E2M1"])
def test_packed_stores_from_many_threads(compile_cache, dst):
    """Odd rows, so bytes straddle rows, and enough work that the outer loop runs on the thread pool:
    neighbouring elements of one byte are stored by different threads."""
    x = np.random.default_rng(0).uniform(-9, 9, size=(129, 257)).astype(np.float32)
    model = _cast_model("FLOAT", dst, x.shape)
    want = _spec_cast(x, dst)
    for threads in (1, 4):
        (got,) = _run(model, {"x": x}, compile_cache, threads=threads)
        _assert_same(got, want, f"Cast -> {dst}, threads={threads}")


def test_packed_transpose_and_reshape(compile_cache):
    """Packed loads at strided positions (Transpose) and a view of packed storage (Reshape)."""
    x = np.random.default_rng(1).integers(-8, 8, size=(3, 5, 7)).astype(ml_dtypes.int4)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["y"])]
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [7, 15])
    graph = helper.make_graph(nodes, "packed", [helper.make_tensor_value_info("x", TensorProto.INT4, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.INT4, [7, 15])], [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", NARROW_OPSET)])
    (want,) = ReferenceEvaluator(model).run(None, {"x": x})
    (got,) = _run(model, {"x": x}, compile_cache)
    _assert_same(got, want, "Transpose + Reshape of int4")


def test_narrow_constants_are_packed_into_weights(compile_cache):
    """Constant outputs are copied out of the weights by a kernel: packing at compile time matches the loads."""
    consts = {"w4": np.arange(-8, 7).astype(ml_dtypes.int4).reshape(3, 5),
              "w2": (np.arange(7) % 4).astype(ml_dtypes.uint2).reshape(7, 1),
              "w8": np.linspace(-3, 3, 15).astype(ml_dtypes.float8_e4m3fn).reshape(3, 5)}
    nodes = [helper.make_node("Identity", [name], [f"y_{name}"]) for name in consts]
    nodes.append(helper.make_node("Identity", ["x"], ["y"]))
    outputs = [helper.make_tensor_value_info(f"y_{n}", helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
               for n, a in consts.items()]
    graph = helper.make_graph(nodes, "weights", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              outputs + [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
                              [onnx.numpy_helper.from_array(a, n) for n, a in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", NARROW_OPSET)])
    got = _run(model, {"x": np.zeros(2, np.float32)}, compile_cache)
    for (name, want), array in zip(consts.items(), got):
        _assert_same(array, want, name)


def test_runtime_marshals_narrow_types(compile_cache):
    """Inputs: the ml_dtypes array or its uint8 codes; outputs: uint8 codes, one element per byte."""
    x = np.arange(-8, 8).astype(ml_dtypes.int4).reshape(1, 16)
    with InferenceSession(compiled(_cast_model("INT4", "FLOAT8E5M2", x.shape), compile_cache), threads=1) as s:
        (arg,) = s.get_inputs()
        assert arg.type == "tensor(int4)" and arg.dtype == np.uint8
        assert s.get_outputs()[0].type == "tensor(float8e5m2)"
        (a,) = s.run(None, {"x": x})
        (b,) = s.run(None, {"x": x.view(np.uint8)})
        assert a.dtype == np.uint8 and a.shape == (1, 16)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a.view(ml_dtypes.float8_e5m2).astype(np.float32), x.astype(np.float32))
        with pytest.raises(InvalidInputError, match="ml_dtypes int4"):
            s.run(None, {"x": x.astype(np.int8)})


def test_cuda_backend_refuses_narrow_types():
    """The CUDA codegen has no narrow-type conversions yet: a clear refusal, not a KeyError."""
    from compiler.codegen.cuda.emitter import emit_module
    from compiler.codegen.cuda.target import CudaTarget
    from compiler.errors import UnsupportedOpError
    from compiler.frontend import load_graph
    from compiler.graph.passes import run_passes
    from compiler.lowering.driver import lower_graph
    from compiler.ops.registry import lookup

    graph = load_graph(_cast_model("FLOAT", "FLOAT8E4M3FN", (2, 3)), None, lambda op, d: lookup(op, d) is not None)
    program = lower_graph(run_passes(graph), CudaTarget())
    with pytest.raises(UnsupportedOpError, match="CUDA backend does not support element type float8_e4m3fn"):
        emit_module(program.calls, CudaTarget())
