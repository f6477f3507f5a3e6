"""Stage 1b: compile-time constant folding at the ONNX level.

Contract of :func:`fold_model`: given a loaded (checked, converted) model,
return a :class:`FoldedGraph` in which, iterated to a fixpoint together with
shape inference,

* every node whose inputs are all constants (initializers, Constant nodes,
  earlier folded values) was evaluated with ``onnx.reference`` and replaced by
  a constant,
* ``Shape``/``Size`` of a value with a fully static shape became constants,
* shape computations over symbolic dims (``Shape`` of a value whose dims are
  size expressions, and the integer ops after it: :mod:`.symbolic`) became
  *size values*: arrays of ints and size expressions (``sizes``), and the
  nodes whose shape operand is one got their output types from them,
* control flow and recurrent nodes were expanded into plain nodes where
  :mod:`.expand` can (an ``If`` with a constant condition became the chosen
  branch, for instance), and so were nodes ``is_supported`` refuses (or that
  carry subgraphs) whose schema defines a function body,

so that shape computations (``Shape -> Gather -> Concat -> Reshape``) leave
only static shapes behind. Random ops and nodes with subgraphs are never
evaluated (an expansion may replace the latter). A node the reference
evaluator cannot run is kept: the lowering may still support it. So is a node
whose result would be a constant larger than :data:`FOLD_LIMIT_BYTES` holding
more elements than its constant inputs together (:func:`fold_allowed`):
compile memory and weights stay proportional to the model's own constants,
never to run-time tensor sizes (``ConstantOfShape``/``Expand`` to the shape of
a large input stays a run-time op).

This module also owns the one node evaluator (:func:`evaluate_node`) and its
graph-IR front (:func:`evaluate_ir_node`), reused by the graph-level cleanup.
Evaluating with the reference implementation is compile time only; it never
reaches generated code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import ml_dtypes
import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from compiler.dtypes import DType, decoded_strings, string_codes
from compiler.frontend.expand import expand_node
from compiler.frontend.narrow_cast import NARROW_TARGETS, narrow_cast
from compiler.frontend.loader import (
    graph_attrs,
    graph_inputs,
    infer_types,
    input_dim_names,
    normalize_domain,
    opsets_of,
    outer_names,
)
from compiler.frontend import run_loops, symbolic
from compiler.frontend.rewrite import NameSource, all_names, has_subgraph
from compiler.frontend.symbolic import SymbolicDims
from compiler.graph.ir import PHI_DOMAIN, Graph, Node, Value
from compiler.loopir.expr import Expr
from compiler.loopir.run_loops import RunLoop
from compiler.loopir.sizes import Size, ValueSource, ValueVar, choose, same_size, size_prod

#: Ops whose result differs per run: folding would freeze one sample.
RANDOM_OPS = frozenset({"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                        "Bernoulli", "Multinomial"})

#: Domains the reference evaluator implements.
_FOLDABLE_DOMAINS = frozenset({"", "ai.onnx.ml"})

#: Safety net against a pathological model; real models reach a fixpoint in a few rounds.
_MAX_ROUNDS = 64

#: The largest constant a fold may create out of fewer elements (see :func:`fold_allowed`).
FOLD_LIMIT_BYTES = 64 << 20


@dataclass
class FoldedGraph:
    """A model after folding: remaining nodes, constants as numpy arrays, every value's type."""

    name: str
    nodes: list[onnx.NodeProto]
    inputs: list[onnx.ValueInfoProto]  # real graph inputs (initializers excluded)
    outputs: list[onnx.ValueInfoProto]
    constants: dict[str, np.ndarray]
    opsets: dict[str, int]
    types: dict[str, onnx.TypeProto] = field(default_factory=dict)
    declared: list[onnx.ValueInfoProto] = field(default_factory=list)  # value_info, fallback types
    # Each node output's producer, as of the last ``infer`` (a round replaces nodes only at its end).
    producers: dict[str, onnx.NodeProto] = field(default_factory=dict)
    # Whether tilec lowers (op_type, domain); None: every op counts as lowered.
    is_supported: Callable[[str, str], bool] | None = None
    # Nodes computed whether or not their results are used (a branch of an If whose condition is tensor data).
    speculative: set[str] = field(default_factory=set)
    # Nodes that run only where a predicate holds (a branch of a run-time If: over sizes, or a data condition's
    # byte), by name; and each Phi's predicate: its output is its first input where that holds, else its second.
    guards: dict[str, Expr] = field(default_factory=dict)
    phis: dict[str, Expr] = field(default_factory=dict)
    # The data conditions those guards read (``ConditionVar``): one-element bool values computed in the run.
    conditions: set[str] = field(default_factory=set)
    # Loops kept as loops of the run (run_loops.py) by name, and the loops around each body node, by node name
    # (outermost first).
    run_loops: dict[str, RunLoop] = field(default_factory=dict)
    in_loops: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Whether run-time values steer the native code: small graph inputs that set shapes or pick an If's branch
    # are read as value sizes, and an If on a data condition runs only its taken branch (not so on CUDA).
    read_values: bool = True
    # Size values (object arrays of ints and size expressions) with their element types, and the names
    # symbolic dims travel under in the types (symbolic.py).
    sizes: dict[str, np.ndarray] = field(default_factory=dict)
    size_types: dict[str, int] = field(default_factory=dict)
    dims: SymbolicDims = field(default_factory=lambda: SymbolicDims(()))
    # The value sizes (size variables read from an input's data) by name, and where each is read.
    value_sources: dict[str, ValueSource] = field(default_factory=dict)
    # Graph outputs returned as lists of maps (ZipMap, maps.py): output position -> the keys of its columns.
    output_maps: dict[int, tuple[int | str, ...]] = field(default_factory=dict)

    def as_graph(self) -> onnx.GraphProto:
        """The graph without initializers (constants travel separately to shape inference)."""
        return helper.make_graph(self.nodes, self.name or "g", self.inputs, self.outputs, value_info=self.declared)

    def infer(self) -> None:
        typed = {name: helper.make_tensor_type_proto(self.size_types[name], list(array.shape))
                 for name, array in self.sizes.items()}
        values = {**self.constants, **self.sizes}
        self.types = infer_types(self.as_graph(), self.opsets, self.constants, typed,
                                 lambda node, types: self._tilec_types(node, types) if node.domain == PHI_DOMAIN
                                 else symbolic.output_types(node, self.dims, types, values))
        self.producers = {out: node for node in self.nodes for out in node.output if out}

    def shape_type(self, name: str) -> onnx.TypeProto | None:
        """``name``'s type for reading its shape (Shape, Size), or None while an input of its producer has no
        type: the type then stands only by the model's declaration (a graph output's), whose symbolic dims
        can name sizes otherwise than inference will (optimum declares the presents' length with the
        attention mask's name, inference gives past + new), and folded into a shape value they would stay."""
        producer = self.producers.get(name)
        if producer is not None and any(n and n not in self.types and n not in self.constants and n not in self.sizes
                                        for n in producer.input):
            return None
        return self.types.get(name)

    def _tilec_types(self, node: onnx.NodeProto, types: Mapping[str, onnx.TypeProto]) -> dict[str, onnx.TypeProto]:
        if node.op_type == "Phi":
            return self._phi_types(node, types)
        if node.op_type == "BlockDequantize":  # weights decoded where they are read (contrib.expand_matmul_nbits)
            to = next(a.i for a in node.attribute if a.name == "to")
            return {node.output[0]: helper.make_tensor_type_proto(to, list(self.constants[node.input[0]].shape))}
        return run_loops.loop_node_types(node, self, types)

    def _phi_types(self, node: onnx.NodeProto, types: Mapping[str, onnx.TypeProto]) -> dict[str, onnx.TypeProto]:
        """A Phi's output: its inputs' element type, each dim ``select(predicate, then_dim, else_dim)``."""
        shapes = []
        for name in node.input:
            if name in self.constants:
                array = self.constants[name]
                shapes.append((helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)))
            else:
                t = types.get(name)
                shape = symbolic.shape_of(t, self.dims)
                if shape is None:
                    return {}  # not inferred yet: a later round of pins settles it
                shapes.append((t.tensor_type.elem_type, shape))
        (elem, then_dims), (_, else_dims) = shapes
        cond = self.phis[node.name]
        dims = [d if same_size(d, e) else choose(cond, d, e) for d, e in zip(then_dims, else_dims)]
        return {node.output[0]: self.dims.tensor_type(elem, dims)}

    def input_value(self, name: str) -> ValueVar | None:
        """A one-element bool or integer graph input of static shape read as a value size (an If's condition
        computed from it picks the branch per run); None for any other value, or when inputs are not read."""
        vi = next((v for v in self.inputs if v.name == name), None)
        shape = static_shape(vi.type) if vi is not None else None
        if not self.read_values or shape is None or int(np.prod(shape, dtype=np.int64)) != 1 \
                or vi.type.tensor_type.elem_type not in _CONDITION_TYPES:
            return None
        known = [v for v, source in self.value_sources.items() if source.input == name]
        if not known:
            _, sources = symbolic.value_sizes(name, shape, set(input_dim_names(self.inputs)) | set(self.value_sources))
            self.value_sources.update(sources)
            known = list(sources)
        return ValueVar(known[0])

    def static_shape(self, name: str) -> tuple[int, ...] | None:
        if name in self.constants:
            return tuple(self.constants[name].shape)
        t = self.types.get(name)
        return static_shape(t) if t is not None else None

    def symbolic_shape(self, name: str) -> list[Size] | None:
        """A value's shape, its dims ints or size expressions; None while it is not known."""
        if name in self.constants:
            return list(self.constants[name].shape)
        return symbolic.shape_of(self.types.get(name), self.dims)

    def element_type(self, name: str) -> np.dtype | None:
        """The numpy dtype of a value (a constant's, or the inferred one); None where it is not known."""
        if name in self.constants:
            return self.constants[name].dtype
        t = self.types.get(name)
        if t is None or not t.tensor_type.elem_type:
            return None
        return np.dtype(helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type))


