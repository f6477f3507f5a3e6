"""Shape/Size lowerings, and the diagnostic for a Shape of a data-dependent size.

Folding removes Shape/Size of static values before lowering, so the lowerings are
checked directly on a node; the model-level test checks that a Shape whose
input size depends on run-time data is reported as that, not as an unknown op.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import compiler
from compiler.codegen.target import resolve_target
from compiler.dtypes import DType
from compiler.errors import ShapeError
from compiler.graph.ir import Node, TensorType, Value
from compiler.loopir.expr import Buffer
from compiler.ops.api import LoweringContext, Tensor
from compiler.ops.registry import lookup
from helpers_onnx import graph_model, rand
from runtime_stub import InferenceSession


def _lowered_constant(op: str, attrs: dict, out_shape: tuple[int, ...]) -> np.ndarray:
    x = Value("x", TensorType(DType.F32, (2, 3, 4, 5)))
    node = Node(op, op.lower(), [x], [Value("y", TensorType(DType.I64, out_shape))], attrs, "", 21)
    ctx = LoweringContext(node, resolve_target("host"), [Tensor(Buffer("x", DType.F32, x.shape))],
                          lambda hint: hint)
    lookup(op).lower(ctx)
    (array,) = ctx.constants.values()
    return array


@pytest.mark.parametrize("attrs,expected", [({}, [2, 3, 4, 5]), ({"start": 1}, [3, 4, 5]),
                                            ({"start": -3, "end": -1}, [3, 4]), ({"end": 10}, [2, 3, 4, 5]),
                                            ({"start": 3, "end": 1}, [])])
def test_shape_lowering(attrs, expected):
    got = _lowered_constant("Shape", attrs, (len(expected),))
    np.testing.assert_array_equal(got, np.array(expected, dtype=np.int64))


def test_size_lowering():
    np.testing.assert_array_equal(_lowered_constant("Size", {}, ()), [120])


def test_shape_of_a_shape_read_at_run_time_is_computed_from_the_values(tmp_path):
    x = rand((4, 5), seed=1)
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"]), helper.make_node("Shape", ["p"], ["s"]),
             helper.make_node("Cast", ["s"], ["y"], to=1)]
    model = graph_model(nodes, {"x": x, "pads": np.array([1, 0, 0, 2], dtype=np.int64)}, ["y"], opset=18)
    session = InferenceSession(compiler.compile(model.SerializeToString(), str(tmp_path / "m.tilec")))
    for pads in ([1, 0, 0, 2], [0, 3, 2, 0], [-1, -2, 0, 0]):
        (y,) = session.run(None, {"x": x, "pads": np.array(pads, dtype=np.int64)})
        np.testing.assert_array_equal(y, [4 + pads[0] + pads[2], 5 + pads[1] + pads[3]])


def test_shape_of_data_dependent_size_is_a_shape_error(tmp_path):
    # Pads computed from an input's data (not the input itself): no value size, a size tilec cannot know.
    x, pads = rand((4, 5), seed=1), np.array([1, 0, 0, 2], dtype=np.int64)
    nodes = [helper.make_node("Abs", ["pads"], ["positive"]), helper.make_node("Pad", ["x", "positive"], ["p"]),
             helper.make_node("Shape", ["p"], ["s"]), helper.make_node("Cast", ["s"], ["y"], to=1)]
    model = graph_model(nodes, {"x": x, "pads": pads}, ["y"], opset=18)
    with pytest.raises(ShapeError, match="data-dependent size"):
        compiler.compile(model.SerializeToString(), str(tmp_path / "m.tilec"))
