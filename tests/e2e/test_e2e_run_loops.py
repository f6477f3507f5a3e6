"""Loops of the run end to end: Scan, Loop and RNN/GRU/LSTM compiled once as real loops, run at many lengths.

Each model is compiled once (symbolic sequence, batch or trip count) and run at several lengths, including
0 or 1 and lengths past the unroll limit, against onnxruntime on the same model. Tolerance: max
|tilec - onnxruntime| <= 1e-4 * max(1, max |onnxruntime|) (float32; a few dozen steps of small dot
products). The graph IR must hold the loop (a LoopEnd), not unrolled steps.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.frontend import load_graph
from helpers_onnx import bool_scalar as _bool, f32 as _f32, i64 as _i64, model_of as _model
from helpers_recurrent import recurrent_model
from runtime_stub import InferenceSession
from runtime_stub.errors import InvalidInputError

RTOL = 1e-4


def _compiled(model: onnx.ModelProto, tmp_path: pathlib.Path, **options) -> InferenceSession:
    assert any(n.op_type == "LoopEnd" for n in load_graph(model).nodes), "expected a loop of the run"
    return InferenceSession(compiler.compile(model, tmp_path / "model.tilec", **options))


def _check(session: InferenceSession, model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = session.run(None, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        assert float(np.abs(g - w).max(initial=0.0)) <= RTOL * scale


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("op,attrs,kw", [
    ("LSTM", {"direction": "bidirectional"}, {"lens": True, "peepholes": True}),
    ("GRU", {"direction": "reverse", "linear_before_reset": 1}, {}),
    ("RNN", {"direction": "forward"}, {"initial": False}),
], ids=["lstm-bidirectional-lens", "gru-reverse", "rnn-no-initial-state"])
def test_recurrence_over_a_symbolic_sequence_runs_every_length_from_one_artifact(tmp_path, op, attrs, kw):
    lens = kw.pop("lens", False)
    model, _ = recurrent_model(op, attrs, symbolic=True, lens=[1, 1] if lens else None, **kw)
    session = _compiled(model, tmp_path)
    for steps, batch in ((1, 2), (9, 3), (33, 1)):
        lengths = [max(1, steps - k) for k in range(batch)] if lens else None
        _, feeds = recurrent_model(op, attrs, steps=steps, batch=batch, lens=lengths, **kw)
        _check(session, model, feeds)


def test_scan_over_a_symbolic_axis_with_reversed_input_and_stacked_outputs(tmp_path):
    """A running sum along axis 1 of x, read backwards, and its rows stacked along axis 1 backwards."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s_in", "x_t"], ["s_out"]), helper.make_node("Tanh", ["s_out"], ["y_t"])],
        "body", [_f32("s_in", [2]), _f32("x_t", [2])], [_f32("s_out", [2]), _f32("y_t", [2])])
    node = helper.make_node("Scan", ["s0", "x"], ["s", "y"], body=body, num_scan_inputs=1,
                            scan_input_axes=[1], scan_input_directions=[1], scan_output_axes=[-1],
                            scan_output_directions=[1])
    model = _model([node], [_f32("s0", [2]), _f32("x", [2, "T"])], [_f32("s", [2]), _f32("y", [2, "T"])])
    session = _compiled(model, tmp_path)
    for steps in (1, 2, 12, 40):
        _check(session, model, {"s0": _rand(2), "x": _rand(2, steps, seed=steps)})


def _counting_loop(scan_output: bool) -> onnx.GraphProto:
    """v += x[i] * i, read from the outer scope; scan output tanh(v)."""
    nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Gather", ["x", "i"], ["xi"], axis=0),
             helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["xi", "fi"], ["term"]),
             helper.make_node("Add", ["v_in", "term"], ["v_out"]),
             helper.make_node("Tanh", ["v_out"], ["y"])]
    return helper.make_graph(nodes, "body", [_i64("i", []), _bool("cond_in"), _f32("v_in", [3])],
                             [_bool("cond_out"), _f32("v_out", [3])] + ([_f32("y", [3])] if scan_output else []))


def test_loop_with_a_run_time_trip_count_and_scan_output(tmp_path):
    node = helper.make_node("Loop", ["m", "", "v0"], ["v", "ys"], body=_counting_loop(True))
    model = _model([node], [_i64("m", []), _f32("v0", [3]), _f32("x", [40, 3])],
                   [_f32("v", [3]), _f32("ys", ["M", 3])])
    session = _compiled(model, tmp_path)
    x = _rand(40, 3)
    for m in (0, 1, 9, 40):
        _check(session, model, {"m": np.array(m, np.int64), "v0": _rand(3, seed=m), "x": x})