def fold_model(model: onnx.ModelProto, is_supported: Callable[[str, str], bool] | None = None,
               read_values: bool = True) -> FoldedGraph:
    """Fold ``model`` to a fixpoint (see the module docstring); the model itself is not modified.

    ``is_supported(op_type, domain)`` says which ops tilec lowers; without it no op is expanded
    into its function body for want of a lowering. ``read_values``: shape-setting graph inputs
    become value sizes (``_seed_value_sizes``).
    """
    graph = model.graph
    state = FoldedGraph(
        read_values=read_values,
        name=graph.name,
        nodes=list(graph.node),
        inputs=graph_inputs(graph),
        outputs=list(graph.output),
        constants={t.name: numpy_helper.to_array(t) for t in graph.initializer},
        opsets=opsets_of(model),
        declared=list(graph.value_info),
        is_supported=is_supported,
        dims=SymbolicDims(input_dim_names(graph_inputs(graph))),
    )
    names = NameSource(all_names(graph))
    if read_values:
        _seed_value_sizes(state, names)
    for _ in range(_MAX_ROUNDS):
        _drop_unused_constants(state)
        state.infer()
        if not _fold_round(state, names):
            break
    return state


def static_shape(t: onnx.TypeProto) -> tuple[int, ...] | None:
    """The shape of a tensor type if every dimension is a known value, else None."""
    if t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return None
    dims = t.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)


