"""If, Scan and Loop compiled end to end (expanded by compiler/frontend/control_flow.py).

The expansions' edge cases are covered on the graph level in
tests/frontend/test_frontend_control_flow.py; these check that the expanded
graphs compile and run. Expected values: onnx's ReferenceEvaluator for If,
onnxruntime for Scan (the reference knows forward scans only) and Loop.
Tolerance: float32 rtol=1e-5, atol=1e-6 (a few adds and multiplies).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from helpers_onnx import graph_model, ort_reference, rand


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


@pytest.mark.parametrize("cond", [True, False])
def test_if_on_a_runtime_condition(check, cond):
    then_branch = helper.make_graph([helper.make_node("Add", ["x", "x"], ["t"])], "then", [], [_f32("t", [3, 4])])
    else_branch = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["e"])], "else", [], [_f32("e", [3, 4])])
    nodes = [helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch)]
    feeds = {"x": rand((3, 4)), "c": np.array([cond])}  # a one-element rank-1 condition must not broadcast y
    check(graph_model(nodes, feeds, ["y"]), feeds, rtol=1e-5, atol=1e-6)


def test_scan_with_reverse_input_and_output_axis(check):
    body = helper.make_graph(
        [helper.make_node("Add", ["acc_in", "x_t"], ["acc_out"]), helper.make_node("Tanh", ["acc_out"], ["y_t"])],
        "body", [_f32("acc_in", [4]), _f32("x_t", [4])], [_f32("acc_out", [4]), _f32("y_t", [4])])
    nodes = [helper.make_node("Scan", ["acc0", "xs"], ["acc", "ys"], name="scan", body=body, num_scan_inputs=1,
                              scan_input_axes=[1], scan_input_directions=[1], scan_output_axes=[1])]
    feeds = {"acc0": rand((4,)), "xs": rand((4, 5), seed=1)}
    model = graph_model(nodes, feeds, ["acc", "ys"], expected=[np.zeros(4, np.float32), np.zeros((4, 5), np.float32)])
    check(model, feeds, rtol=1e-5, atol=1e-6, expected=ort_reference(model, feeds))


def test_loop_with_constant_trip_count(check):
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["v_in", "fi"], ["scaled"]),
         helper.make_node("Add", ["scaled", "x"], ["v_out"]),
         helper.make_node("Relu", ["v_out"], ["r"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _f32("v_in", [2, 3])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _f32("v_out", [2, 3]), _f32("r", [2, 3])])
    nodes = [helper.make_node("Loop", ["m", "go", "v0"], ["v", "rs"], name="loop", body=body)]
    feeds = {"v0": rand((2, 3)), "x": rand((2, 3), seed=1)}
    consts = {"m": np.array(4, np.int64), "go": np.array(True)}
    model = graph_model(nodes, feeds, ["v", "rs"], consts,
                        expected=[np.zeros((2, 3), np.float32), np.zeros((4, 2, 3), np.float32)])
    check(model, feeds, rtol=1e-5, atol=1e-6, expected=ort_reference(model, feeds))
