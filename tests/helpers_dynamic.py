"""Models with symbolic dimensions, built with onnx.helper the way exporters leave them: the batch
(and sequence) as ``dim_param`` s of the inputs, outputs named with the same or with other symbols."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)


def dynamic_model(nodes, inputs, outputs, weights) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "dynamic", inputs, outputs, weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def mlp_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Add", ["a", "b1"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("MatMul", ["c", "w2"], ["d"]),
             helper.make_node("Softmax", ["d"], ["y"], axis=-1)]
    return dynamic_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
                  [weight(rng, "w1", 64, 128), weight(rng, "b1", 128), weight(rng, "w2", 128, 10)])


def cnn_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    # The output's batch has a name of its own, as tf2onnx writes them: the compiler must see it is N.
    return dynamic_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["unk__7", 10])],
                  [weight(rng, "w1", 8, 3, 3, 3), weight(rng, "b1", 8), weight(rng, "w2", 16, 8, 3, 3),
                   weight(rng, "wf", 10, 16), weight(rng, "bf", 10)])


def attention_model() -> onnx.ModelProto:
    """One self-attention block over a symbolic batch and sequence: the scores are seq x seq, and
    softmax and the value product reduce over the symbolic sequence."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("MatMul", ["x", "wv"], ["v"]), helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Mul", ["s", "scale"], ["ss"]),
             helper.make_node("Softmax", ["ss"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["o"]),
             helper.make_node("Add", ["o", "x"], ["r"]),
             helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["y"], axis=-1)]
    return dynamic_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 32])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 32])],
                  [weight(rng, "wq", 32, 32), weight(rng, "wk", 32, 32), weight(rng, "wv", 32, 32),
                   numpy_helper.from_array(np.array(0.125, np.float32), "scale"),
                   weight(rng, "gamma", 32), weight(rng, "beta", 32)])


def two_input_model() -> onnx.ModelProto:
    """Two inputs that share the batch: an Add of them proves it, the runtime checks it."""
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("ReduceSum", ["s", "axes"], ["y"], keepdims=0)]
    return dynamic_model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 5]),
                          helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 5])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
                  [numpy_helper.from_array(np.array([1], np.int64), "axes")])
