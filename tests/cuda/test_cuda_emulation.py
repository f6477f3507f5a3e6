"""The generated CUDA C, run on the CPU under tests/cuda/emulation.h, against onnx's reference.

No GPU and no NVRTC needed: this checks the loop IR → CUDA C translation and
the thread mapping (every launch, every thread, the launch plan's arguments),
including the shared-memory tiled contractions, whose block threads run as
real threads meeting at ``__syncthreads``. Every op test of tests/ops also
runs this way through the ``check`` fixture (``--cuda-emulation``).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import compiler.codegen.cuda.emitter as cuda_emitter
from cuda_emulation import CXX, emulate, lower_for_cuda
from helpers_onnx import graph_model, node_model, rand, reference

pytestmark = pytest.mark.skipif(CXX is None, reason="no host C++ compiler to emulate CUDA kernels with")


def _check(model, feeds, rtol=1e-4, atol=1e-5):
    expected = reference(model, feeds)
    actual = emulate(model, feeds)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape and a.dtype == e.dtype
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def test_relu():
    x = rand([2, 3, 5, 7])
    _check(node_model("Relu", ["x"], {"x": x}), {"x": x})


def test_add_broadcast():
    x, b = rand([2, 3, 4, 5]), rand([3, 1, 5], seed=1)
    _check(node_model("Add", ["x", "b"], {"x": x, "b": b}), {"x": x, "b": b})


def test_add_int32_and_compare_bool():
    x = np.arange(-12, 12, dtype=np.int32).reshape(4, 6)
    y = np.array([3, -2, 7, 0, 1, -5], dtype=np.int32)
    nodes = [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Greater", ["s", "y"], ["g"])]
    feeds = {"x": x, "y": y}
    _check(graph_model(nodes, feeds, ["s", "g"]), feeds)


def test_float16_add():
    x, b = rand([3, 17], dtype="float16"), rand([17], seed=1, dtype="float16")
    _check(node_model("Add", ["x", "b"], {"x": x, "b": b}), {"x": x, "b": b}, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("shape_a,shape_b", [([5, 7], [7, 3]), ([2, 4, 6], [6, 9]), ([3, 1, 8, 5], [2, 5, 4])])
def test_matmul(shape_a, shape_b):
    a, b = rand(shape_a), rand(shape_b, seed=1)
    _check(node_model("MatMul", ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b})


def test_gemm_trans_b_bias():
    a, w, c = rand([4, 9]), rand([6, 9], seed=1), rand([6], seed=2)
    model = node_model("Gemm", ["a", "w", "c"], {"a": a}, consts={"w": w, "c": c},
                       attrs={"transB": 1, "alpha": 0.5, "beta": 2.0})
    _check(model, {"a": a})


@pytest.mark.parametrize("attrs,w_shape", [
    ({"pads": [1, 1, 1, 1]}, [4, 3, 3, 3]),
    ({"strides": [2, 2], "pads": [0, 1, 2, 1]}, [5, 3, 3, 2]),
    ({"group": 3, "pads": [1, 1, 1, 1]}, [6, 1, 3, 3]),
    ({"dilations": [2, 1], "strides": [1, 2]}, [2, 3, 2, 3]),
])
def test_conv(attrs, w_shape):
    x, w, b = rand([2, 3, 9, 8]), rand(w_shape, seed=1), rand([w_shape[0]], seed=2)
    _check(node_model("Conv", ["x", "w", "b"], {"x": x}, consts={"w": w, "b": b}, attrs=attrs), {"x": x},
           rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_grouped_conv_is_a_batch_of_tiled_gemms(dtype):
    """ShuffleNet-like grouped 1x1 and 3x3 convs: each group's GEMM is tiled (shared memory; tensor cores in
    float16), the group being the batch; depthwise convs are not (no GEMM columns)."""
    x = rand([1, 48, 12, 12], dtype=dtype)
    w1, w3 = rand([48, 16, 1, 1], seed=1, dtype=dtype), rand([48, 16, 3, 3], seed=2, dtype=dtype)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], group=3),
             helper.make_node("Conv", ["c1", "w3"], ["y"], group=3, pads=[1, 1, 1, 1])]
    model = graph_model(nodes, {"x": x}, ["y"], consts={"w1": w1, "w3": w3})
    _check(model, {"x": x}, rtol=2e-2 if dtype == "float16" else 1e-4, atol=2e-2 if dtype == "float16" else 1e-4)
    _, module = lower_for_cuda(model)
    # Each conv: one blocked launch (after the padding copy's launches) with shared A and B tiles.
    assert sum(launch.cooperative for launch in module.launches) == 2
    assert module.source.count("__shared__") >= 4


def test_conv_relu_fused():
    x, w, b = rand([1, 3, 10, 10]), rand([8, 3, 3, 3], seed=1), rand([8], seed=2)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    model = graph_model(nodes, {"x": x}, ["y"], consts={"w": w, "b": b})
    _check(model, {"x": x}, atol=1e-4)
    program, _ = lower_for_cuda(model)
    assert any("Conv" in c.kernel.label and "Relu" in c.kernel.label for c in program.calls)


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2], "strides": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
])
def test_maxpool(attrs):
    x = rand([2, 3, 9, 9])
    _check(node_model("MaxPool", ["x"], {"x": x}, attrs=attrs), {"x": x})


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
])
def test_averagepool(attrs):
    x = rand([1, 4, 7, 7])
    _check(node_model("AveragePool", ["x"], {"x": x}, attrs=attrs), {"x": x})


def test_global_average_pool():
    x = rand([2, 5, 6, 6])
    _check(node_model("GlobalAveragePool", ["x"], {"x": x}), {"x": x})


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax(axis):
    x = rand([3, 4, 10])
    _check(node_model("Softmax", ["x"], {"x": x}, attrs={"axis": axis}), {"x": x})


def test_reduce_mean():
    x = rand([3, 4, 5])
    _check(node_model("ReduceMean", ["x"], {"x": x}, attrs={"axes": [1], "keepdims": 1}, opset=13), {"x": x})


def test_reduce_mean_all_to_scalar():
    x = rand([3, 4, 5])
    _check(node_model("ReduceMean", ["x"], {"x": x}, attrs={"keepdims": 0}, opset=13), {"x": x})


def test_concat():
    a, b, c = rand([2, 3, 4]), rand([2, 5, 4], seed=1), rand([2, 1, 4], seed=2)
    _check(node_model("Concat", ["a", "b", "c"], {"a": a, "b": b, "c": c}, attrs={"axis": 1}), {"a": a, "b": b, "c": c})


def test_transpose():
    x = rand([2, 3, 4, 5])
    _check(node_model("Transpose", ["x"], {"x": x}, attrs={"perm": [0, 3, 1, 2]}), {"x": x})


def test_math_functions():
    x = rand([4, 9], low=0.1, high=2.0)
    nodes = [helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Log", ["x"], ["l"]),
             helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Erf", ["x"], ["f"]),
             helper.make_node("Sqrt", ["x"], ["s"]), helper.make_node("Sigmoid", ["x"], ["g"])]
    _check(graph_model(nodes, {"x": x}, ["e", "l", "t", "f", "s", "g"]), {"x": x}, rtol=1e-5, atol=1e-6)


def test_max_propagates_nan():
    x = np.array([[1.0, np.nan, -2.0, 0.0]], dtype=np.float32)
    b = np.array([[np.nan, 3.0, -1.0, -0.0]], dtype=np.float32)
    _check(node_model("Max", ["x", "b"], {"x": x, "b": b}), {"x": x, "b": b})


def test_lenet():
    import onnx

    model = onnx.load("examples/models/lenet.onnx")
    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    x = rand(shape)
    _check(model, {name: x}, rtol=1e-3, atol=1e-4)


def test_casts_and_narrow_integers():
    x = rand([5, 6], low=-300.0, high=300.0)
    nodes = [helper.make_node("Cast", ["x"], ["h"], to=10),  # float16: rounded on the way
             helper.make_node("Cast", ["x"], ["i"], to=3),  # int8, values in range
             helper.make_node("Cast", ["x"], ["b"], to=9)]
    feeds = {"x": np.clip(x, -100, 100).astype(np.float32)}
    _check(graph_model(nodes, feeds, ["h", "i", "b"]), feeds, rtol=1e-3, atol=0)


def test_where_and_clip():
    x, y = rand([4, 7]), rand([4, 7], seed=1)
    nodes = [helper.make_node("Greater", ["x", "y"], ["c"]), helper.make_node("Where", ["c", "x", "y"], ["w"]),
             helper.make_node("Clip", ["w", "lo", "hi"], ["z"])]
    consts = {"lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)}
    _check(graph_model(nodes, {"x": x, "y": y}, ["z"], consts=consts), {"x": x, "y": y})


def _tiled_launches(model) -> list:
    """The launches that run as shared-memory tiles (threads of a block synchronise)."""
    return [launch for launch in lower_for_cuda(model)[1].launches if launch.cooperative]


@pytest.mark.parametrize("shape_a,shape_b", [
    ([64, 48], [48, 64]),  # whole tiles: no guards
    ([70, 41], [41, 50]),  # partial tiles along rows, cols and the reduction
    ([2, 3, 33, 20], [20, 17]),  # A's batch dims folded into the rows
    ([3, 40, 24], [3, 24, 36]),  # a batch dim in both operands: one grid slice per batch
    ([16, 300], [300, 16]),  # one output per thread, long reduction
    ([1, 20, 16], [16, 130]),  # extent-1 dims and a 3-block row of cols
])
def test_tiled_matmul(shape_a, shape_b):
    a, b = rand(shape_a), rand(shape_b, seed=1)
    model = node_model("MatMul", ["a", "b"], {"a": a, "b": b})
    assert len(_tiled_launches(model)) == 1
    _check(model, {"a": a, "b": b})


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 1)])
def test_tiled_gemm_epilogue(trans_a, trans_b):
    a = rand([37, 70] if trans_a else [70, 37])
    w = rand([33, 37] if trans_b else [37, 33], seed=1)
    c = rand([33], seed=2)
    model = node_model("Gemm", ["a", "w", "c"], {"a": a}, consts={"w": w, "c": c},
                       attrs={"transA": trans_a, "transB": trans_b, "alpha": 0.5, "beta": 2.0})
    assert len(_tiled_launches(model)) == 1
    _check(model, {"a": a})


@pytest.mark.parametrize("attrs", [{"pads": [1, 1, 1, 1]},
                                   {"strides": [2, 2], "pads": [0, 1, 2, 1], "dilations": [1, 2]}])
def test_tiled_conv_bias_relu(attrs):
    x, w, b = rand([2, 5, 11, 10]), rand([24, 5, 3, 3], seed=1), rand([24], seed=2)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs), helper.make_node("Relu", ["c"], ["y"])]
    model = graph_model(nodes, {"x": x}, ["y"], consts={"w": w, "b": b})
    assert len(_tiled_launches(model)) == 1
    _check(model, {"x": x}, atol=1e-4)


def test_tiled_matmul_float16_and_int():
    a, b = rand([40, 30], dtype="float16"), rand([30, 20], seed=1, dtype="float16")
    model = node_model("MatMul", ["a", "b"], {"a": a, "b": b})
    assert _tiled_launches(model)
    _check(model, {"a": a, "b": b}, rtol=2e-2, atol=2e-2)
    ai = np.random.default_rng(0).integers(-100, 100, (33, 24)).astype(np.int8)
    bi = np.random.default_rng(1).integers(0, 255, (24, 40)).astype(np.uint8)
    model = node_model("MatMulInteger", ["a", "b"], {"a": ai, "b": bi}, opset=10)
    assert _tiled_launches(model)
    _check(model, {"a": ai, "b": bi})


def test_small_contractions_stay_one_thread_per_output():
    a, b = rand([8, 40]), rand([40, 50], seed=1)
    model = node_model("MatMul", ["a", "b"], {"a": a, "b": b})
    assert not _tiled_launches(model)
    x, w = rand([1, 32, 9, 9]), rand([32, 1, 3, 3], seed=1)  # depthwise: channels in both operands
    model = node_model("Conv", ["x", "w"], {"x": x}, consts={"w": w}, attrs={"group": 32})
    assert not _tiled_launches(model)
    _check(model, {"x": x})


def test_grid_stride_loop(monkeypatch):
    monkeypatch.setattr(cuda_emitter, "MAX_GRID", 3)  # 3 blocks of 256 threads for 2000 elements
    x = rand([4, 500])
    model = node_model("Sigmoid", ["x"], {"x": x})
    assert lower_for_cuda(model)[1].launches[0].grid == (3, 1, 1)
    _check(model, {"x": x})


def test_transformer_encoder():
    from compiler.models.transformer import encoder, encoder_inputs

    model = encoder(layers=1, hidden=32, heads=2, seq=20)
    assert len(_tiled_launches(model)) >= 4  # Q/K/V/output projections, feed-forward, attention products
    _check(model, encoder_inputs(model), rtol=1e-3, atol=1e-4)
