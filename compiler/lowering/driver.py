"""Graph IR → kernels: lower each fused group, inline, fuse epilogues, schedule, place buffers.

Contract: ``lower_graph(graph, target)`` returns a ``Program``: kernels in run
order, each with the storage of every parameter (graph input/output slot,
weights offset, or arena buffer with a lifetime), the packed weights and the
workspace plan. Every unsupported node is reported at once, each with its
name, op type and opset. ``Program.output_sources`` says, per graph output, which
graph inputs' run-time data reaches it through the kernels (none: the output is a
constant of the artifact, folded at compile time).

A guarded node (a branch of a run-time If, ``Node.guard``) becomes a kernel with that
guard, which the run calls only where it holds: its size constraints hold only there too, and its check
flags are cleared where it is skipped. A ``Phi`` (the If's output) is one buffer that the taken branch
fills: its result's producer writes it directly where only the Phi reads that result, else a guarded copy
does (a branch returning an outer value or a constant).

Inside a group, temporaries written by pointwise computations are inlined into
their readers (compute-inline); a reduction read only at its own output index
by a pointwise computation takes that computation as its epilogue (the Conv →
bias → Relu case); any other temporary is stored in the arena.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from compiler.artifact.memory_plan import BufferLifetime, SymbolicSlot, plan_arena, plan_symbolic_slots
from compiler.codegen.llvm.module import BufferRef, KernelCall, LoopSpan
from compiler.codegen.target import Target
from compiler.dtypes import DType, storage_bytes
from compiler.errors import CompileError, ShapeError, UnsupportedOpError
from compiler.graph.ir import PHI_DOMAIN, Graph, Node, TensorType, Value
from compiler.graph.passes.fusion import FusedGroup, fuse_groups
from compiler.loopir.compute import Computation
from compiler.loopir.expr import (Buffer, Const, Expr, Load, Var, binary, cast, compare, const, flat_index,
                                  logical_and, map_loads, select, substitute, walk)
from compiler.loopir.printer import format_size
from compiler.loopir.run_loops import RunLoop
from compiler.loopir.sizes import (ConditionVar, SizeConstraint, SizeRange, SizeVar, as_size, has_conditions,
                                   has_values, negation, same_size, size_expr, size_nbytes, size_vars)
from compiler.loopir.stmt import Kernel, Stmt, kernel_size_vars, loads_and_stores, seq
from compiler.ops.api import LoweringContext, Tensor
from compiler.ops.registry import lookup
from compiler.ops.shape import reshape_copy
from compiler.schedule.defaults import schedule, schedule_computation
from compiler.schedule.fuse_siblings import fuse_siblings
from compiler.schedule.localize import localize_slices
from compiler.schedule.packing import evaluate

WEIGHT_ALIGNMENT = 64


@dataclass(frozen=True)
class RunCheck:
    """A run-time check: the run failed with ``message`` when the byte at ``offset`` in the workspace is not 0."""

    offset: int
    message: str


@dataclass
class Program:
    calls: list[KernelCall]
    weights: bytes
    workspace_size: int
    inputs: list[Value]
    outputs: list[Value]
    checks: list[RunCheck] = field(default_factory=list)
    # Per graph output, the indices of the graph inputs whose run-time data its values are computed
    # from (``_output_sources``); empty: the output is the same whatever the inputs (a compile-time constant).
    output_sources: list[tuple[int, ...]] = field(default_factory=list)
    # Workspace buffers of symbolic size, placed per run after the ``workspace_size`` static bytes.
    slots: list[SymbolicSlot] = field(default_factory=list)
    # The size variables of the shapes, in the order of the ``dims`` array the native code takes.
    sizes: dict[str, SizeRange] = field(default_factory=dict)
    # What a run's sizes must satisfy, checked before it runs.
    constraints: list[SizeConstraint] = field(default_factory=list)
    # Where the run reads each data condition of a run-time If (``ConditionVar`` in guards), by name.
    conditions: dict[str, BufferRef] = field(default_factory=dict)
    # The loops of the run: which stretch of ``calls`` each repeats.
    loops: list[LoopSpan] = field(default_factory=list)


@dataclass
class _Storage:
    """Where a buffer's bytes live; views share their root's storage."""

    kind: str  # input | output | weights | arena
    index: int = 0
    key: str = ""  # constant name (weights) or arena buffer key


@dataclass
class _State:
    target: Target
    names: Callable[[str], str]
    storage: dict[str, _Storage] = field(default_factory=dict)  # buffer name → storage
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    arena: dict[str, list[int]] = field(default_factory=dict)  # key → [size, first, last]
    calls: list[tuple[Kernel, int]] = field(default_factory=list)  # (kernel, step)
    checks: list[tuple[str, str]] = field(default_factory=list)  # (flag buffer, message), as LoweringContext.checks
    constraints: dict[tuple, SizeConstraint] = field(default_factory=dict)  # by (lhs, relation, rhs, when)
    conditions: dict[str, str] = field(default_factory=dict)  # data condition → its buffer
    step_loops: dict[int, tuple[str, ...]] = field(default_factory=dict)  # step → the loops of the run around it
    loop_ends: dict[str, Node] = field(default_factory=dict)  # loop name → its LoopEnd
    loop_conditions: dict[str, str] = field(default_factory=dict)  # loop name → its condition state's buffer


def _namer() -> Callable[[str], str]:
    counter = itertools.count()

    def fresh(hint: str) -> str:
        clean = re.sub(r"[^A-Za-z0-9_]", "_", hint)[:40] or "t"
        return f"{clean}_{next(counter)}"

    return fresh


def _kind(node: Node) -> str:
    """How the fusion pass may group ``node`` (``OpDef.kind``; ``phi`` for a run-time If's output, ``loop_end``
    for the last node of a loop's body)."""
    if node.domain == PHI_DOMAIN and node.op_type in _DRIVER_NODES:
        return _DRIVER_NODES[node.op_type]
    return lookup(node.op_type, node.domain).kind


#: The tilec nodes the driver lowers itself (they write buffers other nodes own), by the kind fusion sees.
_DRIVER_NODES = {"Phi": "phi", "LoopEnd": "loop_end"}


def check_supported(graph: Graph) -> None:
    """Refuse, all at once, nodes with no lowering (the frontend does this earlier for whole models)."""
    missing = sorted({"  " + n.describe() for n in graph.nodes
                      if not (n.domain == PHI_DOMAIN and n.op_type in _DRIVER_NODES)
                      and lookup(n.op_type, n.domain) is None})
    if missing:
        raise UnsupportedOpError("unsupported operators:\n" + "\n".join(missing))


def lower_graph(graph: Graph, target: Target, progress: Callable[[str], None] | None = None) -> Program:
    check_supported(graph)
    state = _State(target, _namer())
    buffers: dict[int, Buffer] = {}

    def buffer_of(v: Value) -> Buffer:
        if id(v) not in buffers:
            buffers[id(v)] = Buffer(state.names(v.name), v.dtype.storage, v.shape)
        return buffers[id(v)]

    for k, v in enumerate(graph.inputs):
        state.storage[buffer_of(v).name] = _Storage("input", k)
    state.conditions = {name: buffer_of(v).name for name, v in graph.conditions.items()}
    size_values: list[Value] = []
    for v in graph.constants():
        name = buffer_of(v).name
        if v.const.dtype == object:  # a size value (frontend/symbolic.py): computed at run time, if read
            size_values.append(v)
            state.storage[name] = _Storage("arena", key=name)
            continue
        state.constants[name] = v.const
        state.storage[name] = _Storage("weights", key=name)
    outputs = _output_buffers(graph, buffer_of, state)
    direct = _alias_phi_inputs(graph, buffer_of, state)
    _alias_loop_states(graph, buffer_of, state)
    groups = fuse_groups(graph, _kind)
    for step, group in enumerate(groups):
        if progress:
            progress(f"lowering {step + 1}/{len(groups)}: {group.label}")
        state.step_loops[step] = group.nodes[-1].loops
        # A view to a shape read at run time is a copy, whose lowering checks the element count per run.
        if group.kind == "view" and not any(has_values(d) for d in group.nodes[0].outputs[0].type.shape):
            node = group.nodes[0]
            # Bytes, not elements: a view may also change the element type (BitCast).
            if not same_size(node.outputs[0].type.nbytes, node.inputs[0].type.nbytes):
                raise ShapeError(f"{node.describe()}: cannot view {node.inputs[0].type} as {node.outputs[0].type} "
                                 f"({format_size(node.inputs[0].type.nbytes)} vs "
                                 f"{format_size(node.outputs[0].type.nbytes)} bytes)")
            state.storage[buffer_of(node.outputs[0]).name] = state.storage[buffer_of(node.inputs[0]).name]
            continue
        if group.kind == "phi":
            _lower_phi(group.nodes[0], step, buffer_of, state, direct)
            continue
        if group.kind == "loop_end":
            _lower_loop_end(group.nodes[0], step, buffer_of, state)
            continue
        _lower_group(group, step, buffer_of, state)
    for k, (value, copy_from) in enumerate(outputs):
        if copy_from is not None:
            _emit_copy(buffer_of(copy_from), buffer_of(value), len(groups) + k, state)
    _materialize_size_values([buffer_of(v) for v in size_values], [v.const for v in size_values], state)
    return _finish(graph, state)


def _materialize_size_values(buffers: list[Buffer], values: list[np.ndarray], state: _State) -> None:
    """Size values some kernel reads (a sequence length used as data) are computed first, from the dims."""
    read = {b.name for kernel, _ in state.calls for b in kernel.params}
    comps = []
    for buffer, array in zip(buffers, values):
        if buffer.name not in read:
            continue
        index = tuple(Var(f"s{k}") for k in range(array.ndim))
        flat = [size_expr(v) for v in array.reshape(-1)]
        position = flat_index(Buffer(buffer.name, buffer.dtype, tuple(array.shape)), index)
        value: Expr = cast(flat[-1], buffer.dtype)
        for k in range(len(flat) - 2, -1, -1):
            value = select(compare("eq", position, Const(k)), cast(flat[k], buffer.dtype), value)
        comps.append(Computation(buffer, index, value))
    if comps:
        _add_kernel(comps, "size_values", "sizes", -1, state)
        state.calls.insert(0, state.calls.pop())


def _output_buffers(graph: Graph, buffer_of: Callable[[Value], Buffer], state: _State) -> list[tuple[Value, Value | None]]:
    """Give each graph output its slot; outputs that are inputs, constants, views or repeats need a copy."""
    result: list[tuple[Value, Value | None]] = []
    claimed: set[int] = set()
    for k, v in enumerate(graph.outputs):
        is_view = v.producer is not None and _kind(v.producer) == "view"
        if v.producer is None or is_view or id(v) in claimed:
            # A fresh value with the output's name, filled by a copy kernel at the end.
            out = Value(v.name, v.type)
            graph.outputs[k] = out
            state.storage[buffer_of(out).name] = _Storage("output", k)
            result.append((out, v))
        else:
            state.storage[buffer_of(v).name] = _Storage("output", k)
            result.append((v, None))
        claimed.add(id(v))
    return result


def _emit_copy(src: Buffer, dst: Buffer, step: int, state: _State, guard: Expr | None = None,
               name: str = "") -> None:
    node = Node("Identity", f"copy_{dst.name}", [], [Value(dst.name, TensorType(dst.dtype, dst.shape))], opset=1)
    ctx = LoweringContext(node, state.target, [Tensor(src)], state.names)
    result = reshape_copy(ctx)[0]
    comps = [_retarget(c, {result.buffer.name: dst}) for c in ctx.computations]
    _add_kernel(comps, name or f"copy_{dst.name}", "Copy", step, state, guard=guard)


def _phi_guards(node: Node) -> tuple[Expr, Expr]:
    """Under which guards a Phi's then- and else-input are computed (the If's own guard and its branch's)."""
    taken = node.attrs["predicate"]
    if node.guard is None:
        return taken, negation(taken)
    return logical_and(node.guard, taken), logical_and(node.guard, negation(taken))


def _alias_phi_inputs(graph: Graph, buffer_of: Callable[[Value], Buffer], state: _State) -> set[int]:
    """A branch result that only its Phi reads is written into the Phi's buffer by its own producer: only one
    branch runs, so both may share it, and the copy goes. Returns the ``id`` of each such Phi input. Outer Phis
    come first, so a nested If's Phi shares its outer one's buffer in turn."""
    users = graph.consumers()
    kept = {id(v) for v in [*graph.outputs, *graph.conditions.values()]}
    direct: set[int] = set()
    for node in reversed(graph.nodes):
        if node.domain != PHI_DOMAIN or node.op_type != "Phi":
            continue
        out = buffer_of(node.outputs[0])
        storage = state.storage.setdefault(out.name, _Storage("arena", key=out.name))
        for value, guard in zip(node.inputs, _phi_guards(node)):
            producer = value.producer
            if (producer is None or producer.guard != guard or _kind(producer) == "view" or id(value) in kept
                    or len(users.get(id(value), [])) != 1):
                continue
            state.storage[buffer_of(value).name] = storage
            direct.add(id(value))
    return direct


def _lower_phi(node: Node, step: int, buffer_of: Callable[[Value], Buffer], state: _State, direct: set[int]) -> None:
    """The output of a run-time If: the taken branch's result copied into the Phi's buffer, unless its producer
    wrote it there (``_alias_phi_inputs``). Each copy sees the buffer in its branch's shape, which is the
    Phi's (``select(predicate, ...)``) wherever it runs."""
    out = buffer_of(node.outputs[0])
    for value, guard in zip(node.inputs, _phi_guards(node)):
        if id(value) in direct:
            continue
        src = buffer_of(value)
        _emit_copy(src, replace(out, shape=src.shape), step, state, guard, state.names(f"{node.name}_{src.name}"))


def _alias_loop_states(graph: Graph, buffer_of: Callable[[Value], Buffer], state: _State) -> None:
    """A loop's final state is its state's buffer after the last iteration: the two share storage (the
    output slot, where the final state is a graph output)."""
    for node in graph.nodes:
        if node.domain != PHI_DOMAIN or node.op_type != "LoopEnd":
            continue
        loop = node.attrs["run_loop"]
        state.loop_ends[loop.name] = node
        count = node.attrs["states"]
        if loop.condition is not None:
            carried = [v for v in node.inputs[:count] if v.name == loop.condition]
            if len(carried) != 1:
                raise CompileError(f"loop {loop.name} has lost its condition state (a compiler bug)")
            state.loop_conditions[loop.name] = buffer_of(carried[0]).name
        for carried, final in zip(node.inputs[:count], node.outputs[:count]):
            inner, outer = buffer_of(carried).name, buffer_of(final).name
            if outer in state.storage:
                state.storage[inner] = state.storage[outer]
            else:
                state.storage[outer] = state.storage.setdefault(inner, _Storage("arena", key=inner))


def _lower_loop_end(node: Node, step: int, buffer_of: Callable[[Value], Buffer], state: _State) -> None:
    """The last kernel of an iteration: each scan value stored into its row of the stacked output, then each
    state's buffer set to its update (all at once: an update that is another state is staged first)."""
    loop, count = node.attrs["run_loop"], node.attrs["states"]
    comps = []
    for value, out, axis, reverse in zip(node.inputs[2 * count:], node.outputs[count:], node.attr("axes", []),
                                         node.attr("reverse", [])):
        src, dst = buffer_of(value), buffer_of(out)
        axis %= len(dst.shape)
        index = tuple(Var(f"l{k}") for k in range(len(dst.shape)))
        comps.append(Computation(dst, index, Load(src, index[:axis] + index[axis + 1:]),
                                 extents=tuple(1 if k == axis else d for k, d in enumerate(dst.shape)),
                                 offsets=tuple(loop.position(bool(reverse)) if k == axis else 0
                                               for k in range(len(dst.shape)))))
    updates = [(buffer_of(v), buffer_of(u)) for v, u in zip(node.inputs[:count], node.inputs[count:2 * count])
               if state.storage.get(buffer_of(u).name) is not state.storage[buffer_of(v).name]]
    carried = [state.storage[dst.name] for dst, _ in updates]
    staged: set[str] = set()
    for k, (dst, src) in enumerate(updates):
        if any(state.storage.get(src.name) is s for s in carried):
            temp = Buffer(state.names(f"{dst.name}_next"), src.dtype, src.shape)
            comps.append(_copy_computation(Tensor(src), temp))
            updates[k] = (dst, temp)
            staged.add(temp.name)
    comps.extend(_copy_computation(Tensor(src), dst) for dst, src in updates)
    if comps:
        _add_kernel(comps, state.names(f"k_{node.name}"), "LoopEnd", step, state, staged, node.guard)


def _lower_group(group: FusedGroup, step: int, buffer_of: Callable[[Value], Buffer], state: _State) -> None:
    produced: dict[int, Tensor] = {}
    computations: list[Computation] = []
    materialized: set[str] = set()
    for node in group.nodes:
        inputs = [None if v is None else produced.get(id(v)) or Tensor(buffer_of(v)) for v in node.inputs]
        ctx = LoweringContext(node, state.target, inputs, state.names)
        try:
            results = lookup(node.op_type, node.domain).lower(ctx)
        except CompileError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AssertionError) as exc:
            raise UnsupportedOpError(f"{node.describe()}: cannot lower this node ({type(exc).__name__}: {exc})") from exc
        if len(results) < len([o for o in node.outputs if o is not None]):
            raise CompileError(f"{node.describe()}: lowering produced {len(results)} outputs")
        computations.extend(ctx.computations)
        materialized |= ctx.materialized
        state.checks.extend(ctx.checks)
        for c in ctx.constraints:
            # A skipped node's sizes need not fit; a data condition is not known before the run, where
            # the constraints are checked: then they must hold either way.
            c = replace(c, when=node.guard if node.guard is not None and not has_conditions(node.guard) else None)
            state.constraints.setdefault((c.lhs, c.relation, c.rhs, c.when), c)
        for name, array in ctx.constants.items():
            state.constants[name] = array
            state.storage[name] = _Storage("weights", key=name)
        for value, tensor in zip(node.outputs, results):
            produced[id(value)] = tensor
    # The group's visible outputs take the values' buffers; everything else is a temporary.
    last = group.nodes[-1]
    renames: dict[str, Buffer] = {}
    for value in last.outputs:
        tensor = produced[id(value)]
        target = buffer_of(value)
        if tensor.buffer.name in state.storage or tensor.buffer.name in renames:
            # The lowering returned an existing tensor (e.g. an input): copy it.
            computations.append(_copy_computation(tensor, target))
        else:
            renames[tensor.buffer.name] = target
    computations = [_retarget(c, renames) for c in computations]
    keep = {b.name for b in renames.values()}
    computations = _inline(computations, keep | materialized)
    computations = [c.map_exprs(lambda e: _fold_scalar_constants(e, state)) for c in computations]
    temporaries = {c.output.name for c in computations} - keep
    _add_kernel(computations, state.names(f"k_{last.name}"), group.label, step, state, temporaries, last.guard)


