"""Statistics-based normalizations (compiler/ops/normalization_extra.py) against onnx's reference evaluator.

Tolerances: rtol 1e-4 / atol 1e-5 (float32 statistics accumulate in a different order).
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, ort_reference, rand

TOL = {"rtol": 1e-4, "atol": 1e-5}


@pytest.mark.parametrize("axis", [-1, 1])
def test_layer_normalization(check, axis):
    x = rand((2, 3, 8), seed=1)
    scale_shape = x.shape[axis:] if axis >= 0 else x.shape[-1:]
    consts = {"s": rand(scale_shape, seed=2), "b": rand(scale_shape, seed=3)}
    check(node_model("LayerNormalization", ["x", "s", "b"], {"x": x}, consts=consts, attrs={"axis": axis}),
          {"x": x}, **TOL)


def test_instance_normalization(check):
    x = rand((2, 4, 5, 3), seed=4)
    consts = {"s": rand((4,), seed=5), "b": rand((4,), seed=6)}
    check(node_model("InstanceNormalization", ["x", "s", "b"], {"x": x}, consts=consts), {"x": x}, **TOL)


def test_group_normalization(check):
    x = rand((2, 6, 4, 4), seed=7)
    consts = {"s": rand((6,), seed=8), "b": rand((6,), seed=9)}
    check(node_model("GroupNormalization", ["x", "s", "b"], {"x": x}, consts=consts, attrs={"num_groups": 3},
                     opset=21), {"x": x}, **TOL)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("axis", [0, -1])
def test_lp_normalization_with_a_zero_norm(check, p, axis):
    x = rand((3, 4), seed=10)
    x[:, 2] = 0.0
    x[1, :] = 0.0  # zero norms along both axes: the result there is 0, not 0/0
    model = node_model("LpNormalization", ["x"], {"x": x}, attrs={"axis": axis, "p": p}, expected=[x])
    # onnx's reference sums x, not |x|, for p=1: onnxruntime follows the spec.
    check(model, {"x": x}, expected=ort_reference(model, {"x": x}) if p == 1 else None, **TOL)


def test_mean_variance_normalization(check):
    x = rand((2, 3, 4, 5), seed=11)
    check(node_model("MeanVarianceNormalization", ["x"], {"x": x}), {"x": x}, **TOL)


def test_rms_normalization(check):
    x = rand((2, 3, 8), seed=12)
    check(node_model("RMSNormalization", ["x", "s"], {"x": x}, consts={"s": rand((8,), seed=13)}, opset=23),
          {"x": x}, **TOL)
