"""Integer contractions as 4-way dot products: the rewrite, its packs, both lowerings of ``WordDot``, the ISA.

``dot_product_form`` turns ``sum_r int32(u8 a) * int32(s8 b)`` into ``sum_w dot4(pack4(a bytes), Bw[w, j])``;
the scheduled nest (packs run as kernels first, or evaluated with numpy as the driver folds constant
ones) must give numpy's int32 result exactly, for reductions that are and are not multiples of 4. The
emitter lowers ``WordDot`` to ``vpdpbusd`` with VNNI and to widened multiplies without: a kernel emitted
for a target without VNNI (runnable on this host) checks the portable lowering.
"""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest

from compiler.codegen.link import link_shared_object
from compiler.codegen.llvm.module import BufferRef, KernelCall, build_module, compile_module, emit_assembly
from compiler.codegen.target import Target, resolve_target
from compiler.dtypes import DType
from compiler.frontend import load_graph
from compiler.graph.passes import run_passes
from compiler.loopir.compute import Computation, ReduceAxis
from compiler.loopir.expr import Buffer, PackWord, Var, WordDot, cast
from compiler.loopir.printer import format_expr, format_stmt
from compiler.loopir.stmt import For, ForKind, Kernel, Stmt, Store, loads_and_stores, seq
from compiler.lowering.driver import lower_graph
from compiler.codegen.target import dot_product_forms
from compiler.schedule.contraction import dot_product_form, dot_product_operands_packable
from compiler.schedule.defaults import schedule, schedule_computation
from compiler.schedule.packing import evaluate
from helpers_onnx import node_model
from runtime_stub.native import NativeModule

VNNI = resolve_target("x86_64-linux-gnu", "znver4")
NO_VNNI = resolve_target("x86_64-linux-gnu", "x86-64-v4")
i, j, r = Var("i"), Var("j"), Var("r")
U8S8 = frozenset({"u8s8"})


def _has_vnni_host() -> bool:
    return "avx512vnni" in resolve_target("host").features


def _run(body: Stmt, arrays: dict[str, np.ndarray], target: Target) -> None:
    """Compile ``body`` as one kernel for ``target`` (which this host must be able to run) and run it."""
    params: dict[str, Buffer] = {}
    for buffer, _ in loads_and_stores(body):
        if buffer.scope == "global":
            params.setdefault(buffer.name, buffer)
    call = KernelCall(Kernel("k", tuple(params.values()), body), tuple(BufferRef("input", index=n) for n in range(len(params))))
    native = link_shared_object([compile_module(build_module([call], target), target)], target.triple, target.cpu)
    module = NativeModule(native, 1)
    try:
        assert module.run([arrays[name].ctypes.data for name in params], [], 0, 0) == 0
    finally:
        module.close()


def _int_matmul(m: int, kk: int, n: int) -> tuple[Computation, Buffer, Buffer, Buffer]:
    a, b, y = Buffer("a", DType.U8, (m, kk)), Buffer("b", DType.I8, (kk, n)), Buffer("y", DType.I32, (m, n))
    body = cast(a[i, r], DType.I32) * cast(b[r, j], DType.I32)
    return Computation(y, (i, j), body, (ReduceAxis(r, kk),), "sum"), a, b, y


