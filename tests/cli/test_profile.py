"""Kernel profiles: ``compile(profile=True)``, ``InferenceSession.kernel_profile`` and ``tilec profile``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler import cli
from compiler.errors import CompileError
from runtime_stub import ExecutionError, InferenceSession


def _conv_pool_model() -> onnx.ModelProto:
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2], name="pool")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 18, 18])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_kernel_profile_times_every_kernel(tmp_path):
    artifact = compiler.compile(_conv_pool_model(), tmp_path / "m.tilec", profile=True)
    feed = {"x": np.random.default_rng(1).standard_normal((1, 3, 18, 18)).astype(np.float32)}
    with InferenceSession(artifact, threads=1) as session:
        kernels = session.manifest["kernels"]
        assert session.manifest["profile"] is True
        assert all(k.seconds == 0 for k in session.kernel_profile())
        for _ in range(3):
            session.run(None, feed)
        profile = session.kernel_profile(reset=True)
        assert [k.name for k in profile] == [k["name"] for k in kernels]
        assert all(k.seconds > 0 for k in profile)
        conv = next(k for k in profile if k.ops.startswith("Conv"))
        assert conv.flops == 2 * 8 * 16 * 16 * 3 * 3 * 3  # 2 x the conv's multiply-accumulates
        assert conv.gflops_per_second > 0
        assert all(k.seconds == 0 for k in session.kernel_profile())  # reset


def test_profiled_artifact_computes_the_same(tmp_path):
    model = _conv_pool_model()
    feed = {"x": np.random.default_rng(2).standard_normal((1, 3, 18, 18)).astype(np.float32)}
    plain = InferenceSession(compiler.compile(model, tmp_path / "a.tilec"), threads=1).run(None, feed)
    timed = InferenceSession(compiler.compile(model, tmp_path / "b.tilec", profile=True), threads=1).run(None, feed)
    np.testing.assert_array_equal(plain[0], timed[0])


def test_unprofiled_artifact_says_how_to_profile(tmp_path):
    with InferenceSession(compiler.compile(_conv_pool_model(), tmp_path / "m.tilec"), threads=1) as session:
        with pytest.raises(ExecutionError, match="--profile"):
            session.kernel_profile()


def test_cuda_targets_refuse_profile(tmp_path):
    with pytest.raises(CompileError, match="CPU targets"):
        compiler.compile(_conv_pool_model(), tmp_path / "m.tilec", target="cuda", profile=True)


def test_profile_command(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "m.onnx"
    onnx.save(_conv_pool_model(), path)
    assert cli.main(["profile", str(path), "--runs", "3", "--warmup", "1", "--ort"]) == 0
    out = capsys.readouterr().out
    assert "slowest of" in out and "Conv+Relu" in out and "MaxPool" in out
    op_rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("  ")}
    assert float(op_rows["Conv"][2]) > 0 and float(op_rows["Conv"][3]) > 0  # tilec ms, onnxruntime ms


def test_profile_command_errors(tmp_path, capsys):
    assert cli.main(["profile"]) == 1
    assert "MODEL" in capsys.readouterr().err
    assert cli.main(["profile", "--suite-model", "nope"]) == 1
    assert "unknown suite model" in capsys.readouterr().err


def test_profile_command_takes_dim_bounds(tmp_path, capsys):
    """An empty past (a prefill) is outside the default [1, ...] range of a symbolic dim: --dim opens it."""
    nodes = [helper.make_node("Concat", ["past", "new"], ["all"], axis=0), helper.make_node("Relu", ["all"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("past", TensorProto.FLOAT, ["p", 4]),
                                           helper.make_tensor_value_info("new", TensorProto.FLOAT, ["s", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["p + s", 4])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    shapes = ["--input-shape", "past=0x4", "--input-shape", "new=3x4", "--runs", "2", "--warmup", "0"]
    assert cli.main(["profile", str(path), *shapes]) == 1
    assert "--dim p=MIN:MAX" in capsys.readouterr().err
    assert cli.main(["profile", str(path), *shapes, "--dim", "p=0:16"]) == 0
    assert "Relu" in capsys.readouterr().out
