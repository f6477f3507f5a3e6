"""Integer matmuls on the contraction schedule (4-way uint8 x int8 dot products, VNNI on this host).

MatMulInteger and QLinearMatMul lower to ``sum a'b'`` of a uint8 ``a'`` and an int8 ``b'`` with the zero
points as compensation terms (``compiler/ops/quantize.py integer_matmul``); the schedule packs b' into
words of four reduction steps (``compiler/schedule/contraction.py dot_product_form``). Results are
integers and must match exactly. The cases aim at what that can get wrong: reductions that are not a
multiple of 4 (the last word overlaps the one before it), row and column tails of the register tile,
zero points at the ends of their types and per row / per column (every compensation term is then
large and different per element), each pair of signednesses (the +-128 rebias), constant weights
(packed at compile time) and run-time ones (packed per call), and a symbolic row count.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from helpers_onnx import check_model, node_model, reference, run_compiled


def _ints(shape, dtype, seed, low=None, high=None):
    info = np.iinfo(dtype)
    low = info.min if low is None else low
    high = info.max if high is None else high
    return np.random.default_rng(seed).integers(low, high, size=shape, endpoint=True).astype(dtype)


def _expected(a, b, az=None, bz=None):
    """MatMulInteger's result; a's zero point is per row ([M]) or scalar, b's per column ([N]) or scalar."""
    a, b = a.astype(np.int32), b.astype(np.int32)
    if az is not None:
        a = a - (az.astype(np.int32).reshape(-1, 1) if az.ndim else az.astype(np.int32))
    if bz is not None:
        b = b - bz.astype(np.int32)
    return (a @ b).astype(np.int32)


def _matmul_integer(check, a, b, az=None, bz=None, weights=True):
    feeds, consts = {"a": a}, {}
    (consts if weights else feeds)["b"] = b
    inputs = ["a", "b"]
    if az is not None or bz is not None:
        inputs += ["az" if az is not None else "", "bz" if bz is not None else ""]
        for name, v in (("az", az), ("bz", bz)):
            if v is not None:
                consts[name] = v
    expected = [_expected(a, b, az, bz)]
    model = node_model("MatMulInteger", inputs, feeds, consts=consts, opset=10, expected=expected)
    check(model, feeds, rtol=0, atol=0, expected=expected)


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (3, 2, 5), (5, 3, 17), (15, 5, 33), (29, 13, 47), (14, 64, 32),
                                     (33, 67, 70)], ids=lambda v: str(v))
@pytest.mark.parametrize("types", [("uint8", "int8"), ("int8", "int8"), ("uint8", "uint8"), ("int8", "uint8")],
                         ids="-".join)
def test_constant_weights_tails_and_types(check, m, k, n, types):
    a, b = _ints((m, k), types[0], 1), _ints((k, n), types[1], 2)
    _matmul_integer(check, a, b, _ints((), types[0], 3), _ints((), types[1], 4))


@pytest.mark.parametrize("a_type, b_type, az, bz", [
    ("uint8", "int8", 0, -128), ("uint8", "int8", 255, 127), ("uint8", "int8", 255, -128),
    ("int8", "int8", -128, 127), ("int8", "int8", 127, -128), ("uint8", "uint8", 255, 0), ("uint8", "uint8", 0, 255),
    ("int8", "uint8", -128, 255)])
def test_extreme_zero_points(check, a_type, b_type, az, bz):
    # Extreme operands too: every product and every compensation term is as large as the types allow.
    a = _ints((17, 37), a_type, 5)
    b = _ints((37, 35), b_type, 6)
    a.flat[::3] = np.iinfo(a_type).max
    b.flat[::5] = np.iinfo(b_type).min
    _matmul_integer(check, a, b, np.array(az, a_type), np.array(bz, b_type))


@pytest.mark.parametrize("types", [("uint8", "int8"), ("int8", "uint8")], ids="-".join)
@pytest.mark.parametrize("weights", [True, False], ids=["const_b", "input_b"])
def test_per_row_and_per_column_zero_points(check, types, weights):
    m, k, n = 19, 21, 37
    a, b = _ints((m, k), types[0], 7), _ints((k, n), types[1], 8)
    _matmul_integer(check, a, b, _ints((m,), types[0], 9), _ints((n,), types[1], 10), weights)


@pytest.mark.parametrize("which", ["a", "b"])
def test_one_zero_point(check, which):
    a, b = _ints((9, 10), "uint8", 11), _ints((10, 33), "int8", 12)
    az = _ints((), "uint8", 13) if which == "a" else None
    bz = _ints((33,), "int8", 14) if which == "b" else None
    _matmul_integer(check, a, b, az, bz)


