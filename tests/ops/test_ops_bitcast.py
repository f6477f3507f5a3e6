"""BitCast against numpy's ``view`` (onnx's reference where it has the op): exact bit patterns.

BitCast is a view (no kernel); the cases cover a graph-output view (copy kernel through the new
type), a view feeding a computation, and the refusal of types of different widths.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import compiler
from compiler.errors import CompileError
from helpers_onnx import graph_model, node_model, rand

_TO = {"int32": TensorProto.INT32, "float32": TensorProto.FLOAT,
       "int64": TensorProto.INT64, "float64": TensorProto.DOUBLE, "uint8": TensorProto.UINT8,
       "int8": TensorProto.INT8, "int16": TensorProto.INT16, "float16": TensorProto.FLOAT16, "bool": TensorProto.BOOL}

CASES = [("float32", "int32"), ("int32", "float32"), ("float64", "int64"),
         ("int64", "float64"), ("int8", "uint8"), ("uint8", "int8"), ("float16", "int16"), ("bool", "uint8")]


def _data(dtype: str) -> np.ndarray:
    if dtype == "bool":
        return rand((3, 5), seed=1) > 0
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        return np.random.default_rng(2).integers(info.min, info.max, size=(3, 5), dtype=dtype, endpoint=True)
    return rand((3, 5), seed=3, dtype=dtype)


@pytest.mark.parametrize("src,dst", CASES)
def test_bitcast(check, src, dst):
    x = _data(src)
    expected = [x.view(dst)]
    feeds = {"x": x}
    check(node_model("BitCast", ["x"], feeds, attrs={"to": _TO[dst]}, opset=26, expected=expected), feeds,
          expected=expected, rtol=0, atol=0)


def test_bitcast_feeds_a_computation(check):
    x = rand((4, 6), seed=4)
    nodes = [helper.make_node("BitCast", ["x"], ["b"], to=TensorProto.INT32),
             helper.make_node("BitwiseAnd", ["b", "mask"], ["y"])]
    mask = np.array(0x7FFFFFFF, dtype=np.int32)  # clears the sign bit
    expected = [x.view(np.int32) & mask]
    feeds = {"x": x}
    check(graph_model(nodes, feeds, ["y"], consts={"mask": mask}, opset=26, expected=expected), feeds,
          expected=expected)


def test_bitcast_of_different_widths_is_refused(tmp_path):
    node = helper.make_node("BitCast", ["x"], ["y"], to=TensorProto.INT64)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 26)])
    with pytest.raises(CompileError, match="bytes"):
        compiler.compile(model.SerializeToString(), str(tmp_path / "m.tilec"))
