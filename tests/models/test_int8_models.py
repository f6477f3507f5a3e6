"""Int8 models quantized by onnxruntime's own tools match onnxruntime's int8 results.

Static (QDQ) models: tilec's output within one step of the output's quantization scale of
onnxruntime's on >= 99.9% of the elements (issue 15's bar; measured: every element identical, since
both requantize each contraction with the same float32 multiplier). The compiled graph must hold
no float Conv/MatMul/Gemm: the contractions ran on integer dot products.

Dynamic (quantize_dynamic) models: the output is float, so there is no output step. Both int8 runs
quantize each activation at run time from its own min/max, so a last-bit difference in a float op
(LayerNorm, Softmax, Erf) can flip one activation's rounding, and the flip propagates: the bar is
that tilec's int8 output is as accurate as onnxruntime's, its max error against the float32 model
within 1.25x of onnxruntime int8's (measured: 1.00x at 2x64, 1.04x at 4x256x128), and its distance
from onnxruntime's int8 output below onnxruntime int8's own error (measured: 1e-6 and 0.56x).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import compiler
import runtime_stub
from compiler.frontend import load_graph
from compiler.graph.passes import run_passes
from compiler.models import light, quantized, synthetic, transformer

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("sympy")  # quant_pre_process's symbolic shape inference


def _output_step(model: onnx.ModelProto) -> float:
    """The scale of the DequantizeLinear producing the (first) graph output."""
    last = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    assert last.op_type == "DequantizeLinear"
    scale = next(t for t in model.graph.initializer if t.name == last.input[1])
    return float(numpy_helper.to_array(scale))


def _float_contractions(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in run_passes(load_graph(model)).nodes if n.op_type in ("Conv", "MatMul", "Gemm")]


def _check_static(model: onnx.ModelProto, feeds: dict[str, np.ndarray], tmp_path) -> None:
    assert _float_contractions(model) == []
    with runtime_stub.InferenceSession(compiler.compile(model, tmp_path / "int8.tilec"), threads=2) as session:
        (got,) = session.run(None, feeds)
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    steps = np.abs(got - want) / _output_step(model)
    assert np.mean(steps <= 1.0001) >= 0.999, f"{np.mean(steps <= 1.0001):.4%} within one step, max {steps.max()}"


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
def test_quantize_static_cnn_matches_onnxruntime_int8(per_channel: bool, tmp_path) -> None:
    model = synthetic.residual_cnn()
    calibration = quantized.random_calibration(model, seed=1)
    qdq = quantized.quantize_static_qdq(model, calibration, per_channel=per_channel)
    _check_static(qdq, quantized.random_calibration(model, batches=1, seed=2)[0], tmp_path)


@pytest.mark.slow
def test_quantize_static_resnet50_matches_onnxruntime_int8(tmp_path) -> None:
    model = light.light_model("resnet50")
    qdq = quantized.quantize_static_qdq(model, quantized.random_calibration(model))
    _check_static(qdq, quantized.random_calibration(model, batches=1, seed=5)[0], tmp_path)


@pytest.mark.parametrize("layers, hidden, seq", [(2, 64, 16), (4, 256, 128)], ids=["2x64", "4x256x128"])
def test_quantize_dynamic_encoder_matches_onnxruntime_int8(layers: int, hidden: int, seq: int, tmp_path) -> None:
    model = transformer.encoder(layers=layers, hidden=hidden, heads=4, seq=seq)
    int8 = quantized.quantize_dynamic_int8(model)
    assert "MatMulInteger" in {n.op_type for n in int8.graph.node}
    feeds = transformer.encoder_inputs(model)
    with runtime_stub.InferenceSession(compiler.compile(int8, tmp_path / "int8.tilec"), threads=2) as session:
        (got,) = session.run(None, feeds)
    (want,) = ort.InferenceSession(int8.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    (exact,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    quantization_error = float(np.abs(want - exact).max())
    assert float(np.abs(got - exact).max()) <= 1.25 * quantization_error
    assert float(np.abs(got - want).max()) < quantization_error
