"""The ``tilec`` command line: compile → run → inspect round trips, support, and error handling."""

from __future__ import annotations

import json
import re
import os
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import compiler
from compiler import cli
import runtime_stub
from runtime_stub.artifact import read_artifact
from helpers_onnx import strings_and_maps_model

REPO = pathlib.Path(__file__).resolve().parents[2]
W = np.arange(32, dtype=np.float32).reshape(8, 4) / 16 - 1


def _save(model: onnx.ModelProto, path: pathlib.Path) -> pathlib.Path:
    model.ir_version = 8
    onnx.save(model, path)
    return path


def matmul_relu_model() -> onnx.ModelProto:
    """y = Relu(x @ W), x: [N, 8] with a symbolic batch dimension."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"), helper.make_node("Relu", ["m"], ["y"], name="relu")],
        "matmul_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor("w", TensorProto.FLOAT, [8, 4], W.ravel())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def softmax_model() -> onnx.ModelProto:
    """y = Softmax(x + b), x: [1, 10]: a classifier-like output for the top-5 summary."""
    bias = np.linspace(-1, 1, 10, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "b"], ["s"]), helper.make_node("Softmax", ["s"], ["y"], axis=-1)],
        "softmax",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [helper.make_tensor("b", TensorProto.FLOAT, [10], bias)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    folder = tmp_path_factory.mktemp("cli_models")
    paths = {"matmul": _save(matmul_relu_model(), folder / "matmul.onnx"),
             "softmax": _save(softmax_model(), folder / "softmax.onnx")}
    paths["matmul_tilec"] = compiler.compile(paths["matmul"], folder / "matmul.tilec", input_shapes={"x": (2, 8)})
    paths["softmax_tilec"] = compiler.compile(paths["softmax"], folder / "softmax.tilec")
    return paths


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err
    # Progress lines ("[  0.01s] frontend") may come first; the error itself is one last line.
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[")]
    assert len(lines) == 1, err
    assert lines[0].startswith("tilec: error: "), err
    assert err.rstrip("\n").endswith(lines[0])
    return lines[0]


# --- compile / run / inspect --------------------------------------------------------


def test_compile_run_inspect_round_trip(models, tmp_path, capsys):
    out = tmp_path / "m.tilec"
    assert cli.main(["compile", str(models["matmul"]), "-o", str(out), "--input-shape", "x=3x8"]) == 0
    captured = capsys.readouterr()
    assert "frontend" in captured.err and "llvm codegen (1 kernels)" in captured.err  # progress on stderr
    assert "lowering 1/1" not in captured.err  # not a terminal: a line per stage, no steps
    summary = captured.out.strip().splitlines()
    assert len(summary) == 1 and str(out) in summary[0] and "x the ONNX file" in summary[0]
    assert out.exists()

    assert cli.main(["run", str(out)]) == 0
    captured = capsys.readouterr()
    assert "y: tensor(float) [3, 4] (float32)" in captured.out
    assert "min " in captured.out and "max " in captured.out and "mean " in captured.out
    assert "latency:" in captured.out and " ms" in captured.out
    assert "random inputs (seed 0)" in captured.err

    assert cli.main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    for needle in ("format:", "version 2", "target:", "requires:", "inputs:", "outputs:", "x  float32  [3, 8]",
                   "y  float32  [3, 4]", "kernels:    1", "MatMul+Relu", "workspace:", "native code", "weights",
                   "total size:"):
        assert needle in text, needle

    assert cli.main(["inspect", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["inputs"] == [{"dtype": "float32", "name": "x", "shape": [3, 8]}]
    assert manifest["format_version"] == 2


def test_compile_quiet_and_time_passes(models, tmp_path, capsys):
    out = tmp_path / "q.tilec"
    assert cli.main(["compile", str(models["matmul"]), "-o", str(out), "--input-shape", "x=2x8", "-q",
                     "--time-passes"]) == 0
    err = capsys.readouterr().err
    assert "lowering 1/1" not in err  # -q: no progress lines...
    assert "stage timings:" in err and "link" in err and "total" in err  # ...but the asked-for table


def test_compile_dump_ir(models, tmp_path, capsys):
    dump = tmp_path / "ir"
    assert cli.main(["compile", str(models["matmul"]), "-o", str(tmp_path / "d.tilec"), "--input-shape", "x=2x8",
                     "--dump-ir", str(dump), "-q"]) == 0
    files = sorted(p.name for p in dump.iterdir())
    assert "graph.txt" in files
    assert any(name.endswith(".loop.txt") for name in files)
    assert all((dump / name).stat().st_size > 0 for name in files)


def test_compile_precision_bf16(models, tmp_path, capsys):
    dump = tmp_path / "ir"
    out = tmp_path / "bf.tilec"
    assert cli.main(["compile", str(models["matmul"]), "-o", str(out), "--input-shape", "x=2x8", "--precision", "bf16",
                     "--dump-ir", str(dump), "-q"]) == 0
    assert "bfloat16" in (dump / "graph.txt").read_text()
    capsys.readouterr()
    assert cli.main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["build"]["options"]["precision"] == "'bf16'"
    assert cli.main(["compile", str(models["matmul"]), "-o", str(out), "--precision", "fp8"]) == 2
    assert "invalid choice: 'fp8'" in capsys.readouterr().err


def test_input_shape_binds_symbolic_batch(models, tmp_path, capsys):
    out = tmp_path / "b5.tilec"
    assert cli.main(["compile", str(models["matmul"]), "-o", str(out), "--input-shape", "x=5x8", "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["inspect", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["inputs"][0]["shape"] == [5, 8]
    assert manifest["outputs"][0]["shape"] == [5, 4]


def test_unbound_symbolic_dim_stays_symbolic_within_dim_bounds(models, tmp_path, capsys):
    out = tmp_path / "u.tilec"
    assert cli.main(["compile", str(models["matmul"]), "-o", str(out), "--dim", "N=1:32", "-q"]) == 0
    capsys.readouterr()
    assert cli.main(["inspect", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["dims"] == [{"name": "N", "min": 1, "max": 32}]
    assert manifest["inputs"][0]["shape"] == ["N", 8] and manifest["outputs"][0]["shape"] == ["N", 4]
    assert cli.main(["inspect", str(out)]) == 0
    assert re.search(r"dims:\n\s+N\s+1\.\.32", capsys.readouterr().out)


def test_bad_dim_bound_is_one_line_error(models, tmp_path, capsys):
    assert cli.main(["compile", str(models["matmul"]), "-o", str(tmp_path / "u.tilec"), "--dim", "N=8"]) != 0
    assert "NAME=MIN:MAX" in capsys.readouterr().err
    assert cli.main(["compile", str(models["matmul"]), "-o", str(tmp_path / "u.tilec"), "--dim", "M=1:8", "-q"]) == 1
    assert "dim_bounds names 'M'" in _one_error_line(capsys.readouterr().err)


def test_run_with_npy_input(models, tmp_path, capsys):
    x = np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["run", str(models["matmul_tilec"]), "--input", f"x={tmp_path / 'x.npy'}", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    expected = np.maximum(x @ W, 0)
    assert "random inputs" not in captured.err
    assert f"max {expected.max():.6g}" in captured.out
    assert f"mean {expected.mean():.6g}" in captured.out
    first = ", ".join(f"{v:.6g}" for v in expected.ravel()[:6])
    assert f"values: [{first}, ...]" in captured.out


def test_run_prints_top5_for_vector_output(models, capsys):
    assert cli.main(["run", str(models["softmax_tilec"]), "--random", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "y: tensor(float) [1, 10] (float32)" in out
    top_line = next(line for line in out.splitlines() if "top-5:" in line)
    assert len(top_line.split(":", 1)[1].split(",")) == 5


def test_run_unknown_input_name(models, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 8), np.float32))
    assert cli.main(["run", str(models["matmul_tilec"]), "--input", f"nope={tmp_path / 'x.npy'}"]) == 1
    line = _one_error_line(capsys.readouterr().err)
    assert "'nope'" in line and "x (tensor(float), shape [2, 8])" in line


def test_run_missing_npy_and_wrong_dtype(models, tmp_path, capsys):
    assert cli.main(["run", str(models["matmul_tilec"]), "--input", f"x={tmp_path / 'absent.npy'}"]) == 1
    assert "no such file" in _one_error_line(capsys.readouterr().err)
    np.save(tmp_path / "x64.npy", np.zeros((2, 8), np.float64))
    assert cli.main(["run", str(models["matmul_tilec"]), "--input", f"x={tmp_path / 'x64.npy'}"]) == 1
    assert "float64" in _one_error_line(capsys.readouterr().err)


def test_bad_model_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "garbage.onnx"
    bad.write_bytes(b"\x00\x01garbage bytes, not protobuf\xff\xfe" * 4)
    assert cli.main(["compile", str(bad), "-o", str(tmp_path / "g.tilec")]) == 1
    _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "g.tilec").exists()


def test_missing_model_and_non_artifact(tmp_path, capsys):
    assert cli.main(["compile", str(tmp_path / "absent.onnx"), "-o", str(tmp_path / "a.tilec")]) == 1
    assert "no such model file" in _one_error_line(capsys.readouterr().err)
    junk = tmp_path / "junk.tilec"
    junk.write_bytes(b"hello world" * 100)
    for command in (["inspect", str(junk)], ["run", str(junk)]):
        assert cli.main(command) == 1
        assert "not a tilec artifact" in _one_error_line(capsys.readouterr().err)


def test_output_is_a_directory(models, tmp_path, capsys):
    assert cli.main(["compile", str(models["matmul"]), "-o", str(tmp_path), "--input-shape", "x=2x8", "-q"]) == 1
    assert "is a directory" in _one_error_line(capsys.readouterr().err)


# --- usage errors and exit codes --------------------------------------------------------


@pytest.mark.parametrize("argv", [
    [],
    ["frobnicate"],
    ["compile", "m.onnx"],  # no -o
    ["compile", "m.onnx", "-o", "o.tilec", "--input-shape", "x=2xq"],
    ["compile", "m.onnx", "-o", "o.tilec", "--input-shape", "nodims"],
    ["compile", "m.onnx", "-o", "o.tilec", "--target", "riscv64-linux-gnu"],
    ["run", "a.tilec", "--input", "x"],
    ["bench", "m.onnx", "--runs", "0"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert cli.main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def test_help_exits_0(capsys):
    assert cli.main(["--help"]) == 0
    assert "compile" in capsys.readouterr().out


def test_internal_error_exit_70(models, tmp_path, capsys, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(compiler, "compile", boom)
    argv = ["compile", str(models["matmul"]), "-o", str(tmp_path / "i.tilec")]
    monkeypatch.delenv("TILEC_DEBUG", raising=False)
    assert cli.main(argv) == 70
    err = capsys.readouterr().err
    assert err.startswith("tilec: internal error: RuntimeError: kaboom")
    assert "report" in err and "Traceback" not in err
    monkeypatch.setenv("TILEC_DEBUG", "1")
    assert cli.main(argv) == 70
    assert "Traceback" in capsys.readouterr().err


def test_keyboard_interrupt_exit_130(models, tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(compiler, "compile", interrupted)
    assert cli.main(["compile", str(models["matmul"]), "-o", str(tmp_path / "k.tilec")]) == 130


def test_compile_error_from_target(models, tmp_path, capsys):
    assert cli.main(["compile", str(models["matmul"]), "-o", str(tmp_path / "t.tilec"), "--input-shape", "x=2x8",
                     "--cpu", "no-such-cpu", "-q"]) == 1
    assert "no-such-cpu" in _one_error_line(capsys.readouterr().err)


# --- support ----------------------------------------------------------------------------


def test_support_table(capsys):
    assert cli.main(["support"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:-1]}
    assert rows["Conv"][1:3] == ["ai.onnx", "compute"]
    assert rows["MatMul"][1] == "ai.onnx"
    assert rows["Relu"][2] == "elementwise"
    keys = [(line.split()[1] != "ai.onnx", line.split()[1], line.split()[0]) for line in out.splitlines()[2:-1]]
    assert keys == sorted(keys)  # the default domain first, then by domain and op
    assert rows["TreeEnsemble"][1] == "ai.onnx.ml"
    # Ops the frontend rewrites into others are listed too.
    assert rows["LSTM"][1:3] == ["ai.onnx", "expanded"]
    assert rows["SkipLayerNormalization"][1:3] == ["com.microsoft", "expanded"]


def test_support_markdown(capsys):
    assert cli.main(["support", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Supported ONNX operators")
    assert "| Op | Domain | Kind | Opsets | Dtypes |" in out
    assert "| Conv | ai.onnx | compute | 1, 11, 22 | bfloat16, float16, float32, float64 |" in out
    assert "| MatMul | ai.onnx |" in out


# --- the console script forms -----------------------------------------------------------


def test_python_m_compiler_cli_help():
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "compiler.cli", "--help"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("compile", "run", "inspect", "bench", "support"):
        assert command in result.stdout


def test_python_m_compiler_cli_error_exit_code(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    junk = tmp_path / "junk.tilec"
    junk.write_bytes(b"nope")
    result = subprocess.run([sys.executable, "-m", "compiler.cli", "inspect", str(junk)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("tilec: error: ") and "Traceback" not in result.stderr


def test_run_time_axes_are_read_at_run_time_or_fixed_by_a_constant_input(tmp_path, capsys):
    graph = helper.make_graph(
        [helper.make_node("ReduceMax", ["x", "axes"], ["y"], keepdims=0)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    model = tmp_path / "reduce.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), model)
    out = tmp_path / "r.tilec"
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    assert cli.main(["compile", str(model), "-o", str(out), "-q"]) == 0
    session = runtime_stub.InferenceSession(str(out))
    for axis in (0, 1, -1):
        np.testing.assert_array_equal(session.run(None, {"x": x, "axes": np.array([axis], np.int64)})[0],
                                      x.max(axis=axis))
    np.save(tmp_path / "axes.npy", np.array([-1], np.int64))
    assert cli.main(["compile", str(model), "-o", str(out), "-q", "--constant-input",
                     f"axes={tmp_path / 'axes.npy'}"]) == 0
    (y,) = runtime_stub.InferenceSession(str(out)).run(None, {"x": x})
    np.testing.assert_array_equal(y, x.max(axis=-1))


# --- CUDA targets -------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["cuda", "cuda:sm_90"])
def test_compile_for_cuda(models, tmp_path, capsys, target):
    from compiler.codegen.cuda.nvrtc import nvrtc_available

    if not nvrtc_available():
        pytest.skip("NVRTC is not installed")
    out = tmp_path / "g.tilec"
    assert cli.main(["compile", str(models["matmul"]), "-o", str(out), "--target", target,
                     "--input-shape", "x=2x8", "-q"]) == 0
    cuda = read_artifact(out).manifest["cuda"]
    assert cuda["arch"] == (target.partition(":")[2] or "sm_80") and cuda["launches"]


def test_unknown_cuda_arch_is_a_usage_error(capsys):
    assert cli.main(["compile", "m.onnx", "-o", "o.tilec", "--target", "cuda:sm_70"]) == 2
    assert "cuda:sm_90" in capsys.readouterr().err  # the valid choices are listed


def test_run_summarizes_strings_and_maps_and_asks_for_symbolic_inputs(tmp_path, capsys):
    """A string input from a .npy file, a string output, ZipMap's maps; a symbolic input with no file is a usage
    error naming it (random inputs have no size to take)."""
    model = strings_and_maps_model()
    artifact = compiler.compile(model, tmp_path / "text.tilec")
    np.save(tmp_path / "x.npy", np.array(["bb", "a", "c"]))
    assert cli.main(["run", str(artifact), "--input", f"x={tmp_path / 'x.npy'}", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "y: tensor(string) [3] (object)" in out and "values: [no, yes, ?]" in out
    assert "maps: seq(map(int64,tensor(float))), 1 map(s)" in out and "{3: 0.5, 4: 0.5}" in out
    assert cli.main(["run", str(artifact), "--threads", "1"]) == 1
    assert "input 'x' has symbolic shape [n]" in _one_error_line(capsys.readouterr().err)
