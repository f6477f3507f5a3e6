"""Conv (compiler/ops/conv.py) against onnx's reference: 1-D/2-D/3-D, strides, pads, dilations, groups, auto_pad.

Odd spatial sizes and channel counts leave tails in the register-tiled schedule
(rows and lanes that do not divide evenly). Tolerance: float32 rtol=1e-4 with
atol=1e-4, looser than the default atol=1e-5 because each output sums up to a
few hundred products of N(0,1) values: near-zero results come out of large
cancelling partial sums, and a different (tiled, FMA-contracted) summation order
moves them by ~sqrt(K) ulps of the partial sums.
"""

from __future__ import annotations

import pytest
from onnx import helper

from helpers_onnx import graph_model, node_model, rand

ATOL = 1e-4


def _conv_case(check, x_shape, w_shape, attrs=None, bias=True, threads=(1,), as_input_bias=False):
    x = rand(x_shape, seed=1)
    consts = {"w": rand(w_shape, seed=2)}
    inputs = ["x", "w"]
    if bias:
        consts["b"] = rand((w_shape[0],), seed=3)
        inputs.append("b")
    check(node_model("Conv", inputs, {"x": x}, consts=consts, attrs=attrs or {}), {"x": x}, atol=ATOL,
          threads=threads)


CASES_2D = {
    "3x3_pad1": ((1, 3, 9, 11), (8, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "3x3_nopad": ((2, 4, 7, 7), (5, 4, 3, 3), {}),
    "stride2": ((1, 3, 13, 12), (6, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "stride_2x3_asym_pads": ((1, 2, 11, 13), (4, 2, 3, 2), {"strides": [2, 3], "pads": [0, 1, 2, 0]}),
    "dilation2": ((1, 3, 12, 10), (4, 3, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    "dilation_2x1_stride2": ((1, 2, 15, 9), (3, 2, 3, 3), {"dilations": [2, 1], "strides": [2, 1]}),
    "groups2": ((1, 4, 8, 9), (6, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}),
    "groups3": ((2, 6, 7, 7), (9, 2, 3, 3), {"group": 3}),
    "depthwise": ((1, 8, 10, 11), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    "depthwise_multiplier2": ((1, 4, 9, 9), (8, 1, 3, 3), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "depthwise_stride2_5x5": ((1, 16, 13, 13), (16, 1, 5, 5), {"group": 16, "strides": [2, 2], "pads": [2, 2, 2, 2]}),
    "1x1": ((1, 16, 7, 9), (24, 16, 1, 1), {}),
    "1x1_stride2": ((1, 8, 9, 9), (12, 8, 1, 1), {"strides": [2, 2]}),
    "7x7_stride2_pad3": ((1, 3, 23, 21), (10, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    "large_out_channels": ((1, 16, 14, 14), (48, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    "many_out_channels_odd": ((1, 8, 6, 5), (67, 8, 3, 3), {"pads": [1, 1, 1, 1]}),
    "wide_row": ((1, 2, 5, 67), (3, 2, 3, 3), {"pads": [1, 1, 1, 1]}),
    "kernel_equals_input": ((1, 3, 5, 5), (4, 3, 5, 5), {}),
    "batch3": ((3, 3, 6, 6), (5, 3, 3, 3), {"pads": [1, 0, 1, 0]}),
}


@pytest.mark.parametrize("name", sorted(CASES_2D))
def test_conv2d(check, name):
    x_shape, w_shape, attrs = CASES_2D[name]
    _conv_case(check, x_shape, w_shape, attrs)


@pytest.mark.parametrize("name", ["3x3_pad1", "groups2", "1x1"])
def test_conv2d_without_bias(check, name):
    x_shape, w_shape, attrs = CASES_2D[name]
    _conv_case(check, x_shape, w_shape, attrs, bias=False)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("strides", [(1, 1), (2, 2), (3, 2)], ids=lambda s: f"s{s[0]}{s[1]}")
def test_conv2d_auto_pad(check, auto_pad, strides):
    # 4x4 kernels: an even total pad, split unevenly, tells SAME_UPPER from SAME_LOWER.
    _conv_case(check, (1, 3, 10, 11), (5, 3, 4, 4), {"auto_pad": auto_pad, "strides": list(strides)})


CASES_1D = {
    "k3_pad1": ((2, 3, 17), (5, 3, 3), {"pads": [1, 1]}),
    "k5_stride2_dil2": ((1, 4, 31), (6, 4, 5), {"strides": [2], "dilations": [2], "pads": [2, 3]}),
    "groups": ((1, 6, 19), (6, 2, 3), {"group": 3}),
    "same_upper": ((1, 2, 9), (3, 2, 4), {"auto_pad": "SAME_UPPER", "strides": [2]}),
}


@pytest.mark.parametrize("name", sorted(CASES_1D))
def test_conv1d(check, name):
    x_shape, w_shape, attrs = CASES_1D[name]
    _conv_case(check, x_shape, w_shape, attrs)


CASES_3D = {
    "k3_pad1": ((1, 2, 5, 6, 7), (4, 2, 3, 3, 3), {"pads": [1, 1, 1, 1, 1, 1]}),
    "stride_dil": ((1, 3, 7, 8, 9), (5, 3, 2, 3, 2), {"strides": [2, 1, 2], "dilations": [1, 2, 2]}),
    "groups": ((1, 4, 4, 5, 5), (4, 2, 2, 2, 2), {"group": 2, "auto_pad": "SAME_LOWER"}),
}


@pytest.mark.parametrize("name", sorted(CASES_3D))
def test_conv3d(check, name):
    x_shape, w_shape, attrs = CASES_3D[name]
    _conv_case(check, x_shape, w_shape, attrs)


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_threaded(check, threads):
    # Enough work for the outer loop to go parallel.
    _conv_case(check, (2, 16, 20, 20), (40, 16, 3, 3), {"pads": [1, 1, 1, 1]}, threads=(threads,))


def test_conv_without_kernel_shape_attr_and_with_it(check):
    _conv_case(check, (1, 3, 8, 8), (4, 3, 3, 3), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})


# --- fused chains -------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_add_relu(check, threads):
    x = rand((1, 8, 11, 13), seed=4)
    consts = {"w": rand((36, 8, 3, 3), seed=5), "bias": rand((36, 1, 1), seed=6)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "bias"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x}, atol=ATOL, threads=(threads,))


def test_conv_add_residual_relu(check):
    # The Add's other operand is a graph input of the output's shape (a residual connection).
    x = rand((1, 4, 9, 9), seed=7)
    r = rand((1, 6, 9, 9), seed=8)
    consts = {"w": rand((6, 4, 3, 3), seed=9), "b": rand((6,), seed=10)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "r"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    check(graph_model(nodes, {"x": x, "r": r}, ["y"], consts), {"x": x, "r": r}, atol=ATOL)


def test_conv_batchnorm_relu(check):
    # BatchNormalization after a Conv folds into it (graph pass); the result must not change.
    x = rand((1, 3, 8, 8), seed=11)
    c = 7
    consts = {"w": rand((c, 3, 3, 3), seed=12), "s": rand((c,), seed=13), "bb": rand((c,), seed=14),
              "m": rand((c,), seed=15), "v": rand((c,), seed=16, low=0.5, high=2.0)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x}, atol=ATOL)


def test_two_convs_in_a_row(check):
    x = rand((1, 3, 10, 10), seed=17)
    consts = {"w1": rand((8, 3, 3, 3), seed=18), "w2": rand((5, 8, 1, 1), seed=19), "b2": rand((5,), seed=20)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x}, atol=ATOL)