# Element types whose compile-time values the code generator takes as immediates.
_IMMEDIATE_DTYPES = (DType.F16, DType.F32, DType.F64, DType.BOOL, DType.I8, DType.I16, DType.I32, DType.I64,
                     DType.U8, DType.U16, DType.U32, DType.U64)


def _fold_scalar_constants(e: Expr, state: _State) -> Expr:
    """Reads of one-element weights become immediates: an exporter's ``Pow(x, two)`` or ``Mul(x, scale)``
    with the scalar as an initializer then compiles to ``x * x`` / a multiply by a constant, not a
    per-lane ``powf`` call and a load."""
    def fold(ld: Load) -> Expr | None:
        storage = state.storage.get(ld.buffer.name)
        if (storage is None or storage.kind != "weights" or ld.buffer.numel != 1
                or ld.buffer.dtype not in _IMMEDIATE_DTYPES):
            return None
        return const(state.constants[storage.key].reshape(-1)[0].item(), ld.buffer.dtype)

    return map_loads(e, fold)


def _copy_computation(src: Tensor, dst: Buffer) -> Computation:
    index = tuple(Var(f"c{k}") for k in range(len(dst.shape)))
    return Computation(dst, index, Load(src.buffer, index))


def _retarget(c: Computation, renames: dict[str, Buffer]) -> Computation:
    if not renames:
        return c
    moved = c.map_exprs(lambda e: map_loads(e, lambda ld: Load(renames[ld.buffer.name], ld.indices)
                                            if ld.buffer.name in renames else None))
    return replace(moved, output=renames.get(c.output.name, c.output))


