"""Stage 2, contraction precision: precision="bf16" (float32 MatMul/Gemm/Conv on bfloat16 operands, float32
sums) and float16 contractions on float32 copies.

The rewrite (weights stored as bfloat16, one shared Cast per activation, everything else untouched) and
the compiled result: against the reference evaluator run on operands rounded to bfloat16 in float64 the
only error left is float32 summation, far below bfloat16's rounding (so a model that was not rounded,
or rounded its outputs too, fails); against the float32 model the error is bfloat16's.
"""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
import runtime_stub
from compiler.codegen.llvm.module import build_module, emit_assembly
from compiler.codegen.target import resolve_target
from compiler.dtypes import DType
from compiler.errors import CompileError, TilecWarning
from compiler.frontend import load_graph
from compiler.graph.passes import run_passes
from compiler.graph.passes.precision import contractions_in_bf16, half_contractions_in_float32
from compiler.lowering.driver import lower_graph
from helpers_onnx import compiled, graph_model, rand, reference

ZNVER4 = resolve_target("x86_64-linux-gnu", "znver4")


def _bf16(a: np.ndarray) -> np.ndarray:
    return a.astype(ml_dtypes.bfloat16).astype(np.float32)


def _shared_input_model() -> onnx.ModelProto:
    """Two projections of one activation (as Q and K of attention) and a Gemm with a bias."""
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("Add", ["q", "k"], ["s"]),
             helper.make_node("Gemm", ["s", "wg", "bg"], ["y"], transB=1)]
    consts = {"wq": rand((16, 24), 1), "wk": rand((16, 24), 2), "wg": rand((8, 24), 3), "bg": rand((8,), 4)}
    return graph_model(nodes, {"x": rand((5, 16))}, ["y"], consts)


def test_weights_become_bfloat16_and_an_activation_is_cast_once():
    graph = contractions_in_bf16(run_passes(load_graph(_shared_input_model())))
    casts = [n for n in graph.nodes if n.op_type == "Cast"]
    matmuls = [n for n in graph.nodes if n.op_type == "MatMul"]
    gemm = next(n for n in graph.nodes if n.op_type == "Gemm")
    # x is cast once for both projections; the Add's result once for the Gemm.
    assert [c.inputs[0].name for c in casts] == ["x", "s"]
    assert matmuls[0].inputs[0] is matmuls[1].inputs[0] is casts[0].outputs[0]
    assert all(m.inputs[1].dtype is DType.BF16 and m.outputs[0].dtype is DType.F32 for m in matmuls)
    weight = matmuls[0].inputs[1].const
    np.testing.assert_array_equal(weight, rand((16, 24), 1).astype(ml_dtypes.bfloat16).view(np.uint16))
    assert gemm.inputs[2].dtype is DType.F32  # the bias is added in float32


def test_other_types_and_grouped_convs_stay_as_they_are():
    w = rand((4, 1, 3, 3))
    conv = graph_model([helper.make_node("Conv", ["x", "w"], ["y"], group=4)], {"x": rand((1, 4, 6, 6))}, ["y"], {"w": w})
    double = graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": rand((3, 4), dtype="float64")}, ["y"],
                         {"w": rand((4, 2), dtype="float64")})
    for model in (conv, double):
        graph = contractions_in_bf16(run_passes(load_graph(model)))
        assert [n.op_type for n in graph.nodes] in (["Conv"], ["MatMul"])
        assert all(v.dtype is not DType.BF16 for n in graph.nodes for v in n.inputs if v is not None)


