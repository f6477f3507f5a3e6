"""The contraction schedule prefetches the next B column panel when B does not stay in L2.

Structure (golden lines of the loop IR) and instruction selection here; the numbers of these
kernels are the MatMul op tests' (prefetches change no value, checked below on one kernel anyway).
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from compiler.codegen.llvm.module import build_module, emit_assembly
from compiler.codegen.target import resolve_target
from compiler.loopir.printer import format_kernel
from compiler.pipeline import BuildLog, _lower
from helpers_onnx import graph_model, rand, reference
from tests.lowering.test_lowering_driver import run_program

ZNVER4 = resolve_target("x86_64-linux-gnu", "znver4")


def _matmul(k: int, n: int, rows: int = 28):
    x, w = rand((rows, k)), rand((k, n), seed=1)
    return graph_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": x}, ["y"], {"w": w}), x


def test_weights_beyond_l2_prefetch_the_next_panel_row_by_row():
    model, _ = _matmul(512, 512)  # 1 MiB of weights
    _, program = _lower(model, None, None, None, ZNVER4, BuildLog(), None)
    text = format_kernel(program.calls[0].kernel)
    panels = text.split("(")[1].split(":")[0]  # the packed weights, the kernel's first parameter
    # At each step of the reduction, the two 64-byte lines of the next 32-float panel's row (clamped
    # to the last panel), before the micro-kernel's loads.
    assert f"""      for r2 in 0..512 {{
        prefetch {panels}[min((i1_o + 1), 15), r2, 0]
        prefetch {panels}[min((i1_o + 1), 15), r2, 16]
        unrolled for i0_i in 0..14 {{""" in text, text
    assert "prefetcht1" in emit_assembly(build_module(program.calls, ZNVER4), ZNVER4)


def test_weights_that_stay_in_l2_are_not_prefetched():
    model, _ = _matmul(64, 256)  # 64 KiB
    _, program = _lower(model, None, None, None, ZNVER4, BuildLog(), None)
    assert "prefetch" not in format_kernel(program.calls[0].kernel)


def test_a_prefetching_kernel_computes_the_same():
    model, x = _matmul(512, 512, rows=30)
    _, program = _lower(model, None, None, None, resolve_target("host"), BuildLog(), None)
    assert "prefetch" in format_kernel(program.calls[0].kernel)
    np.testing.assert_allclose(run_program(program, [x])[0], reference(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_four_bit_weight_panels_are_prefetched_by_the_byte():
    """4-bit codes (MatMulNBits) beyond L2: one prefetch per panel row (32 codes are 16 bytes)."""
    from tests.lowering.test_lowering_driver import _graph, _nbits_model, lower_graph

    model, feeds, want = _nbits_model(1024, 1088, rows=16)  # 544 KiB of codes
    program = lower_graph(_graph(model), resolve_target("host"))
    text = "\n".join(format_kernel(c.kernel) for c in program.calls)
    hints = [line.strip() for line in text.splitlines() if "prefetch" in line]
    assert len(hints) == 1 and hints[0].endswith("[min((i1_o + 1), 33), r2, 0]"), hints
    (got,) = run_program(program, list(feeds.values()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