def test_a_failed_check_in_an_iteration_fails_the_run(tmp_path):
    """Gather past x's rows in iteration 5: a later iteration must not hide it."""
    node = helper.make_node("Loop", ["m", "", "v0"], ["v"], body=_counting_loop(False))
    model = _model([node], [_i64("m", []), _f32("v0", [3]), _f32("x", [5, 3])], [_f32("v", [3])])
    session = _compiled(model, tmp_path)
    feeds = {"v0": _rand(3), "x": _rand(5, 3)}
    _check(session, model, {"m": np.array(5, np.int64), **feeds})
    with pytest.raises(InvalidInputError, match="Gather"):
        session.run(None, {"m": np.array(12, np.int64), **feeds})


def test_while_loop_stops_on_its_run_time_condition(tmp_path):
    """Double v until its sum passes the limit (or M = 100 iterations): the count depends on the data."""
    body = helper.make_graph(
        [helper.make_node("Mul", ["v_in", "two"], ["v_out"]),
         helper.make_node("ReduceSum", ["v_out"], ["total"], keepdims=0),
         helper.make_node("Less", ["total", "limit"], ["cond_out"]),
         helper.make_node("Add", ["n_in", "one"], ["n_out"])],
        "body", [_i64("i", []), _bool("cond_in"), _f32("v_in", [3]), _i64("n_in", [])],
        [_bool("cond_out"), _f32("v_out", [3]), _i64("n_out", [])],
        [numpy_helper.from_array(np.array(2, np.float32), "two"), numpy_helper.from_array(np.array(1, np.int64), "one")])
    nodes = [helper.make_node("ReduceSum", ["v0"], ["start"], keepdims=0),
             helper.make_node("Less", ["start", "limit"], ["go"]),
             helper.make_node("Loop", ["m", "go", "v0", "zero"], ["v", "n"], body=body)]
    inits = [numpy_helper.from_array(np.array(100, np.int64), "m"),
             numpy_helper.from_array(np.array(0, np.int64), "zero")]
    model = _model(nodes, [_f32("v0", [3]), _f32("limit", [])], [_f32("v", [3]), _i64("n", [])], inits)
    session = _compiled(model, tmp_path)
    for limit in (-1.0, 5.0, 1000.0, 1e30):
        _check(session, model, {"v0": np.array([0.5, 0.25, 0.25], np.float32), "limit": np.array(limit, np.float32)})


def test_nested_loops_of_the_run(tmp_path):
    """An outer Loop (run-time M) around an inner one of 10 steps (past the unroll limit)."""
    inner = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Add", ["w_in", "x"], ["w_sum"]),
         helper.make_node("Tanh", ["w_sum"], ["w_out"])],
        "inner", [_i64("j", []), _bool("c_in"), _f32("w_in", [3])], [_bool("c_out"), _f32("w_out", [3])])
    outer = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Loop", ["ten", "", "v_in"], ["v_out"], body=inner),
         helper.make_node("Mul", ["v_out", "v_out"], ["sq"])],
        "outer", [_i64("i", []), _bool("cond_in"), _f32("v_in", [3])],
        [_bool("cond_out"), _f32("v_out", [3]), _f32("sq", [3])])
    node = helper.make_node("Loop", ["m", "", "v0"], ["v", "sqs"], body=outer)
    model = _model([node], [_i64("m", []), _f32("v0", [3]), _f32("x", [3])], [_f32("v", [3]), _f32("sqs", ["M", 3])],
                   [numpy_helper.from_array(np.array(10, np.int64), "ten")])
    session = _compiled(model, tmp_path)
    for m in (0, 1, 11):
        _check(session, model, {"m": np.array(m, np.int64), "v0": _rand(3), "x": _rand(3, seed=1) * 0.1})


def test_graph_ir_prints_the_loop(tmp_path):
    body = helper.make_graph([helper.make_node("Add", ["s_in", "x_t"], ["s_out"])], "body",
                             [_f32("s_in", [2]), _f32("x_t", [2])], [_f32("s_out", [2])])
    node = helper.make_node("Scan", ["s0", "x"], ["s"], body=body, num_scan_inputs=1)
    model = _model([node], [_f32("s0", [2]), _f32("x", ["T", 2])], [_f32("s", [2])])
    assert str(load_graph(model)) == "\n".join([
        "graph g(%s0:float32[2], %x:float32[Tx2]):",
        "  %Scan/state:float32[2] = LoopState(%s0)",
        "  %Scan/slice:float32[2] = ScanSlice(%x) in Scan_loop",
        "  %Scan/state0_next:float32[2] = Add(%Scan/state, %Scan/slice) in Scan_loop",
        "  %s:float32[2] = LoopEnd(%Scan/state, %Scan/state0_next) in Scan_loop",
        "  return %s"])