def _rounded_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its float32 weights rounded to bfloat16 (still float32)."""
    rounded = onnx.ModelProto()
    rounded.CopyFrom(model)
    for init in rounded.graph.initializer:
        if init.data_type == TensorProto.FLOAT and init.name.startswith("w"):
            init.CopyFrom(numpy_helper.from_array(_bf16(numpy_helper.to_array(init)), init.name))
    return rounded


CASES = {
    "matmul": ([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": (37, 130)}, {"w": (130, 45)}),
    "batched_matmul": ([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": (3, 9, 64)}, {"w": (64, 33)}),
    "gemm_trans_b": ([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, alpha=0.5)], {"x": (20, 31)},
                     {"w": (17, 31), "b": (17,)}),
    "conv_3x3_relu": ([helper.make_node("Conv", ["x", "w", "b"], ["t"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["t"], ["y"])],
                      {"x": (2, 24, 9, 9)}, {"w": (32, 24, 3, 3), "b": (32,)}),
    "conv_7x7_s2_3_channels": ([helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], pads=[3, 3, 3, 3])],
                               {"x": (1, 3, 20, 20)}, {"w": (16, 3, 7, 7)}),
    "two_activations": ([helper.make_node("MatMul", ["x", "z"], ["y"])], {"x": (2, 12, 40), "z": (2, 40, 12)}, {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bf16_contractions_sum_rounded_operands_in_float32(case):
    nodes, inputs, weights = CASES[case]
    feeds = {name: rand(shape, seed) for seed, (name, shape) in enumerate(inputs.items())}
    consts = {name: rand(shape, 10 + seed) for seed, (name, shape) in enumerate(weights.items())}
    model = graph_model(nodes, feeds, ["y"], consts)
    with runtime_stub.InferenceSession(compiled(model, precision="bf16")) as session:
        got = session.run(None, feeds)[0]
    # The reference on bfloat16-rounded operands (biases stay float32), in float64.
    want = reference(_rounded_model(model), {k: _bf16(v) for k, v in feeds.items()})[0].astype(np.float64)
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-5 * scale, case
    # ... which is about bfloat16's rounding away from the float32 model.
    fp32 = reference(model, feeds)[0]
    assert 1e-4 * scale < np.abs(got - fp32).max() <= 2e-2 * scale, case


def test_bf16_matmul_runs_on_vdpbf16ps():
    model = graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": rand((64, 256))}, ["y"],
                        {"w": rand((256, 256), 1)})
    program = lower_graph(contractions_in_bf16(run_passes(load_graph(model))), ZNVER4)
    asm = emit_assembly(build_module(program.calls, ZNVER4), ZNVER4)
    # The 14 x 32 register tile: two zmm vdpbf16ps per row per pair.
    assert len(re.findall(r"\bvdpbf16ps\s+[^\n]*zmm", asm)) >= 28
    fp32 = lower_graph(run_passes(load_graph(model)), ZNVER4)
    assert "vdpbf16ps" not in emit_assembly(build_module(fp32.calls, ZNVER4), ZNVER4)


def test_precision_errors_and_the_warning_without_bf16_instructions(tmp_path):
    model = graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": rand((4, 8))}, ["y"], {"w": rand((8, 4))})
    with pytest.raises(CompileError, match=r"precision='fp16' is none of 'fp32', 'bf16'"):
        compiler.compile(model, tmp_path / "a.tilec", precision="fp16")
    with pytest.raises(CompileError, match=r"precision='bf16' is for CPU targets"):
        compiler.compile(model, tmp_path / "a.tilec", target="cuda", precision="bf16")
    with pytest.warns(TilecWarning, match=r"x86-64-v3 has no bfloat16 dot product instruction"):
        compiler.compile(model, tmp_path / "a.tilec", target="x86_64-linux-gnu", cpu="x86-64-v3", precision="bf16")


def test_half_contractions_run_on_float32_copies_and_round_once():
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    w = rand((8, 4, 3, 3), 1, dtype="float16")
    model = graph_model(nodes, {"x": rand((1, 4, 6, 6), dtype="float16")}, ["y"], {"w": w, "b": rand((8,), 2, dtype="float16")})
    graph = half_contractions_in_float32(run_passes(load_graph(model)))
    assert [n.op_type for n in graph.nodes] == ["Cast", "Conv", "Cast", "Relu"]
    conv = graph.nodes[1]
    assert all(v.dtype is DType.F32 for v in [*conv.inputs, *conv.outputs])
    np.testing.assert_array_equal(conv.inputs[1].const, w.astype(np.float32))  # widening is exact
    assert graph.nodes[2].outputs[0].dtype is DType.F16 and graph.nodes[3].inputs[0] is graph.nodes[2].outputs[0]


def test_half_erf_and_exp_are_vector_code_not_libm_calls():
    model = graph_model([helper.make_node("Erf", ["x"], ["e"]), helper.make_node("Exp", ["e"], ["y"])],
                        {"x": rand((4, 256), dtype="float16")}, ["y"])
    program = lower_graph(run_passes(load_graph(model)), ZNVER4)
    asm = emit_assembly(build_module(program.calls, ZNVER4), ZNVER4)
    assert "erff" not in asm and "expf" not in asm and re.search(r"vcvtph2ps\s+[^\n]*zmm", asm)
