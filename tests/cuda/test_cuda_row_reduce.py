"""Reductions over long rows (compiler/codegen/cuda/row_reduce.py): a warp or a block per output element.

Emulated under tests/cuda/emulation.h, where the lanes of a warp are real threads
exchanging values in ``__shfl_down_sync``. Tolerances: float32 rtol 1e-5 / atol
1e-5 (a tree of partial sums instead of a left-to-right sum; LayerNorm and
LogSumExp 1e-4). tests/ops runs every reduction op test this way too, with
short rows made cooperative (``cuda_emulation.tiling_everything``).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from compiler.codegen.cuda.nvrtc import compile_cuda, nvrtc_available
from cuda_emulation import CXX, emulate, lower_for_cuda
from helpers_onnx import graph_model, node_model, rand, reference

pytestmark = pytest.mark.skipif(CXX is None, reason="no host C++ compiler to emulate CUDA kernels with")


def _shuffling_launches(model) -> list:
    _, module = lower_for_cuda(model)
    return [launch for launch in module.launches if launch.cooperative]


def _check(model, feeds, rtol=1e-5, atol=1e-5):
    for got, want in zip(emulate(model, feeds), reference(model, feeds)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# 768: a warp per row (rows not a multiple of the block's 8); 4100: a block per row, a partial last step.
ROWS = [([13, 768], 2), ([3, 4100], 3)]


@pytest.mark.parametrize("shape,blocks", ROWS)
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceLogSumExp"])
def test_reduce_last_axis(op, shape, blocks):
    x = rand(shape, seed=3)
    axes = np.array([-1], np.int64)
    model = node_model(op, ["x", "axes"], {"x": x}, consts={"axes": axes}, attrs={"keepdims": 0}, opset=18)
    launches = _shuffling_launches(model)
    assert launches and launches[0].grid[0] == blocks
    _check(model, {"x": x}, rtol=1e-4 if op == "ReduceLogSumExp" else 1e-5)


def test_reduce_over_two_trailing_axes():
    x = rand([4, 6, 300], seed=4)
    model = node_model("ReduceSum", ["x", "axes"], {"x": x}, consts={"axes": np.array([1, 2], np.int64)}, opset=18)
    assert _shuffling_launches(model)
    _check(model, {"x": x}, atol=1e-4)


@pytest.mark.parametrize("shape", [[10, 768], [2, 4096]])
def test_softmax(shape):
    x = rand(shape, seed=5)
    model = node_model("Softmax", ["x"], {"x": x}, attrs={"axis": -1})
    assert len(_shuffling_launches(model)) == 2  # the row max and the sum of exponentials
    _check(model, {"x": x}, atol=1e-6)


def test_layer_normalization():
    x, scale, bias = rand([2, 5, 768], seed=6), rand([768], seed=7), rand([768], seed=8)
    model = node_model("LayerNormalization", ["x", "scale", "bias"], {"x": x}, consts={"scale": scale, "bias": bias},
                       attrs={"axis": -1, "epsilon": 1e-5})
    assert len(_shuffling_launches(model)) >= 2  # mean and variance
    _check(model, {"x": x}, rtol=1e-4, atol=1e-4)


def test_strided_and_short_reductions_stay_one_thread_per_output():
    x = rand([768, 5], seed=9)  # reduced axis not contiguous: lanes would read 5 floats apart
    model = node_model("ReduceSum", ["x", "axes"], {"x": x}, consts={"axes": np.array([0], np.int64)}, opset=18)
    assert not _shuffling_launches(model)
    _check(model, {"x": x}, atol=1e-4)
    x = rand([40, 20], seed=10)
    assert not _shuffling_launches(node_model("Softmax", ["x"], {"x": x}, attrs={"axis": -1}))


def test_integer_and_bool_rows():
    x = np.random.default_rng(11).integers(-1000, 1000, (6, 900)).astype(np.int32)
    model = node_model("ReduceMax", ["x", "axes"], {"x": x}, consts={"axes": np.array([1], np.int64)}, opset=18)
    assert _shuffling_launches(model)
    _check(model, {"x": x})
    x = np.random.default_rng(12).integers(-3, 3, (5, 3000)).astype(np.int64)
    model = node_model("ReduceSum", ["x", "axes"], {"x": x}, consts={"axes": np.array([1], np.int64)}, opset=18)
    assert _shuffling_launches(model)
    _check(model, {"x": x})


@pytest.mark.skipif(not nvrtc_available(), reason="NVRTC IS NOT AVAILABLE: pip install -e '.[cuda]'")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvrtc_compiles_row_reductions(arch):
    x, scale, bias = rand([4, 4096], seed=6), rand([4096], seed=7), rand([4096], seed=8)
    nodes = [helper.make_node("LayerNormalization", ["x", "scale", "bias"], ["n"], axis=-1),
             helper.make_node("Softmax", ["x"], ["s"], axis=-1),
             helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0)]
    model = graph_model(nodes, {"x": x}, ["n", "s", "m"], consts={"scale": scale, "bias": bias})
    from compiler.codegen.cuda.target import CudaTarget

    _, module = lower_for_cuda(model, CudaTarget(arch))
    ptx, _ = compile_cuda(module.source, arch)
    assert b"shfl.sync.down" in ptx and b"bar.sync" in ptx