_INTEGER_TYPES = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32})
_VALUE_TYPES = _INTEGER_TYPES | {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE}  # see symbolic.FLOAT_SHAPE_OPERANDS
_CONDITION_TYPES = _INTEGER_TYPES | {onnx.TensorProto.BOOL}


def _seed_value_sizes(state: FoldedGraph, names: NameSource) -> None:
    """A small integer graph input that feeds a shape-setting operand (``symbolic.SHAPE_OPERANDS``: a Reduce's
    axes) is read at run time: those operands read a size value of value sizes instead (a copy under a fresh
    name; every other reader still reads the tensor), so its shape effects stay symbolic."""
    eligible: dict[str, tuple[tuple[int, ...], int]] = {}
    for vi in state.inputs:
        shape = static_shape(vi.type)
        elem = vi.type.tensor_type.elem_type
        if shape is not None and len(shape) <= 1 and elem in _VALUE_TYPES \
                and int(np.prod(shape, dtype=np.int64)) <= symbolic.MAX_VALUE_ELEMENTS:
            eligible[vi.name] = (shape, elem)
    taken = set(input_dim_names(state.inputs))
    aliases: dict[str, str] = {}
    nodes: list[onnx.NodeProto] = []
    for node in state.nodes:
        positions = symbolic.SHAPE_OPERANDS.get(node.op_type, ()) if node.domain in ("", "ai.onnx") else ()
        hits = [k for k in positions if k < len(node.input) and node.input[k] in eligible and (
            eligible[node.input[k]][1] in _INTEGER_TYPES or (node.op_type, k) in symbolic.FLOAT_SHAPE_OPERANDS)]
        if hits:
            node = _copy(node)  # the caller's model stays as it was
            for k in hits:
                name = node.input[k]
                if name not in aliases:
                    shape, elem = eligible[name]
                    aliases[name] = alias = names.fresh(f"{name}__value")
                    if not int(np.prod(shape, dtype=np.int64)):  # no elements: the shape says it all
                        state.constants[alias] = np.zeros(shape, helper.tensor_dtype_to_np_dtype(elem))
                    else:
                        array, sources = symbolic.value_sizes(name, shape, taken)
                        state.sizes[alias], state.size_types[alias] = array, elem
                        state.value_sources.update(sources)
                node.input[k] = aliases[name]
        nodes.append(node)
    state.nodes = nodes


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    return out


