"""Control flow as plain nodes: ``If`` becomes a branch or a select, ``Scan`` and ``Loop`` loops of the run.

Contract of the expanders (called by :mod:`.expand` during folding, each
emitting into a :class:`~compiler.frontend.rewrite.Builder` or raising
:class:`~compiler.frontend.rewrite.NotExpandable`):

* ``If`` with a constant condition: the taken branch, inlined (its outputs
  under the If's output names). With a condition that is a *size predicate*
  (``size_predicate``: a one-element bool or integer graph input, read per run
  as a value size, or a comparison / logic over such inputs and symbolic dims,
  ``Equal(Shape(past)[2], 0)``): both branches inlined, the then-branch's nodes
  guarded by the predicate and the else-branch's by its negation
  (``FoldedGraph.guards``: only the taken branch runs), each output a
  ``tilec.Phi`` of the two (``FoldedGraph.phis``), whose dims are
  ``select(predicate, then_dim, else_dim)``: the branches may give different
  shapes, not different element types or ranks. With a condition computed
  from tensor data (``ReduceSum(x) > 0``), allowed only where both branches
  give every read output the same element type and the same static shape
  (the run's output shapes are settled before the condition is computed):
  the same guards over a ``ConditionVar``, the condition's byte, which the
  run function reads after the kernel computing it (``FoldedGraph.conditions``).
  Without ``read_values`` (CUDA, whose launch sequence is fixed) both
  branches are inlined and each output is a ``Where`` between them; the
  branches' nodes are recorded as speculative (``FoldedGraph.speculative``):
  they run whether taken or not, so their lowerings add no run-time checks.
  Sequence/optional outputs refuse.
* ``Scan`` (opsets 9+, input/output axes and directions): the body once, as a
  loop of the run over the sequence length, which may be symbolic
  (:mod:`.run_loops`); or, where ``keeps_loop`` says so (a short static
  length, or CUDA), inlined once per step, states chained, each step's input
  slices taken with ``Gather`` and each scan output stacked with
  ``Unsqueeze``+``Concat``. Opset 8, with its batch axis and
  ``sequence_lens``, is always unrolled, per batch entry too, and needs
  ``sequence_lens`` absent or constant and equal to the sequence length.
* ``Loop``: unrolled ``M`` times when ``M`` is a short compile-time constant
  (``keeps_loop``) and the loop provably never stops early (the initial
  condition is absent or a constant, and the body's condition output is its
  condition input, through ``Identity``, or a constant true), and also where
  the body's shapes depend on the iteration number (a Slice from ``i``: its
  buffers could not be sized once). Otherwise a loop of the run: ``M`` a
  constant, a dim or a graph input read per run (a negative one runs no
  iteration; without M the loop runs until its condition fails); a body
  condition computed at run time becomes a carried bool state that the run
  tests before each iteration, which only loops without scan outputs may
  have (their length must be known before the run). A trip count computed
  from tensor data, an unbounded loop that never stops, and sequence/optional
  loop values refuse.

Bodies read outer-scope values freely: those names are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.dtypes import DType
from compiler.frontend.loader import infer_types, node_reads, outer_names
from compiler.frontend import symbolic
from compiler.frontend.rewrite import Builder, NotExpandable, subgraph
from compiler.frontend.run_loops import LoopBuilder, keeps_loop
from compiler.graph.ir import PHI_DOMAIN
from compiler.loopir.expr import Const, Expr, binary, compare, select, walk
from compiler.loopir.printer import format_size
from compiler.loopir.sizes import (VALUE_LIMIT, ConditionVar, Size, ValueVar, as_size, negation, predicate,
                                   same_size, size_expr)

if TYPE_CHECKING:
    from compiler.frontend.folding import FoldedGraph


# --- If -------------------------------------------------------------------------------------


def expand_if(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    cond = node.input[0]
    then_branch, else_branch = subgraph(node, "then_branch"), subgraph(node, "else_branch")
    if cond in state.constants:
        value = state.constants[cond]
        if value.size != 1:
            raise NotExpandable(f"the condition has {value.size} elements; If needs exactly one")
        b.inline(then_branch if bool(value.reshape(-1)[0]) else else_branch, {}, node.output)
        return
    read = set(state.value_sources)
    taken = size_predicate(cond, state, {o: n for n in state.nodes for o in n.output})
    # An input read as a value size for a predicate that did not come about (compared with data) is not read.
    used = {e.name for e in walk(taken) if isinstance(e, ValueVar)} if taken is not None else set()
    for name in set(state.value_sources) - read - used:
        del state.value_sources[name]
    if isinstance(taken, Const):  # sizes that decide it at compile time
        b.inline(then_branch if taken.value else else_branch, {}, node.output)
        return
    if taken is not None:
        _expand_guarded(node, state, b, taken)
        return
    # The shapes of the outputs must be known before the run (tilec_sizes), so before the condition is; where
    # both branches run (CUDA) a select cannot change shape either.
    what = "is computed from tensor data" if state.read_values else "is only known at run time"
    why = ("output shapes must be known before the run, so tilec takes branches of different shapes only where "
           "the condition is a graph input or shape arithmetic" if state.read_values else
           "on this target both branches run and a select picks each output, which needs one static type")
    then_types, else_types = _output_types(then_branch, state), _output_types(else_branch, state)
    for k, out in enumerate(node.output):
        if not out:
            continue
        then_type, else_type = then_types[k], else_types[k]
        if then_type is None or else_type is None:
            raise NotExpandable(f"the condition '{cond}' {what} and output {k} ('{out}') is not a tensor of static "
                                f"shape in both branches; {why}")
        if then_type != else_type:
            raise NotExpandable(f"the condition '{cond}' {what} and the branches give output {k} ('{out}') "
                                f"different types ({_fmt(then_type)} vs {_fmt(else_type)}); {why}")
    if state.static_shape(cond) is None or int(np.prod(state.static_shape(cond))) != 1:
        raise NotExpandable(f"the condition '{cond}' is not known to have exactly one element")
    if state.read_values:
        # The run function reads the condition's byte once the kernel computing it has run.
        state.conditions.add(cond)
        _expand_guarded(node, state, b, compare("ne", ConditionVar(cond), 0))
        return
    # A target whose launch sequence is fixed (CUDA) runs both branches and selects.
    then_outs = [b.fresh(f"then_{o}") if o else "" for o in node.output]
    else_outs = [b.fresh(f"else_{o}") if o else "" for o in node.output]
    b.inline(then_branch, {}, then_outs)
    b.inline(else_branch, {}, else_outs)
    # Both branches run; the one not taken may hold values its ops cannot take (no run-time checks there).
    state.speculative.update(n.name for n in b.nodes)
    # A one-element condition of any rank must not broadcast the outputs to its rank.
    if state.static_shape(cond) != ():
        cond = b.op("Reshape", [cond, b.ints([], "scalar_shape")])
    for out, then_out, else_out in zip(node.output, then_outs, else_outs):
        if out:
            b.op("Where", [cond, then_out, else_out], out)


def _expand_guarded(node: onnx.NodeProto, state: "FoldedGraph", b: Builder, taken: Expr) -> None:
    """Both branches inlined under guards (``taken`` and its negation), each output a Phi of the two."""
    then_branch, else_branch = subgraph(node, "then_branch"), subgraph(node, "else_branch")
    then_types = [_elem_and_rank(t) for t in _branch_types(then_branch, state)]
    else_types = [_elem_and_rank(t) for t in _branch_types(else_branch, state)]
    for k, out in enumerate(node.output):
        if not out:
            continue
        then_type, else_type = then_types[k], else_types[k]
        if then_type is None or else_type is None:
            raise NotExpandable(f"output {k} ('{out}') is not a tensor of known element type and rank in both "
                                "branches; tilec runs the taken branch of a run-time If for tensors only")
        if then_type != else_type:
            raise NotExpandable(f"the branches give output {k} ('{out}') different element types or ranks "
                                f"({_fmt_rank(then_type)} vs {_fmt_rank(else_type)}); a run-time If may change "
                                "only the dims")
    then_outs = [b.fresh(f"then_{o}") if o else "" for o in node.output]
    else_outs = [b.fresh(f"else_{o}") if o else "" for o in node.output]
    for branch, outs, guard in ((then_branch, then_outs, taken), (else_branch, else_outs, negation(taken))):
        first = len(b.nodes)
        b.inline(branch, {}, outs)
        state.guards.update((n.name, guard) for n in b.nodes[first:])
    state.opsets.setdefault(PHI_DOMAIN, 1)
    for out, then_out, else_out in zip(node.output, then_outs, else_outs):
        if out:
            phi = helper.make_node("Phi", [then_out, else_out], [out], name=b.fresh("Phi"), domain=PHI_DOMAIN)
            b.nodes.append(phi)
            state.phis[phi.name] = taken


_COMPARISONS = {"Equal": "eq", "Less": "lt", "Greater": "gt", "LessOrEqual": "le", "GreaterOrEqual": "ge"}
_PASS_THROUGH = frozenset({"Identity", "Squeeze", "Unsqueeze", "Reshape", "Flatten", "Cast"})


def size_predicate(name: str, state: "FoldedGraph", producers: Mapping[str, onnx.NodeProto]) -> Expr | None:
    """The one-element ``name`` as a condition over sizes, where it is one: a size value (an integer reads as
    ``!= 0``), a one-element bool or integer graph input (``FoldedGraph.input_value``), or Not / And / Or /
    Xor / comparisons / reshapes / casts of those; None for a value computed from tensor data."""
    scalar = _size_scalar(name, state)
    if scalar is not None:
        return predicate(scalar)
    node = producers.get(name)
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    op = node.op_type
    if op in _PASS_THROUGH or op == "Not":
        to = next((a.i for a in node.attribute if a.name == "to"), onnx.TensorProto.BOOL)
        operand = size_predicate(node.input[0], state, producers) if to == onnx.TensorProto.BOOL else None
        return negation(operand) if op == "Not" and operand is not None else operand
    if op in ("And", "Or", "Xor"):
        a = size_predicate(node.input[0], state, producers)
        b = size_predicate(node.input[1], state, producers) if a is not None else None
        if a is None or b is None:
            return None
        if op == "Xor":
            return binary("ne", select(a, Const(1), Const(0)), select(b, Const(1), Const(0)))
        return binary(op.lower(), a, b)
    if op in _COMPARISONS:
        a = _size_scalar(node.input[0], state)
        b = _size_scalar(node.input[1], state) if a is not None else None
        if a is None or b is None:
            return None
        if isinstance(a, int) and isinstance(b, int):
            return Const(bool(_EVAL_COMPARE[op](a, b)), DType.BOOL)
        return compare(_COMPARISONS[op], size_expr(a), size_expr(b))
    return None


_EVAL_COMPARE = {"Equal": lambda a, b: a == b, "Less": lambda a, b: a < b, "Greater": lambda a, b: a > b,
                 "LessOrEqual": lambda a, b: a <= b, "GreaterOrEqual": lambda a, b: a >= b}


def _size_scalar(name: str, state: "FoldedGraph") -> Size | None:
    """The single element of a size value, an integer or bool constant, or a graph input read per run."""
    array = state.sizes.get(name, state.constants.get(name))
    if array is None:
        return state.input_value(name)
    if array.size != 1 or (array.dtype != object and array.dtype.kind not in "biu"):
        return None
    element = array.reshape(-1)[0]
    return element if isinstance(element, Expr) else int(element)


TensorInfo = tuple[int, tuple[int, ...]]  # ONNX element type, static shape


def _branch_types(graph: onnx.GraphProto, state: "FoldedGraph") -> list[onnx.TypeProto | None]:
    """Each output's type when ``graph`` runs in the folded graph's scope (None: not a typed tensor)."""
    reads = outer_names(graph)
    inputs = [helper.make_value_info(n, state.types[n]) for n in sorted(reads)
              if n not in state.constants and n in state.types]
    constants = {n: state.constants[n] for n in reads if n in state.constants}
    constants.update((t.name, numpy_helper.to_array(t)) for t in graph.initializer)
    proxy = helper.make_graph(graph.node, "branch", inputs,
                              [helper.make_value_info(o.name, onnx.TypeProto()) for o in graph.output])
    types = infer_types(proxy, state.opsets, constants)
    out: list[onnx.TypeProto | None] = []
    for o in graph.output:
        if o.name in constants:
            array = constants[o.name]
            out.append(helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)))
            continue
        t = types.get(o.name)
        tensor = t is not None and t.WhichOneof("value") == "tensor_type" and t.tensor_type.HasField("shape") \
            and t.tensor_type.elem_type
        out.append(t if tensor else None)
    return out


def _elem_and_rank(t: onnx.TypeProto | None) -> tuple[int, int] | None:
    return None if t is None else (t.tensor_type.elem_type, len(t.tensor_type.shape.dim))


def _fmt_rank(info: tuple[int, int]) -> str:
    return f"{DType.from_onnx(info[0]).value} of rank {info[1]}"


def _output_types(graph: onnx.GraphProto, state: "FoldedGraph") -> list[TensorInfo | None]:
    """Each output's element type and static shape when ``graph`` runs in the folded graph's scope."""
    infos: list[TensorInfo | None] = []
    for t in _branch_types(graph, state):
        if t is None or not all(d.HasField("dim_value") for d in t.tensor_type.shape.dim):
            infos.append(None)
        else:
            infos.append((t.tensor_type.elem_type, tuple(d.dim_value for d in t.tensor_type.shape.dim)))
    return infos


def _fmt(info: TensorInfo) -> str:
    return f"{DType.from_onnx(info[0]).value}[{'x'.join(map(str, info[1]))}]"


# --- Scan -----------------------------------------------------------------------------------


def expand_scan(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    body = subgraph(node, "body")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    num_scan = attrs["num_scan_inputs"]
    batched = b.opset < 9  # Scan-8: every input and output has a leading batch axis
    inputs = list(node.input[1:] if batched else node.input)
    num_states = len(inputs) - num_scan
    num_outputs = len(body.output) - num_states
    _require_tensors(node, state, inputs)
    states, scans = inputs[:num_states], inputs[num_states:]
    outs = list(node.output) + [""] * (len(body.output) - len(node.output))
    if batched:
        shapes = [_static_shape(state, x, "scan input") for x in scans]
        steps = _common_length(s[1] for s in shapes)
        _check_sequence_lens(node, state, steps)
        plan = _ScanPlan(steps, [0] * num_scan, list(attrs.get("directions", [0] * num_scan)),
                         [0] * num_outputs, [0] * num_outputs)
        batch = shapes[0][0] if shapes else _static_shape(state, states[0], "scan state")[0]
        per_batch: list[list[str]] = []
        for i in range(batch):
            results = [b.fresh(f"batch{i}_out") for _ in body.output]
            _unroll_scan(b, body, [b.gather(s, i, 0) for s in states], [b.gather(x, i, 0) for x in scans],
                         plan, results)
            per_batch.append(results)
        for k, out in enumerate(outs):
            if out:
                b.stack([results[k] for results in per_batch], 0, out)
        return
    shapes = [_shape(state, x, "scan input") for x in scans]
    for s in states:
        _shape(state, s, "scan state")  # the states' buffers are sized before the loop
    in_axes = [_axis(a, len(s)) for a, s in zip(attrs.get("scan_input_axes", [0] * num_scan), shapes)]
    steps = _common_length(s[a] for s, a in zip(shapes, in_axes))
    plan = _ScanPlan(steps, in_axes, list(attrs.get("scan_input_directions", [0] * num_scan)),
                     list(attrs.get("scan_output_axes", [0] * num_outputs)),
                     list(attrs.get("scan_output_directions", [0] * num_outputs)))
    if keeps_loop(steps, state):
        _scan_loop(b, state, body, states, scans, plan, outs)
        return
    if not isinstance(steps, int):
        raise NotExpandable("the sequence length is only known at run time and on this target tilec unrolls "
                            "scans over static lengths only")
    _unroll_scan(b, body, states, scans, plan, outs)


def _scan_loop(b: Builder, state: "FoldedGraph", body: onnx.GraphProto, states: list[str], scans: list[str],
               plan: "_ScanPlan", outs: Sequence[str]) -> None:
    """The body once, as a loop of the run over the steps (run_loops.py)."""
    loop = LoopBuilder(b, state, plan.steps)
    carried = [loop.carry(s) for s in states]
    loop.begin()
    bindings = {i.name: s for i, s in zip(body.input, carried)}
    for i, x, axis, reverse in zip(body.input[len(states):], scans, plan.in_axes, plan.in_reverse):
        bindings[i.name] = loop.scan_slice(x, axis, bool(reverse))
    results = [b.fresh(f"state{k}_next") if k < len(states) else b.fresh(f"out{k - len(states)}_step")
               for k in range(len(body.output))]
    b.inline(body, bindings, results)
    scanned = list(zip(results[len(states):], plan.out_axes, map(bool, plan.out_reverse)))
    loop.end(results[:len(states)], scanned, outs)


@dataclass
class _ScanPlan:
    """How a scan walks its inputs (axes, reversed or not) and stacks its outputs."""

    steps: Size
    in_axes: list[int]
    in_reverse: list[int]
    out_axes: list[int]
    out_reverse: list[int]



def _unroll_scan(b: Builder, body: onnx.GraphProto, states: list[str], scans: list[str], plan: _ScanPlan,
                 outs: Sequence[str]) -> None:
    """Inline ``body`` once per step; ``outs`` names the final states, then the stacked scan outputs."""
    if plan.steps == 0:
        raise NotExpandable("the sequence length is 0; tilec does not unroll into empty scan outputs")
    num_states = len(states)
    per_step: list[list[str]] = []
    for t in range(plan.steps):
        bindings = {i.name: s for i, s in zip(body.input, states)}
        for i, x, axis, reverse in zip(body.input[num_states:], scans, plan.in_axes, plan.in_reverse):
            bindings[i.name] = b.gather(x, plan.steps - 1 - t if reverse else t, axis)
        last = t == plan.steps - 1
        states = [out if last and out else b.fresh(f"state{k}_step{t}") for k, out in enumerate(outs[:num_states])]
        step_outs = [b.fresh(f"out{k}_step{t}") for k in range(len(body.output) - num_states)]
        b.inline(body, bindings, states + step_outs)
        per_step.append(step_outs)
    for k, out in enumerate(outs[num_states:]):
        if out:
            values = [step[k] for step in per_step]
            b.stack(values[::-1] if plan.out_reverse[k] else values, plan.out_axes[k], out)


def _check_sequence_lens(node: onnx.NodeProto, state: "FoldedGraph", steps: int) -> None:
    lens = node.input[0] if node.input else ""
    if not lens:
        return
    if lens not in state.constants:
        raise NotExpandable("sequence_lens is only known at run time; tilec unrolls equal-length sequences only")
    if not np.all(state.constants[lens] == steps):
        raise NotExpandable(f"sequence_lens {state.constants[lens].tolist()} differ from the sequence length "
                            f"{steps}; tilec unrolls equal-length sequences only")


def _common_length(lengths: Iterable[Size]) -> Size:
    distinct: list[Size] = []
    for n in lengths:
        if not any(same_size(n, d) for d in distinct):
            distinct.append(n)
    if len(distinct) != 1:
        raise NotExpandable(f"the scan inputs have different sequence lengths {[format_size(d) for d in distinct]}")
    return distinct[0]


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --- Loop -----------------------------------------------------------------------------------


def expand_loop(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    body = subgraph(node, "body")
    trip_count, cond = (list(node.input) + ["", ""])[:2]
    carried = list(node.input[2:])
    _require_tensors(node, state, carried)
    outs = list(node.output) + [""] * (len(body.output) - 1 - len(node.output))
    num_scan = len(outs) - len(carried)
    try:
        steps = _static_trip_count(trip_count, cond, body, state)
    except NotExpandable:
        if not state.read_values:
            raise
        _loop(node, state, b, body, outs)
        return
    if steps > 0 and keeps_loop(steps, state) and not _shapes_follow(body, body.input[0].name):
        _loop(node, state, b, body, outs)
        return
    if steps <= 0:
        if any(outs[len(carried):]):
            raise NotExpandable("the loop runs zero times; tilec does not build empty scan outputs")
        for value, out in zip(carried, outs):
            if out:
                b.op("Identity", [value], out)
        return
    per_step: list[list[str]] = []
    for i in range(steps):
        bindings = {body.input[0].name: b.const(np.array(i, np.int64), "iteration"),
                    body.input[1].name: b.const(np.array(True), "cond")}
        bindings.update((inp.name, v) for inp, v in zip(body.input[2:], carried))
        last = i == steps - 1
        carried = [out if last and out else b.fresh(f"v{k}_iter{i}") for k, out in enumerate(outs[:len(carried)])]
        step_outs = [b.fresh(f"scan{k}_iter{i}") for k in range(num_scan)]
        b.inline(body, bindings, [b.fresh(f"cond_iter{i}")] + carried + step_outs)
        per_step.append(step_outs)
    for k, out in enumerate(outs[len(carried):]):
        if out:
            b.stack([step[k] for step in per_step], 0, out)


def _loop(node: onnx.NodeProto, state: "FoldedGraph", b: Builder, body: onnx.GraphProto, outs: list[str]) -> None:
    """The body once, as a loop of the run (run_loops.py): M a size (a constant, a dim, a graph input read per
    run); a condition that may turn false at run time becomes a carried bool state the run reads before each
    iteration, for loops without scan outputs (their length would only be known after the run)."""
    trip_count, cond = (list(node.input) + ["", ""])[:2]
    carried = list(node.input[2:])
    for v in carried:
        _shape(state, v, "loop-carried value")  # the states' buffers are sized before the loop
    if _shapes_follow(body, body.input[0].name):
        raise NotExpandable("the body's shapes depend on the iteration number; tilec unrolls such loops, which "
                            "needs a compile-time trip count",
                            values=tuple(n for n in (trip_count, cond) if n and n not in state.constants))
    body_keeps = _condition_stays_true(body, state)
    # A body that passes its condition on runs all M iterations or, where the initial one is false, none.
    initially = Const(True, DType.BOOL) if not cond else size_predicate(
        cond, state, {o: n for n in state.nodes for o in n.output})
    stays_true = body_keeps and initially is not None
    trip = _size_scalar(trip_count, state) if trip_count else None
    if trip_count and trip is None:
        raise NotExpandable(f"the trip count M ('{trip_count}') is computed from tensor data; tilec runs loops "
                            "whose trip count is a constant, a dim or a graph input", values=(trip_count,))
    if trip is None and body_keeps:
        raise NotExpandable("the loop has no trip count and its condition never turns false: it never ends")
    scans = outs[len(carried):]
    if not stays_true and len(body.output) > 1 + len(carried):
        raise NotExpandable("the loop's condition is computed at run time and it has scan outputs, whose length "
                            "tilec must know before the run; tilec runs such loops with loop-carried values only",
                            values=(cond,) if cond and body_keeps else ())
    # A negative M runs no iteration (and stacks no rows).
    trip = VALUE_LIMIT if trip is None else as_size(binary("max", size_expr(trip), Const(0)))
    if stays_true and initially is not None:
        trip = as_size(select(initially, size_expr(trip), Const(0)))
    loop = LoopBuilder(b, state, trip)
    states = [loop.carry(v) for v in carried]
    if not stays_true:
        states.append(loop.carry(cond or b.const(np.array(True), "cond")))
    loop.begin()
    bindings = {body.input[0].name: loop.iteration(),
                body.input[1].name: states[-1] if not stays_true else b.const(np.array(True), "cond")}
    bindings.update((inp.name, v) for inp, v in zip(body.input[2:], states))
    results = [b.fresh("cond_next")] + [b.fresh(f"v{k}_next") for k in range(len(carried))] \
        + [b.fresh(f"scan{k}_step") for k in range(len(scans))]
    b.inline(body, bindings, results)
    updates = results[1:1 + len(carried)] + ([results[0]] if not stays_true else [])
    finals = outs[:len(carried)] + ([""] if not stays_true else [])
    loop.end(updates, [(v, 0, False) for v in results[1 + len(carried):]], finals + scans,
             condition=None if stays_true else len(carried))


def _shapes_follow(body: onnx.GraphProto, name: str) -> bool:
    """Whether a shape-setting operand of a node in ``body`` (a Slice's starts) is computed from ``name``:
    the body's buffers would then change size from one iteration to the next."""
    derived = {name}
    for node in body.node:
        if not derived.isdisjoint(node_reads(node)):
            positions = symbolic.SHAPE_OPERANDS.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ()
            if any(k < len(node.input) and node.input[k] in derived for k in positions):
                return True
            derived.update(o for o in node.output if o)
    return False


def _static_trip_count(trip_count: str, cond: str, body: onnx.GraphProto, state: "FoldedGraph") -> int:
    """The iteration count when M, the initial condition and the body's condition output settle it."""
    if trip_count and trip_count not in state.constants:
        raise NotExpandable(f"the trip count M ('{trip_count}') is only known at run time; tilec unrolls loops "
                            "whose trip count is a compile-time constant", values=(trip_count,))
    if cond and cond not in state.constants:
        raise NotExpandable(f"the initial condition ('{cond}') is only known at run time; tilec unrolls loops "
                            "whose iteration count is a compile-time constant", values=(cond,))
    if not _condition_stays_true(body, state):
        raise NotExpandable("the body computes its condition output at run time; tilec unrolls loops whose "
                            "iteration count is a compile-time constant")
    if cond and not bool(state.constants[cond].reshape(-1)[0]):
        return 0
    if not trip_count:
        raise NotExpandable("the loop has no trip count and its condition never turns false: it never ends")
    return int(state.constants[trip_count].reshape(-1)[0])


def _condition_stays_true(body: onnx.GraphProto, state: "FoldedGraph") -> bool:
    """Whether the body's condition output is its condition input (through Identity) or a constant true."""
    producers = {o: n for n in body.node for o in n.output}
    initializers = {t.name: t for t in body.initializer}
    name = body.output[0].name
    while True:
        if len(body.input) > 1 and name == body.input[1].name:
            return True
        if name in initializers:
            return _is_true(numpy_helper.to_array(initializers[name]))
        node = producers.get(name)
        if node is None:
            return name in state.constants and _is_true(state.constants[name])
        if node.op_type == "Identity":
            name = node.input[0]
        elif node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return _is_true(numpy_helper.to_array(node.attribute[0].t))
        else:
            return False


def _is_true(array: np.ndarray) -> bool:
    return array.size == 1 and bool(array.reshape(-1)[0])


# --- shared ---------------------------------------------------------------------------------


def _require_tensors(node: onnx.NodeProto, state: "FoldedGraph", names: Sequence[str]) -> None:
    for name in names:
        t = state.types.get(name)
        if t is not None and t.WhichOneof("value") != "tensor_type":
            raise NotExpandable(f"'{name}' is a {t.WhichOneof('value')}; tilec unrolls {node.op_type} over "
                                "tensors only")


def _shape(state: "FoldedGraph", name: str, what: str) -> list[Size]:
    shape = state.symbolic_shape(name)
    if shape is None:
        raise NotExpandable(f"the shape of {what} '{name}' is not known (yet)")
    return shape


def _static_shape(state: "FoldedGraph", name: str, what: str) -> tuple[int, ...]:
    shape = state.static_shape(name)
    if shape is None:
        raise NotExpandable(f"the shape of {what} '{name}' is not static (yet); tilec unrolls over static lengths")
    return shape


EXPANDERS: dict[str, Callable[[onnx.NodeProto, "FoldedGraph", Builder], None]] = {
    "If": expand_if, "Scan": expand_scan, "Loop": expand_loop}
