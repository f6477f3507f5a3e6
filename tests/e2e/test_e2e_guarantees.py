"""Whole-pipeline guarantees: deterministic artifacts, clear refusals, numpy-only runtime, thread safety."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
import runtime_stub
from compiler.errors import ShapeError, UnsupportedOpError

REPO = pathlib.Path(__file__).resolve().parents[2]
LENET = REPO / "examples" / "models" / "lenet.onnx"


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def test_same_model_gives_byte_identical_artifacts(tmp_path: pathlib.Path) -> None:
    a = compiler.compile(LENET, tmp_path / "a.tilec").read_bytes()
    b = compiler.compile(LENET, tmp_path / "b.tilec").read_bytes()
    assert a == b


def test_unsupported_ops_are_all_listed_with_node_and_opset(tmp_path: pathlib.Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("NoSuchOp", ["a"], ["b"], name="first_bad", domain="custom.domain"),
             helper.make_node("AlsoMissing", ["b"], ["y"], name="second_bad", domain="custom.domain")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.domain", 1)])
    with pytest.raises(UnsupportedOpError) as info:
        compiler.compile(model, tmp_path / "m.tilec")
    message = str(info.value)
    assert "NoSuchOp 'first_bad'" in message and "AlsoMissing 'second_bad'" in message
    assert "opset 1" in message


def test_cli_reports_unsupported_op_in_one_line_without_traceback(tmp_path: pathlib.Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    model = helper.make_model(helper.make_graph([helper.make_node("Foo", ["x"], ["y"], domain="acme")], "g", [x],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    result = subprocess.run([sys.executable, "-m", "compiler.cli", "compile", str(path), "-o", str(tmp_path / "o")],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Foo" in result.stderr


def test_reshape_with_wrong_element_count_is_refused(tmp_path: pathlib.Path) -> None:
    shape = numpy_helper.from_array(np.array([4, 4], np.int64), "s")
    model = _model([helper.make_node("Reshape", ["x", "s"], ["y"], name="bad_reshape")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], [shape])
    with pytest.raises((ShapeError, compiler.errors.ModelLoadError)):
        compiler.compile(model, tmp_path / "m.tilec")


def test_runtime_stub_runs_a_compiled_model_with_numpy_only(tmp_path: pathlib.Path) -> None:
    artifact = compiler.compile(LENET, tmp_path / "lenet.tilec")
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('compiler', 'onnx', 'llvmlite', 'jinja2', 'onnxruntime'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import numpy as np, runtime_stub
s = runtime_stub.InferenceSession({str(artifact)!r})
x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
(y,) = s.run(None, {{'image': x}})
assert y.shape == (1, 10) and abs(float(y.sum()) - 1.0) < 1e-4, y
print('ok', sorted(m for m in sys.modules if m.split('.')[0] in ('compiler', 'onnx', 'llvmlite', 'jinja2')))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok []"


def test_concurrent_runs_from_python_threads_are_correct(tmp_path: pathlib.Path) -> None:
    artifact = compiler.compile(LENET, tmp_path / "lenet.tilec")
    session = runtime_stub.InferenceSession(artifact, threads=2)
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((1, 1, 28, 28)).astype(np.float32) for _ in range(8)]
    expected = [session.run(None, {"image": x})[0] for x in inputs]
    errors: list[str] = []

    def worker(k: int) -> None:
        for _ in range(20):
            got = session.run(None, {"image": inputs[k]})[0]
            if not np.array_equal(got, expected[k]):
                errors.append(f"thread {k}: result differs")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({float(e.sum()) for e in expected}) >= 1 and not np.array_equal(expected[0], expected[1])
