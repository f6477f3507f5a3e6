"""A large model's kernels go into several LLVM modules (``kernel_parts``), compiled in forked children
(``codegen/llvm/parallel.py``) and linked into one shared object: the same artifact bytes however many
processes built it, the shared kernels not exported, failures in a child raised in the parent."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import compiler
from compiler.codegen.llvm import parallel
from compiler.codegen.llvm.module import KERNELS_PER_PART, distinct_kernels, kernel_parts
from compiler.codegen.target import resolve_target
from compiler.errors import ToolchainError
from compiler.frontend import load_graph
from compiler.graph.passes import run_passes
from compiler.lowering.driver import lower_graph
from runtime_stub import InferenceSession
from runtime_stub.artifact import NATIVE_SECTION, read_artifact

UNARY = ["Relu", "Sigmoid", "Tanh", "Exp", "Neg", "Abs", "Softplus", "Sin", "Cos", "Erf", "Floor", "Ceil"]


def _model(stages: int):
    """``stages`` differently shaped Softmax-over-MatMul stages: distinct kernels that fusion cannot merge."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    width = 16
    for k in range(stages):
        out = 16 + (k % 5) * 8
        inits.append(helper.make_tensor(f"w{k}", TensorProto.FLOAT, [width, out],
                                        (rng.standard_normal(width * out) * 0.2).astype(np.float32).tolist()))
        nodes += [helper.make_node("MatMul", [x, f"w{k}"], [f"m{k}"]),
                  helper.make_node(UNARY[k % len(UNARY)], [f"m{k}"], [f"u{k}"]),
                  helper.make_node("Softmax", [f"u{k}"], [f"s{k}"], axis=-1)]
        x, width = f"s{k}", out
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [8, width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_kernels_are_split_into_balanced_parts_each_kernel_once() -> None:
    target = resolve_target("host")
    program = lower_graph(run_passes(load_graph(_model(12))), target)
    kernels = distinct_kernels(program.calls)
    parts = kernel_parts(program.calls)
    assert len(kernels) >= 2 * KERNELS_PER_PART and len(parts) == len(kernels) // KERNELS_PER_PART
    names = [k.name for part in parts for k in part]
    assert sorted(names) == sorted(k.name for k in kernels)
    assert all(part for part in parts)
    assert kernel_parts(program.calls) == parts  # a function of the kernels alone


def test_a_model_in_several_modules_is_right_and_the_same_bytes_serial_or_parallel(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(12)
    monkeypatch.setattr(parallel.threading, "active_count", lambda: 1)  # fork even under a threaded runner
    monkeypatch.setenv("TILEC_COMPILE_JOBS", "2")
    lines: list[str] = []
    two = compiler.compile(model, tmp_path / "two.tilec", progress=lines.append)
    steps = [line for line in lines if line.startswith("llvm codegen ") and "/" in line.split()[2]]
    assert len(steps) >= 2 and steps[-1].startswith(f"llvm codegen {len(steps)}/{len(steps)}: module ")
    monkeypatch.setenv("TILEC_COMPILE_JOBS", "1")
    one = compiler.compile(model, tmp_path / "one.tilec")
    assert two.read_bytes() == one.read_bytes()
    x = np.random.default_rng(1).standard_normal((8, 16)).astype(np.float32)
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    with InferenceSession(str(two), threads=1) as session:
        np.testing.assert_allclose(session.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-6)
    native = bytes(read_artifact(str(two)).sections[NATIVE_SECTION])
    kernels = distinct_kernels(lower_graph(run_passes(load_graph(model)), resolve_target("host")).calls)
    assert b"tilec_run" in native
    assert not [k.name for k in kernels if k.name.encode() in native]  # shared kernels are hidden, not exported


def test_forked_jobs_return_in_order_and_carry_their_failures() -> None:
    assert parallel._forked([lambda k=k: k * k for k in range(5)], 2) == [0, 1, 4, 9, 16]

    def bad() -> None:
        raise ValueError("job three went wrong")

    with pytest.raises(ValueError, match="job three went wrong"):
        parallel._forked([lambda: 1, bad, lambda: 2], 2)

    def killed() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(ToolchainError, match="part 1 was killed by signal 9"):
        parallel._forked([lambda: 1, killed], 2)

    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("no")

    def odd() -> None:
        raise Unpicklable("odd failure")

    with pytest.raises(ToolchainError, match="odd failure"):
        parallel._forked([odd, lambda: 1], 2)


def test_jobs_run_here_when_forking_is_not_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parallel.threading, "active_count", lambda: 2)  # another thread: no fork
    pid = os.getpid()
    assert parallel.run_jobs([os.getpid, os.getpid]) == [pid, pid]