def _reads(c: Computation, name: str) -> list[Load]:
    return [e for x in c.exprs for e in walk(x) if isinstance(e, Load) and e.buffer.name == name]


def _inline_loads(e: Expr, producer: Computation) -> Expr:
    """``e`` with each read of ``producer``'s output replaced by the value it would have stored there."""
    def inline(ld: Load) -> Expr | None:
        if ld.buffer.name != producer.output.name:
            return None
        return substitute(producer.value_expr(), dict(zip(producer.index, ld.indices)))

    return map_loads(e, inline)


def _inline(comps: list[Computation], pinned: set[str]) -> list[Computation]:
    """Remove temporaries: inline pointwise producers, fold reductions into pointwise epilogues."""
    changed = True
    while changed:
        changed = False
        for p in comps:
            name = p.output.name
            writers = [c for c in comps if c.output.name == name]
            if name in pinned or len(writers) != 1 or not p.writes_whole_output:
                continue
            readers = [c for c in comps if c is not p and _reads(c, name)]
            if not p.is_reduction:
                comps = [c.map_exprs(lambda e: _inline_loads(e, p)) for c in comps if c is not p]
                changed = True
                break
            if len(readers) == 1 and _is_epilogue_of(readers[0], p):
                fused = _as_epilogue(readers[0], p)
                comps = [fused if c is readers[0] else c for c in comps if c is not p]
                changed = True
                break
    return comps


