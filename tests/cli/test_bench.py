"""compiler.bench helpers and ``tilec bench``."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import compiler
from compiler import bench, cli
from runtime_stub.errors import TilecError


# --- random_inputs ----------------------------------------------------------------------


def test_random_inputs_deterministic_and_typed():
    specs = [("x", "float32", (2, 3)), {"name": "ids", "dtype": "int64", "shape": [4]},
             ("mask", "bool", (2,)), ("h", "float16", (3,)), ("bf", "bfloat16", (5,))]
    a = bench.random_inputs(specs, seed=7)
    b = bench.random_inputs(specs, seed=7)
    c = bench.random_inputs(specs, seed=8)
    assert list(a) == ["x", "ids", "mask", "h", "bf"]
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a["x"], c["x"])
    assert a["x"].dtype == np.float32 and a["x"].shape == (2, 3)
    assert a["ids"].dtype == np.int64 and a["ids"].min() >= 0
    assert a["mask"].dtype == np.bool_
    assert a["h"].dtype == np.float16
    assert a["bf"].dtype == np.uint16  # bfloat16 travels as bit patterns
    as_f32 = (a["bf"].astype(np.uint32) << 16).view(np.float32)
    assert np.isfinite(as_f32).all()


def test_random_inputs_from_session_node_args(tmp_path):
    from runtime_stub import InferenceSession

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = compiler.compile(model, tmp_path / "relu.tilec")
    with InferenceSession(path, threads=1) as session:
        inputs = bench.random_inputs(session.get_inputs(), seed=0)
        assert inputs["x"].shape == (2, 5) and inputs["x"].dtype == np.float32
        (y,) = session.run(None, inputs)
    np.testing.assert_array_equal(y, np.maximum(inputs["x"], 0))


# --- time_alternating -------------------------------------------------------------------


def test_time_alternating_alternates_and_skips_warmup():
    calls: list[str] = []
    times_a, times_b = bench.time_alternating(lambda: calls.append("a"), lambda: calls.append("b"), runs=4, warmup=2)
    assert len(times_a) == 4 and len(times_b) == 4
    assert all(t >= 0 for t in times_a + times_b)
    assert calls[:4] == ["a", "b", "a", "b"]  # warmup
    assert calls[4:] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # who goes first flips each round


def test_time_alternating_measures_milliseconds():
    import time

    slow, fast = bench.time_alternating(lambda: time.sleep(0.005), lambda: None, runs=3, warmup=0)
    assert min(slow) >= 4.5 and max(fast) < 4.5
    summary = bench.summarize(slow)
    assert summary.runs == 3 and summary.min_ms <= summary.median_ms <= summary.max_ms


def test_time_alternating_rejects_bad_counts():
    with pytest.raises(ValueError):
        bench.time_alternating(lambda: None, lambda: None, runs=0, warmup=0)


# --- compare_outputs --------------------------------------------------------------------


def test_compare_outputs():
    ref = [np.array([1.0, -4.0, 2.0], np.float32), np.array([[0.0, 0.0]], np.float32)]
    assert bench.compare_outputs(ref, [r.copy() for r in ref]) == 0.0
    off = [ref[0] + np.float32(0.04), ref[1]]
    assert bench.compare_outputs(off, ref) == pytest.approx(0.01, rel=1e-4)  # 0.04 / max|ref| = 4
    assert bench.compare_outputs([ref[0], ref[1] + 0.5], ref) == pytest.approx(0.5)  # all-zero ref: absolute
    assert bench.compare_outputs([ref[0], np.zeros((2, 1), np.float32)], ref) == float("inf")
    assert bench.compare_outputs({"a": ref[0]}, {"a": ref[0] * 2}) == pytest.approx(0.5)
    nan = np.array([np.nan, 1.0])
    assert bench.compare_outputs([nan], [nan.copy()]) == 0.0
    assert np.isnan(bench.compare_outputs([nan], [np.array([0.0, 1.0])]))
    assert bench.compare_outputs([np.array([1, 2], np.int64)], [np.array([1, 3], np.int64)]) == pytest.approx(1 / 3)


def test_ort_missing_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(bench.BenchError, match="pip install onnxruntime"):
        bench.ort_session("model.onnx", 1)
    assert issubclass(bench.BenchError, TilecError)


# --- tilec bench ------------------------------------------------------------------------


def _gemm_model(path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["g"]), helper.make_node("Relu", ["g"], ["y"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor("w", TensorProto.FLOAT, [16, 8], w.ravel()), helper.make_tensor("b", TensorProto.FLOAT, [8], b)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime accepts
    onnx.save(model, path)
    return path


def _bench_lines(out: str) -> dict[str, str]:
    return {line.split(":", 1)[0]: line.split(":", 1)[1] for line in out.splitlines() if ":" in line}


def test_bench_command_prints_ratio_and_diff(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    model = _gemm_model(tmp_path / "gemm.onnx")
    assert cli.main(["bench", str(model), "--threads", "1", "--runs", "5", "--warmup", "1",
                     "--input-shape", "x=4x16"]) == 0
    out = capsys.readouterr().out
    assert "tilec" in out and "onnxruntime" in out and "median ms" in out
    lines = _bench_lines(out)
    ratio = float(lines["ratio tilec/ort (median)"].split()[0])
    assert ratio > 0
    diff = float(lines["max abs diff / max |ort|"])
    assert diff < 1e-5


def test_bench_existing_artifact_needs_onnx(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    model = _gemm_model(tmp_path / "gemm.onnx")
    artifact = compiler.compile(model, tmp_path / "gemm.tilec", input_shapes={"x": (2, 16)})
    assert cli.main(["bench", str(artifact)]) == 1
    assert "--onnx" in capsys.readouterr().err
    assert cli.main(["bench", str(artifact), "--onnx", str(model), "--threads", "1", "--runs", "3",
                     "--warmup", "0"]) == 0
    lines = _bench_lines(capsys.readouterr().out)
    assert float(lines["max abs diff / max |ort|"]) < 1e-5


def test_benchmark_function(tmp_path):
    pytest.importorskip("onnxruntime")
    from runtime_stub import InferenceSession

    model = _gemm_model(tmp_path / "gemm.onnx")
    artifact = compiler.compile(model, tmp_path / "gemm.tilec", input_shapes={"x": (3, 16)})
    with InferenceSession(artifact, threads=1) as session:
        inputs = bench.random_inputs(session.get_inputs(), seed=1)
        result = bench.benchmark(session, bench.ort_session(model, 1), inputs, runs=3, warmup=1, threads=1)
    assert result.tilec.runs == 3 and result.ort.runs == 3
    assert result.ratio == pytest.approx(result.tilec.median_ms / result.ort.median_ms)
    assert result.max_rel_diff < 1e-5


def test_ort_session_accepts_newer_ir_version(tmp_path):
    pytest.importorskip("onnxruntime")
    path = _gemm_model(tmp_path / "gemm.onnx")
    model = onnx.load(path)
    model.ir_version = onnx.IR_VERSION  # what onnx.save writes by default; may be newer than onnxruntime reads
    notes: list[str] = []
    session = bench.ort_session(model, 1, note=notes.append)
    x = np.ones((2, 16), np.float32)
    (y,) = session.run(None, {"x": x})
    assert y.shape == (2, 8)
    assert len(notes) <= 1 and all("IR version" in n for n in notes)


def test_ort_session_bad_model_is_bench_error(tmp_path):
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(bench.BenchError, match="onnxruntime cannot load the model"):
        bench.ort_session(bad, 1)