def _operands(m: int, kk: int, n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(kk)
    return {"a": rng.integers(0, 256, (m, kk)).astype(np.uint8), "b": rng.integers(-128, 128, (kk, n)).astype(np.int8)}


def test_printer_shows_the_word_nodes():
    a, w = Buffer("a", DType.U8, (2, 8)), Buffer("w", DType.I32, (2, 4))
    word = PackWord(tuple(a[i, r * 4 + k] for k in range(4)))
    assert format_expr(WordDot(word, w[r, j])) == (
        "dot4_u8s8(pack4(a[i, (r * 4)], a[i, ((r * 4) + 1)], a[i, ((r * 4) + 2)], a[i, ((r * 4) + 3)]), w[r, j])")


@pytest.mark.parametrize("kk", [1, 3, 4, 6, 13, 16])
def test_word_pack_evaluates_like_numpy(kk):
    c, _, b, _ = _int_matmul(3, kk, 5)
    _, (pack,), constant = dot_product_form(c, U8S8, lambda name: name == "b")
    assert constant == {pack.output.name}
    values = _operands(3, kk, 5)
    words = evaluate(pack, {"b": values["b"]})
    assert words.dtype == np.int32 and words.shape == (-(-kk // 4), 5)
    # Each word's bytes (low first) are 4 consecutive rows of b; the last word of a K % 4 != 0
    # reduction starts at K - 4 with the rows the word before counted zeroed.
    raw = words.view(np.uint8).reshape(words.shape[0], 5, 4).view(np.int8)
    for w in range(words.shape[0]):
        start = 4 * w if kk % 4 == 0 or kk < 4 else min(4 * w, kk - 4)
        for byte in range(4):
            row = start + byte
            counted = row >= 4 * w and row < kk
            want = values["b"][min(row, kk - 1)] if counted else np.zeros(5, np.int8)
            np.testing.assert_array_equal(raw[w, :, byte], want)


def test_dot_product_form_needs_a_packable_int8_operand():
    c, _, _, _ = _int_matmul(4, 8, 16)
    assert dot_product_operands_packable(c, U8S8, lambda name: name == "b", runtime_packs=False)
    assert dot_product_operands_packable(c, U8S8, lambda name: False, runtime_packs=True)
    assert not dot_product_operands_packable(c, U8S8, lambda name: False, runtime_packs=False)
    f = Buffer("f", DType.F32, (4, 8))
    float_body = Computation(c.output, c.index, cast(f[i, r], DType.I32) * cast(c.body.b.value, DType.I32), c.axes, "sum")
    assert not dot_product_operands_packable(float_body, U8S8, lambda name: True, runtime_packs=True)


@pytest.mark.parametrize("m, kk, n", [(1, 1, 1), (5, 3, 17), (14, 8, 32), (29, 13, 47), (40, 130, 96)])
@pytest.mark.parametrize("target", [VNNI, NO_VNNI], ids=["vpdpbusd", "widened"])
def test_scheduled_dot_products_are_exact(m, kk, n, target):
    if not _has_vnni_host():
        pytest.skip("the host cannot run VNNI code")
    c, _, _, _ = _int_matmul(m, kk, n)
    # Scheduled for VNNI (so the nest holds the dot products) whatever the target it is emitted for.
    scheduled = schedule(c, VNNI, lambda name: False)
    assert "dot4_u8s8" in format_stmt(scheduled.body)
    arrays = _operands(m, kk, n)
    arrays["y"] = np.full((m, n), -1, np.int32)
    for p in scheduled.packs:
        arrays[p.output.name] = np.zeros(p.output.shape, p.output.dtype.numpy)
    body = seq(*(schedule_computation(p, target) for p in scheduled.packs), scheduled.body)
    _run(body, arrays, target)
    want = arrays["a"].astype(np.int32) @ arrays["b"].astype(np.int32)
    np.testing.assert_array_equal(arrays["y"], want)


#: The bytes at the ends of each form's A type.
_A_BYTES = {"u8s8": np.array([0, 1, 254, 255], np.uint8), "s8s8": np.array([-128, -1, 0, 127], np.int8)}


def _check_word_dot(form: str, lanes: int, target: Target) -> None:
    # acc[j] += dot4(word of a, w[r, j]) with bytes at the ends of their types.
    words = 3
    a = Buffer("a", DType.U8 if form == "u8s8" else DType.I8, (4 * words,))
    w, y = Buffer("w", DType.I32, (words, lanes)), Buffer("y", DType.I32, (lanes,))
    word = PackWord(tuple(a[4 * r + k] for k in range(4)))
    body = For(r, words, For(j, lanes, Store(y, (j,), y[j] + WordDot(word, w[r, j], form)),
                             ForKind.VECTORIZED if lanes > 1 else ForKind.SERIAL))
    rng = np.random.default_rng(lanes)
    av = rng.choice(_A_BYTES[form], 4 * words)
    wb = rng.choice(np.array([-128, -127, 0, 126, 127], np.int8), (words, lanes, 4))
    arrays = {"a": av, "w": np.ascontiguousarray(wb).view(np.int32).reshape(words, lanes),
              "y": np.arange(lanes, dtype=np.int32)}
    _run(body, arrays, target)
    want = np.arange(lanes) + np.einsum("wk,wjk->j", av.reshape(words, 4).astype(np.int64), wb.astype(np.int64))
    np.testing.assert_array_equal(arrays["y"], want.astype(np.int32))


@pytest.mark.parametrize("lanes", [1, 3, 4, 8, 16, 32])
@pytest.mark.parametrize("target", [VNNI, NO_VNNI], ids=["vpdpbusd", "widened"])
def test_u8s8_word_dot_lowerings_at_every_width(lanes, target):
    if not _has_vnni_host():
        pytest.skip("the host cannot run VNNI code")
    _check_word_dot("u8s8", lanes, target)


@pytest.mark.parametrize("lanes", [1, 8])
def test_s8s8_widened_word_dot_reads_both_words_signed(lanes):
    # sdot's form where no instruction runs it (x86): both operands' bytes sign-extended.
    _check_word_dot("s8s8", lanes, resolve_target("host"))


def test_byte_dot_product_forms_of_arm_cores():
    assert dot_product_forms(resolve_target("aarch64-linux-gnu", "neoverse-n1")) == {"s8s8"}
    assert dot_product_forms(resolve_target("aarch64-linux-gnu", "neoverse-v1")) == {"s8s8", "u8s8", "bf16"}
    assert dot_product_forms(resolve_target("aarch64-linux-gnu", None)) == frozenset()


def _assembly(target: Target) -> str:
    rng = np.random.default_rng(0)
    feeds = {"a": rng.integers(0, 256, (64, 256)).astype(np.uint8)}
    consts = {"b": rng.integers(-128, 128, (256, 256)).astype(np.int8), "az": np.uint8(3), "bz": np.int8(-2)}
    model = node_model("MatMulInteger", ["a", "b", "az", "bz"], feeds, consts=consts, opset=10)
    program = lower_graph(run_passes(load_graph(model)), target)
    return emit_assembly(build_module(program.calls, target), target)


def test_matmul_integer_uses_vpdpbusd_on_vnni_targets():
    asm = _assembly(VNNI)
    # The 13 x 32 register tile: two zmm vpdpbusd per row per word.
    assert len(re.findall(r"\bvpdpbusd\s+[^\n]*zmm", asm)) >= 26
    assert "vpdpbusd" not in _assembly(NO_VNNI)


# --- bfloat16 pairs (vdpbf16ps) -------------------------------------------------------------------------

BF16 = frozenset({"bf16"})


def _has_bf16_host() -> bool:
    return "avx512bf16" in resolve_target("host").features


def _bf16_matmul(m: int, kk: int, n: int) -> Computation:
    a, b, y = Buffer("a", DType.BF16, (m, kk)), Buffer("b", DType.BF16, (kk, n)), Buffer("y", DType.F32, (m, n))
    return Computation(y, (i, j), cast(a[i, r], DType.F32) * cast(b[r, j], DType.F32), (ReduceAxis(r, kk),), "sum")


def _bf16_operands(m: int, kk: int, n: int) -> dict[str, np.ndarray]:
    """bfloat16 values as the uint16 bits compile-time arrays carry them."""
    rng = np.random.default_rng(kk)
    return {name: rng.standard_normal(shape).astype(ml_dtypes.bfloat16).view(np.uint16)
            for name, shape in (("a", (m, kk)), ("b", (kk, n)))}


def _bf16_values(bits: np.ndarray) -> np.ndarray:
    return bits.view(ml_dtypes.bfloat16).astype(np.float64)


def test_bf16_contractions_take_the_pair_form_only_where_the_target_has_it():
    c = _bf16_matmul(4, 8, 16)
    assert dot_product_forms(resolve_target("x86_64-linux-gnu", "znver4")) == {"u8s8", "bf16"}
    assert dot_product_forms(NO_VNNI) == frozenset()
    assert dot_product_operands_packable(c, BF16, lambda name: name == "b", runtime_packs=False)
    assert not dot_product_operands_packable(c, U8S8, lambda name: True, runtime_packs=True)
    # Half-precision operands are not bfloat16 pairs.
    h = Buffer("h", DType.F16, (8, 16))
    half = Computation(c.output, c.index, cast(Buffer("a", DType.BF16, (4, 8))[i, r], DType.F32) * cast(h[r, j], DType.F32),
                       c.axes, "sum")
    assert not dot_product_operands_packable(half, BF16, lambda name: True, runtime_packs=True)


@pytest.mark.parametrize("kk", [1, 3, 4, 7])
def test_bf16_word_pack_evaluates_like_numpy(kk):
    c = _bf16_matmul(3, kk, 5)
    form, (pack,), constant = dot_product_form(c, BF16, lambda name: name == "b")
    assert "dot2_bf16(pack2(a[i, " in format_expr(form.body) and constant == {pack.output.name}
    values = _bf16_operands(3, kk, 5)
    words = evaluate(pack, {"b": values["b"]})
    assert words.dtype == np.int32 and words.shape == (-(-kk // 2), 5)
    halves = words.view(np.uint16).reshape(words.shape[0], 5, 2)
    for w in range(words.shape[0]):
        start = 2 * w if kk % 2 == 0 or kk < 2 else min(2 * w, kk - 2)
        for half in range(2):
            row = start + half
            counted = 2 * w <= row < kk
            want = values["b"][min(row, kk - 1)] if counted else np.zeros(5, np.uint16)
            np.testing.assert_array_equal(halves[w, :, half], want)


@pytest.mark.parametrize("m, kk, n", [(1, 1, 1), (5, 3, 17), (14, 8, 32), (29, 13, 47), (40, 130, 96)])
@pytest.mark.parametrize("target", [VNNI, NO_VNNI], ids=["vdpbf16ps", "widened"])
def test_scheduled_bf16_dot_products_match_float64(m, kk, n, target):
    if not _has_bf16_host():
        pytest.skip("the host cannot run AVX512-BF16 code")
    c = _bf16_matmul(m, kk, n)
    scheduled = schedule(c, VNNI, lambda name: False)
    assert "dot2_bf16" in format_stmt(scheduled.body)
    arrays = _bf16_operands(m, kk, n)
    arrays["y"] = np.full((m, n), np.nan, np.float32)
    for p in scheduled.packs:
        arrays[p.output.name] = np.zeros(p.output.shape, p.output.dtype.numpy)
    body = seq(*(schedule_computation(p, target) for p in scheduled.packs), scheduled.body)
    _run(body, arrays, target)
    a, b = _bf16_values(arrays["a"]), _bf16_values(arrays["b"])
    # The products are exact in float32; only the float32 sums round (in another order than numpy's).
    bound = 1e-6 * kk * (np.abs(a) @ np.abs(b)) + 1e-30
    assert np.all(np.abs(arrays["y"] - a @ b) <= bound)


@pytest.mark.parametrize("lanes", [1, 3, 4, 8, 16, 32])
@pytest.mark.parametrize("target", [VNNI, NO_VNNI], ids=["vdpbf16ps", "widened"])
def test_bf16_word_dot_lowerings_at_every_width(lanes, target):
    # acc[j] += dot2(pair of a, w[r, j]) with exactly representable sums, for each vector width.
    if not _has_bf16_host():
        pytest.skip("the host cannot run AVX512-BF16 code")
    words = 3
    a, w, y = Buffer("a", DType.BF16, (2 * words,)), Buffer("w", DType.I32, (words, lanes)), Buffer("y", DType.F32, (lanes,))
    word = PackWord(tuple(a[2 * r + k] for k in range(2)))
    body = For(r, words, For(j, lanes, Store(y, (j,), y[j] + WordDot(word, w[r, j], "bf16")),
                             ForKind.VECTORIZED if lanes > 1 else ForKind.SERIAL))
    rng = np.random.default_rng(lanes)
    av = rng.choice(np.array([-2.0, -0.5, 0.0, 1.0, 3.0]), 2 * words).astype(ml_dtypes.bfloat16)
    wb = rng.choice(np.array([-1.0, 0.25, 0.0, 2.0, 1.5]), (words, lanes, 2)).astype(ml_dtypes.bfloat16)
    arrays = {"a": av.view(np.uint16), "w": np.ascontiguousarray(wb).view(np.int32).reshape(words, lanes),
              "y": np.arange(lanes, dtype=np.float32)}
    _run(body, arrays, target)
    want = np.arange(lanes) + np.einsum("wk,wjk->j", av.astype(np.float64).reshape(words, 2), wb.astype(np.float64))
    np.testing.assert_array_equal(arrays["y"], want.astype(np.float32))
