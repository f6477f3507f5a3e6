"""RoiAlign against onnx's reference: avg/max, half_pixel/output_half_pixel, spatial_scale, ROIs partly
outside the map, several batch images, the opset-10 form, and the refusal of the adaptive grid.

Tolerance: float32 rtol=1e-4 atol=1e-5 (a few bilinear blends per bin).
"""

from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler.errors import UnsupportedOpError
from helpers_onnx import node_model, ort_reference, rand

ROIS = np.array([[0.0, 0.0, 9.0, 9.0], [1.5, 2.0, 6.5, 8.0], [-3.0, 4.0, 5.0, 13.0],
                 [10.0, 10.0, 14.0, 15.0], [2.0, 2.0, 2.5, 2.2]], dtype=np.float32)
BATCH = np.array([0, 1, 1, 0, 1], dtype=np.int64)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("transform", ["half_pixel", "output_half_pixel"])
@pytest.mark.parametrize("scale,grid,out", [(1.0, 2, (3, 4)), (0.5, 3, (2, 2))])
def test_roi_align(check, mode, transform, scale, grid, out):
    x = rand((2, 3, 10, 12), seed=1)
    feeds = {"x": x, "rois": ROIS, "batch": BATCH}
    attrs = {"mode": mode, "coordinate_transformation_mode": transform, "spatial_scale": scale,
             "sampling_ratio": grid, "output_height": out[0], "output_width": out[1]}
    check(node_model("RoiAlign", ["x", "rois", "batch"], feeds, attrs=attrs, opset=16), feeds)


def test_roi_align_opset10(check):
    """Opset 10 had no half-pixel shift; onnx's reference applies one, onnxruntime does not."""
    x = rand((2, 3, 10, 12), seed=2)
    feeds = {"x": x, "rois": ROIS, "batch": BATCH}
    attrs = {"sampling_ratio": 2, "output_height": 3, "output_width": 3, "spatial_scale": 0.8}
    model = node_model("RoiAlign", ["x", "rois", "batch"], feeds, attrs=attrs, opset=10)
    check(model, feeds, expected=ort_reference(model, feeds))


def test_roi_align_adaptive_grid_is_refused(tmp_path):
    x = rand((1, 1, 6, 6), seed=3)
    feeds = {"x": x, "rois": ROIS[:2], "batch": BATCH[:2] * 0}
    model = node_model("RoiAlign", ["x", "rois", "batch"], feeds, attrs={"sampling_ratio": 0}, opset=16)
    with pytest.raises(UnsupportedOpError, match="sampling_ratio=0"):
        compiler.compile(model.SerializeToString(), str(tmp_path / "m.tilec"))