def _is_epilogue_of(reader: Computation, producer: Computation) -> bool:
    if reader.is_reduction or not reader.writes_whole_output or reader.output.shape != producer.output.shape:
        return False
    # Along a size-1 dim the index var and 0 name the same element, and broadcasting loads
    # (``Tensor.at_broadcast``) spell it 0: compare with those vars set to 0, or a batch-1
    # Conv → Add → Relu would miss its epilogue and store the conv result to the arena.
    unit = {v: Const(0) for v, n in zip(reader.index, reader.output.shape) if n == 1}
    own = tuple(substitute(v, unit) for v in reader.index)
    return all(tuple(substitute(i, unit) for i in ld.indices) == own for ld in _reads(reader, producer.output.name))


def _as_epilogue(reader: Computation, producer: Computation) -> Computation:
    """``reader`` (pointwise over ``producer``'s output at the same index) becomes ``producer``'s epilogue."""
    acc = producer.acc
    reduced = acc if producer.epilogue is None else producer.epilogue

    swapped = map_loads(reader.value_expr(), lambda ld: reduced if ld.buffer.name == producer.output.name else None)
    epilogue = substitute(swapped, dict(zip(reader.index, producer.index)))
    return Computation(reader.output, producer.index, producer.body, producer.axes, producer.combiner, epilogue)


