"""Elementwise ops (compiler/ops/elementwise.py, Cast, standalone BatchNormalization) against onnx's reference.

Shapes are chosen so the default schedule's vectorized loop has a tail (37 is
not a multiple of any vector width) and so broadcasting reads size-1 dims,
trailing-aligned lower ranks and scalars. Tolerance: float32 rtol=1e-4,
atol=1e-5, except where a case says why it needs more.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, rand

SHAPE = (3, 37)

# op → (attrs, input range): ranges keep inputs inside each function's domain and away from
# kinks where float32 rounding could flip a branch (e.g. Log near 0).
UNARY = {
    "Relu": ({}, None), "Sigmoid": ({}, None), "Tanh": ({}, None), "Exp": ({}, None), "Abs": ({}, None),
    "Neg": ({}, None), "Floor": ({}, None), "Ceil": ({}, None), "Erf": ({}, None), "Softsign": ({}, None),
    "Softplus": ({}, None), "HardSwish": ({}, (-5.0, 5.0)),
    "Log": ({}, (0.1, 10.0)), "Sqrt": ({}, (0.0, 10.0)), "Reciprocal": ({}, (0.5, 4.0)),
    "LeakyRelu": ({"alpha": 0.2}, None), "Elu": ({"alpha": 0.7}, None),
    "HardSigmoid": ({"alpha": 0.3, "beta": 0.4}, (-5.0, 5.0)),
}


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary(check, op):
    attrs, bounds = UNARY[op]
    low, high = bounds or (None, None)
    x = rand(SHAPE, seed=1, low=low, high=high) * (1 if bounds else 3)
    check(node_model(op, ["x"], {"x": x}, attrs=attrs), {"x": x})


@pytest.mark.parametrize("op", ["LeakyRelu", "Elu"])
def test_unary_default_alpha(check, op):
    x = rand((2, 3, 5), seed=2)
    check(node_model(op, ["x"], {"x": x}), {"x": x})


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset20(check, approximate):
    x = rand(SHAPE, seed=3) * 3
    check(node_model("Gelu", ["x"], {"x": x}, attrs={"approximate": approximate}, opset=20), {"x": x})


BROADCASTS = [
    ((3, 37), (3, 37)),
    ((2, 3, 4), (4,)),
    ((3, 1, 5), (4, 1)),
    ((2, 1, 4), (1, 3, 1)),
    ((1,), (2, 3)),
    ((), (3, 4)),
    ((5, 1), ()),
]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("shapes", BROADCASTS, ids=lambda s: f"{s[0]}x{s[1]}")
def test_arithmetic_broadcast(check, op, shapes):
    a = rand(shapes[0], seed=4)
    b = rand(shapes[1], seed=5, low=0.5, high=2.0) if op == "Div" else rand(shapes[1], seed=5)
    check(node_model(op, ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b})


def test_binary_with_constant_operand(check):
    a = rand((4, 9), seed=6)
    b = rand((9,), seed=7)
    check(node_model("Mul", ["a", "b"], {"a": a}, consts={"b": b}), {"a": a})


def test_pow(check):
    # Pow goes through llvm.pow: allow a few ulps more than the default.
    a = rand((3, 17), seed=8, low=0.1, high=3.0)
    b = rand((17,), seed=9, low=-2.0, high=2.0)
    check(node_model("Pow", ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b}, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("exponent", [2.0, 3.0, 4.0])
def test_pow_by_a_small_integer_constant(check, exponent):
    # Products, not a powf call per lane (within 2 ulp of pow): negative bases, zeros, infs, NaN, overflow.
    a = np.concatenate([rand((40,), seed=11, low=-3.0, high=3.0),
                        np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e20, -1e-20, 1.0], np.float32)])
    check(node_model("Pow", ["a", "b"], {"a": a}, consts={"b": np.array(exponent, np.float32)}), {"a": a},
          rtol=3e-7, atol=0)


def test_pow_integer_exponent_type(check):
    # Pow-12+: the exponent may have another type than the base.
    a = rand((2, 9), seed=10, low=0.5, high=2.0)
    b = np.array([2, 3, 1], dtype=np.int64)[np.arange(9) % 3]
    check(node_model("Pow", ["a", "b"], {"a": a}, consts={"b": b}), {"a": a})


@pytest.mark.parametrize("exponent_dtype", [np.int32, np.float32])
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_pow_integer_base(check, dtype, exponent_dtype):
    a = np.arange(-6, 6, dtype=dtype).reshape(3, 4)
    b = np.array([0, 1, 2, 3], dtype=exponent_dtype)
    check(node_model("Pow", ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b})


def test_prelu_opset6_slope_is_per_channel(check):
    # PRelu-6 applies a 1-D slope of C values along axis 1, not numpy-style along the last axis.
    x = rand((2, 3, 4), seed=13)
    slope = np.array([0.1, 0.2, 0.3], np.float32)
    expected = np.where(x < 0, x * slope[:, None], x)
    check(node_model("PRelu", ["x", "s"], {"x": x}, consts={"s": slope}, opset=6), {"x": x}, expected=[expected])


@pytest.mark.parametrize("slope_shape", [(1,), (5, 1, 1), (5, 4, 7)])
def test_prelu(check, slope_shape):
    x = rand((2, 5, 4, 7), seed=11)
    slope = rand(slope_shape, seed=12, low=0.0, high=0.5)
    check(node_model("PRelu", ["x", "s"], {"x": x}, consts={"s": slope}), {"x": x})


@pytest.mark.parametrize("op", ["Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"])
def test_comparisons(check, op):
    # Small integers stored as floats, so equal pairs actually occur.
    a = np.round(rand((4, 13), seed=13) * 2).astype(np.float32)
    b = np.round(rand((13,), seed=14) * 2).astype(np.float32)
    check(node_model(op, ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b})


def test_and(check):
    a = rand((3, 19), seed=15) > 0
    b = rand((19,), seed=16) > 0
    check(node_model("And", ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b})


def test_where_broadcast(check):
    c = rand((3, 1, 11), seed=17) > 0
    a = rand((4, 11), seed=18)
    b = rand((1,), seed=19)
    check(node_model("Where", ["c", "a", "b"], {"c": c, "a": a, "b": b}), {"c": c, "a": a, "b": b})


@pytest.mark.parametrize("op", ["Sum", "Mean", "Max", "Min"])
@pytest.mark.parametrize("shapes", [[(3, 7)], [(3, 7), (3, 7)], [(2, 3, 7), (7,), (3, 1)], [(5, 1), (1, 6), (6,), ()]],
                         ids=lambda s: "_".join("x".join(map(str, t)) or "scalar" for t in s))
def test_variadic(check, op, shapes):
    feeds = {f"x{k}": rand(s, seed=20 + k) for k, s in enumerate(shapes)}
    expected = None
    if op == "Mean" and len(shapes) > 1:
        # onnx's reference Mean accumulates in place into the first input, so it fails when that
        # input is not already the broadcast shape: compute the mean with numpy instead.
        expected = [(sum(np.broadcast_arrays(*feeds.values())) / len(feeds)).astype(np.float32)]
    check(node_model(op, list(feeds), feeds, expected=expected), feeds, expected=expected)


@pytest.mark.parametrize("op,dtype", [("Add", "int64"), ("Mul", "int32"), ("Sub", "int32"), ("Max", "int32"),
                                      ("Min", "int64")])
def test_integer_binary(check, op, dtype):
    a = (rand((3, 11), seed=30) * 50).astype(dtype)
    b = (rand((11,), seed=31) * 50).astype(dtype)
    check(node_model(op, ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b})


@pytest.mark.parametrize("op", ["Abs", "Neg", "Relu"])
def test_integer_unary(check, op):
    x = (rand((4, 9), seed=32) * 50).astype(np.int32)
    check(node_model(op, ["x"], {"x": x}), {"x": x})


# --- Clip: attributes before opset 11, optional inputs after ---------------------------------


@pytest.mark.parametrize("attrs", [{"min": -0.5, "max": 0.7}, {"min": -0.5}, {"max": 0.3}, {}])
def test_clip_opset6_attributes(check, attrs):
    x = rand(SHAPE, seed=40)
    check(node_model("Clip", ["x"], {"x": x}, attrs=attrs, opset=6), {"x": x})


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("bounds", [(-0.5, 0.7), (-0.5, None), (None, 0.3), (None, None)],
                         ids=["both", "min_only", "max_only", "none"])
def test_clip_inputs(check, opset, bounds):
    x = rand(SHAPE, seed=41)
    lo, hi = bounds
    consts = {}
    inputs = ["x", "", ""]
    if lo is not None:
        consts["lo"] = np.array(lo, dtype=np.float32)
        inputs[1] = "lo"
    if hi is not None:
        consts["hi"] = np.array(hi, dtype=np.float32)
        inputs[2] = "hi"
    while inputs and inputs[-1] == "":
        inputs.pop()
    check(node_model("Clip", inputs, {"x": x}, consts=consts, opset=opset), {"x": x})


def test_clip_runtime_bounds(check):
    # min and max as graph inputs (not constants): still elementwise scalars.
    x = rand(SHAPE, seed=42)
    lo, hi = np.array(-0.25, np.float32), np.array(0.5, np.float32)
    feeds = {"x": x, "lo": lo, "hi": hi}
    check(node_model("Clip", ["x", "lo", "hi"], feeds, opset=13), feeds)


# --- Cast and BatchNormalization ----------------------------------------------------------


@pytest.mark.parametrize("src,dst", [("float32", "int32"), ("int64", "float32"), ("float32", "float64"),
                                     ("int32", "int64"), ("float32", "bool"), ("bool", "float32")])
def test_cast(check, src, dst):
    from onnx.helper import np_dtype_to_tensor_dtype

    x = rand((3, 19), seed=43) * 10
    x = x > 0 if src == "bool" else x.astype(src)
    check(node_model("Cast", ["x"], {"x": x}, attrs={"to": np_dtype_to_tensor_dtype(np.dtype(dst))}), {"x": x})


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (3, 4), (1, 6, 9)])
def test_batchnorm_standalone(check, shape):
    c = shape[1]
    x = rand(shape, seed=44)
    consts = {"s": rand((c,), seed=45), "b": rand((c,), seed=46), "m": rand((c,), seed=47),
              "v": rand((c,), seed=48, low=0.5, high=2.0)}
    check(node_model("BatchNormalization", ["x", "s", "b", "m", "v"], {"x": x}, consts=consts,
                     attrs={"epsilon": 1e-3}), {"x": x})


def test_batchnorm_with_run_time_statistics(check):
    c = 5
    feeds = {"x": rand((2, c, 3, 4), seed=49), "s": rand((c,), seed=50), "b": rand((c,), seed=51),
             "m": rand((c,), seed=52), "v": rand((c,), seed=53, low=0.5, high=2.0)}
    check(node_model("BatchNormalization", ["x", "s", "b", "m", "v"], feeds), feeds)


# --- fused chains -------------------------------------------------------------------------


def test_elementwise_chain_with_broadcast(check):
    from onnx import helper

    x = rand((2, 3, 4, 21), seed=50)
    consts = {"b": rand((21,), seed=51), "s": rand((3, 1, 1), seed=52), "t": rand((1, 21), seed=53)}
    nodes = [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Mul", ["a", "s"], ["m"]),
             helper.make_node("Sigmoid", ["m"], ["g"]), helper.make_node("Sub", ["g", "t"], ["d"]),
             helper.make_node("Relu", ["d"], ["y"])]
    from helpers_onnx import graph_model

    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x})


def test_elementwise_chain_with_two_readers(check):
    # ``a`` feeds two nodes, so it cannot fuse into one of them alone.
    from onnx import helper

    from helpers_onnx import graph_model

    x = rand((5, 33), seed=54)
    nodes = [helper.make_node("Tanh", ["x"], ["a"]), helper.make_node("Exp", ["a"], ["e"]),
             helper.make_node("Mul", ["a", "e"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["y"]), {"x": x})


def test_intermediate_also_a_graph_output(check):
    from onnx import helper

    from helpers_onnx import graph_model

    x = rand((3, 17), seed=55)
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["a", "y"]), {"x": x})


@pytest.mark.parametrize("threads", [1, 2])
def test_elementwise_large_threaded(check, threads):
    # Big enough (> MIN_PARALLEL_WORK elements) for the outer loop to run on the thread pool.
    x = rand((67, 1031), seed=56)
    b = rand((1031,), seed=57)
    check(node_model("Add", ["x", "b"], {"x": x}, consts={"b": b}), {"x": x}, threads=(threads,))
