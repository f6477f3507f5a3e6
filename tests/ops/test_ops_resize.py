"""Resize and Upsample (compiler/ops/resize.py) against onnx's reference (onnxruntime for opsets < 11).

Scales, sizes and roi are initializers unless a case says "runtime" (then they
are graph inputs and the sample tables are computed from their values at run
time). Shapes are small but uneven so that half-pixel offsets, clamping at the
borders and non-integer scales all show up. Tolerance: float32 rtol=1e-4,
atol=1e-5 (at most a few dozen weighted taps per output); integer outputs must
match exactly (the reference rounds half to even and saturates, as tilec does).
float64 cubic allows 1e-5: the reference evaluates the cubic kernel in float32
(its coefficient ``a`` is a float32 scalar), tilec in float64.

Shapes avoid output coordinates that land exactly on an input sample through
a sum that rounds (e.g. the center with ``half_pixel_symmetric`` and odd
lengths): there the reference's edge-padding shifts its window by one sample.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, ort_reference, rand, reference

X_SHAPE = (2, 3, 5, 7)
COORDINATES = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"]


def _resize(x, scales=None, sizes=None, roi=None, runtime=(), opset=19, **attrs):
    """A one-Resize model; inputs named in ``runtime`` are graph inputs, the others initializers."""
    given = {"roi": roi, "scales": scales, "sizes": sizes}
    feeds, consts = {"x": x}, {}
    for name, value in given.items():
        if value is not None:
            (feeds if name in runtime else consts)[name] = value
    inputs = ["x"] + [name if given[name] is not None else "" for name in ("roi", "scales", "sizes")]
    while inputs[-1] == "":
        inputs.pop()
    return node_model("Resize", inputs, feeds, consts=consts, attrs=attrs, opset=opset), feeds


def _scales(*spatial: float) -> np.ndarray:
    return np.array([1.0, 1.0, *spatial], dtype=np.float32)


def _sizes(*spatial: int) -> np.ndarray:
    return np.array([X_SHAPE[0], X_SHAPE[1], *spatial], dtype=np.int64)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("coordinates", COORDINATES)
@pytest.mark.parametrize("scales", [(2.0, 3.0), (1.7, 0.6), (0.5, 0.6)], ids=["up", "mixed", "down"])
def test_modes_and_coordinates(check, mode, coordinates, scales):
    x = rand(X_SHAPE, seed=1)
    model, feeds = _resize(x, scales=_scales(*scales), mode=mode, coordinate_transformation_mode=coordinates)
    check(model, feeds)


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("coordinates", ["half_pixel", "asymmetric", "align_corners"])
def test_nearest_modes(check, nearest_mode, coordinates):
    x = rand(X_SHAPE, seed=2)
    model, feeds = _resize(x, sizes=_sizes(8, 10), mode="nearest", nearest_mode=nearest_mode,
                           coordinate_transformation_mode=coordinates)
    check(model, feeds)


@pytest.mark.parametrize("exclude_outside", [0, 1])
@pytest.mark.parametrize("cubic_a", [-0.75, -0.5])
@pytest.mark.parametrize("scales", [(2.0, 1.5), (0.8, 0.6)], ids=["up", "down"])
def test_cubic_coefficient_and_exclude_outside(check, exclude_outside, cubic_a, scales):
    x = rand(X_SHAPE, seed=3)
    model, feeds = _resize(x, scales=_scales(*scales), mode="cubic", cubic_coeff_a=cubic_a,
                           exclude_outside=exclude_outside)
    check(model, feeds)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("runtime", [(), ("scales",), ("sizes",)], ids=["const", "runtime_scales", "runtime_sizes"])
@pytest.mark.parametrize("exclude_outside", [0, 1])
def test_antialias(check, mode, runtime, exclude_outside):
    x = rand((1, 2, 11, 13), seed=4)
    if "sizes" in runtime:
        model, feeds = _resize(x, sizes=np.array([1, 2, 4, 6], dtype=np.int64), runtime=runtime, mode=mode,
                               antialias=1, exclude_outside=exclude_outside)
    else:
        model, feeds = _resize(x, scales=np.array([1, 1, 0.4, 1.3], dtype=np.float32), runtime=runtime, mode=mode,
                               antialias=1, exclude_outside=exclude_outside)
    check(model, feeds)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("axes", [[2, 3], [3, 2], [3, 1]], ids=["2_3", "3_2", "3_1"])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_axes_and_keep_aspect_ratio(check, policy, axes, mode):
    x = rand(X_SHAPE, seed=5)
    sizes = np.array([9, 4], dtype=np.int64)
    model, feeds = _resize(x, sizes=sizes, mode=mode, axes=axes, keep_aspect_ratio_policy=policy)
    check(model, feeds)


def test_negative_axes(check):
    # onnx's reference does not normalize negative axes: compare with the same resize on positive ones.
    x = rand(X_SHAPE, seed=5)
    sizes = np.array([9, 4], dtype=np.int64)
    positive, feeds = _resize(x, sizes=sizes, mode="linear", axes=[3, 1])
    expected = reference(positive, feeds)
    negative = node_model("Resize", ["x", "", "", "sizes"], feeds, consts={"sizes": sizes},
                          attrs={"mode": "linear", "axes": [-1, -3]}, opset=19, expected=expected)
    check(negative, feeds, expected=expected)


def test_axes_with_scales(check):
    x = rand(X_SHAPE, seed=6)
    model, feeds = _resize(x, scales=np.array([2.5, 0.7], dtype=np.float32), mode="cubic", axes=[3, 2])
    check(model, feeds)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("runtime", [(), ("roi", "sizes")], ids=["const", "runtime"])
def test_tf_crop_and_resize(check, mode, runtime):
    x = rand(X_SHAPE, seed=7)
    roi = np.array([0, 0, 0.2, -0.3, 1, 1, 0.9, 1.4], dtype=np.float32)  # crops and reaches outside
    model, feeds = _resize(x, roi=roi, sizes=_sizes(6, 9), runtime=runtime, mode=mode,
                           coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=-7.5)
    check(model, feeds)


def test_tf_crop_and_resize_with_axes(check):
    x = rand(X_SHAPE, seed=8)
    roi = np.array([0.6, 0.1, 0.9, 0.8], dtype=np.float32)
    model, feeds = _resize(x, roi=roi, sizes=np.array([4, 3], dtype=np.int64), mode="linear", axes=[3, 2],
                           coordinate_transformation_mode="tf_crop_and_resize")
    check(model, feeds)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_runtime_scales(check, mode):
    x = rand(X_SHAPE, seed=9)
    model, feeds = _resize(x, scales=np.array([1, 1.5, 1.7, 0.6], dtype=np.float32), runtime=("scales",), mode=mode)
    check(model, feeds)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int32", "float16", "float64"])
@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_dtypes(check, dtype, mode):
    x = rand(X_SHAPE, seed=10, low=-20 if dtype != "uint8" else 0, high=250 if dtype != "int8" else 20)
    x = x.astype(dtype)
    model, feeds = _resize(x, scales=_scales(1.6, 0.7), mode=mode)
    tol = {"float16": {"rtol": 1e-2, "atol": 1e-2},
           "float64": {"rtol": 1e-5 if mode == "cubic" else 1e-9, "atol": 1e-9}}.get(dtype, {})
    check(model, feeds, **tol)


def test_five_d_trilinear_and_three_d(check):
    x = rand((1, 2, 3, 4, 5), seed=11)
    model, feeds = _resize(x, scales=np.array([1, 1, 2, 0.5, 1.4], dtype=np.float32), mode="linear")
    check(model, feeds)
    x = rand((2, 3, 9), seed=12)
    model, feeds = _resize(x, sizes=np.array([2, 3, 4], dtype=np.int64), mode="cubic",
                           coordinate_transformation_mode="align_corners")
    check(model, feeds)


def test_identity_scales_copy_the_input(check):
    x = rand(X_SHAPE, seed=13)
    model, feeds = _resize(x, scales=_scales(1.0, 1.0), mode="linear")
    check(model, feeds)


@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_older_opsets(check, opset, mode):
    x = rand(X_SHAPE, seed=14)
    roi = np.array([], dtype=np.float32)
    model, feeds = _resize(x, roi=roi, scales=_scales(1.5, 2.0), mode=mode, opset=opset)
    check(model, feeds)


def test_tf_half_pixel_for_nn_opset11(check):
    # onnx's reference lacks this (opset 11 only) mode: compare with onnxruntime.
    x = rand(X_SHAPE, seed=15)
    out = [np.zeros((2, 3, 7, 4), dtype=np.float32)]
    model = node_model("Resize", ["x", "roi", "s"], {"x": x},
                       consts={"roi": np.array([], dtype=np.float32), "s": _scales(1.5, 0.6)},
                       attrs={"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"},
                       opset=11, expected=out)
    check(model, {"x": x}, expected=ort_reference(model, {"x": x}))


# onnx's reference cannot run these legacy forms (beyond integer nearest Upsample): compare with onnxruntime.
@pytest.mark.parametrize("op,opset", [("Resize", 10), ("Upsample", 9), ("Upsample", 7)])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [(1.5, 2.5), (0.7, 1.7)], ids=["up", "mixed"])
def test_legacy_resize_and_upsample(check, op, opset, mode, scales):
    if op == "Upsample" and min(scales) < 1:
        pytest.skip("Upsample takes scales >= 1")
    x = rand(X_SHAPE, seed=16)
    s = _scales(*scales)
    out = tuple(int(np.floor(n * f)) for n, f in zip(X_SHAPE, s))
    attrs = {"mode": mode, **({"scales": [float(v) for v in s]} if opset < 9 else {})}
    inputs, consts = (["x"], {}) if opset < 9 else (["x", "s"], {"s": s})
    expected = [np.zeros(out, dtype=np.float32)]  # only types and shapes: the values come from onnxruntime
    model = node_model(op, inputs, {"x": x}, consts=consts, attrs=attrs, opset=opset, expected=expected)
    check(model, {"x": x}, expected=ort_reference(model, {"x": x}))


def test_refusals_name_the_node(compile_cache):
    from compiler.errors import ShapeError, UnsupportedOpError
    from helpers_onnx import compiled

    x = rand((1, 1, 4, 4), seed=17)
    # A run-time scale bounds nothing once a roi decides the output length: antialias needs it constant.
    model, _ = _resize(x, roi=np.array([0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9], dtype=np.float32), scales=_scales(0.5, 0.5),
                       runtime=("scales",), mode="linear", antialias=1,
                       coordinate_transformation_mode="tf_crop_and_resize")
    with pytest.raises(ShapeError, match=r"Resize 'resize' \(opset 19\): input 2 \(scales\) must be a compile-time"):
        compiled(model, compile_cache)
    model, _ = _resize(x, scales=_scales(2.0, 2.0), mode="linear")
    model.graph.node[0].attribute[0].s = b"bilinear"
    with pytest.raises(UnsupportedOpError, match=r"Resize 'resize' \(opset 19\): mode='bilinear'"):
        compiled(model, compile_cache)