@pytest.mark.parametrize("weights", [True, False], ids=["const_b", "input_b"])
def test_run_time_weights_large_enough_to_pack(check, weights):
    # Big enough that a run-time b is packed into words per call (not only at compile time).
    a, b = _ints((40, 130), "uint8", 15), _ints((130, 96), "int8", 16)
    _matmul_integer(check, a, b, np.array(128, np.uint8), np.array(-3, np.int8), weights)


@pytest.mark.parametrize("a_shape, b_shape", [((2, 5, 12), (12, 33)), ((3, 7, 9), (3, 9, 17)), ((6,), (6, 20)),
                                              ((2, 4, 8), (8,))], ids=str)
def test_batched(check, a_shape, b_shape):
    a, b = _ints(a_shape, "uint8", 17), _ints(b_shape, "int8", 18)
    az, bz = np.array(3, np.uint8), np.array(-7, np.int8)
    feeds = {"a": a}
    expected = [((a.astype(np.int32) - 3) @ (b.astype(np.int32) + 7)).astype(np.int32)]
    model = node_model("MatMulInteger", ["a", "b", "az", "bz"], feeds, consts={"b": b, "az": az, "bz": bz}, opset=10,
                       expected=expected)
    check(model, feeds, rtol=0, atol=0, expected=expected)


def test_accumulation_wraps_like_int32(compile_cache):
    # 2^17 terms of 255 * -128: the int32 sum wraps, in the reference (numpy int32) as in tilec.
    k = 1 << 17
    a, b = np.full((2, k), 255, np.uint8), np.full((k, 16), -128, np.int8)
    b[:7, :] = 5
    feeds = {"a": a}
    expected = [_expected(a, b, np.array(1, np.uint8), np.array(2, np.int8))]
    model = node_model("MatMulInteger", ["a", "b", "az", "bz"], feeds,
                       consts={"b": b, "az": np.array(1, np.uint8), "bz": np.array(2, np.int8)}, opset=10,
                       expected=expected)
    check_model(model, feeds, rtol=0, atol=0, expected=expected, cache_dir=compile_cache)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("weights", [True, False], ids=["const_b", "input_b"])
def test_qlinear_matmul_saturates_and_rounds(check, dtype, weights):
    m, k, n = 13, 23, 40
    centre = 128 if dtype == "uint8" else 0
    values = {"a": _ints((m, k), dtype, 19), "as": np.float32(0.05), "az": np.array(centre + 2, dtype),
              "b": _ints((k, n), dtype, 21), "bs": np.float32(0.04), "bz": np.array(centre - 3, dtype),
              # Results spread over about 2.5 times the type's range: many saturate at either end, the rest round.
              "ys": np.float32(0.2), "yz": np.array(centre, dtype)}
    names = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]
    feeds = {"a": values["a"]} | ({"b": values["b"]} if not weights else {})
    consts = {k: v for k, v in values.items() if k not in feeds}
    model = node_model("QLinearMatMul", names, feeds, consts=consts, opset=10)
    y = reference(model, feeds)[0]
    info = np.iinfo(dtype)
    assert (y == info.min).any() and (y == info.max).any() and ((y > info.min) & (y < info.max)).any()
    check(model, feeds, rtol=0, atol=0)


def test_qlinear_matmul_per_column_weights(check):
    k, n = 18, 35
    values = {"a": _ints((6, k), "uint8", 24), "as": np.float32(0.02), "az": np.uint8(255),
              "b": _ints((k, n), "int8", 25), "bs": np.linspace(0.002, 0.02, n, dtype=np.float32),
              "bz": _ints((n,), "int8", 26), "ys": np.float32(0.3), "yz": np.uint8(3)}
    names = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]
    feeds = {"a": values["a"]}
    model = node_model("QLinearMatMul", names, feeds, consts={k: v for k, v in values.items() if k != "a"}, opset=21)
    check(model, feeds, rtol=0, atol=0)


