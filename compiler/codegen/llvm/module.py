"""Kernels + launch plan → one LLVM module with ``tilec_run`` → optimized object code.

``tilec_run(ctx, inputs, outputs, weights, workspace, dims)`` (see docs/ARCHITECTURE.md)
calls every kernel in plan order with pointers computed from the memory plan,
so a model run is a single foreign call. ``dims`` holds the run's value of each
size variable (``RunLayout.dims`` order; unused by a static model), from which
the symbolic workspace slots' offsets are computed at entry;
``tilec_sizes(dims, out)`` writes the workspace bytes the run needs, then every
output's dims, so the runtime allocates from what the code itself computes; its
arithmetic is overflow-checked, and an overflow writes -1 first (the inputs ask
for more than int64 sizes can address), a violated size constraint ``k``
(``RunLayout.constraints``) ``-2 - k``, so ``tilec_run`` is only ever called
with sizes that fit and that the kernels were built for. Kernels equal up to names
(``canonical_kernel``: the same layer repeated) share one function. A kernel with a guard (a branch of a run-time If) is called only where the guard, a
predicate over the dims, holds. A loop of the run (``LoopSpan``: a Loop, Scan or recurrence kept as a loop)
repeats its stretch of calls, its counter stored in a copy of ``dims`` after the run's own sizes, where its
body's kernels read it. ``tilec_signature()`` returns the
``signature`` bytes (runtime_stub/signature.py), NUL-terminated, for the runtime
to hold against the manifest. With ``profile=True`` each call is
bracketed by ``tilec_profile_begin`` / ``tilec_profile_end`` (support library), which
add the kernel's wall time to the runtime's per-kernel counters when it asks for them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import llvmlite.binding as llvm
import llvmlite.ir as ir

from compiler.codegen.llvm.emitter import ModuleEmitter
from compiler.codegen.llvm.types import I32, I64, PTR
from compiler.codegen.target import Target
from compiler.errors import ToolchainError
from compiler.artifact.memory_plan import SymbolicSlot
from compiler.loopir.expr import Binary, Const, Expr, Select
from compiler.loopir.run_loops import RunLoop
from compiler.loopir.sizes import ConditionVar, Size, SizeConstraint, SizeVar
from compiler.loopir.stmt import For, ForKind, Kernel, Stmt, canonical_kernel, stmt_children


# An artifact's kernels go into one module per this many distinct kernels, at most MAX_PARTS
# (kernel_parts): small models stay one module; large ones compile on several cores.
KERNELS_PER_PART = 8
MAX_PARTS = 8


@dataclass(frozen=True)
class BufferRef:
    """Where a kernel argument lives: ``inputs[index]``, ``outputs[index]``, ``weights``/``workspace`` + offset,
    or the workspace at the per-run offset of the symbolic ``slot``."""

    kind: str
    index: int = 0
    offset: int = 0
    slot: str | None = None


@dataclass(frozen=True)
class KernelCall:
    kernel: Kernel
    args: tuple[BufferRef, ...]
    # Workspace offsets of the check flags the kernel writes, zeroed where its guard skips it.
    clears: tuple[int, ...] = ()
    # Those of a kernel in a loop of the run: the run stops where one is set (a later iteration would
    # overwrite it); the runtime then reports it.
    stops: tuple[int, ...] = ()


@dataclass(frozen=True)
class LoopSpan:
    """A loop of the run: ``tilec_run`` repeats ``calls[first..last]`` ``loop.trip`` times, while the bool
    byte at ``condition`` (where given) holds, and not at all where ``guard`` does not."""

    loop: RunLoop
    first: int
    last: int
    condition: BufferRef | None = None
    guard: Expr | None = None


@dataclass(frozen=True)
class RunLayout:
    """What ``tilec_sizes`` computes and ``tilec_run`` places: the size variables (dims order), the
    static workspace bytes, the symbolic slots after them, and the outputs' shapes."""

    dims: tuple[str, ...] = ()
    workspace_base: int = 0
    slots: tuple[SymbolicSlot, ...] = ()
    output_shapes: tuple[tuple[Size, ...], ...] = field(default_factory=tuple)
    constraints: tuple[SizeConstraint, ...] = ()
    # Where ``tilec_run`` reads the data conditions of guards (``ConditionVar``), by name.
    conditions: tuple[tuple[str, BufferRef], ...] = ()
    loops: tuple[LoopSpan, ...] = ()


