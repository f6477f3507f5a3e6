"""Builders for the benchmark models that do not ship as files (onnx.helper, seeded random weights).

``mlp()``: batch 64, 784-4096-4096-10 with Relu; ``matmul(n)``: an n×n×n MatMul.
``light(name)``: a model from onnx's light set with random weights (tests/models/light_models.py).
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from models.light_models import light_model  # noqa: E402


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "bench", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)], producer_name="tilec-bench")
    model.ir_version = 8
    return model


def mlp(batch: int = 64, sizes: tuple[int, ...] = (784, 4096, 4096, 10), seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        inits += [numpy_helper.from_array(rng.normal(0, np.sqrt(2 / n_in), (n_in, n_out)).astype(np.float32), f"w{k}"),
                  numpy_helper.from_array(np.zeros(n_out, np.float32), f"b{k}")]
        nodes += [helper.make_node("MatMul", [prev, f"w{k}"], [f"m{k}"]),
                  helper.make_node("Add", [f"m{k}", f"b{k}"], [f"a{k}"])]
        prev = f"a{k}"
        if k < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{k}"]))
            prev = f"r{k}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, sizes[-1]])], inits)


def matmul(n: int = 1024, seed: int = 0) -> onnx.ModelProto:
    w = np.random.default_rng(seed).standard_normal((n, n)).astype(np.float32)
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"])],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [numpy_helper.from_array(w, "w")])


def light(name: str) -> onnx.ModelProto:
    return light_model(name)
