"""Compile memory follows the weights and the IR, not the run-time tensor sizes.

Each model here has a graph input of 3 × 2^30 float16 elements (6 GiB) and a
few weights of a few KiB; compiling it for the CPU (to an artifact, never run)
or lowering it for CUDA (the emitted module, no NVRTC) must stay under a small
tracemalloc peak. The models hold the ops that once materialised
activation-sized arrays at compile time: a fill of the input's shape
(Expand of a constant to Shape(x)), the all-true mask of an inference Dropout,
a Gemm whose operands are both run-time inputs (operand packing), and
elementwise ops over a 1-D input (onnx's data propagation expands 1-D
tensors element by element, in C++ where tracemalloc cannot see it: the
child's peak RSS is bounded too). The CUDA module must use 64-bit index math
for them.

The compile runs in a child process under an address-space limit, so that a
regression fails this test instead of exhausting the machine's memory.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = pathlib.Path(__file__).resolve().parents[2]
BIG = [3, 1024, 1024, 1024]
PEAK_LIMIT_MB = 200
RSS_LIMIT_MB = 1024  # the whole compiling process, LLVM and onnx's C++ included
ADDRESS_SPACE_LIMIT = 4 << 30  # far below the 6 GiB input, far above what compiling needs

# argv: model path, target ("host" or "cuda"), artifact path. Prints one JSON line.
_CHILD = f"""
import json, resource, sys, tracemalloc
resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE_LIMIT}, {ADDRESS_SPACE_LIMIT}))
sys.path[:0] = ["tests", "tests/cuda"]
import onnx, compiler
from cuda_emulation import lower_for_cuda
model = onnx.load(sys.argv[1])
tracemalloc.start()
if sys.argv[2] == "cuda":
    source = lower_for_cuda(model)[1].source
else:
    compiler.compile(model, sys.argv[3], target="host")
    source = ""
# VmHWM, not getrusage's ru_maxrss: Linux carries the latter over exec from the forking process (an
# xdist worker deep into the suite holds gigabytes), the former belongs to this program alone.
hwm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"peak_mb": tracemalloc.get_traced_memory()[1] / 2**20, "source": source, "rss_mb": hwm_kb / 1024}}))
"""


def _f16(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT16, shape)


def _model(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "big", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _fills_model() -> onnx.ModelProto:
    """sum(last axis) of (Dropout(relu(x)) + mask) * Expand(c, Shape(x)), x of 3 × 2^30 elements."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Dropout", ["r"], ["d", "mask"]),
        helper.make_node("Cast", ["mask"], ["m"], to=TensorProto.FLOAT16),
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Expand", ["c", "s"], ["e"]),
        helper.make_node("Add", ["d", "m"], ["a"]),
        helper.make_node("Mul", ["a", "e"], ["b"]),
        helper.make_node("ReduceSum", ["b", "axes"], ["y"], keepdims=1),
    ]
    inits = [numpy_helper.from_array(np.linspace(0, 1, BIG[-1]).astype(np.float16), "c"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes")]
    return _model(nodes, [_f16("x", BIG)], [_f16("y", BIG[:-1] + [1])], inits)


def _gemm_model() -> onnx.ModelProto:
    """A^T B with both operands run-time inputs of 2^31 elements: a packed operand is never a constant."""
    rows, cols = 1 << 16, 1 << 15
    return _model([helper.make_node("Gemm", ["a", "b"], ["y"], transA=1)],
                  [_f16("a", [rows, cols]), _f16("b", [rows, cols])], [_f16("y", [cols, cols])], [])


def _flat_model() -> onnx.ModelProto:
    """Cast(v) + v over a 1-D input of 3 × 2^30 elements."""
    n = 3 << 30
    return _model([helper.make_node("Cast", ["v"], ["c"], to=TensorProto.FLOAT16),
                   helper.make_node("Add", ["c", "v"], ["y"])], [_f16("v", [n])], [_f16("y", [n])], [])


def _compile_in_child(model: onnx.ModelProto, target: str, tmp_path: pathlib.Path) -> dict:
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    result = subprocess.run([sys.executable, "-c", _CHILD, str(path), target, str(tmp_path / "m.tilec")],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("build", [_fills_model, _gemm_model, _flat_model])
def test_host_compile_of_a_6_gib_input_model_stays_small(build, tmp_path: pathlib.Path) -> None:
    report = _compile_in_child(build(), "host", tmp_path)
    assert report["peak_mb"] < PEAK_LIMIT_MB and report["rss_mb"] < RSS_LIMIT_MB
    assert (tmp_path / "m.tilec").stat().st_size < 1 << 20  # weights of KiB, no folded fill


@pytest.mark.parametrize("build,index_code", [
    # The flat element loop over the 3 × 2^30 input, and its bound.
    (_fills_model, ["tl_i64 tl_idx = ", "tl_idx < 3221225472LL"]),
    # The tiled contraction's block and thread indices, and the row stride of its 2^31-element operands.
    (_gemm_model, ["const tl_i64 tl_block = ", "const tl_i64 tl_thread = ", "* 32768LL"]),
    (_flat_model, ["tl_i64 tl_idx = ", "tl_idx < 3221225472LL"]),
])
def test_cuda_lowering_of_a_6_gib_input_model_stays_small_and_indexes_in_64_bits(build, index_code,
                                                                                  tmp_path: pathlib.Path) -> None:
    report = _compile_in_child(build(), "cuda", tmp_path)
    assert report["peak_mb"] < PEAK_LIMIT_MB and report["rss_mb"] < RSS_LIMIT_MB
    for code in index_code:
        assert code in report["source"]
    assert "int tl_idx" not in report["source"] and "const int tl_block" not in report["source"]