# --- one round ------------------------------------------------------------------------


def _fold_round(state: FoldedGraph, names: NameSource) -> bool:
    """Fold what the current types allow, in graph order; True if anything changed."""
    changed = False
    kept: list[onnx.NodeProto] = []
    for node in state.nodes:
        replacement = _fold_node(node, state, names)
        if replacement is None:
            kept.append(node)
        else:
            kept.extend(replacement)
            changed = True
    state.nodes = kept
    return changed


def _fold_node(node: onnx.NodeProto, state: FoldedGraph, names: NameSource) -> list[onnx.NodeProto] | None:
    """None to keep ``node``; otherwise the nodes replacing it (constants land in ``state``)."""
    expanded = expand_node(node, state, names)
    if expanded is not None or not is_foldable(node.op_type, node.domain, has_subgraph(node)):
        return expanded
    folded = _fold_shape_query(node, state)
    if folded is None and all(not n or n in state.constants for n in node.input):
        if _keeps_codes(node, state):
            return [_block_dequantize(node, state, names)]
        folded = _try_evaluate(node, state)
    if folded is None:
        return _fold_sizes(node, state)
    for name, array in zip(node.output, folded):
        if name:
            state.constants[name] = array
    return []


def _fold_shape_query(node: onnx.NodeProto, state: FoldedGraph) -> list[np.ndarray] | None:
    """Shape/Size of a value whose shape is static, even if its data is not."""
    if node.op_type not in ("Shape", "Size"):
        return None
    shape = state.static_shape(node.input[0]) if state.shape_type(node.input[0]) is not None \
        or node.input[0] in state.constants else None
    if shape is None:
        return None
    if node.op_type == "Size":
        return [np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    # ONNX's start/end clamping is exactly Python's slice semantics.
    start, end = attrs.get("start", 0), attrs.get("end", len(shape))
    return [np.array(shape[start:end], dtype=np.int64)]


def _fold_sizes(node: onnx.NodeProto, state: FoldedGraph) -> list[onnx.NodeProto] | None:
    """A shape computation over symbolic dims, evaluated into size values (symbolic.py); None to keep it."""
    if node.domain not in ("", "ai.onnx") or not node.output or not node.output[0]:
        return None
    if node.op_type in ("Shape", "Size"):
        shape = symbolic.shape_of(state.shape_type(node.input[0]), state.dims)
        if shape is None:
            return None
        if node.op_type == "Size":
            values = symbolic.sizes_array([size_prod(shape)], ())
        else:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            values = symbolic.sizes_array(shape[attrs.get("start", 0):attrs.get("end", len(shape))])
        results, elem = [values], onnx.TensorProto.INT64
    elif node.op_type in symbolic.SHAPE_OPS and any(n in state.sizes for n in node.input):
        if not all(not n or n in state.constants or n in state.sizes for n in node.input):
            return None
        results = symbolic.evaluate(node, [state.sizes.get(n, state.constants.get(n)) if n else None for n in node.input])
        if results is None:
            return None
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        first = next(n for n in node.input if n in state.sizes)
        elem = attrs["to"] if node.op_type == "Cast" else state.size_types[first]
    else:
        return None
    for name, array in zip(node.output, results):
        if not name:
            continue
        if symbolic.is_symbolic(array):
            state.sizes[name], state.size_types[name] = array, elem
        else:
            dtype = np.bool_ if array.dtype == bool else helper.tensor_dtype_to_np_dtype(elem)
            state.constants[name] = array.astype(dtype)
    return []


def _keeps_codes(node: onnx.NodeProto, state: FoldedGraph) -> bool:
    """A DequantizeLinear of 2- or 4-bit constant codes read by one node, which then reads the codes: folded,
    its float result would take 8-16x their bytes (fusion computes it inside the reader's kernel)."""
    if node.op_type != "DequantizeLinear" or normalize_domain(node.domain) != "" or node.input[0] not in state.constants:
        return False
    codes = state.constants[node.input[0]].dtype
    if codes.name not in _SUB_BYTE_NAMES:
        return False
    readers = sum(name == node.output[0] for n in state.nodes for name in n.input)
    return readers + sum(o.name == node.output[0] for o in state.outputs) == 1


def _block_dequantize(node: onnx.NodeProto, state: FoldedGraph, names: NameSource) -> onnx.NodeProto:
    """``node`` (see ``_keeps_codes``) as tilec.BlockDequantize, its zero point folded into the offsets."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    scale = np.asarray(state.constants[node.input[1]])
    zero = (np.asarray(state.constants[node.input[2]]).astype(np.float32) if len(node.input) > 2 and node.input[2]
            else np.zeros(scale.shape, np.float32))
    offset_name = names.fresh(f"{node.input[0]}_offsets")
    state.constants[offset_name] = (-zero * scale.astype(np.float32)).astype(scale.dtype)
    state.opsets.setdefault(PHI_DOMAIN, 1)
    to = attrs.get("output_dtype") or helper.np_dtype_to_tensor_dtype(scale.dtype)
    return helper.make_node("BlockDequantize", [node.input[0], node.input[1], offset_name], [node.output[0]],
                            name=node.name, domain=PHI_DOMAIN, axis=attrs.get("axis", 1),
                            block_size=attrs.get("block_size", 0), to=to)


_SUB_BYTE_NAMES = frozenset(d.value for d in DType if d.elements_per_byte > 1)


def _try_evaluate(node: onnx.NodeProto, state: FoldedGraph) -> list[np.ndarray] | None:
    inputs = [state.constants[n] if n else None for n in node.input]
    input_numels = [a.size for a in inputs if a is not None]
    planned = [_planned_size(state.types.get(name)) for name in node.output if name]
    if not fold_allowed(input_numels, [p for p in planned if p is not None]):
        return None
    try:
        results = evaluate_node(node, inputs, state.opsets)
    except Exception:  # noqa: BLE001 - the reference lacks the op/form: keep the node for the lowering
        return None
    if any(r is None for r, name in zip(results, node.output) if name):
        return None
    # Inference may not have known every output's shape: hold the actual results to the same rule.
    if not fold_allowed(input_numels, [(r.size, r.nbytes) for r in results if r is not None]):
        return None
    return [r if r is None or not name else _as_inferred_dtype(r, state.types.get(name))
            for r, name in zip(results, node.output)]


def _as_inferred_dtype(array: np.ndarray, inferred: onnx.TypeProto | None) -> np.ndarray:
    """Cast to the element type shape inference promised, should the reference deviate from the spec."""
    if inferred is None or inferred.WhichOneof("value") != "tensor_type" or not inferred.tensor_type.elem_type:
        return array
    expected = helper.tensor_dtype_to_np_dtype(inferred.tensor_type.elem_type)
    return array if array.dtype == expected else array.astype(expected)


def _planned_size(inferred: onnx.TypeProto | None) -> tuple[int, int] | None:
    """(elements, bytes) of a tensor of the inferred type; None if its shape or element size is unknown."""
    shape = static_shape(inferred) if inferred is not None else None
    if shape is None or not inferred.tensor_type.elem_type:
        return None
    numel = int(np.prod(shape, dtype=np.int64))
    itemsize = helper.tensor_dtype_to_np_dtype(inferred.tensor_type.elem_type).itemsize
    return numel, numel * itemsize


def _drop_unused_constants(state: FoldedGraph) -> None:
    """Forget constants nothing reads any more (inputs of folded nodes), to keep memory and inference small."""
    used = {o.name for o in state.outputs}
    for node in state.nodes:
        used |= {n for n in node.input if n}
        for attr in node.attribute:
            for sub in graph_attrs(attr):
                used |= outer_names(sub)
    for name in [n for n in state.constants if n not in used]:
        del state.constants[name]
    for name in [n for n in state.sizes if n not in used]:
        del state.sizes[name], state.size_types[name]


# --- the node evaluator ---------------------------------------------------------------


def fold_allowed(input_numels: Sequence[int], outputs: Sequence[tuple[int, int]]) -> bool:
    """Whether a node whose constant inputs hold ``input_numels`` elements may become constants of
    ``outputs`` (elements, bytes) each.

    An output may take up to :data:`FOLD_LIMIT_BYTES`, or any size if it has no more elements than
    the inputs together (a Cast, Transpose or DequantizeLinear of a weight folds at any size); a
    larger one (a fill or broadcast to an activation's shape) would make compile memory and the
    weights grow with run-time tensor sizes, so the node stays for the lowering.
    """
    budget = sum(input_numels)
    return all(nbytes <= FOLD_LIMIT_BYTES or numel <= budget for numel, nbytes in outputs)


def is_foldable(op_type: str, domain: str, has_subgraph: bool) -> bool:
    """Whether a node with all-constant inputs may be evaluated at compile time."""
    return normalize_domain(domain) in _FOLDABLE_DOMAINS and op_type not in RANDOM_OPS and not has_subgraph


def evaluate_node(node: onnx.NodeProto, inputs: Sequence[np.ndarray | None],
                  opsets: Mapping[str, int]) -> list[np.ndarray | None]:
    """Run one node with the ONNX reference implementation; one array per output (None where omitted).

    Raises whatever the reference raises; callers treat that as "cannot fold".
    A non-tensor result (a sequence, a map) raises TypeError. Casts into the narrow types are
    computed by :mod:`narrow_cast` instead, so folded and run-time conversions agree.
    """
    narrow = _narrow_cast_target(node, inputs)
    if narrow is not None:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        round_mode = attrs.get("round_mode", b"up")
        return [narrow_cast(inputs[0], narrow, bool(attrs.get("saturate", 1)),
                            round_mode.decode() if isinstance(round_mode, bytes) else round_mode)]
    feeds: dict[str, np.ndarray] = {}
    in_names: list[str] = []
    graph_ins: list[onnx.ValueInfoProto] = []
    for i, array in enumerate(inputs):
        if array is None:
            in_names.append("")
            continue
        name = f"in{i}"
        array = np.asarray(array)
        in_names.append(name)
        feeds[name] = array
        graph_ins.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype),
                                                       list(array.shape)))
    out_names = [f"out{i}" if n else "" for i, n in enumerate(node.output)]
    single = onnx.NodeProto()
    single.CopyFrom(node)
    del single.input[:], single.output[:]
    single.input.extend(in_names)
    single.output.extend(out_names)
    graph = helper.make_graph([single], "fold", graph_ins,
                              [helper.make_value_info(n, onnx.TypeProto()) for n in out_names if n])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in
                                                    _reference_opsets(node, opsets).items()])
    results = iter(ReferenceEvaluator(model).run(None, feeds))
    outputs: list[np.ndarray | None] = []
    for name in out_names:
        if not name:
            outputs.append(None)
            continue
        result = next(results)
        if not isinstance(result, (np.ndarray, np.generic)):
            raise TypeError(f"{node.op_type} produced a {type(result).__name__}, not a tensor")
        outputs.append(np.asarray(result))
    return outputs


def _reference_opsets(node: onnx.NodeProto, opsets: Mapping[str, int]) -> Mapping[str, int]:
    """The opsets to evaluate ``node`` under: onnx's reference implements DequantizeLinear from opset 19
    only, which means the same as 13's for the types 13 allows (19 added float8 inputs)."""
    if node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx") and 13 <= opsets.get("", 0) < 19:
        return {**opsets, "": 19}
    return opsets


def _narrow_cast_target(node: onnx.NodeProto, inputs: Sequence[np.ndarray | None]) -> DType | None:
    """The narrow type a Cast / CastLike of a numeric constant converts into; None for any other node."""
    if node.op_type not in ("Cast", "CastLike") or normalize_domain(node.domain) != "" or inputs[0] is None:
        return None
    source = np.asarray(inputs[0]).dtype
    if source.kind not in "biuf" and source.name not in _NARROW_NAMES:
        return None  # strings keep the reference's parsing
    if node.op_type == "Cast":
        to = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "to"), None)
        return DType.from_onnx(to) if to in _NARROW_ONNX else None
    like = np.asarray(inputs[1]).dtype if len(inputs) > 1 and inputs[1] is not None else None
    return DType.from_numpy(like) if like is not None and like.name in _NARROW_NAMES else None


