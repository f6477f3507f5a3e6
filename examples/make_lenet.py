"""Writes examples/models/lenet.onnx: a LeNet-style digit classifier with fixed random weights.

The bundled example for the quickstart. Regenerate with ``python examples/make_lenet.py``
(deterministic: same seed, same bytes).
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(2024)

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        return numpy_helper.from_array(rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32), name)

    inits = [weight("c1_w", 8, 1, 5, 5), numpy_helper.from_array(np.zeros(8, np.float32), "c1_b"),
             weight("c2_w", 16, 8, 5, 5), numpy_helper.from_array(np.zeros(16, np.float32), "c2_b"),
             weight("fc1_w", 400, 120), numpy_helper.from_array(np.zeros(120, np.float32), "fc1_b"),
             weight("fc2_w", 120, 10), numpy_helper.from_array(np.zeros(10, np.float32), "fc2_b"),
             numpy_helper.from_array(np.array([1, 400], np.int64), "flat")]
    nodes = [
        helper.make_node("Conv", ["image", "c1_w", "c1_b"], ["c1"], kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "c2_w", "c2_b"], ["c2"], kernel_shape=[5, 5]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p2", "flat"], ["f"]),
        helper.make_node("Gemm", ["f", "fc1_w", "fc1_b"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "fc2_w", "fc2_b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(nodes, "lenet", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tilec-examples")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    out = pathlib.Path(__file__).parent / "models" / "lenet.onnx"
    onnx.save(build(), str(out))
    print(f"wrote {out}")
