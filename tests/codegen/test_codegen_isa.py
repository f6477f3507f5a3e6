"""The contraction schedule really becomes vector FMAs on each target: NEON fmla on aarch64, zmm on znver4;
byte dot products for int8, bfdot for bf16, and whole-byte loads of 4-bit weights."""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler  # noqa: F401  (sets up llvmlite's IR layer)
from compiler.codegen.llvm.module import build_module, emit_assembly
from compiler.codegen.target import resolve_target
from compiler.frontend import load_graph
from compiler.graph.passes import run_passes
from compiler.lowering.driver import lower_graph
from helpers_contrib import contrib_model, contrib_node, nbits_weights


def _conv_and_gemm_model():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((32, 16, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal((32 * 14 * 14, 64)).astype(np.float32), "b")
    flat = numpy_helper.from_array(np.array([1, -1], np.int64), "flat")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Reshape", ["r", "flat"], ["f"]),
             helper.make_node("MatMul", ["f", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w, b, flat])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _assembly(target: str, cpu: str | None) -> str:
    tgt = resolve_target(target, cpu)
    program = lower_graph(run_passes(load_graph(_conv_and_gemm_model())), tgt)
    return emit_assembly(build_module(program.calls, tgt), tgt)


def test_aarch64_kernels_use_neon_fma() -> None:
    asm = _assembly("aarch64-linux-gnu", None)
    assert len(re.findall(r"\bfmla\s+v\d+\.4s", asm)) >= 8


@pytest.mark.parametrize("cpu", ["znver4", "skylake-avx512"])
def test_avx512_kernels_use_zmm_fma(cpu: str) -> None:
    asm = _assembly("x86_64-linux-gnu", cpu)
    assert len(re.findall(r"vfmadd\d+ps\s+[^\n]*zmm", asm)) >= 8


def test_avx2_target_uses_ymm_not_zmm() -> None:
    asm = _assembly("x86_64-linux-gnu", "x86-64-v3")
    assert re.search(r"vfmadd\d+ps\s+[^\n]*ymm", asm)
    assert "zmm" not in asm


def _bf16_assembly(target: str, cpu: str | None) -> str:
    from compiler.graph.passes.precision import contractions_in_bf16

    tgt = resolve_target(target, cpu)
    program = lower_graph(contractions_in_bf16(run_passes(load_graph(_conv_and_gemm_model()))), tgt)
    return emit_assembly(build_module(program.calls, tgt), tgt)


def test_bf16_contractions_use_bfdot_on_neoverse_v1() -> None:
    asm = _bf16_assembly("aarch64-linux-gnu", "neoverse-v1")
    assert len(re.findall(r"\bbfdot\s+v\d+\.4s", asm)) >= 8
    # Without the BF16 extension the same kernels widen the pairs into fmla.
    plain = _bf16_assembly("aarch64-linux-gnu", None)
    assert "bfdot" not in plain and re.search(r"\bfmla\s+v\d+\.4s", plain)



def _int8_model():
    """A ConvInteger and a MatMulInteger over uint8 activations and int8 weights (with zero points)."""
    rng = np.random.default_rng(0)
    consts = [numpy_helper.from_array(rng.integers(-128, 128, (32, 16, 3, 3)).astype(np.int8), "w"),
              numpy_helper.from_array(rng.integers(-128, 128, (14 * 14, 64)).astype(np.int8), "b"),
              numpy_helper.from_array(np.uint8(3), "xz"), numpy_helper.from_array(np.uint8(5), "az"),
              numpy_helper.from_array(np.int8(-2), "bz"), numpy_helper.from_array(np.array([32, -1], np.int64), "flat")]
    nodes = [helper.make_node("ConvInteger", ["x", "w", "xz"], ["c"]),
             helper.make_node("Cast", ["c"], ["cu"], to=TensorProto.UINT8),
             helper.make_node("Reshape", ["cu", "flat"], ["f"]),
             helper.make_node("MatMulInteger", ["f", "b", "az", "bz"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 16, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [32, 64])], consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _int8_assembly(cpu: str | None) -> str:
    tgt = resolve_target("aarch64-linux-gnu", cpu)
    program = lower_graph(run_passes(load_graph(_int8_model())), tgt)
    return emit_assembly(build_module(program.calls, tgt), tgt)


@pytest.mark.parametrize("cpu, instruction", [("neoverse-n1", "sdot"), ("cortex-a76", "sdot"), ("neoverse-v1", "usdot")])
def test_int8_contractions_use_byte_dot_products_on_arm(cpu: str, instruction: str) -> None:
    # Without I8MM's mixed-sign usdot the uint8 activations move to int8 (x - 128) for sdot.
    assert len(re.findall(rf"\b{instruction}\s+v\d+\.4s", _int8_assembly(cpu))) >= 8


def test_int8_contractions_widen_without_the_dot_product_extension() -> None:
    asm = _int8_assembly(None)
    assert not re.search(r"\bu?s?dot\s", asm) and re.search(r"\bs?mlal2?\s|\bmla\s", asm)


@pytest.mark.parametrize("target, cpu, byte_load", [("x86_64-linux-gnu", "znver4", r"\bmovzbl\b|\bv?pinsrb\b"),
                                                    ("x86_64-linux-gnu", "x86-64-v3", r"\bmovzbl\b|\bv?pinsrb\b"),
                                                    ("aarch64-linux-gnu", "neoverse-n1", r"\bldrb\b")])
def test_four_bit_weights_load_as_whole_bytes(target: str, cpu: str, byte_load: str) -> None:
    """A MatMulNBits product reads its 4-bit codes a vector of bytes at a time (one load, shifts and a
    shuffle), not lane by lane (a byte load and an insert per code)."""
    k, n = 256, 64
    node = contrib_node("MatMulNBits", ["a", "w", "s", "z"], K=k, N=n, bits=4, block_size=32)
    model, _ = contrib_model([node], {"a": np.zeros((1, k), np.float32)}, ["y"], nbits_weights(n, k, 4, 32, seed=3),
                             expected=[np.zeros((1, n), np.float32)])
    tgt = resolve_target(target, cpu)
    asm = emit_assembly(build_module(lower_graph(run_passes(load_graph(model)), tgt).calls, tgt), tgt)
    assert not re.search(byte_load, asm)
    assert re.search(r"\bvcvtdq2ps\b|\bucvtf\b", asm)  # the codes do reach the product, as floats