def _add_kernel(comps: list[Computation], name: str, label: str, step: int, state: _State,
                temporaries: frozenset[str] | set[str] = frozenset(), guard: Expr | None = None) -> None:
    for c in comps:
        if c.output.name not in state.storage:
            state.storage[c.output.name] = _Storage("arena", key=c.output.name)
    # The data conditions the guard reads stay live until the run has read them here.
    for var in {e for e in walk(guard) if isinstance(e, ConditionVar)} if guard is not None else ():
        storage = state.storage[state.conditions[var.name]]
        if storage.kind == "arena":
            state.arena[storage.key][2] = max(state.arena[storage.key][2], step)
    # A target with schedules of its own (CUDA: blocks, threads, shared memory) replaces the CPU defaults.
    own_schedule = getattr(state.target, "schedule_computation", None)
    parts = []
    for c in comps:
        if own_schedule is not None:
            parts.append(own_schedule(c))
            continue
        scheduled = schedule(c, state.target, lambda name: state.storage[name].kind == "weights")
        parts.extend(_place_pack(p, state) for p in scheduled.packs)
        parts.append(scheduled.body)
    body = seq(*(p for p in parts if p is not None))
    if own_schedule is None:
        checked = {name for name, _ in state.checks}  # the runtime reads check flags: never local
        body = fuse_siblings(localize_slices(body, lambda n: n in temporaries and n not in checked
                                             and state.storage[n].kind == "arena"))
    params: dict[str, Buffer] = {}
    for buffer, _ in loads_and_stores(body):
        if buffer.scope == "global":
            params.setdefault(buffer.name, buffer)
    for buffer in params.values():
        storage = state.storage[buffer.name]
        if storage.kind == "arena":
            nbytes = size_nbytes(buffer.dtype, buffer.numel)
            entry = state.arena.setdefault(storage.key, [nbytes, step, step])
            if entry[0] != nbytes:
                entry[0] = (max(entry[0], nbytes) if isinstance(nbytes, int) and isinstance(entry[0], int)
                            else as_size(binary("max", size_expr(entry[0]), size_expr(nbytes))))
            entry[1], entry[2] = min(entry[1], step), max(entry[2], step)
    kernel = Kernel(re.sub(r"[^A-Za-z0-9_]", "_", name), tuple(params.values()), body, label,
                    sum(c.flops for c in comps), guard)
    state.calls.append((kernel, step))


