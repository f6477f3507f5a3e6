"""Stage 1a': QDQ contractions become integer contractions (compiler/frontend/qdq.py).

Each case is a QDQ pattern as onnxruntime's quantize_static writes it, built by hand: the rewrite's
result is checked as graph text (which ops the contraction became) and numerically against onnx's
reference evaluator, within one step of the output's quantization scale (the rewrite requantizes with
one multiplier, as onnxruntime's fused kernels do, where the reference divides the float result: the
two may round a value near a half step differently). Patterns that must stay float are checked to stay.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.frontend import load_graph
from compiler.frontend.qdq import integer_contractions
from compiler.graph.passes import run_passes
from helpers_onnx import graph_model, rand

Y_SCALE = np.float32(0.05)


def _weights(shape, seed):
    return np.random.default_rng(seed).integers(-127, 128, size=shape).astype(np.int8)


def _qdq_conv(*, per_channel: bool = True, bias: str = "int32", requantize: bool = True, axis: int = 0):
    """x (float) -> Q -> DQ -> Conv(DQ(w), bias) [-> Q -> DQ]: a quantize_static conv."""
    w = _weights((4, 3, 3, 3), 1)
    w_scale = np.array([0.01, 0.02, 0.005, 0.03][:w.shape[axis]], np.float32) if per_channel else np.float32(0.02)
    consts = {"x_s": np.float32(0.04), "x_z": np.uint8(120), "w": w, "w_s": w_scale,
              "w_z": np.zeros(w_scale.shape, np.int8), "y_s": Y_SCALE, "y_z": np.uint8(100)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["wd"], axis=axis)]
    inputs = ["xd", "wd"]
    if bias == "int32":
        consts["b"] = np.array([100, -2000, 50, 7], np.int32)
        consts["b_s"] = (np.float32(0.04) * np.asarray(w_scale, np.float32)).astype(np.float32) * np.ones(4, np.float32)
        nodes.append(helper.make_node("DequantizeLinear", ["b", "b_s"], ["bd"], axis=0))
        inputs.append("bd")
    elif bias == "float":
        consts["bd"] = np.array([0.5, -1.0, 0.25, 2.0], np.float32)
        inputs.append("bd")
    nodes.append(helper.make_node("Conv", inputs, ["c"], pads=[1, 1, 1, 1]))
    out = "c"
    if requantize:
        nodes += [helper.make_node("QuantizeLinear", ["c", "y_s", "y_z"], ["cq"]),
                  helper.make_node("DequantizeLinear", ["cq", "y_s", "y_z"], ["y"])]
        out = "y"
    feeds = {"x": rand((1, 3, 6, 7), seed=2, low=-4, high=4)}
    return graph_model(nodes, feeds, [out], consts, opset=19), feeds


def _ops(model) -> list[str]:
    return [n.op_type for n in run_passes(load_graph(model)).nodes]


def _within_one_step(check, model, feeds, step: float = float(Y_SCALE)):
    check(model, feeds, rtol=0, atol=step * 1.0001)


def test_requantized_conv_becomes_integer_conv_with_one_multiplier(check):
    model, feeds = _qdq_conv()
    assert _ops(model) == ["QuantizeLinear", "ConvInteger", "Add", "Cast", "Mul", "QuantizeLinear",
                           "DequantizeLinear"]
    _within_one_step(check, model, feeds)


def test_requantizing_multiplier_is_x_scale_times_w_scale_over_y_scale_in_float32():
    model, _ = _qdq_conv()
    rewritten = integer_contractions(model)
    constants = {t.name: numpy_helper.to_array(t) for t in rewritten.graph.initializer}
    mul = next(n for n in rewritten.graph.node if n.op_type == "Mul")
    multiplier = constants[mul.input[1]].reshape(-1)
    w_scale = np.array([0.01, 0.02, 0.005, 0.03], np.float32)
    np.testing.assert_array_equal(multiplier, np.float32(0.04) * w_scale / Y_SCALE)
    quantizer = next(n for n in rewritten.graph.node if n.op_type == "QuantizeLinear" and n.output[0] == "cq")
    assert constants[quantizer.input[1]] == 1 and constants[quantizer.input[2]] == 100


@pytest.mark.parametrize("bias", ["int32", "float", "none"])
def test_float_result_conv_scales_after_the_integer_conv(check, bias):
    model, feeds = _qdq_conv(bias=bias, requantize=False, per_channel=bias != "none")
    expected = {"int32": ["ConvInteger", "Add", "Cast", "Mul"], "float": ["ConvInteger", "Cast", "Mul", "Add"],
                "none": ["ConvInteger", "Cast", "Mul"]}[bias]
    assert _ops(model) == ["QuantizeLinear", *expected]
    check(model, feeds, rtol=1e-5, atol=1e-4)


def test_weights_quantized_along_another_axis_stay_float(check):
    model, feeds = _qdq_conv(axis=1, bias="none", requantize=False)
    assert "ConvInteger" not in _ops(model) and "Conv" in _ops(model)
    check(model, feeds, rtol=1e-5, atol=1e-4)


def _qdq_matmul(weights: bool, per_channel: bool, signed_a: bool = False):
    a_type = np.int8 if signed_a else np.uint8
    consts = {"a_s": np.float32(0.03), "a_z": a_type(-3 if signed_a else 130), "y_s": Y_SCALE,
              "y_z": np.uint8(128)}
    nodes = [helper.make_node("QuantizeLinear", ["a", "a_s", "a_z"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "a_s", "a_z"], ["ad"])]
    feeds = {"a": rand((2, 5, 37), seed=4, low=-3, high=3)}
    if weights:
        consts["b"] = _weights((37, 19), 5)
        consts["b_s"] = np.linspace(0.001, 0.004, 19).astype(np.float32) if per_channel else np.float32(0.002)
        consts["b_z"] = np.zeros(19, np.int8) if per_channel else np.int8(0)
        nodes.append(helper.make_node("DequantizeLinear", ["b", "b_s", "b_z"], ["bd"], axis=1))
    else:  # both operands activations (attention's scores)
        feeds["b"] = rand((2, 37, 19), seed=6, low=-2, high=2)
        consts.update(b_s=np.float32(0.02), b_z=np.uint8(128))
        nodes += [helper.make_node("QuantizeLinear", ["b", "b_s", "b_z"], ["bq"]),
                  helper.make_node("DequantizeLinear", ["bq", "b_s", "b_z"], ["bd"])]
    nodes += [helper.make_node("MatMul", ["ad", "bd"], ["m"]),
              helper.make_node("QuantizeLinear", ["m", "y_s", "y_z"], ["mq"]),
              helper.make_node("DequantizeLinear", ["mq", "y_s", "y_z"], ["y"])]
    return graph_model(nodes, feeds, ["y"], consts, opset=19), feeds


@pytest.mark.parametrize("weights, per_channel", [(True, True), (True, False), (False, False)],
                         ids=["per-channel-weights", "per-tensor-weights", "two-activations"])
@pytest.mark.parametrize("signed_a", [False, True], ids=["u8", "s8"])
def test_qdq_matmul_becomes_matmul_integer(check, weights, per_channel, signed_a):
    model, feeds = _qdq_matmul(weights, per_channel, signed_a)
    assert "MatMulInteger" in _ops(model) and "MatMul" not in _ops(model)
    _within_one_step(check, model, feeds)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("alpha, beta", [(1.0, 1.0), (0.5, 2.0)])
def test_qdq_gemm_becomes_matmul_integer_with_bias(check, trans_b, alpha, beta):
    k, n = 24, 10
    w = _weights((n, k) if trans_b else (k, n), 7)
    w_s = np.linspace(0.002, 0.006, n).astype(np.float32)
    consts = {"a_s": np.float32(0.05), "a_z": np.uint8(7), "w": w, "w_s": w_s, "w_z": np.zeros(n, np.int8),
              "b": np.arange(-5, 5, dtype=np.int32) * 300, "b_s": np.float32(0.05) * w_s, "y_s": Y_SCALE,
              "y_z": np.uint8(90)}
    nodes = [helper.make_node("QuantizeLinear", ["a", "a_s", "a_z"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "a_s", "a_z"], ["ad"]),
             helper.make_node("DequantizeLinear", ["w", "w_s", "w_z"], ["wd"], axis=0 if trans_b else 1),
             helper.make_node("DequantizeLinear", ["b", "b_s"], ["bd"], axis=0),
             helper.make_node("Gemm", ["ad", "wd", "bd"], ["g"], transB=trans_b, alpha=alpha, beta=beta),
             helper.make_node("QuantizeLinear", ["g", "y_s", "y_z"], ["gq"]),
             helper.make_node("DequantizeLinear", ["gq", "y_s", "y_z"], ["y"])]
    feeds = {"a": rand((3, k), seed=8, low=0, high=12)}
    model = graph_model(nodes, feeds, ["y"], consts, opset=19)
    assert "MatMulInteger" in _ops(model) and "Gemm" not in _ops(model)
    _within_one_step(check, model, feeds)


def test_sixteen_bit_and_blocked_quantization_stay_float(check):
    consts = {"a_s": np.float32(0.01), "a_z": np.uint16(30000), "w": _weights((8, 6), 9),
              "w_s": np.full((4, 6), 0.01, np.float32)}
    nodes = [helper.make_node("QuantizeLinear", ["a", "a_s", "a_z"], ["aq"]),
             helper.make_node("DequantizeLinear", ["aq", "a_s", "a_z"], ["ad"]),
             helper.make_node("DequantizeLinear", ["w", "w_s"], ["wd"], axis=0, block_size=2),
             helper.make_node("MatMul", ["ad", "wd"], ["y"])]
    feeds = {"a": rand((3, 8), seed=10)}
    model = graph_model(nodes, feeds, ["y"], consts, opset=21)
    assert "MatMulInteger" not in _ops(model)
    check(model, feeds, rtol=1e-5, atol=1e-5)


def test_a_model_without_dequantize_is_returned_as_it_is():
    model, _ = _qdq_conv()
    float_model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]))
    assert integer_contractions(float_model) is float_model
    before = model.SerializeToString()
    integer_contractions(model)
    assert model.SerializeToString() == before
