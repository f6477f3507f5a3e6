"""Small synthetic models that isolate one cost: GEMM throughput, or per-op overhead.

* ``mlp(batch, sizes)``: MatMul + Add (+ Relu between layers), default batch 64, 784-4096-4096-10.
* ``matmul(n)``: one n×n×n MatMul against a constant n×n weight.
* ``elementwise_chain(ops, shape)``: ``ops`` small unary/binary elementwise ops in a row on one
  tensor (default 200 ops on 1×64): the work is negligible, so the time is per-op overhead.
* ``residual_cnn(batch)``: a ResNet stem and block at 48×48 (Conv/Relu/MaxPool, a residual Add,
  GlobalAveragePool, Gemm): small enough to quantize and run anywhere (the int8 tests).

Weights are seeded random; IR version 8 (what onnxruntime reads), opset 17.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def model_of(name: str, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
             outputs: list[onnx.ValueInfoProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    """The checked model of a graph, as every builder here writes it (IR version 8, opset 17)."""
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)], producer_name="tilec-models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp(batch: int = 64, sizes: Sequence[int] = (784, 4096, 4096, 10), seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        inits += [numpy_helper.from_array(rng.normal(0, np.sqrt(2 / n_in), (n_in, n_out)).astype(np.float32), f"w{k}"),
                  numpy_helper.from_array(rng.normal(0, 0.01, n_out).astype(np.float32), f"b{k}")]
        nodes += [helper.make_node("MatMul", [prev, f"w{k}"], [f"m{k}"]),
                  helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"])]
        prev = f"a{k}"
        if k < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{k}"]))
            prev = f"r{k}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return model_of("mlp", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, sizes[-1]])], inits)


def matmul(n: int = 1024, seed: int = 0) -> onnx.ModelProto:
    w = np.random.default_rng(seed).normal(0, 1 / np.sqrt(n), (n, n)).astype(np.float32)
    return model_of("matmul", [helper.make_node("MatMul", ["x", "w"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [numpy_helper.from_array(w, "w")])


# One period of the chain: (op, constant operand or None). Squashing ops (Tanh, Sigmoid) recur often
# enough that values stay O(1) however long the chain, so the outputs stay comparable.
_CHAIN = (("Mul", 1.5), ("Add", 0.25), ("Tanh", None), ("Sub", 0.1), ("Abs", None), ("Div", 0.8),
          ("Neg", None), ("Sigmoid", None), ("Max", 0.3), ("Relu", None))


def elementwise_chain(ops: int = 200, shape: Sequence[int] = (1, 64), seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for k in range(ops):
        op, operand = _CHAIN[k % len(_CHAIN)]
        inputs = [prev]
        if operand is not None:
            # Every other constant is a full row (broadcast over leading dims), the rest scalars.
            value = np.full(shape[-1:], operand) + rng.normal(0, 0.01, shape[-1:]) if k % 2 else np.array(operand)
            inits.append(numpy_helper.from_array(value.astype(np.float32), f"c{k}"))
            inputs.append(f"c{k}")
        nodes.append(helper.make_node(op, inputs, [f"t{k}"]))
        prev = f"t{k}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return model_of("elementwise_chain", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))], inits)


def residual_cnn(batch: int = 2, seed: int = 0) -> onnx.ModelProto:
    """Conv/Relu/MaxPool, a residual Add, GlobalAveragePool and a Gemm: a ResNet stem and block."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(out: str, x: str, cin: int, cout: int, k: int, stride: int = 1) -> None:
        w = (rng.standard_normal((cout, cin, k, k)) * (2 / (cin * k * k)) ** 0.5).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, out + "_w"),
                      numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), out + "_b")])
        nodes.append(helper.make_node("Conv", [x, out + "_w", out + "_b"], [out], pads=[k // 2] * 4,
                                      strides=[stride] * 2))

    conv("c1", "x", 3, 16, 5, 2)
    nodes += [helper.make_node("Relu", ["c1"], ["r1"]),
              helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])]
    conv("c2", "p1", 16, 16, 3)
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    conv("c3", "r2", 16, 16, 1)
    nodes += [helper.make_node("Add", ["c3", "p1"], ["s"]), helper.make_node("Relu", ["s"], ["r3"]),
              helper.make_node("GlobalAveragePool", ["r3"], ["g"]), helper.make_node("Flatten", ["g"], ["f"])]
    inits += [numpy_helper.from_array((rng.standard_normal((16, 10)) * 0.3).astype(np.float32), "fc_w"),
              numpy_helper.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), "fc_b")]
    nodes.append(helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"]))
    return model_of("residual_cnn", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 48, 48])],
                    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], inits)