def _place_pack(pack: Computation, state: _State) -> Stmt | None:
    """A packed operand: folded into the weights when it reads only constants, else run before its reader."""
    name = pack.output.name
    if name in state.storage:
        return None if state.storage[name].kind == "weights" else schedule_computation(pack, state.target)
    value = evaluate(pack, state.constants)
    if value is not None:
        state.constants[name] = value
        state.storage[name] = _Storage("weights", key=name)
        return None
    state.storage[name] = _Storage("arena", key=name)
    return schedule_computation(pack, state.target)


def _finish(graph: Graph, state: _State) -> Program:
    # A check's flag is read by the runtime after the last kernel: nothing may reuse its bytes before.
    end = max((step for _, step in state.calls), default=0)
    for name, _ in state.checks:
        state.arena[state.storage[name].key][2] = end
    spans = _loop_spans(graph, state)
    _extend_over_loops(spans, state)
    lifetimes = [BufferLifetime(k, size, first, last) for k, (size, first, last) in sorted(state.arena.items())]
    plan = plan_arena([b for b in lifetimes if isinstance(b.size, int)])
    slots = plan_symbolic_slots([b for b in lifetimes if not isinstance(b.size, int)])
    symbolic = {slot.key for slot in slots}
    offsets: dict[str, int] = {}
    blob = bytearray()
    used = {b.name for kernel, _ in state.calls for b in kernel.params} | set(state.conditions.values())
    used_keys = {state.storage[n].key for n in used if state.storage[n].kind == "weights"}
    for name in sorted(used_keys):
        blob.extend(b"\0" * (-len(blob) % WEIGHT_ALIGNMENT))
        offsets[name] = len(blob)
        blob.extend(storage_bytes(state.constants[name]))
    def ref(name: str) -> BufferRef:
        s = state.storage[name]
        if s.kind in ("input", "output"):
            return BufferRef(s.kind, index=s.index)
        if s.kind == "weights":
            return BufferRef("weights", offset=offsets[s.key])
        if s.key in symbolic:
            return BufferRef("workspace", slot=s.key)
        return BufferRef("workspace", offset=plan.offsets[s.key])

    calls = []
    flags = {state.storage[name].key for name, _ in state.checks}
    looped = {k for span in spans for k in range(span[1], span[2] + 1)}
    for k, (kernel, _) in enumerate(state.calls):
        refs = [ref(b.name) for b in kernel.params]
        written = tuple(sorted({plan.offsets[state.storage[b.name].key] for b in kernel.params
                                if state.storage[b.name].kind == "arena" and state.storage[b.name].key in flags}))
        # A skipped kernel's check flags must read 0 (the runtime reads every flag after the run); in a loop,
        # the next iteration would overwrite a failed check, so the run stops there.
        calls.append(KernelCall(kernel, tuple(refs), written if kernel.guard is not None else (),
                                written if k in looped else ()))
    checks = [RunCheck(plan.offsets[state.storage[name].key], message) for name, message in state.checks]
    loops = [LoopSpan(loop, first, last, None if condition is None else ref(condition), guard)
             for loop, first, last, condition, guard in spans]
    return Program(calls, bytes(blob), plan.size, list(graph.inputs), list(graph.outputs), checks,
                   _output_sources(graph, state, spans), slots, dict(graph.sizes), list(state.constraints.values()),
                   {name: ref(buffer) for name, buffer in state.conditions.items()}, loops)