def distinct_kernels(calls: list[KernelCall]) -> list[Kernel]:
    """The kernels that get a function: the first of each form (``canonical_kernel``), in plan order."""
    firsts: dict[Kernel, Kernel] = {}
    for call in calls:
        firsts.setdefault(canonical_kernel(call.kernel), call.kernel)
    return list(firsts.values())


def kernel_parts(calls: list[KernelCall], kernels_per_part: int = KERNELS_PER_PART,
                 max_parts: int = MAX_PARTS) -> list[list[Kernel]]:
    """The distinct kernels in parts of about equal estimated code size (largest first onto the smallest
    part), each in plan order: part 0 goes into the module with ``tilec_run`` (``build_module``), the others
    into modules of their own (``build_kernel_module``), which LLVM can compile in parallel. How many parts
    depends only on the kernels, so an artifact's bytes do not depend on the machine that built it."""
    kernels = distinct_kernels(calls)
    count = max(1, min(max_parts, len(kernels) // kernels_per_part))
    sizes = [0] * count
    assigned: list[list[int]] = [[] for _ in range(count)]
    cost = [_code_size(k.body) for k in kernels]
    for i in sorted(range(len(kernels)), key=lambda i: -cost[i]):
        part = sizes.index(min(sizes))
        sizes[part] += cost[i]
        assigned[part].append(i)
    return [[kernels[i] for i in sorted(part)] for part in assigned]


def _code_size(s: Stmt) -> int:
    """Statements of ``s`` as emitted: an unrolled loop's body counts once per iteration."""
    if isinstance(s, For):
        body = _code_size(s.body)
        return 1 + body * (s.extent if s.kind is ForKind.UNROLLED and isinstance(s.extent, int) else 1)
    return 1 + sum(_code_size(c) for c in stmt_children(s))


def build_kernel_module(kernels: list[Kernel], target: Target, layout: RunLayout = RunLayout(),
                        name: str = "kernels") -> ir.Module:
    """A module defining ``kernels`` for the ``tilec_run`` of another module of the same artifact to call."""
    module = ir.Module(name=name)
    module.triple = target.triple
    emitter = ModuleEmitter(module, dims=_module_dims(layout), features=target.features)
    for kernel in kernels:
        emitter.add_kernel(kernel, shared=True)
    return module


def _module_dims(layout: RunLayout) -> tuple[str, ...]:
    # A loop's counter is one more dim to its body's kernels, after the run's own.
    return layout.dims + tuple(span.loop.name for span in layout.loops)


def build_module(calls: list[KernelCall], target: Target, name: str = "model", profile: bool = False,
                 signature: bytes = b"", layout: RunLayout = RunLayout(),
                 elsewhere: frozenset[str] = frozenset()) -> ir.Module:
    """The module of ``calls``; ``signature`` is what the pipeline declares for the runtime's cross-check
    (an artifact's native code always has one; a module a test loads directly need not). The kernels
    named in ``elsewhere`` are only declared: other modules of the artifact define them."""
    module = ir.Module(name=name)
    module.triple = target.triple
    _add_signature(module, signature)
    _add_sizes(module, layout)
    counters = tuple(span.loop.name for span in layout.loops)
    emitter = ModuleEmitter(module, dims=_module_dims(layout), features=target.features)
    # A kernel equal to an earlier one up to names (a repeated layer) calls that one's function.
    by_form: dict[Kernel, ir.Function] = {}
    functions = []
    for call in calls:
        form = canonical_kernel(call.kernel)
        if form not in by_form:
            by_form[form] = (emitter.declare_kernel(call.kernel) if call.kernel.name in elsewhere
                             else emitter.add_kernel(call.kernel))
        functions.append(by_form[form])
    run = ir.Function(module, ir.FunctionType(I32, [PTR] * 6), "tilec_run")
    b = ir.IRBuilder(run.append_basic_block("entry"))
    run_args = tuple(run.args)
    if counters:
        run_args = run_args[:5] + (_dims_with_counters(b, run.args[5], len(layout.dims), len(counters)),)
    sizes = _Sizes(b, run_args[5], layout.dims + counters)
    slot_offsets, _ = _slot_offsets(sizes, layout)
    sizes.conditions = {name: _pointer(b, ref, run_args, slot_offsets) for name, ref in layout.conditions}
    profiling = None
    if profile:
        profiling = (emitter.declare("tilec_profile_begin", I64, [PTR]),
                     emitter.declare("tilec_profile_end", ir.VoidType(), [PTR, I32, I64]))
    loops = _RunLoops(b, sizes, calls, run_args, slot_offsets, layout.loops, len(layout.dims))
    for k, (fn, call) in enumerate(zip(functions, calls)):
        loops.enter(k)
        if call.kernel.guard is None:
            _call(b, fn, call, k, run_args, slot_offsets, profiling)
        else:
            # A branch of a run-time If: called where its guard holds; elsewhere its check flags read 0.
            with b.if_else(sizes.value(call.kernel.guard)) as (taken, skipped):
                with taken:
                    _call(b, fn, call, k, run_args, slot_offsets, profiling)
                with skipped:
                    for offset in call.clears:
                        b.store(ir.Constant(ir.IntType(8), 0), _byte(b, run_args[4], offset))
        loops.stop_on_failure(call.stops)
        loops.leave(k)
    b.ret(ir.Constant(I32, 0))
    return module


def _byte(b: ir.IRBuilder, base: ir.Value, offset: int) -> ir.Value:
    return b.gep(base, [ir.Constant(I64, offset)], source_etype=ir.IntType(8))


def _dims_with_counters(b: ir.IRBuilder, dims: ir.Value, count: int, counters: int) -> ir.Value:
    """A copy of the run's dims with a slot for each loop counter after them (the caller's array is
    read-only to the run)."""
    local = b.alloca(I64, size=ir.Constant(I64, count + counters))
    for k in range(count):
        b.store(b.load(b.gep(dims, [ir.Constant(I64, k)], source_etype=I64), typ=I64),
                b.gep(local, [ir.Constant(I64, k)]))
    return local


@dataclass
class _RunLoops:
    """Emits the loops of the run around ``tilec_run``'s calls: a counter per loop, its header's test
    (counter < trip, the condition byte, the guard), the counter stored where its body's kernels read it;
    the body's check flags cleared before the first iteration."""

    b: ir.IRBuilder
    sizes: "_Sizes"
    calls: list[KernelCall]
    run_args: tuple[ir.Value, ...]
    slot_offsets: dict[str, ir.Value]
    spans: tuple[LoopSpan, ...]
    first_counter: int
    open: list[tuple[LoopSpan, ir.Value, ir.Block, ir.Block]] = field(default_factory=list)
    failed: ir.Block | None = None

    def enter(self, k: int) -> None:
        b = self.b
        # Outer loops open first: of two spans starting here, the longer.
        for span in sorted((s for s in self.spans if s.first == k), key=lambda s: -s.last):
            slot = self.first_counter + self.spans.index(span)
            with b.goto_entry_block():
                counter = b.alloca(I64)
            trip = self.sizes.value(span.loop.trip)
            b.store(ir.Constant(I64, 0), counter)
            # The body's check flags read 0 where it runs no iteration (the runtime reads every flag).
            for call in self.calls[span.first:span.last + 1]:
                for offset in call.stops:
                    b.store(ir.Constant(ir.IntType(8), 0), _byte(b, self.run_args[4], offset))
            header = b.append_basic_block(f"{span.loop.name}_header")
            body = b.append_basic_block(f"{span.loop.name}_body")
            done = b.append_basic_block(f"{span.loop.name}_done")
            b.branch(header)
            b.position_at_end(header)
            i = b.load(counter, typ=I64)
            go = b.icmp_signed("<", i, trip)
            if span.condition is not None:
                flag = b.load(_pointer(b, span.condition, self.run_args, self.slot_offsets), typ=ir.IntType(8))
                go = b.and_(go, b.icmp_unsigned("!=", flag, ir.Constant(ir.IntType(8), 0)))
            if span.guard is not None:
                go = b.and_(go, self.sizes.value(span.guard))
            b.cbranch(go, body, done)
            b.position_at_end(body)
            b.store(i, b.gep(self.sizes.dims, [ir.Constant(I64, slot)], source_etype=I64))
            self.open.append((span, counter, header, done))

    def leave(self, k: int) -> None:
        b = self.b
        while self.open and self.open[-1][0].last == k:
            _, counter, header, done = self.open.pop()
            b.store(b.add(b.load(counter, typ=I64), ir.Constant(I64, 1)), counter)
            b.branch(header)
            b.position_at_end(done)

    def stop_on_failure(self, offsets: tuple[int, ...]) -> None:
        """Return from the run where a check flag at ``offsets`` is set (the runtime reports it)."""
        if not offsets:
            return
        b = self.b
        workspace = self.run_args[4]
        failed = b.icmp_unsigned("!=", b.load(_byte(b, workspace, offsets[0]), typ=ir.IntType(8)),
                                 ir.Constant(ir.IntType(8), 0))
        for offset in offsets[1:]:
            failed = b.or_(failed, b.icmp_unsigned("!=", b.load(_byte(b, workspace, offset), typ=ir.IntType(8)),
                                                   ir.Constant(ir.IntType(8), 0)))
        if self.failed is None:
            self.failed = b.function.append_basic_block("check_failed")
            with b.goto_block(self.failed):
                b.ret(ir.Constant(I32, 0))
        go_on = b.append_basic_block("checked")
        b.cbranch(failed, self.failed, go_on)
        b.position_at_end(go_on)


def _call(b: ir.IRBuilder, fn: ir.Function, call: KernelCall, k: int, run_args: tuple[ir.Value, ...],
          slot_offsets: dict[str, ir.Value], profiling: tuple[ir.Function, ir.Function] | None) -> None:
    """One kernel call of ``tilec_run``, bracketed by the profile calls (``profiling``: begin, end) if given."""
    ctx, dims = run_args[0], run_args[5]
    if profiling is not None:
        started = b.call(profiling[0], [ctx])
    args = [ctx] + ([dims] if len(fn.args) == len(call.args) + 2 else [])
    args.extend(_pointer(b, ref, run_args, slot_offsets) for ref in call.args)
    b.call(fn, args)
    if profiling is not None:
        b.call(profiling[1], [ctx, ir.Constant(I32, k), started])


def _pointer(b: ir.IRBuilder, ref: BufferRef, run_args: tuple[ir.Value, ...],
             slot_offsets: dict[str, ir.Value]) -> ir.Value:
    """The address of the buffer ``ref`` in this run."""
    _, inputs, outputs, weights, workspace, _ = run_args
    if ref.kind in ("input", "output"):
        table = inputs if ref.kind == "input" else outputs
        return b.load(b.gep(table, [ir.Constant(I64, ref.index)], source_etype=PTR), typ=PTR)
    if ref.slot is not None:
        return b.gep(workspace, [slot_offsets[ref.slot]], source_etype=ir.IntType(8))
    base = weights if ref.kind == "weights" else workspace
    return b.gep(base, [ir.Constant(I64, ref.offset)], source_etype=ir.IntType(8))


_PREDICATES = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}


@dataclass
class _Sizes:
    """Evaluates size expressions from the run's dims; with ``overflow`` set, ORs into it whether any
    addition, subtraction or multiplication overflowed int64."""

    b: ir.IRBuilder
    dims: ir.Value
    names: tuple[str, ...]
    overflow: ir.Value | None = None
    # The address of each data condition's byte (``tilec_run`` only: ``tilec_sizes`` runs before any kernel).
    conditions: dict[str, ir.Value] = field(default_factory=dict)

    def value(self, e: Size) -> ir.Value:
        b = self.b
        if isinstance(e, int):
            return ir.Constant(I64, e)
        if isinstance(e, Const):
            return ir.Constant(I64, int(e.value))
        if isinstance(e, ConditionVar):  # a bool byte, as the kernel computing it stored it
            return b.zext(b.load(self.conditions[e.name], typ=ir.IntType(8)), I64)
        if isinstance(e, SizeVar):
            return b.load(b.gep(self.dims, [ir.Constant(I64, self.names.index(e.name))], source_etype=I64), typ=I64)
        if isinstance(e, Binary):
            x, y = self.value(e.a), self.value(e.b)
            if e.op in ("add", "sub", "mul"):
                return self.arith(e.op, x, y)
            if e.op in ("div", "rem"):
                # A divisor from a value size (a Slice step) may be 0 in a run the constraints then refuse:
                # dividing by it must not trap first.
                zero = b.icmp_signed("==", y, ir.Constant(I64, 0))
                return (b.sdiv if e.op == "div" else b.srem)(x, b.select(zero, ir.Constant(I64, 1), y))
            if e.op in ("min", "max"):
                return b.select(b.icmp_signed("<" if e.op == "min" else ">", x, y), x, y)
            if e.op in _PREDICATES:  # a condition of a Select (which axes a run-time axes input names): i1
                return b.icmp_signed(_PREDICATES[e.op], x, y)
            if e.op in ("and", "or"):
                return (b.and_ if e.op == "and" else b.or_)(x, y)
        if isinstance(e, Select):
            return b.select(self.value(e.cond), self.value(e.true_value), self.value(e.false_value))
        raise ValueError(f"not a size expression: {e}")

    def arith(self, op: str, x: ir.Value, y: ir.Value) -> ir.Value:
        b = self.b
        if self.overflow is None:
            return {"add": b.add, "sub": b.sub, "mul": b.mul}[op](x, y)
        pair = {"add": b.sadd_with_overflow, "sub": b.ssub_with_overflow, "mul": b.smul_with_overflow}[op](x, y)
        self.overflow = b.or_(self.overflow, b.extract_value(pair, 1))
        return b.extract_value(pair, 0)


def _slot_offsets(sizes: _Sizes, layout: RunLayout) -> tuple[dict[str, ir.Value], ir.Value]:
    """Each symbolic slot's byte offset for this run, and the workspace size they need in all."""
    b = sizes.b
    offsets: dict[str, ir.Value] = {}
    ends: dict[str, ir.Value] = {}
    base = ir.Constant(I64, layout.workspace_base)
    total: ir.Value = base
    for slot in layout.slots:
        offset: ir.Value = base
        for key in slot.after:
            offset = b.select(b.icmp_signed(">", ends[key], offset), ends[key], offset)
        offsets[slot.key] = offset
        ends[slot.key] = sizes.arith("add", offset, sizes.value(slot.size))
        total = b.select(b.icmp_signed(">", ends[slot.key], total), ends[slot.key], total)
    return offsets, total


def _add_sizes(module: ir.Module, layout: RunLayout) -> None:
    function = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR]), "tilec_sizes")
    dims, out = function.args
    b = ir.IRBuilder(function.append_basic_block("entry"))
    sizes = _Sizes(b, dims, layout.dims, overflow=ir.Constant(ir.IntType(1), 0))
    _, total = _slot_offsets(sizes, layout)
    values = [total]
    for shape in layout.output_shapes:
        dims_of = [sizes.value(d) for d in shape]
        values.extend(dims_of)
        # Element offsets into the output must fit too: its element count times the widest element.
        count: ir.Value = ir.Constant(I64, 16)
        for d in dims_of:
            count = sizes.arith("mul", count, d)
    status = b.select(sizes.overflow, ir.Constant(I64, -1), total)
    for k in reversed(range(len(layout.constraints))):  # the first violated one is reported
        c = layout.constraints[k]
        lhs, rhs = sizes.value(c.lhs), sizes.value(c.rhs)
        violated = b.icmp_signed("!=" if c.relation == "==" else ">", lhs, rhs)
        if c.when is not None:  # a constraint of a branch of a run-time If: only where that branch runs
            violated = b.and_(violated, sizes.value(c.when))
        status = b.select(violated, ir.Constant(I64, -2 - k), status)
    values[0] = status
    for k, value in enumerate(values):
        b.store(value, b.gep(out, [ir.Constant(I64, k)], source_etype=I64))
    b.ret_void()


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