_NARROW_ONNX = frozenset(d.onnx for d in NARROW_TARGETS)
_NARROW_NAMES = frozenset(d.value for d in NARROW_TARGETS)


# --- the graph-IR front of the evaluator ------------------------------------------------


def evaluate_ir_node(node: Node, opsets: Mapping[str, int]) -> list[tuple[DType, np.ndarray] | None] | None:
    """Evaluate a graph-IR node whose inputs are all constants; None if it must not or cannot be folded.

    Results come in IR form (see :func:`ir_constant`).
    """
    has_subgraph = any(isinstance(v, onnx.GraphProto) or (isinstance(v, list) and v and isinstance(v[0], onnx.GraphProto))
                       for v in node.attrs.values())
    if not is_foldable(node.op_type, node.domain, has_subgraph):
        return None
    if any(v is not None and (not v.is_const or v.const.dtype == object) for v in node.inputs):
        return None  # a size value is computed at run time (the frontend folded what it could)
    if not fold_allowed([v.const.size for v in node.inputs if v is not None],
                        [(v.type.numel, v.type.nbytes) for v in node.outputs]):
        return None
    inputs = [None if v is None else onnx_array(v.dtype, v.const) for v in node.inputs]
    try:
        proto = node_to_proto(node)
        results = evaluate_node(proto, inputs, {**opsets, normalize_domain(node.domain): node.opset})
        return [None if r is None else ir_constant(r) for r in results]
    except Exception:  # noqa: BLE001 - unknown to the reference, or an unsupported result dtype
        return None