def test_symbolic_rows(compile_cache):
    k, n = 30, 45
    b = _ints((k, n), "int8", 27)
    az, bz = np.array(200, np.uint8), np.array(-100, np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.UINT8, ["rows", k])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, ["rows", n])],
                              [helper.make_tensor(name, dt, v.shape, v.reshape(-1).tolist())
                               for name, dt, v in (("b", TensorProto.INT8, b), ("az", TensorProto.UINT8, az),
                                                   ("bz", TensorProto.INT8, bz))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 8
    for rows in (1, 5, 14, 15, 33, 61):
        a = _ints((rows, k), "uint8", rows)
        got = run_compiled(model, {"a": a}, cache_dir=compile_cache)[0]
        np.testing.assert_array_equal(got, _expected(a, b, az, bz), err_msg=f"rows={rows}")


# --- ConvInteger and QLinearConv ----------------------------------------------------------------


def _conv_integer(check, x, w, xz, wz, attrs, weights=True):
    feeds, consts = {"x": x}, {"xz": xz, "wz": wz}
    (consts if weights else feeds)["w"] = w
    model = node_model("ConvInteger", ["x", "w", "xz", "wz"], feeds, consts=consts, attrs=attrs, opset=10)
    check(model, feeds, rtol=0, atol=0)


@pytest.mark.parametrize("channels", [1, 3, 4, 6, 16])
@pytest.mark.parametrize("types", [("uint8", "int8"), ("int8", "int8"), ("uint8", "uint8"), ("int8", "uint8")],
                         ids="-".join)
def test_conv_integer_channels_and_types(check, channels, types):
    # Words run over the input channels: fewer than 4, not a multiple of 4, and whole words; the pads
    # hold x's zero point, which must contribute nothing whatever it is.
    x = _ints((2, channels, 9, 11), types[0], 30)
    w = _ints((13, channels, 3, 3), types[1], 31)
    xz, wz = _ints((), types[0], 32), _ints((), types[1], 33)
    _conv_integer(check, x, w, xz, wz, {"pads": [1, 2, 1, 0]})


@pytest.mark.parametrize("xz, wz", [(0, -128), (255, 127), (255, 0), (0, 0)])
def test_conv_integer_extreme_zero_points(check, xz, wz):
    x, w = _ints((1, 8, 10, 10), "uint8", 34), _ints((33, 8, 3, 3), "int8", 35)
    x.flat[::3] = 255
    w.flat[::5] = -128
    _conv_integer(check, x, w, np.array(xz, np.uint8), np.array(wz, np.int8), {"pads": [1, 1, 1, 1]})


@pytest.mark.parametrize("attrs", [{"strides": [2, 2], "pads": [1, 1, 1, 1]}, {"dilations": [2, 1]},
                                   {"group": 2, "pads": [0, 1, 0, 1]}, {"group": 8}], ids=str)
@pytest.mark.parametrize("weights", [True, False], ids=["const_w", "input_w"])
def test_conv_integer_geometry(check, attrs, weights):
    group = attrs.get("group", 1)
    x, w = _ints((1, 8, 12, 13), "uint8", 36), _ints((16, 8 // group, 3, 3), "int8", 37)
    _conv_integer(check, x, w, np.array(7, np.uint8), np.array(-2, np.int8), attrs, weights)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("weights", [True, False], ids=["const_w", "input_w"])
def test_qlinear_conv_per_channel_saturates(check, dtype, weights):
    m, c = 20, 12
    centre = 128 if dtype == "uint8" else 0
    values = {"x": _ints((1, c, 8, 9), dtype, 38), "xs": np.float32(0.05), "xz": np.array(centre + 5, dtype),
              "w": _ints((m, c, 3, 3), "int8", 39), "ws": np.linspace(0.002, 0.02, m, dtype=np.float32),
              "wz": np.zeros((m,), np.int8), "ys": np.float32(0.6), "yz": np.array(centre - 4, dtype),
              "b": _ints((m,), "int32", 40, -20000, 20000)}
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"]
    feeds = {"x": values["x"]} | ({"w": values["w"]} if not weights else {})
    model = node_model("QLinearConv", names, feeds, consts={k: v for k, v in values.items() if k not in feeds},
                       attrs={"pads": [1, 1, 1, 1]}, opset=10)
    y = reference(model, feeds)[0]
    info = np.iinfo(dtype)
    assert (y == info.min).any() and (y == info.max).any() and ((y > info.min) & (y < info.max)).any()
    check(model, feeds, rtol=0, atol=0)


def test_conv_integer_symbolic_batch(compile_cache):
    # A symbolic batch: one image per strip-mined block, the whole input packed into channel words first.
    x_shape, w = (8, 7, 6), _ints((5, 8, 3, 3), "int8", 41)
    xz, wz = np.array(250, np.uint8), np.array(-1, np.int8)
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, ["batch", *x_shape])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, ["batch", 5, 7, 6])],
                              [helper.make_tensor(name, dt, v.shape, v.reshape(-1).tolist())
                               for name, dt, v in (("w", TensorProto.INT8, w), ("xz", TensorProto.UINT8, xz),
                                                   ("wz", TensorProto.INT8, wz))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 10)])
    model.ir_version = 8
    for batch in (1, 3):
        x = _ints((batch, *x_shape), "uint8", 42 + batch)
        fixed = node_model("ConvInteger", ["x", "w", "xz", "wz"], {"x": x}, consts={"w": w, "xz": xz, "wz": wz},
                           attrs={"pads": [1, 1, 1, 1]}, opset=10)
        got = run_compiled(model, {"x": x}, cache_dir=compile_cache)[0]
        np.testing.assert_array_equal(got, reference(fixed, {"x": x})[0], err_msg=f"batch={batch}")