def _optimized(module: ir.Module, target: Target, timings: dict[str, float],
               hidden: frozenset[str] = frozenset()) -> tuple[llvm.ModuleRef, llvm.TargetMachine]:
    start = time.perf_counter()
    try:
        parsed = llvm.parse_assembly(str(module))
        parsed.verify()
    except RuntimeError as exc:
        raise ToolchainError(f"generated LLVM IR is invalid (a compiler bug): {exc}") from None
    for fn in parsed.functions:
        if fn.name in hidden:  # one module's kernel called from another's tilec_run: not exported from the .so
            fn.visibility = "hidden"
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


def compile_module(module: ir.Module, target: Target, timings: dict[str, float] | None = None,
                   hidden: frozenset[str] = frozenset()) -> bytes:
    """Verify, optimize (O3) and emit an ELF object for ``target``; the functions named in ``hidden`` (kernels
    shared between the artifact's modules) get hidden visibility."""
    timings = {} if timings is None else timings
    parsed, tm = _optimized(module, target, timings, hidden)
    start = time.perf_counter()
    obj = tm.emit_object(parsed)
    timings["llvm.emit"] = time.perf_counter() - start
    return obj


def emit_assembly(module: ir.Module, target: Target) -> str:
    """The optimized module as target assembly (for tests that check instruction selection)."""
    parsed, tm = _optimized(module, target, {})
    return tm.emit_assembly(parsed)
