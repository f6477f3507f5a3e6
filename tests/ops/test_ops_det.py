"""Det against onnx's reference (numpy.linalg.det): single and batched matrices, sizes 1-7, singular
matrices, pivoting-sensitive matrices (zero leading entries), float64.

Tolerance: float32 rtol=1e-4 atol=1e-4 (elimination rounding on O(1) entries); float64 rtol=1e-10.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, rand


@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3), (5, 5), (4, 3, 3), (2, 3, 6, 6), (7, 7)])
def test_det(check, shape):
    x = rand(shape, seed=shape[-1])
    check(node_model("Det", ["x"], {"x": x}, opset=11), {"x": x}, rtol=1e-4, atol=1e-4)


def test_det_needs_pivoting_and_singular(check):
    x = np.array([[[0, 1, 2], [3, 0, 1], [1, 1, 0]],   # zero leading entry: needs a row swap
                  [[1, 2, 3], [2, 4, 6], [0, 1, 1]],   # singular (rows 0 and 1 proportional)
                  [[0, 0, 1], [0, 1, 0], [1, 0, 0]],   # a permutation: det -1
                  [[0, 0, 0], [1, 2, 3], [4, 5, 6]]],  # zero row
                 dtype=np.float32)
    check(node_model("Det", ["x"], {"x": x}, opset=11), {"x": x}, rtol=1e-5, atol=1e-5)


def test_det_float64(check):
    x = rand((3, 6, 6), seed=9, dtype="float64")
    check(node_model("Det", ["x"], {"x": x}, opset=11), {"x": x}, rtol=1e-10, atol=1e-12)