_Span = tuple[RunLoop, int, int, "str | None", "Expr | None"]  # loop, first and last call, condition, guard


def _loop_spans(graph: Graph, state: _State) -> list[_Span]:
    """Each loop of the run that has kernels: its stretch of calls (contiguous, as fusion keeps a body's
    nodes together), the buffer of its condition state, and the guard it runs under (an If around it)."""
    spans: list[_Span] = []
    for name, loop in graph.loops.items():
        inside = [k for k, (_, step) in enumerate(state.calls) if name in state.step_loops.get(step, ())]
        if not inside:
            continue
        first, last = inside[0], inside[-1]
        if inside != list(range(first, last + 1)):
            raise CompileError(f"the kernels of loop {name} are not contiguous (a compiler bug)")
        condition = state.loop_conditions.get(name)
        if condition is not None:
            # The run reads it before every iteration: live from its LoopState to the loop's end.
            key = state.storage[condition].key
            if key in state.arena:
                state.arena[key][2] = max(state.arena[key][2], state.calls[last][1])
        spans.append((loop, first, last, condition, state.loop_ends[name].guard))
    return spans


def _extend_over_loops(spans: list[_Span], state: _State) -> None:
    """A buffer live across a loop's boundary is live over the whole loop: each iteration reads the
    outer values and states again, and the stacked outputs fill up row by row (inner loops first)."""
    for _, first, last, _, _ in sorted(spans, key=lambda s: s[2] - s[1]):
        a, b = state.calls[first][1], state.calls[last][1]
        for entry in state.arena.values():
            if entry[1] <= b and entry[2] >= a and not (a <= entry[1] and entry[2] <= b):
                entry[1], entry[2] = min(entry[1], a), max(entry[2], b)


