"""Kernels + launch plan → one LLVM module with ``tilec_run`` → optimized object code.

``tilec_run(ctx, inputs, outputs, weights, workspace)`` (see docs/ARCHITECTURE.md)
calls every kernel in plan order with pointers computed from the memory plan,
so a model run is a single foreign call. Kernels equal up to names
(``canonical_kernel``: the same layer repeated) share one function. ``tilec_signature()`` returns the
``signature`` bytes (runtime_stub/signature.py), NUL-terminated, for the runtime
to hold against the manifest. With ``profile=True`` each call is
bracketed by ``tilec_profile_begin`` / ``tilec_profile_end`` (support library), which
add the kernel's wall time to the runtime's per-kernel counters when it asks for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import llvmlite.binding as llvm
import llvmlite.ir as ir

from compiler.codegen.llvm.emitter import ModuleEmitter
from compiler.codegen.llvm.types import I32, I64, PTR
from compiler.codegen.target import Target
from compiler.errors import ToolchainError
from compiler.loopir.stmt import Kernel, canonical_kernel


@dataclass(frozen=True)
class BufferRef:
    """Where a kernel argument lives: ``inputs[index]``, ``outputs[index]``, or ``weights``/``workspace`` + offset."""

    kind: str
    index: int = 0
    offset: int = 0


@dataclass(frozen=True)
class KernelCall:
    kernel: Kernel
    args: tuple[BufferRef, ...]


def build_module(calls: list[KernelCall], target: Target, name: str = "model", profile: bool = False,
                 signature: bytes = b"") -> ir.Module:
    """The module of ``calls``; ``signature`` is what the pipeline declares for the runtime's cross-check
    (an artifact's native code always has one; a module a test loads directly need not)."""
    module = ir.Module(name=name)
    module.triple = target.triple
    _add_signature(module, signature)
    emitter = ModuleEmitter(module)
    # A kernel equal to an earlier one up to names (a repeated layer) calls that one's function.
    by_form: dict[Kernel, ir.Function] = {}
    functions = []
    for call in calls:
        form = canonical_kernel(call.kernel)
        if form not in by_form:
            by_form[form] = emitter.add_kernel(call.kernel)
        functions.append(by_form[form])
    run = ir.Function(module, ir.FunctionType(I32, [PTR] * 5), "tilec_run")
    ctx, inputs, outputs, weights, workspace = run.args
    b = ir.IRBuilder(run.append_basic_block("entry"))
    if profile:
        begin = emitter.declare("tilec_profile_begin", I64, [PTR])
        end = emitter.declare("tilec_profile_end", ir.VoidType(), [PTR, I32, I64])
    for k, (fn, call) in enumerate(zip(functions, calls)):
        if profile:
            started = b.call(begin, [ctx])
        args = [ctx]
        for ref in call.args:
            if ref.kind in ("input", "output"):
                table = inputs if ref.kind == "input" else outputs
                args.append(b.load(b.gep(table, [ir.Constant(I64, ref.index)], source_etype=PTR), typ=PTR))
            else:
                base = weights if ref.kind == "weights" else workspace
                args.append(b.gep(base, [ir.Constant(I64, ref.offset)], source_etype=ir.IntType(8)))
        b.call(fn, args)
        if profile:
            b.call(end, [ctx, ir.Constant(I32, k), started])
    b.ret(ir.Constant(I32, 0))
    return module


def _add_signature(module: ir.Module, signature: bytes) -> None:
    text = bytearray(signature + b"\0")
    text_type = ir.ArrayType(ir.IntType(8), len(text))
    storage = ir.GlobalVariable(module, text_type, "tilec_signature_text")
    storage.global_constant = True
    storage.linkage = "internal"
    storage.initializer = ir.Constant(text_type, text)
    function = ir.Function(module, ir.FunctionType(PTR, []), "tilec_signature")
    ir.IRBuilder(function.append_basic_block("entry")).ret(storage.bitcast(PTR))


def target_machine(target: Target) -> llvm.TargetMachine:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    try:
        llvm_target = llvm.Target.from_triple(target.triple)
    except RuntimeError as exc:
        raise ToolchainError(f"LLVM has no backend for {target.triple}: {exc}") from None
    return llvm_target.create_target_machine(cpu=target.cpu, features=target.llvm_features, opt=3,
                                             reloc="pic", codemodel="default")


def _optimized(module: ir.Module, target: Target, timings: dict[str, float]) -> tuple[llvm.ModuleRef, llvm.TargetMachine]:
    start = time.perf_counter()
    try:
        parsed = llvm.parse_assembly(str(module))
        parsed.verify()
    except RuntimeError as exc:
        raise ToolchainError(f"generated LLVM IR is invalid (a compiler bug): {exc}") from None
    tm = target_machine(target)
    timings["llvm.parse"] = time.perf_counter() - start
    start = time.perf_counter()
    options = llvm.create_pipeline_tuning_options(speed_level=3)
    # The schedules unroll what should be unrolled (register tiles). LLVM's own unroller fully
    # unrolls short reduction loops around a tile (a conv's 3-tap kw loop) and interleaves the
    # copies, which spills the accumulators (a 3x3 conv ran at a third of its speed); it also
    # multiplies the code LLVM must emit.
    options.loop_unrolling = False
    builder = llvm.create_pass_builder(tm, options)
    builder.getModulePassManager().run(parsed, builder)
    timings["llvm.optimize"] = time.perf_counter() - start
    return parsed, tm


def compile_module(module: ir.Module, target: Target, timings: dict[str, float] | None = None) -> bytes:
    """Verify, optimize (O3) and emit an ELF object for ``target``."""
    timings = {} if timings is None else timings
    parsed, tm = _optimized(module, target, timings)
    start = time.perf_counter()
    obj = tm.emit_object(parsed)
    timings["llvm.emit"] = time.perf_counter() - start
    return obj


def emit_assembly(module: ir.Module, target: Target) -> str:
    """The optimized module as target assembly (for tests that check instruction selection)."""
    parsed, tm = _optimized(module, target, {})
    return tm.emit_assembly(parsed)
