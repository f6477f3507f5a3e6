"""Quantization ops (compiler/ops/quantize.py) against onnx's reference.

Quantized outputs are integers and must match exactly: inputs include exact
ties (x / scale = k + 0.5, which round half to even) and values far outside the
type's range (which saturate). Dequantized float32 outputs are one product of
exact values: rtol=1e-6; float16 outputs rtol=1e-3 (one float16 rounding).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers_onnx import graph_model, node_model, rand, reference

ALL_INPUTS = {"const": False, "input": True}


def _ints(shape, dtype, seed, low=None, high=None):
    info = np.iinfo(dtype)
    low = info.min if low is None else low
    high = info.max if high is None else high
    return np.random.default_rng(seed).integers(low, high, size=shape, endpoint=True).astype(dtype)


def _to_quantize(shape, seed, scale=0.5):
    """Values with exact ties after dividing by ``scale`` (a power of two), plus saturating ones."""
    rng = np.random.default_rng(seed)
    halves = rng.integers(-600, 600, size=shape) * 0.5  # x / scale = k/2: a tie for every odd k
    x = (halves * scale).astype(np.float32)
    x.flat[::7] = rng.choice([1e6, -1e6, 70000.0, -70000.0], size=x.flat[::7].shape)
    return x


def _run(check, op, inputs, values, at_run_time, attrs=None, opset=21, rtol=1e-6, expected=None):
    """One node whose first input is always fed and the others fed or constant (``at_run_time``).

    onnx's reference has no DequantizeLinear before opset 19 (its semantics did not change
    since 10): older opsets take the reference results of the same node at opset 19.
    """
    values = {k: np.asarray(v) for k, v in values.items()}
    names = list(inputs)
    feeds = {names[0]: values[names[0]]}
    consts = {}
    for name in names[1:]:
        if name:
            (feeds if at_run_time else consts)[name] = values[name]
    if expected is None and op == "DequantizeLinear" and opset < 19:
        expected = reference(node_model(op, names, feeds, consts, attrs, opset=19), feeds)
    model = node_model(op, names, feeds, consts=consts, attrs=attrs or {}, opset=opset, expected=expected)
    check(model, feeds, rtol=rtol, atol=0, expected=expected)


# --- QuantizeLinear -------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16"])
@pytest.mark.parametrize("opset", [10, 13, 19, 21, 23])
def test_quantize_per_tensor(check, dtype, opset):
    if opset < 21 and dtype.endswith("16"):
        pytest.skip("16-bit quantized types arrive in opset 21")
    x = _to_quantize((4, 9), seed=1)
    zero = _ints((), dtype, 2, *((-3, 3) if dtype.startswith("int") else (0, 6)))
    _run(check, "QuantizeLinear", ["x", "s", "z"], {"x": x, "s": np.float32(0.5), "z": zero}, True, opset=opset)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("at_run_time", ALL_INPUTS.values(), ids=ALL_INPUTS)
def test_quantize_per_axis(check, axis, at_run_time):
    x = _to_quantize((3, 4, 5), seed=3)
    n = x.shape[axis]
    scale = np.array([0.5, 0.25, 2.0, 1.0, 0.125][:n], np.float32)
    zero = _ints((n,), "int8", 4, -5, 5)
    _run(check, "QuantizeLinear", ["x", "s", "z"], {"x": x, "s": scale, "z": zero}, at_run_time,
         attrs={"axis": axis}, opset=13)


@pytest.mark.parametrize("block_size", [2, 3])
@pytest.mark.parametrize("dtype", ["uint8", "int16"])
def test_quantize_blocked(check, block_size, dtype):
    # Blocks of 3 along a dim of 7 leave a short last block.
    x = _to_quantize((4, 7), seed=5)
    blocks = -(-7 // block_size)
    scale = rand((4, blocks), seed=6, low=0.1, high=2.0)
    zero = _ints((4, blocks), dtype, 7, *((0, 9) if dtype == "uint8" else (-9, 9)))
    _run(check, "QuantizeLinear", ["x", "s", "z"], {"x": x, "s": scale, "z": zero}, True,
         attrs={"axis": 1, "block_size": block_size})


def test_quantize_without_zero_point_is_uint8(check):
    _run(check, "QuantizeLinear", ["x", "s"], {"x": _to_quantize((10,), 8), "s": np.float32(0.5)}, True, opset=13)


def test_quantize_output_dtype_without_zero_point(check):
    _run(check, "QuantizeLinear", ["x", "s"], {"x": _to_quantize((10,), 9), "s": np.float32(0.25)}, True,
         attrs={"output_dtype": 5})  # INT16


def test_quantize_float16(check):
    x = (_to_quantize((12,), 10) / 100).astype(np.float16)
    _run(check, "QuantizeLinear", ["x", "s", "z"], {"x": x, "s": np.float16(0.03), "z": np.uint16(1000)}, True)


def test_quantize_int32_input(check):
    x = _ints((3, 5), "int32", 11, -100000, 100000)
    _run(check, "QuantizeLinear", ["x", "s", "z"], {"x": x, "s": np.float32(100.0), "z": np.int8(-2)}, True,
         opset=13)


def test_quantize_precision_attribute(check):
    # precision=float (1): x (float16) and the scale are divided in float32.
    x = (_to_quantize((12,), 12) / 100).astype(np.float16)
    _run(check, "QuantizeLinear", ["x", "s", "z"], {"x": x, "s": np.float16(0.03), "z": np.int8(3)}, True,
         attrs={"precision": 1}, opset=23)


# --- DequantizeLinear -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "int32"])
def test_dequantize_per_tensor(check, dtype):
    x = _ints((3, 6), dtype, 1)
    zero = _ints((), dtype, 2, -7 if dtype.startswith("int") else 0, 7)
    _run(check, "DequantizeLinear", ["x", "s", "z"], {"x": x, "s": np.float32(0.037), "z": zero}, True)


@pytest.mark.parametrize("axis", [0, 2, -1])
@pytest.mark.parametrize("at_run_time", ALL_INPUTS.values(), ids=ALL_INPUTS)
def test_dequantize_per_axis(check, axis, at_run_time):
    x = _ints((2, 3, 4), "int8", 3)
    n = x.shape[axis]
    values = {"x": x, "s": rand((n,), seed=4, low=0.01, high=1.0), "z": _ints((n,), "int8", 5, -4, 4)}
    _run(check, "DequantizeLinear", ["x", "s", "z"], values, at_run_time, attrs={"axis": axis}, opset=13)


def test_dequantize_blocked(check):
    x = _ints((2, 5, 3), "uint8", 6)
    values = {"x": x, "s": rand((2, 3, 3), seed=7, low=0.01, high=1.0), "z": _ints((2, 3, 3), "uint8", 8, 0, 9)}
    _run(check, "DequantizeLinear", ["x", "s", "z"], values, True, attrs={"axis": 1, "block_size": 2})


def test_dequantize_without_zero_point(check):
    _run(check, "DequantizeLinear", ["x", "s"], {"x": _ints((9,), "int32", 9), "s": np.float32(1e-3)}, True,
         opset=10)


def test_dequantize_float16_scale(check):
    _run(check, "DequantizeLinear", ["x", "s", "z"],
         {"x": _ints((9,), "uint8", 10), "s": np.float16(0.0123), "z": np.uint8(128)}, True, opset=19, rtol=1e-3)


def test_dequantize_output_dtype(check):
    _run(check, "DequantizeLinear", ["x", "s", "z"],
         {"x": _ints((9,), "int8", 11), "s": np.float32(0.0123), "z": np.int8(-3)}, True,
         attrs={"output_dtype": 10}, opset=23, rtol=1e-3)  # FLOAT16


def test_quantize_dequantize_round_trip_fuses_with_producer(check):
    x = rand((4, 6), seed=12)
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    consts = {"s": np.float32(0.01), "z": np.uint8(3)}
    check(graph_model(nodes, {"x": x}, ["y"], consts, opset=19), {"x": x}, rtol=1e-6, atol=0)


# --- DynamicQuantizeLinear ------------------------------------------------------------------


@pytest.mark.parametrize("low,high", [(-3.0, 5.0), (0.5, 4.0), (-6.0, -1.0), (0.0, 0.0)], ids=str)
def test_dynamic_quantize(check, low, high):
    x = rand((5, 7), seed=13, low=low, high=high) if high > low else np.zeros((5, 7), np.float32)
    model = node_model("DynamicQuantizeLinear", ["x"], {"x": x}, outputs=("y", "scale", "zero"), opset=11)
    check(model, {"x": x}, rtol=0, atol=0)


# --- MatMulInteger and QLinearMatMul ----------------------------------------------------------


MATMUL_SHAPES = [((4, 7), (7, 5)), ((2, 3, 6), (6, 4)), ((2, 3, 5), (2, 5, 3)), ((6,), (6, 3))]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=lambda s: f"{s[0]}@{s[1]}")
@pytest.mark.parametrize("types", [("uint8", "uint8"), ("int8", "int8"), ("uint8", "int8")], ids="-".join)
@pytest.mark.parametrize("zero_points", ["none", "scalar", "per_row_col"])
def test_matmul_integer(check, shapes, types, zero_points):
    (a_shape, b_shape), (a_type, b_type) = shapes, types
    values = {"a": _ints(a_shape, a_type, 1), "b": _ints(b_shape, b_type, 2)}
    inputs = ["a", "b"]
    if zero_points != "none":
        per = zero_points == "per_row_col" and len(a_shape) == 2
        values["az"] = _ints((a_shape[0],) if per else (), a_type, 3)
        values["bz"] = _ints((b_shape[-1],) if zero_points == "per_row_col" else (), b_type, 4)
        inputs += ["az", "bz"]
    # onnx's reference broadcasts a's per-row zero points against columns: compute it here.
    a, b = values["a"].astype(np.int32), values["b"].astype(np.int32)
    if zero_points != "none":
        a -= values["az"].reshape(-1, 1) if values["az"].ndim else values["az"]
        b -= values["bz"]
    _run(check, "MatMulInteger", inputs, values, True, opset=10, expected=[(a @ b).astype(np.int32)])


@pytest.mark.parametrize("shapes", MATMUL_SHAPES[:3], ids=lambda s: f"{s[0]}@{s[1]}")
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("scale_type", ["float32", "float16"])
@pytest.mark.parametrize("at_run_time", ALL_INPUTS.values(), ids=ALL_INPUTS)
def test_qlinear_matmul(check, shapes, dtype, scale_type, at_run_time):
    a_shape, b_shape = shapes
    scales = {k: np.array(v, scale_type) for k, v in (("as", 0.02), ("bs", 0.013), ("ys", 0.17))}
    values = {"a": _ints(a_shape, dtype, 1), "b": _ints(b_shape, dtype, 2), **scales,
              "az": _ints((), dtype, 3, 0, 9), "bz": _ints((), dtype, 4, 0, 9), "yz": _ints((), dtype, 5, 0, 9)}
    _run(check, "QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], values, at_run_time)


def test_qlinear_matmul_per_column(check):
    values = {"a": _ints((3, 8), "uint8", 1), "as": np.float32(0.02), "az": np.uint8(7),
              "b": _ints((8, 5), "uint8", 2), "bs": rand((5,), seed=3, low=0.005, high=0.02),
              "bz": _ints((5,), "uint8", 4, 100, 150), "ys": np.float32(0.2), "yz": np.uint8(20)}
    _run(check, "QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], values, True, opset=10)


# --- QLinearConv ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("at_run_time", ALL_INPUTS.values(), ids=ALL_INPUTS)
def test_qlinear_conv(check, dtype, per_channel, at_run_time):
    m = 6
    values = {"x": _ints((1, 4, 7, 6), dtype, 1), "xs": np.float32(0.05), "xz": _ints((), dtype, 2, 0, 9),
              "w": _ints((m, 2, 3, 3), dtype, 3), "ys": np.float32(1.5), "yz": _ints((), dtype, 4, 0, 9),
              "ws": rand((m,), seed=5, low=0.002, high=0.01) if per_channel else np.float32(0.004),
              "wz": _ints((m,) if per_channel and dtype == "uint8" else (), dtype, 6, 0, 9),
              "b": _ints((m,), "int32", 7, -5000, 5000)}
    attrs = {"group": 2, "pads": [1, 0, 2, 1], "strides": [2, 1]}
    _run(check, "QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], values, at_run_time,
         attrs=attrs, opset=10)


def test_qlinear_conv_without_bias_1d(check):
    values = {"x": _ints((2, 3, 11), "uint8", 1), "xs": np.float32(0.05), "xz": np.uint8(128),
              "w": _ints((4, 3, 3), "uint8", 3), "ws": np.float32(0.01), "wz": np.uint8(120),
              "ys": np.float32(0.9), "yz": np.uint8(100)}
    _run(check, "QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], values, False,
         attrs={"auto_pad": "SAME_UPPER", "strides": [2]}, opset=10)


@pytest.mark.parametrize("narrow, saturate", [("FLOAT8E4M3FN", 1), ("FLOAT8E4M3FN", 0), ("FLOAT8E5M2", 1),
                                              ("FLOAT8E5M2FNUZ", 0), ("FLOAT4E2M1", 1), ("INT4", 1), ("UINT2", 1)])
def test_quantize_dequantize_narrow_types(compile_cache, narrow, saturate):
    """QuantizeLinear to float8/float4/int4/int2 codes and back, bit-exact against onnx's reference."""
    from onnx import TensorProto, numpy_helper

    from helpers_onnx import compiled
    from runtime_stub import InferenceSession

    elem = getattr(TensorProto, narrow)
    zero = numpy_helper.from_array(np.zeros((), helper.tensor_dtype_to_np_dtype(elem)), "z")
    scale = numpy_helper.from_array(np.array(0.25, np.float32), "s")
    attrs = {} if narrow.startswith(("INT", "UINT")) else {"saturate": saturate}
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 9])],
                              [helper.make_tensor_value_info("q", elem, [4, 9]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 9])], [scale, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 25)])
    x = _to_quantize((4, 9), seed=3, scale=0.25)
    want_q, want_y = reference(model, {"x": x})
    got_q, got_y = InferenceSession(str(compiled(model, compile_cache))).run(None, {"x": x})
    np.testing.assert_array_equal(got_q.view(want_q.dtype).astype(np.float32), want_q.astype(np.float32))
    np.testing.assert_array_equal(got_y, want_y)
