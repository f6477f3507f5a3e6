"""The conformance summary's classification: computed by the artifact vs folded at compile time.

Models run through ``compiler.backend`` under ``record_runs()`` and are classified by
``conformance.counts.classify``, the code the suite's per-case hook runs.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

import compiler.backend
from compiler.backend import BackendRun, computed_by_artifact, record_runs
from conformance import counts
from helpers_onnx import graph_model

X = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
C = np.ones((2, 3), np.float32)


def run_case(model, feeds: list[np.ndarray]) -> tuple[str, list[BackendRun], list[np.ndarray]]:
    with record_runs() as runs:
        outputs = compiler.backend.prepare(model).run(feeds)
    return counts.classify(runs), runs, outputs


def test_output_of_a_real_input_is_computed() -> None:
    model = graph_model([helper.make_node("Relu", ["x"], ["y"])], {"x": X}, ["y"])
    verdict, runs, (y,) = run_case(model, [X])
    np.testing.assert_array_equal(y, np.maximum(X, 0))
    assert verdict == "computed"
    assert runs[0].runtime_inputs == ("x",) and runs[0].computed_outputs == ("y",) and runs[0].folded_outputs == ()


def test_output_of_constants_only_is_folded_though_the_artifact_has_an_input_and_kernels() -> None:
    model = graph_model([helper.make_node("Neg", ["c"], ["z"]), helper.make_node("Relu", ["x"], ["unused"])],
                        {"x": X}, ["z"], {"c": C})
    verdict, runs, (z,) = run_case(model, [X])
    np.testing.assert_array_equal(z, -C)
    assert verdict == "folded"
    assert runs[0].runtime_inputs == ("x",) and runs[0].kernels > 0 and runs[0].folded_outputs == ("z",)


def test_mixed_outputs_count_as_computed_when_one_depends_on_run_time_input() -> None:
    model = graph_model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["c"], ["z"])],
                        {"x": X}, ["y", "z"], {"c": C})
    verdict, runs, _ = run_case(model, [X])
    assert verdict == "computed"
    assert runs[0].computed_outputs == ("y",) and runs[0].folded_outputs == ("z",)


def test_shape_operands_read_at_run_time_are_sources() -> None:
    # Pad's pads set the output's shape: read at run time (value sizes), they make the padded constant computed.
    pads = np.array([0, 1, 0, 1], np.int64)
    model = graph_model([helper.make_node("Pad", ["c", "pads"], ["y"])], {"pads": pads}, ["y"], {"c": C})
    verdict, runs, (y,) = run_case(model, [pads])
    np.testing.assert_array_equal(y, np.pad(C, ((0, 0), (1, 1))))
    assert verdict == "computed"
    assert runs[0].runtime_inputs == ("pads",) and runs[0].computed_outputs == ("y",)


def test_shape_operands_compiled_in_as_constants_leave_a_folded_artifact() -> None:
    # A shape computed from an input's data (not the input itself) is no value size: the backend compiles the
    # input in, and the reshaped constant is folded.
    shape = np.array([-3, -2], np.int64)
    model = graph_model([helper.make_node("Abs", ["shape"], ["positive"]),
                         helper.make_node("Reshape", ["c", "positive"], ["r"]), helper.make_node("Neg", ["r"], ["y"])],
                        {"shape": shape}, ["y"], {"c": C})
    verdict, runs, (y,) = run_case(model, [shape])
    np.testing.assert_array_equal(y, -C.reshape(3, 2))
    assert verdict == "folded"
    assert runs[0].runtime_inputs == () and runs[0].folded_outputs == ("y",)


def test_an_input_the_outputs_do_not_read_at_run_time_is_no_source() -> None:
    # HannWindow's size is a run-time input, but the declared output shape already fixes the window.
    size = np.array(5, np.int64)
    model = graph_model([helper.make_node("HannWindow", ["size"], ["y"])], {"size": size}, ["y"])
    verdict, runs, _ = run_case(model, [size])
    assert verdict == "folded"
    assert runs[0].runtime_inputs == ("size",) and runs[0].folded_outputs == ("y",)


def test_an_empty_input_carries_no_data() -> None:
    x = np.zeros((2, 0), np.float32)
    model = graph_model([helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)], {"x": x}, ["y"], opset=11)
    verdict, runs, (y,) = run_case(model, [x])
    np.testing.assert_array_equal(y, np.zeros((1, 1), np.float32))
    assert verdict == "folded"


def test_a_case_is_computed_only_when_every_run_computed() -> None:
    computed = BackendRun("a.tilec", ("x",), ("y",), (), 1)
    folded = BackendRun("b.tilec", (), (), ("y",), 1)
    assert computed_by_artifact([computed, computed])
    assert not computed_by_artifact([computed, folded])
    assert not computed_by_artifact([])  # ran no artifact: nothing computed


def test_counts_from_reports() -> None:
    path = "tests/conformance/test_onnx_backend.py::OnnxBackendNodeModelTest::"

    def report(name: str, outcome: str, when: str = "call", verdict: str | None = None) -> pytest.TestReport:
        props = [(counts.PROPERTY, verdict)] if verdict else []
        return pytest.TestReport(path + name, ("", 0, ""), {}, outcome, None, when, user_properties=props)

    stats = {
        "passed": [report("test_abs_cpu", "passed", verdict="computed"),
                   report("test_range_cpu", "passed", verdict="folded"),
                   report("test_teardown_error_cpu", "passed", verdict="computed"),
                   pytest.TestReport("tests/ops/test_x.py::test_y", ("", 0, ""), {}, "passed", None, "call")],
        "error": [report("test_teardown_error_cpu", "failed", when="teardown")],
        "failed": [report("test_bad_cpu", "failed")],
        "xfailed": [report("test_known_cpu", "skipped")],
        "skipped": [report("test_skipped_cpu", "skipped", when="setup")],
    }
    assert counts.conformance_counts(stats) == {
        "computed": ["test_abs"], "folded": ["test_range"], "failed": ["test_bad", "test_teardown_error"],
        "xfailed": ["test_known"], "skipped": ["test_skipped"]}