def _output_sources(graph: Graph, state: _State, spans: list[_Span]) -> list[tuple[int, ...]]:
    """Per graph output, the graph inputs whose run-time data reaches it through the kernels.

    A data-flow walk over the kernels in run order, at kernel granularity: everything a kernel stores
    depends on everything it loads (its global buffers, by storage, so views and their roots are one
    value), added to what the stored buffer already depended on (several kernels may write parts of
    it), and on what its guard reads (a run-time If's condition: the taken branch depends on it) and what
    decides how often it runs (a loop's trip count and condition state). Weights
    depend on nothing. Zero-element tensors carry no data: an empty input is no source and an empty output
    has none."""
    def where(name: str) -> tuple[str, int, str]:
        s = state.storage[name]
        return s.kind, s.index, s.key

    sources: dict[tuple[str, int, str], frozenset[int]] = {
        ("input", k, ""): frozenset((k,)) for k, v in enumerate(graph.inputs) if v.type.numel != 0}
    position = {v.name: k for k, v in enumerate(graph.inputs)}
    # A value size is an input's data too: a kernel that reads one (Range's start, a Reduce's axes) reads it.
    value_input = {name: position[r.source.input] for name, r in graph.sizes.items() if r.source is not None}
    # A loop's kernels read what decides how often they run.
    steered: dict[int, list[SizeVar | str]] = {}
    for loop, first, last, condition, _ in spans:
        for k in range(first, last + 1):
            steered.setdefault(k, []).extend([*size_vars(loop.trip), *([condition] if condition else [])])
    # To a fixpoint: a loop's kernels read, in the next iteration, what later ones wrote.
    changed = True
    while changed:
        changed = _propagate_sources(state, sources, value_input, where, steered)
    return [tuple(sorted(sources.get(("output", k, ""), ()))) if v.type.numel != 0 else ()
            for k, v in enumerate(graph.outputs)]


def _propagate_sources(state: _State, sources: dict[tuple[str, int, str], frozenset[int]],
                       value_input: dict[str, int], where: Callable[[str], tuple[str, int, str]],
                       steered: dict[int, list[SizeVar | str]]) -> bool:
    """One pass of ``_output_sources``'s walk over the kernels; True if any buffer gained a source."""
    changed = False
    for k, (kernel, _) in enumerate(state.calls):
        read: set[int] = {value_input[v.name] for v in kernel_size_vars(kernel) if v.name in value_input}
        for v in steered.get(k, ()):
            if isinstance(v, str):
                read |= sources.get(where(v), frozenset())
            elif v.name in value_input:
                read.add(value_input[v.name])
        # What a guarded kernel stores depends on what decided that it runs (a run-time If's condition).
        for v in walk(kernel.guard) if kernel.guard is not None else ():
            if isinstance(v, ConditionVar):
                read |= sources.get(where(state.conditions[v.name]), frozenset())
            elif isinstance(v, Var) and v.name in value_input:
                read.add(value_input[v.name])
        written: list[tuple[str, int, str]] = []
        for buffer, is_store in loads_and_stores(kernel.body):
            if buffer.scope != "global":
                continue  # kernel-local: part of the kernel's own computation
            if is_store:
                written.append(where(buffer.name))
            else:
                read |= sources.get(where(buffer.name), frozenset())
        for place in written:
            before = sources.get(place, frozenset())
            if not read <= before:
                sources[place] = before | read
                changed = True
    return changed
