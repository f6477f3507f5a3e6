"""Conv, ConvTranspose, ConvInteger and DeformConv (compiler/ops/conv.py) against onnx's reference.

Each covers 1-D/2-D/3-D, strides, pads, dilations, groups and auto_pad, with
weights as compile-time constants (packed at compile time) and as graph inputs
(packed by a copy kernel at run time). ConvInteger results are int32 and must
match exactly.

Odd spatial sizes and channel counts leave tails in the register-tiled schedule
(rows and lanes that do not divide evenly). Tolerance: float32 rtol=1e-4 with
atol=1e-4, looser than the default atol=1e-5 because each output sums up to a
few hundred products of N(0,1) values: near-zero results come out of large
cancelling partial sums, and a different (tiled, FMA-contracted) summation order
moves them by ~sqrt(K) ulps of the partial sums.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers_onnx import graph_model, node_model, ort_reference, rand, reference

ATOL = 1e-4


def _conv_case(check, x_shape, w_shape, attrs=None, bias=True, threads=(1,), run_time_weights=False,
               op="Conv", bias_channels=None, dtype="float32", atol=ATOL):
    x = rand(x_shape, seed=1, dtype=dtype)
    params = {"w": rand(w_shape, seed=2, dtype=dtype)}
    inputs = ["x", "w"]
    if bias:
        params["b"] = rand((bias_channels or w_shape[0],), seed=3, dtype=dtype)
        inputs.append("b")
    feeds = {"x": x, **(params if run_time_weights else {})}
    consts = {} if run_time_weights else params
    check(node_model(op, inputs, feeds, consts=consts, attrs=attrs or {}), feeds, atol=atol, rtol=atol,
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


@pytest.mark.parametrize("name", ["3x3_pad1", "stride_2x3_asym_pads", "dilation2", "groups3", "depthwise", "1x1"])
def test_conv2d_run_time_weights(check, name):
    x_shape, w_shape, attrs = CASES_2D[name]
    _conv_case(check, x_shape, w_shape, attrs, run_time_weights=True)


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


@pytest.mark.parametrize("run_time_weights", [False, True], ids=["const_w", "input_w"])
@pytest.mark.parametrize("name", sorted(CASES_1D))
def test_conv1d(check, name, run_time_weights):
    x_shape, w_shape, attrs = CASES_1D[name]
    _conv_case(check, x_shape, w_shape, attrs, run_time_weights=run_time_weights)


CASES_3D = {
    "k3_pad1": ((1, 2, 5, 6, 7), (4, 2, 3, 3, 3), {"pads": [1, 1, 1, 1, 1, 1]}),
    "stride_dil": ((1, 3, 7, 8, 9), (5, 3, 2, 3, 2), {"strides": [2, 1, 2], "dilations": [1, 2, 2]}),
    "groups": ((1, 4, 4, 5, 5), (4, 2, 2, 2, 2), {"group": 2, "auto_pad": "SAME_LOWER"}),
}


@pytest.mark.parametrize("run_time_weights", [False, True], ids=["const_w", "input_w"])
@pytest.mark.parametrize("name", sorted(CASES_3D))
def test_conv3d(check, name, run_time_weights):
    x_shape, w_shape, attrs = CASES_3D[name]
    _conv_case(check, x_shape, w_shape, attrs, run_time_weights=run_time_weights)


@pytest.mark.parametrize("run_time_weights", [False, True], ids=["const_w", "input_w"])
def test_conv2d_float16_accumulates_in_float32(check, run_time_weights):
    # 72-term sums, compared with float32 accumulation rounded once (what the reference does).
    _conv_case(check, (1, 8, 7, 7), (6, 8, 3, 3), {"pads": [1, 1, 1, 1]}, dtype="float16", atol=2e-3,
               run_time_weights=run_time_weights)


def test_conv_on_a_concat_with_an_empty_input(check):
    # A zero-length pad before the conv (CausalConvWithState with kernel size 1): empty tensors
    # lower to no loops at all.
    x, w = rand((2, 4, 8), seed=1), rand((4, 1, 1), seed=2)
    nodes = [helper.make_node("Slice", ["x", "zero", "zero", "two"], ["empty"]),
             helper.make_node("Concat", ["empty", "x"], ["padded"], axis=2),
             helper.make_node("Conv", ["padded", "w"], ["y"], group=4)]
    consts = {"zero": np.array([0], np.int64), "two": np.array([2], np.int64)}
    check(graph_model(nodes, {"x": x, "w": w}, ["y"], consts), {"x": x, "w": w}, atol=ATOL)


# --- ConvTranspose ----------------------------------------------------------------------------

# name: (x shape, w shape [C, M/group, k...], attrs)
CASES_TRANSPOSE = {
    "2d_basic": ((1, 3, 5, 6), (3, 4, 3, 3), {}),
    "2d_stride2": ((2, 3, 5, 4), (3, 5, 3, 3), {"strides": [2, 2]}),
    "2d_stride_3x2_pads": ((1, 2, 4, 5), (2, 3, 3, 3), {"strides": [3, 2], "pads": [1, 2, 1, 2]}),
    "2d_pads_bigger_than_kernel": ((1, 2, 6, 6), (2, 2, 2, 2), {"strides": [2, 2], "pads": [2, 1, 3, 2]}),
    "2d_output_padding": ((1, 2, 4, 4), (2, 3, 3, 3), {"strides": [3, 2], "output_padding": [1, 1]}),
    "2d_output_shape": ((1, 1, 3, 3), (1, 2, 3, 3), {"strides": [3, 2], "output_shape": [10, 8]}),
    "2d_dilation": ((1, 2, 4, 5), (2, 3, 2, 3), {"dilations": [2, 3], "strides": [1, 2]}),
    "2d_groups2": ((1, 4, 4, 4), (4, 3, 3, 3), {"group": 2, "strides": [2, 1], "pads": [1, 0, 0, 1]}),
    "2d_depthwise": ((1, 6, 5, 5), (6, 1, 3, 3), {"group": 6, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "2d_same_upper": ((1, 2, 3, 4), (2, 3, 3, 4), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    "2d_same_lower": ((1, 2, 3, 4), (2, 3, 3, 4), {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    "2d_valid": ((1, 2, 3, 4), (2, 3, 3, 2), {"auto_pad": "VALID", "strides": [2, 3]}),
    "2d_kernel_shape_attr": ((1, 1, 3, 3), (1, 2, 3, 3), {"kernel_shape": [3, 3], "strides": [3, 2],
                                                          "output_padding": [1, 1]}),
    "1d": ((2, 3, 7), (3, 2, 3), {"strides": [2], "pads": [1, 0]}),
    "3d": ((1, 2, 3, 4, 3), (2, 2, 3, 2, 2), {"strides": [2, 1, 2], "pads": [0, 1, 0, 1, 0, 1]}),
}


@pytest.mark.parametrize("run_time_weights", [False, True], ids=["const_w", "input_w"])
@pytest.mark.parametrize("name", sorted(CASES_TRANSPOSE))
def test_conv_transpose(check, name, run_time_weights):
    x_shape, w_shape, attrs = CASES_TRANSPOSE[name]
    group = attrs.get("group", 1)
    if group == 1:
        _conv_case(check, x_shape, w_shape, attrs, op="ConvTranspose", bias_channels=w_shape[1],
                   run_time_weights=run_time_weights)
        return
    # onnx's reference slices grouped weights by output channel and adds the first group's
    # biases to every group: compare with onnxruntime instead.
    x, w, b = rand(x_shape, seed=1), rand(w_shape, seed=2), rand((w_shape[1] * group,), seed=3)
    params = {"w": w, "b": b}
    feeds = {"x": x, **(params if run_time_weights else {})}
    consts = {} if run_time_weights else params
    spatial = [(n - 1) * s + k - p0 - p1 for n, s, k, p0, p1 in
               zip(x_shape[2:], attrs["strides"], w_shape[2:], attrs["pads"][:2], attrs["pads"][2:])]
    shaped = node_model("ConvTranspose", ["x", "w", "b"], feeds, consts, attrs,
                        expected=[np.zeros((x_shape[0], w_shape[1] * group, *spatial), np.float32)])
    check(shaped, feeds, atol=ATOL, expected=ort_reference(shaped, feeds))


def test_conv_transpose_without_bias(check):
    _conv_case(check, (1, 3, 5, 5), (3, 2, 3, 3), {"strides": [2, 2]}, bias=False, op="ConvTranspose")


# --- ConvInteger ------------------------------------------------------------------------------


def _int_data(shape, dtype, seed):
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("dtypes", [("uint8", "uint8"), ("int8", "int8"), ("uint8", "int8")], ids="-".join)
@pytest.mark.parametrize("zero_points", ["none", "scalar", "per_channel"])
@pytest.mark.parametrize("run_time_weights", [False, True], ids=["const_w", "input_w"])
def test_conv_integer(check, dtypes, zero_points, run_time_weights):
    x_type, w_type = dtypes
    x, w = _int_data((1, 4, 7, 6), x_type, 1), _int_data((6, 2, 3, 3), w_type, 2)
    params = {"w": w}
    inputs = ["x", "w"]
    if zero_points != "none":
        params["x_zp"] = _int_data((), x_type, 3)
        params["w_zp"] = _int_data((6,) if zero_points == "per_channel" else (), w_type, 4)
        inputs += ["x_zp", "w_zp"]
    feeds = {"x": x, **(params if run_time_weights else {})}
    attrs = {"group": 2, "pads": [1, 0, 2, 1], "strides": [2, 1]}
    model = node_model("ConvInteger", inputs, feeds, consts={} if run_time_weights else params, attrs=attrs)
    check(model, feeds)


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


# --- DeformConv -------------------------------------------------------------------------------


def _deform_reference(x, w, offset, bias, mask, strides, dilations, pads, group, offset_group):
    """DeformConv by its definition, for any rank (onnx's reference handles 2-D only)."""
    rank = x.ndim - 2
    kernel, out_spatial = w.shape[2:], offset.shape[2:]
    taps = int(np.prod(kernel))
    c_per_group, m_per_group = w.shape[1], w.shape[0] // group
    y = np.zeros((x.shape[0], w.shape[0], *out_spatial), np.float64)

    def sample(n, ch, pos):
        base = np.floor(pos).astype(int)
        total = 0.0
        for corner in np.ndindex(*(2,) * rank):
            idx = base + corner
            if all(0 <= idx[d] < x.shape[2 + d] for d in range(rank)):
                weight = np.prod([f if b else 1 - f for f, b in zip(pos - base, corner)])
                total += weight * x[(n, ch, *idx)]
        return total

    for n, m in np.ndindex(*y.shape[:2]):
        for o in np.ndindex(*out_spatial):
            acc = 0.0 if bias is None else float(bias[m])
            for c in range(c_per_group):
                ch = (m // m_per_group) * c_per_group + c
                group_of_offsets = ch // (x.shape[1] // offset_group)
                for tap, ks in enumerate(np.ndindex(*kernel)):
                    slot = group_of_offsets * taps + tap
                    pos = np.array([o[d] * strides[d] - pads[d] + ks[d] * dilations[d]
                                    + offset[(n, slot * rank + d, *o)] for d in range(rank)])
                    scale = 1.0 if mask is None else mask[(n, slot, *o)]
                    acc += w[(m, c, *ks)] * scale * sample(n, ch, pos)
            y[(n, m, *o)] = acc
    return y.astype(x.dtype)


# name: (x shape, w shape, out spatial, attrs)
CASES_DEFORM = {
    "2d_basic": ((1, 2, 5, 5), (3, 2, 3, 3), (3, 3), {}),
    "2d_pads_strides": ((2, 2, 6, 5), (2, 2, 2, 3), (4, 2), {"pads": [1, 0, 1, 1], "strides": [2, 2]}),
    "2d_dilation": ((1, 1, 6, 6), (2, 1, 2, 2), (4, 5), {"dilations": [2, 1]}),
    "2d_groups_offset_groups": ((1, 4, 5, 4), (4, 2, 2, 2), (4, 3), {"group": 2, "offset_group": 2}),
    "1d": ((2, 3, 9), (2, 3, 3), (4,), {"strides": [2], "pads": [1, 0]}),
    "3d": ((1, 2, 4, 4, 3), (2, 2, 2, 2, 2), (3, 3, 2), {}),
}


@pytest.mark.parametrize("with_mask_and_bias", [False, True], ids=["plain", "mask_bias"])
@pytest.mark.parametrize("name", sorted(CASES_DEFORM))
def test_deform_conv(check, name, with_mask_and_bias):
    x_shape, w_shape, out_spatial, attrs = CASES_DEFORM[name]
    rank, taps = len(out_spatial), int(np.prod(w_shape[2:]))
    offset_group = attrs.get("offset_group", 1)
    # Offsets up to +-2 pixels: many taps land between pixels and some outside the input.
    values = {"x": rand(x_shape, seed=1), "w": rand(w_shape, seed=2),
              "offset": rand((x_shape[0], offset_group * taps * rank, *out_spatial), seed=3, low=-2.0, high=2.0)}
    inputs = ["x", "w", "offset"]
    if with_mask_and_bias:
        values["b"] = rand((w_shape[0],), seed=4)
        values["mask"] = rand((x_shape[0], offset_group * taps, *out_spatial), seed=5, low=0.0, high=1.0)
        inputs += ["b", "mask"]
    full = {"strides": [1] * rank, "dilations": [1] * rank, "pads": [0] * (2 * rank), "group": 1,
            "offset_group": 1, **attrs}
    expected = _deform_reference(values["x"], values["w"], values["offset"], values.get("b"), values.get("mask"),
                                 full["strides"], full["dilations"], full["pads"], full["group"],
                                 full["offset_group"])
    model = node_model("DeformConv", inputs, values, attrs=attrs, opset=19, expected=[expected])
    if rank == 2:
        # The definition above agrees with onnx's own reference where that one applies.
        np.testing.assert_allclose(reference(model, values)[0], expected, rtol=1e-5, atol=1e-5)
    check(model, values, atol=ATOL, expected=[expected])
