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


def test_time_alternating_alternates_blocks_and_skips_warmup(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: calls.append(f"pause {seconds}"))
    times_a, times_b = bench.time_alternating(lambda: calls.append("a"), lambda: calls.append("b"), runs=4, warmup=2,
                                              block=3)
    assert len(times_a) == 4 and len(times_b) == 4
    assert all(t >= 0 for t in times_a + times_b)
    assert calls[:4] == ["a", "b", "a", "b"]  # warmup
    # Blocks of 3 (a pause for the other side's threads to settle, one untimed switch run, two timed);
    # who goes first flips each round.
    pause = f"pause {bench.SETTLE_S}"
    assert calls[4:] == [pause, *"aaa", pause, *"bbb", pause, *"bbb", pause, *"aaa"]


def test_time_alternating_measures_milliseconds():
    import time

    slow, fast = bench.time_alternating(lambda: time.sleep(0.005), lambda: None, runs=3, warmup=0)
    assert min(slow) >= 4.5 and max(fast) < 4.5
    summary = bench.summarize(slow)
    assert summary.runs == 3 and summary.min_ms <= summary.median_ms <= summary.max_ms


def test_time_alternating_rejects_bad_counts():
    with pytest.raises(ValueError):
        bench.time_alternating(lambda: None, lambda: None, runs=0, warmup=0)
    with pytest.raises(ValueError):
        bench.time_alternating(lambda: None, lambda: None, runs=3, warmup=0, block=1)


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


def test_bench_of_a_dynamic_model_needs_the_run_shapes(tmp_path, capsys):
    """The gemm model's batch is symbolic: it is compiled once, and --input-shape gives the run shape."""
    pytest.importorskip("onnxruntime")
    model = _gemm_model(tmp_path / "gemm.onnx")
    assert cli.main(["bench", str(model), "--threads", "1", "--runs", "2", "--warmup", "0"]) == 1
    assert "--input-shape x=" in capsys.readouterr().err
    for shape in ("x=1x16", "x=7x16"):
        assert cli.main(["bench", str(model), "--threads", "1", "--runs", "2", "--warmup", "0",
                         "--input-shape", shape]) == 0
        assert float(_bench_lines(capsys.readouterr().out)["max abs diff / max |ort|"]) < 1e-5


