"""Scan/Loop unrolling and If selection (compiler/frontend/control_flow.py).

Each expanded graph IR is run with onnx's ReferenceEvaluator and compared with
onnxruntime on the original model (the reference evaluator lacks Scan-8 and
mishandles a Loop without a condition input). Both sides do the same float32
operations in the same order, so the tolerance stays at 1e-6.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from compiler.errors import UnsupportedOpError
from compiler.frontend import load_graph
from compiler.frontend.folding import graph_to_model
from compiler.loopir.sizes import size_vars
from helpers_onnx import bool_scalar as _bool, f32 as _f32, i64 as _i64, model_of as _model

CONTROL_FLOW = {"If", "Loop", "Scan"}


def _check_unrolled(model: onnx.ModelProto, feeds: dict[str, np.ndarray], oracle: str = "onnxruntime") -> None:
    graph = load_graph(model)
    assert {n.op_type for n in graph.nodes}.isdisjoint(CONTROL_FLOW), str(graph)
    if oracle == "reference":
        expected = ReferenceEvaluator(model).run(None, feeds)
    else:
        ort = pytest.importorskip("onnxruntime")
        expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = ReferenceEvaluator(graph_to_model(graph)).run(None, feeds)
    for out, g, e in zip(model.graph.output, got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype, out.name
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6, err_msg=out.name)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# --- Scan -------------------------------------------------------------------------------------


def _scan_body(passthrough: bool = False):
    """States (acc[2], count[]), scan inputs (a[2], b[2]); outputs the new states and two per-step values.

    It reads the outer value 'scale' and holds an initializer, as exported bodies do; with ``passthrough``
    its last output is the scan input 'a' itself (else -a: onnxruntime's Scan-8 outputs zeros for the former).
    """
    last = "a" if passthrough else "neg_a"
    nodes = [helper.make_node("Neg", ["a"], ["neg_a"]),helper.make_node("Mul", ["a", "b"], ["ab"]),
             helper.make_node("Mul", ["ab", "scale"], ["ab_scaled"]),
             helper.make_node("Add", ["acc_in", "ab_scaled"], ["acc_out"]),
             helper.make_node("Add", ["count_in", "one"], ["count_out"]),
             helper.make_node("Sub", ["acc_out", "a"], ["diff"])]
    return helper.make_graph(nodes, "body", [_f32("acc_in", [2]), _f32("count_in", []), _f32("a", [2]), _f32("b", [2])],
                             [_f32("acc_out", [2]), _f32("count_out", []), _f32("diff", [2]), _f32(last, [2])],
                             [numpy_helper.from_array(np.float32(1.0), "one")])


@pytest.mark.parametrize("out_axes,out_dirs", [([0, 0], [0, 0]), ([1, -1], [1, 0])])
def test_scan_with_axes_and_directions_is_unrolled(out_axes, out_dirs):
    node = helper.make_node("Scan", ["acc0", "count0", "xs", "ys"], ["acc", "count", "diffs", "as"], name="scan",
                            num_scan_inputs=2, body=_scan_body(), scan_input_axes=[0, -1],
                            scan_input_directions=[0, 1], scan_output_axes=out_axes, scan_output_directions=out_dirs)
    model = _model([node], [_f32("acc0", [2]), _f32("count0", []), _f32("xs", [5, 2]), _f32("ys", [2, 5])],
                   [_f32("acc", [2]), _f32("count", []), _f32("diffs", [5, 2] if out_axes[0] == 0 else [2, 5]),
                    _f32("as", [5, 2] if out_axes[1] == 0 else [2, 5])],
                   [numpy_helper.from_array(np.float32(0.5), "scale")])
    _check_unrolled(model, {"acc0": _rand(2), "count0": np.array(3, np.float32), "xs": _rand(5, 2, seed=1),
                            "ys": _rand(2, 5, seed=2)})


def test_scan_output_that_is_a_body_input_is_stacked():
    node = helper.make_node("Scan", ["acc0", "count0", "xs", "ys"], ["acc", "count", "diffs", "as"], name="scan",
                            num_scan_inputs=2, body=_scan_body(passthrough=True))
    model = _model([node], [_f32("acc0", [2]), _f32("count0", []), _f32("xs", [5, 2]), _f32("ys", [5, 2])],
                   [_f32("acc", [2]), _f32("count", []), _f32("diffs", [5, 2]), _f32("as", [5, 2])],
                   [numpy_helper.from_array(np.float32(0.5), "scale")])
    # onnxruntime outputs zeros for such a scan output, and the reference knows forward scans only.
    _check_unrolled(model, {"acc0": _rand(2), "count0": np.array(3, np.float32), "xs": _rand(5, 2, seed=1),
                            "ys": _rand(5, 2, seed=2)}, oracle="reference")


@pytest.mark.parametrize("directions", [[0, 0], [1, 0]])
def test_scan8_with_batch_axis_is_unrolled(directions):
    node = helper.make_node("Scan", ["", "acc0", "count0", "xs", "ys"], ["acc", "count", "diffs", "as"], name="scan",
                            num_scan_inputs=2, body=_scan_body(), directions=directions)
    model = _model([node], [_f32("acc0", [3, 2]), _f32("count0", [3]), _f32("xs", [3, 4, 2]), _f32("ys", [3, 4, 2])],
                   [_f32("acc", [3, 2]), _f32("count", [3]), _f32("diffs", [3, 4, 2]), _f32("as", [3, 4, 2])],
                   [numpy_helper.from_array(np.float32(0.5), "scale")], opset=8)
    _check_unrolled(model, {"acc0": _rand(3, 2), "count0": _rand(3), "xs": _rand(3, 4, 2, seed=1),
                            "ys": _rand(3, 4, 2, seed=2)})


# --- Loop -------------------------------------------------------------------------------------


def _loop_body(cond_out_node, scan_output: bool = True):
    """v += x[i] * i (x read from the outer scope); scan output v * 2 if ``scan_output``."""
    nodes = [cond_out_node,
             helper.make_node("Gather", ["x", "i"], ["xi"], axis=0),
             helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xi", "fi"], ["term"]),
             helper.make_node("Add", ["v_in", "term"], ["v_out"]),
             helper.make_node("Add", ["v_out", "v_out"], ["twice"])]
    return helper.make_graph(nodes, "body", [_i64("i", []), _bool("cond_in"), _f32("v_in", [3])],
                             [_bool("cond_out"), _f32("v_out", [3])] + ([_f32("twice", [3])] if scan_output else []))


@pytest.mark.parametrize("cond_out,cond", [
    (helper.make_node("Identity", ["cond_in"], ["cond_out"]), ""),
    (helper.make_node("Identity", ["cond_in"], ["cond_out"]), "true"),
    (helper.make_node("Constant", [], ["cond_out"], value=numpy_helper.from_array(np.array(True))), "true"),
])
def test_loop_with_constant_trip_count_is_unrolled(cond_out, cond):
    inits = [numpy_helper.from_array(np.array(4, np.int64), "m"), numpy_helper.from_array(np.array(True), "true")]
    node = helper.make_node("Loop", ["m", cond, "v0"], ["v", "scan"], name="loop", body=_loop_body(cond_out))
    model = _model([node], [_f32("v0", [3]), _f32("x", [6, 3])], [_f32("v", [3]), _f32("scan", [4, 3])], inits)
    _check_unrolled(model, {"v0": _rand(3), "x": _rand(6, 3, seed=1)})


def test_loop_whose_condition_starts_false_runs_zero_times():
    inits = [numpy_helper.from_array(np.array(4, np.int64), "m"), numpy_helper.from_array(np.array(False), "no")]
    body = _loop_body(helper.make_node("Identity", ["cond_in"], ["cond_out"]), scan_output=False)
    node = helper.make_node("Loop", ["m", "no", "v0"], ["v"], name="loop", body=body)
    model = _model([node, helper.make_node("Relu", ["v"], ["y"])], [_f32("v0", [3]), _f32("x", [6, 3])],
                   [_f32("y", [3])], inits)
    _check_unrolled(model, {"v0": _rand(3), "x": _rand(6, 3, seed=1)})


def test_nested_loop_trip_count_becomes_constant_after_the_outer_unroll():
    """The inner trip count is the outer iteration number + 1: known only once the outer loop is unrolled."""
    inner = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Add", ["w_in", "x"], ["w_out"])],
        "inner", [_i64("j", []), _bool("c_in"), _f32("w_in", [3])], [_bool("c_out"), _f32("w_out", [3])])
    outer = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["i", "one"], ["n"]),
         helper.make_node("Loop", ["n", "", "v_in"], ["v_out"], body=inner)],
        "outer", [_i64("i", []), _bool("cond_in"), _f32("v_in", [3])], [_bool("cond_out"), _f32("v_out", [3])])
    inits = [numpy_helper.from_array(np.array(3, np.int64), "m"), numpy_helper.from_array(np.array(1, np.int64), "one")]
    node = helper.make_node("Loop", ["m", "", "v0"], ["v"], name="outer", body=outer)
    model = _model([node], [_f32("v0", [3]), _f32("x", [3])], [_f32("v", [3])], inits)
    _check_unrolled(model, {"v0": _rand(3), "x": _rand(3, seed=1)})


def _refusal(model: onnx.ModelProto) -> str:
    with pytest.raises(UnsupportedOpError) as info:
        load_graph(model, is_supported=lambda op, domain: op not in CONTROL_FLOW)
    return str(info.value)


def _run_loops(graph) -> list:
    return [n for n in graph.nodes if n.op_type == "LoopEnd"]


def test_loop_with_runtime_trip_count_stays_a_loop_and_a_constant_input_unrolls_it():
    body = _loop_body(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    node = helper.make_node("Loop", ["m", "", "v0"], ["v"], name="loop", body=body)
    model = _model([node], [_i64("m", []), _f32("v0", [3]), _f32("x", [6, 3])], [_f32("v", [3])])
    graph = load_graph(model)
    end, = _run_loops(graph)
    # The trip count is read from the input per run (never below 0 iterations).
    assert {v.name for v in size_vars(graph.loops[end.attrs["loop"]].trip)} == set(graph.sizes)
    assert {n.op_type for n in graph.nodes}.isdisjoint(CONTROL_FLOW)
    graph = load_graph(model, constant_inputs={"m": np.array(2, np.int64)})
    assert not _run_loops(graph) and not any(n.op_type == "Loop" for n in graph.nodes)


def test_loop_with_data_dependent_condition_becomes_a_while_loop():
    body = _loop_body(helper.make_node("Less", ["i", "limit"], ["cond_out"]), scan_output=False)
    inits = [numpy_helper.from_array(np.array(4, np.int64), "m"), numpy_helper.from_array(np.array(2, np.int64), "limit")]
    node = helper.make_node("Loop", ["m", "", "v0"], ["v"], name="loop", body=body)
    model = _model([node], [_f32("v0", [3]), _f32("x", [6, 3])], [_f32("v", [3])], inits)
    end, = _run_loops(load_graph(model))
    assert end.attrs["run_loop"].condition is not None


def test_loop_with_data_dependent_condition_and_scan_outputs_is_refused():
    body = _loop_body(helper.make_node("Less", ["i", "limit"], ["cond_out"]))
    inits = [numpy_helper.from_array(np.array(4, np.int64), "m"), numpy_helper.from_array(np.array(2, np.int64), "limit")]
    node = helper.make_node("Loop", ["m", "", "v0"], ["v", "twice"], name="loop", body=body)
    model = _model([node], [_f32("v0", [3]), _f32("x", [6, 3])], [_f32("v", [3]), _f32("twice", [None, 3])], inits)
    assert "Loop 'loop' (opset 17): the loop's condition is computed at run time and it has scan outputs" \
        in _refusal(model)


def test_loop_without_trip_count_or_stopping_condition_is_refused():
    body = _loop_body(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    node = helper.make_node("Loop", ["", "", "v0"], ["v"], name="loop", body=body)
    model = _model([node], [_f32("v0", [3]), _f32("x", [6, 3])], [_f32("v", [3])])
    assert "never ends" in _refusal(model)


def test_loop_over_sequences_is_refused():
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("SequenceInsert", ["seq_in", "x"], ["seq_out"])],
        "body", [_i64("i", []), _bool("cond_in"),
                 helper.make_tensor_sequence_value_info("seq_in", TensorProto.FLOAT, [3])],
        [_bool("cond_out"), helper.make_tensor_sequence_value_info("seq_out", TensorProto.FLOAT, [3])])
    nodes = [helper.make_node("SequenceEmpty", [], ["seq0"], dtype=TensorProto.FLOAT),
             helper.make_node("Loop", ["m", "", "seq0"], ["seq"], name="loop", body=body),
             helper.make_node("ConcatFromSequence", ["seq"], ["y"], axis=0)]
    model = _model(nodes, [_f32("x", [3])], [_f32("y", [6])], [numpy_helper.from_array(np.array(2, np.int64), "m")])
    assert "Loop 'loop' (opset 17): 'seq0' is a sequence_type; tilec unrolls Loop over tensors only" in _refusal(model)
