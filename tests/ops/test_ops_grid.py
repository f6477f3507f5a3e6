"""GridSample and AffineGrid (compiler/ops/grid.py) against onnx's reference.

Grid coordinates are uniform in [-1.4, 1.4], so a good share of the samples
fall outside the input and exercise every padding mode. Tolerance: float32
rtol=1e-4, atol=1e-5 (the reference denormalizes coordinates in float32 as
tilec does; at most 64 taps per output); float64 data keeps the same bound
because the reference's coordinates are float32 even then.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, ort_reference, rand, reference


def _grid_sample(x, grid, opset, **attrs):
    feeds = {"x": x, "grid": grid}
    return node_model("GridSample", ["x", "grid"], feeds, attrs=attrs, opset=opset), feeds


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_2d(check, mode, padding, align):
    x = rand((2, 3, 5, 6), seed=1)
    grid = rand((2, 4, 7, 2), seed=2, low=-1.4, high=1.4)
    model, feeds = _grid_sample(x, grid, 20, mode=mode, padding_mode=padding, align_corners=align)
    check(model, feeds)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("padding", ["zeros", "reflection"])
def test_grid_sample_opset16_names(check, mode, padding):
    # The reference knows only opset 20's names: compare with the same sampling at opset 20.
    x = rand((1, 2, 4, 5), seed=3)
    grid = rand((1, 3, 6, 2), seed=4, low=-1.4, high=1.4)
    renamed = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    expected, feeds = _grid_sample(x, grid, 20, mode=renamed, padding_mode=padding)
    out = reference(expected, feeds)
    model = node_model("GridSample", ["x", "grid"], feeds, attrs={"mode": mode, "padding_mode": padding}, opset=16,
                       expected=out)
    check(model, feeds, expected=out)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample_3d_volume(check, mode, padding):
    x = rand((1, 2, 3, 4, 5), seed=5)
    grid = rand((1, 2, 3, 2, 3), seed=6, low=-1.4, high=1.4)
    model, feeds = _grid_sample(x, grid, 20, mode=mode, padding_mode=padding, align_corners=1)
    check(model, feeds)


@pytest.mark.parametrize("attrs", [{}, {"padding_mode": "reflection"}, {"padding_mode": "border"}])
def test_grid_sample_size_one_dim_and_default_mode(check, attrs):
    x = rand((2, 3, 1, 4), seed=7)
    grid = rand((2, 5, 3, 2), seed=8, low=-1.4, high=1.4)
    model, feeds = _grid_sample(x, grid, 22, **attrs)
    check(model, feeds)


def test_grid_sample_reflection_over_a_single_sample(check):
    # align_corners spans a size-1 dim over zero width: every coordinate reflects onto sample 0
    # (PyTorch's rule; onnx's reference divides by that zero width, so compare with onnxruntime).
    x = rand((1, 2, 1, 4), seed=12)
    grid = rand((1, 3, 3, 2), seed=13, low=-1.4, high=1.4)
    feeds = {"x": x, "grid": grid}
    out = [np.zeros((1, 2, 3, 3), dtype=np.float32)]
    model = node_model("GridSample", ["x", "grid"], feeds, attrs={"padding_mode": "reflection", "align_corners": 1},
                       opset=20, expected=out)
    check(model, feeds, expected=ort_reference(model, feeds))


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_grid_sample_float64(check, mode):
    x = rand((1, 2, 5, 4), seed=9, dtype="float64")
    grid = rand((1, 3, 3, 2), seed=10, low=-1.2, high=1.2, dtype="float64")
    model, feeds = _grid_sample(x, grid, 20, mode=mode, padding_mode="border")
    check(model, feeds)


@pytest.mark.parametrize("align", [0, 1])
@pytest.mark.parametrize("size", [(2, 3, 5, 7), (2, 1, 3, 4, 5)], ids=["2d", "3d"])
def test_affine_grid(check, align, size):
    rank = len(size) - 2
    theta = rand((size[0], rank, rank + 1), seed=11)
    model = node_model("AffineGrid", ["theta", "size"], {"theta": theta},
                       consts={"size": np.array(size, dtype=np.int64)}, attrs={"align_corners": align}, opset=20)
    check(model, {"theta": theta})