def ir_constant(array: np.ndarray) -> tuple[DType, np.ndarray]:
    """The IR type and storage of a constant: bfloat16 is carried as uint16 bits, the other ml_dtypes
    types (float8, float4, int4, int2) as themselves, strings (ONNX's UTF-8 bytes) as code points on one
    more axis (see compiler/dtypes.py).

    Raises ValueError for element types the IR has no DType for.
    """
    array = np.asarray(array)
    if array.dtype == np.dtype(ml_dtypes.bfloat16):
        return DType.BF16, array.view(np.uint16)
    if array.dtype.kind in "OSU" and all(isinstance(v, (str, bytes)) for v in array.reshape(-1)):
        return DType.STRING, string_codes(decoded_strings(array))
    return DType.from_numpy(array.dtype), array


def onnx_array(dtype: DType, array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`ir_constant`: the numpy array ONNX tools expect."""
    return array.view(ml_dtypes.bfloat16) if dtype is DType.BF16 else array


def node_to_proto(node: Node) -> onnx.NodeProto:
    """A graph-IR node as a NodeProto (value names as they are, attributes back to protobuf)."""
    proto = helper.make_node(node.op_type, ["" if v is None else v.name for v in node.inputs],
                             [v.name for v in node.outputs], name=node.name, domain=node.domain)
    for key, value in node.attrs.items():
        proto.attribute.append(_make_attribute(node, key, value))
    return proto


def graph_to_model(graph: Graph) -> onnx.ModelProto:
    """The graph IR as an ONNX model, constants as initializers: for tests and debugging dumps."""
    def info(v: Value) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(v.name, v.dtype.onnx, list(v.shape))

    initializers = [numpy_helper.from_array(onnx_array(v.dtype, v.const), v.name) for v in graph.constants()]
    proto = helper.make_graph([node_to_proto(n) for n in graph.nodes], graph.name, [info(v) for v in graph.inputs],
                              [info(v) for v in graph.outputs], initializers)
    opsets = [helper.make_opsetid(d, v) for d, v in graph.opsets.items()]
    # The oldest IR version that can express these opsets (tilec's own domain counts for none), so that older
    # runtimes accept the dump.
    ir_version = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    return helper.make_model(proto, opset_imports=opsets, ir_version=max(ir_version, 4))


def _make_attribute(node: Node, key: str, value: Any) -> onnx.AttributeProto:
    if isinstance(value, np.ndarray):
        return helper.make_attribute(key, numpy_helper.from_array(value))
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        return helper.make_attribute(key, [numpy_helper.from_array(v) for v in value])
    if isinstance(value, list) and not value:
        # An empty list carries no element type; the schema knows it.
        schema = onnx.defs.get_schema(node.op_type, node.opset, node.domain)
        return helper.make_attribute(key, [], attr_type=schema.attributes[key].type)
    return helper.make_attribute(key, value)
