"""CenterCropPad and Col2Im (compiler/ops/blocks.py) against onnx's reference.

CenterCropPad is pure data movement and must match exactly; Col2Im sums at
most a few column entries per pixel (float32 rtol=1e-5, atol=1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, rand


@pytest.mark.parametrize("shape,target,axes", [
    ((4, 7, 6), (2, 4, 3), None),          # crop every axis, odd and even differences
    ((3, 4, 5), (6, 7, 5), None),          # pad, odd and even differences
    ((5, 6, 7), (8, 3, 7), None),          # pad one axis, crop another
    ((3, 10, 9), (5, 4), [1, 2]),          # axes: leave the first one alone
    ((10, 9, 3), (4, 12), [-3, 1]),        # negative axes
], ids=["crop", "pad", "mixed", "axes", "negative_axes"])
@pytest.mark.parametrize("dtype", ["float32", "int64"])
def test_center_crop_pad(check, shape, target, axes, dtype):
    x = (rand(shape, seed=1) * 10).astype(dtype)
    attrs = {} if axes is None else {"axes": axes}
    model = node_model("CenterCropPad", ["x", "shape"], {"x": x}, consts={"shape": np.array(target, dtype=np.int64)},
                       attrs=attrs, opset=18)
    check(model, {"x": x}, rtol=0, atol=0)


def _col2im_input(channels, image, block, dilations, pads, strides, batch=2, seed=2):
    rank = len(image)
    grid = [(image[d] + pads[d] + pads[rank + d] - dilations[d] * (block[d] - 1) - 1) // strides[d] + 1
            for d in range(rank)]
    return rand((batch, channels * int(np.prod(block)), int(np.prod(grid))), seed=seed)


@pytest.mark.parametrize("image,block,dilations,pads,strides", [
    ((5, 5), (1, 5), (1, 1), (0, 0, 0, 0), (1, 1)),
    ((6, 7), (2, 3), (1, 1), (1, 0, 2, 1), (1, 1)),
    ((9, 8), (3, 2), (2, 1), (0, 0, 0, 0), (1, 1)),
    ((9, 10), (3, 3), (1, 2), (1, 1, 1, 1), (2, 3)),
    ((4, 5, 6), (2, 2, 3), (1, 1, 2), (0, 1, 0, 1, 0, 1), (2, 1, 1)),
], ids=["row_blocks", "pads", "dilations", "strides_pads_dilations", "3d"])
@pytest.mark.parametrize("runtime_block", [False, True], ids=["const_block", "runtime_block"])
def test_col2im(check, image, block, dilations, pads, strides, runtime_block):
    cols = _col2im_input(3, image, block, dilations, pads, strides)
    feeds = {"cols": cols}
    consts = {"image": np.array(image, dtype=np.int64)}
    (feeds if runtime_block else consts)["block"] = np.array(block, dtype=np.int64)
    attrs = {"dilations": list(dilations), "pads": list(pads), "strides": list(strides)}
    model = node_model("Col2Im", ["cols", "image", "block"], feeds, consts=consts, attrs=attrs, opset=18)
    check(model, feeds, rtol=1e-5, atol=1e-6)