def test_bench_dynamic_table(capsys):
    pytest.importorskip("onnxruntime")
    assert cli.main(["bench", "--dynamic", "--models", "cnn_hw", "--threads", "1", "--runs", "2",
                     "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("| cnn_hw |") == 3 and "**geomean**" in out


def test_bench_decode_table(capsys, monkeypatch):
    """Every phase of a (tiny) decoder against onnxruntime, logits within 1e-4; an unknown model is refused."""
    pytest.importorskip("onnxruntime")
    from compiler import bench_decode
    from compiler.models.decoder import llama_decoder_model

    monkeypatch.setattr(bench_decode, "CASES", {"tiny": lambda: llama_decoder_model(layers=1, hidden=32, heads=4,
                                                                                       kv_heads=2, intermediate=64)})
    assert cli.main(["bench", "--decode", "--models", "nope"]) == 1
    assert "unknown model(s) nope; known: tiny" in capsys.readouterr().err
    assert cli.main(["bench", "--decode", "--threads", "1", "--runs", "2", "--warmup", "0"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| tiny |")]
    assert [row.split("|")[2:4] for row in rows] == [[" decode ", " 16 "], [" decode ", " 128 "], [" decode ", " 512 "],
                                                     [" prefill ", " 0 "]]
    assert all(float(row.split("|")[-2]) <= 1e-4 for row in rows)


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


# --- FLOP counting and the FMA peak -----------------------------------------------------


def test_count_flops_counts_macs_of_matmul_gemm_conv():
    rng = np.random.default_rng(0)
    inits = {"w_mm": rng.standard_normal((8, 5)), "w_gemm": rng.standard_normal((6, 5)),
             "w_conv": rng.standard_normal((4, 3, 3, 3)), "w_convt": rng.standard_normal((4, 2, 2, 2)),
             "shape": np.array([2, 3, 8], np.int64)}
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["x3"]),                    # [2, 3, 8]
         helper.make_node("MatMul", ["x3", "w_mm"], ["m"]),                      # batched: 2*3*5 outputs, K=8
         helper.make_node("Gemm", ["a", "w_gemm"], ["g"], transB=1),             # [7, 6], K=5
         helper.make_node("Conv", ["img", "w_conv"], ["c"], pads=[1, 1, 1, 1]),  # [1, 4, 6, 6], 3*3*3 per output
         helper.make_node("ConvTranspose", ["c", "w_convt"], ["ct"], strides=[2, 2]),  # 4*6*6 inputs x 2*2*2
         helper.make_node("Relu", ["ct"], ["y"])],
        "flops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 8]),
         helper.make_tensor_value_info("a", TensorProto.FLOAT, [7, 5]),
         helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("m", "g", "y")],
        [onnx.numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    expected = 2 * (2 * 3 * 5 * 8 + 7 * 6 * 5 + 4 * 6 * 6 * 27 + 4 * 6 * 6 * 2 * 2 * 2)
    assert bench.count_flops(model) == expected


def test_count_flops_needs_static_shapes():
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "dyn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, "M"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(bench.BenchError, match="not static"):
        bench.count_flops(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_measure_fma_peak_is_positive():
    assert bench.measure_fma_peak(threads=1, seconds=0.01, repeats=1) > 0


# --- tilec bench --suite ----------------------------------------------------------------


def test_suite_on_one_tiny_model_writes_table_csv_json(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    import csv
    import json

    from compiler import bench_suite

    out = tmp_path / "results"
    assert cli.main(["bench", "--suite", "--models", "elementwise_chain", "--runs", "2", "--warmup", "0",
                     "--threads", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if line.startswith("model"))
    assert header.split() == ["model", "threads", "GFLOP", "tilec", "ms", "ort", "ms", "ratio", "tilec", "GFLOP/s",
                              "%", "peak", "max", "rel", "diff"]
    assert any(line.startswith("elementwise_chain") for line in text.splitlines())
    assert "geomean ratio tilec/ort at 1 thread(s):" in text

    with open(out / bench_suite.CSV_NAME) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == bench_suite.CSV_COLUMNS
    assert len(rows) == 1 and rows[0]["model"] == "elementwise_chain" and rows[0]["threads"] == "1"
    assert float(rows[0]["ratio"]) > 0 and float(rows[0]["max_rel_diff"]) < 1e-4 and rows[0]["error"] == ""

    data = json.loads((out / bench_suite.JSON_NAME).read_text())
    assert set(data) == {"meta", "rows", "geomean_ratio"}
    assert data["meta"]["runs"] == 2 and data["meta"]["peak_source"] == "given"
    assert data["meta"]["peak_gflops"] == {"1": bench_suite.DEFAULT_PEAK_GFLOPS}
    assert set(data["rows"][0]) >= set(bench_suite.CSV_COLUMNS)
    assert data["rows"][0]["compile_stages"]["frontend"] >= 0
    assert data["geomean_ratio"]["1"] == pytest.approx(float(rows[0]["ratio"]))
    assert bench_suite.SuiteReport.from_json(data).to_json() == data
    markdown = (out / bench_suite.MARKDOWN_NAME).read_text()
    assert markdown.startswith("| model | threads | GFLOP |") and "| elementwise_chain | 1 |" in markdown
    pytest.importorskip("matplotlib")
    assert (out / bench_suite.PLOT_NAME).stat().st_size > 0


def test_suite_reports_a_failing_model_and_goes_on(monkeypatch, capsys):
    from compiler import bench_suite, models

    def broken():
        raise ValueError("cannot build")

    monkeypatch.setitem(models.SUITE, "broken", (broken, "a model whose builder fails"))
    report = bench_suite.run_suite(["broken"], [1, 2], runs=1, warmup=0)
    assert [(r.model, r.threads, r.error) for r in report.rows] == [("broken", 1, "ValueError: cannot build"),
                                                                   ("broken", 2, "ValueError: cannot build")]
    assert report.geomean_ratios() == {}
    assert report.table()[0][3] == "error: ValueError: cannot build"
    assert cli.main(["bench", "--suite", "--models", "broken", "--runs", "1"]) == 1


def test_suite_geomean_and_peak_percent():
    from compiler.bench_suite import SuiteReport, SuiteRow

    rows = [SuiteRow("a", 1, 2.0, 100.0, tilec_ms=10.0, ort_ms=20.0),
            SuiteRow("b", 1, 1.0, 100.0, tilec_ms=40.0, ort_ms=20.0),
            SuiteRow("a", 2, 2.0, 200.0, tilec_ms=5.0, ort_ms=5.0)]
    report = SuiteReport(rows)
    assert report.geomean_ratios() == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}
    assert rows[0].gflops(rows[0].tilec_ms) == pytest.approx(200.0)
    assert rows[0].peak_percent(rows[0].tilec_ms) == pytest.approx(200.0)  # over the given peak: reported as is
    assert rows[2].peak_percent(rows[2].tilec_ms) == pytest.approx(200.0)


@pytest.mark.parametrize("argv, message", [
    (["bench", "--suite", "model.onnx"], "give no MODEL"),
    (["bench", "--models", "mlp"], "go with --suite"),
    (["bench"], "or --suite"),
    (["bench", "--suite", "--models", "mlp,nope"], "unknown suite model(s) nope"),
])
def test_suite_usage_errors(argv, message, capsys):
    assert cli.main(argv) == 1
    assert message in capsys.readouterr().err


def test_bench_thread_list_and_peak_parsing(capsys):
    args = cli.build_parser().parse_args(["bench", "--suite", "--threads", "1,2,1", "--peak-gflops", "measure"])
    assert args.threads == [1, 2] and args.peak_gflops == "measure"
    assert cli.build_parser().parse_args(["bench", "--suite", "--peak-gflops", "50"]).peak_gflops == 50.0
    assert cli.main(["bench", "--suite", "--peak-gflops", "-1"]) == 2
    assert cli.main(["bench", "--suite", "--threads", ","]) == 2


def test_compare_outputs_of_strings_and_maps():
    """String outputs compare exactly; ZipMap's lists of dicts by their keys, then their values."""
    labels = np.array(["cat", "dög"], dtype=object)
    assert bench.compare_outputs([labels], [labels.copy()]) == 0.0
    assert bench.compare_outputs([labels], [np.array(["cat", "dog"], dtype=object)]) == float("inf")
    maps = [{"a": 0.25, "b": 0.75}, {"a": 1.0, "b": 0.0}]
    assert bench.compare_outputs([maps], [[dict(m) for m in maps]]) == 0.0
    assert bench.compare_outputs([[{"a": 0.25, "b": 0.5}, maps[1]]], [maps]) == pytest.approx(0.25)
    assert bench.compare_outputs([[{"b": 0.75, "a": 0.25}, maps[1]]], [maps]) == float("inf")


# --- timing modes and concurrency ---------------------------------------------------------


def test_contended_mode_interleaves_run_by_run_and_gap_mode_pauses_before_each_run(monkeypatch):
    calls: list[str] = []
    times_a, times_b = bench.time_interleaved(lambda: calls.append("a"), lambda: calls.append("b"), runs=3, warmup=1)
    assert calls == ["a", "b"] * 4 and len(times_a) == len(times_b) == 3

    sleeps: list[float] = []
    events: list[str] = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: (sleeps.append(s), events.append("pause")))
    bench.time_after_gaps(lambda: events.append("a"), lambda: events.append("b"), runs=2, warmup=0)
    assert events == ["pause", "a", "pause", "b"] * 2 and sleeps == [bench.GAP_S] * 4


@pytest.mark.parametrize("mode", ["contended", "gap"])
def test_benchmark_modes(tmp_path, mode):
    pytest.importorskip("onnxruntime")
    from runtime_stub import InferenceSession

    model = _gemm_model(tmp_path / "gemm.onnx")
    artifact = compiler.compile(model, tmp_path / "gemm.tilec", input_shapes={"x": (3, 16)})
    with InferenceSession(artifact, threads=1) as session:
        inputs = bench.random_inputs(session.get_inputs(), seed=1)
        result = bench.benchmark(session, bench.ort_session(model, 1), inputs, runs=2, warmup=0, threads=1, mode=mode)
        assert result.tilec.runs == 2 and result.max_rel_diff < 1e-5
        with pytest.raises(bench.BenchError, match="unknown timing mode 'loud'"):
            bench.benchmark(session, bench.ort_session(model, 1), inputs, runs=2, mode="loud")


def test_concurrency_scaling_counts_runs_from_every_caller():
    import threading

    seen: set[str] = set()
    lock = threading.Lock()

    def run() -> None:
        with lock:
            seen.add(threading.current_thread().name)  # names, unlike idents, are never reused

    scaling = bench.concurrency_scaling(run, callers=3, seconds=0.05)
    assert scaling.callers == 3 and scaling.alone_per_s > 0 and scaling.together_per_s > 0
    assert len(seen) == 4  # one thread alone, then three at once
    assert scaling.factor == pytest.approx(scaling.together_per_s / scaling.alone_per_s)


def test_bench_concurrency_table(capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    from compiler import bench_suite

    monkeypatch.setattr(bench_suite.bench, "concurrency_scaling",
                        lambda run, callers, seconds: (run(), bench.Scaling(callers, 10.0, 18.0))[1])
    assert cli.main(["bench", "--suite", "--concurrency", "2", "--models", "mlp"]) == 0
    out = capsys.readouterr().out
    assert "| mlp | 10.0 | 18.0 | **1.80x** | 10.0 | 18.0 | 1.80x |" in out
    assert cli.main(["bench", "--concurrency", "2"]) == 1  # without --suite
