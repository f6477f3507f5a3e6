"""Stage 1c: the folded ONNX graph -> graph IR.

Contract of :func:`import_graph`: given a :class:`FoldedGraph`, return a
:class:`~compiler.graph.ir.Graph` whose

* nodes are in topological order, each with a unique non-empty name, plain
  Python attributes (strings as ``str``, tensors as numpy arrays, subgraphs
  as ``GraphProto``), ``None`` for omitted optional inputs, and ``opset`` set
  from the model's import for the node's domain ('ai.onnx' is spelled '');
* values all have a known ``TensorType``: each dimension an int or, where
  the model leaves it symbolic, a size expression over the size variables
  named by the graph inputs' ``dim_param`` s (``Graph.sizes``, with the
  ranges ``dim_bounds`` gives them); constants the graph reads are
  Values with ``const`` set (bfloat16 as uint16 bits, the float8 / float4 /
  int4 / int2 types as ml_dtypes arrays); unused ones are dropped;
* inputs are the real graph inputs (never initializers), outputs the ONNX
  outputs under their ONNX names.

A dimension that is still unknown raises ``ShapeError`` naming the value
(and, for a graph input, the dimension and how to bind it); so does a
negative dimension (what onnx's inference makes of a kernel larger than its
padded input) and a value of more than :data:`MAX_TENSOR_BYTES`. Operator
support is not checked here: the lowering does that.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.dtypes import DType
from compiler.errors import CompileError, DataDependentError, ShapeError, UnsupportedOpError, describe_node
from compiler.frontend import maps, strings
from compiler.frontend.folding import FoldedGraph, ir_constant
from compiler.frontend.loader import input_dim_names, normalize_domain, topological_sort
from compiler.frontend.symbolic import SymbolicDims
from compiler.graph.ir import PHI_DOMAIN, Graph, Node, TensorType, Value
from compiler.loopir.sizes import SizeRange, SizeVar, same_size


#: No value may take more bytes: a user process of x86-64 or aarch64 Linux has 2^47 bytes of address space,
#: and int64 index arithmetic must not overflow. Giant pads or broadcasts reach such sizes in a few nodes.
MAX_TENSOR_BYTES = 1 << 47


def import_graph(folded: FoldedGraph, dim_bounds: Mapping[str, SizeRange] | None = None) -> Graph:
    """Build the graph IR from ``folded`` (see the module docstring)."""
    _check_input_types(folded.inputs)
    sizes = _size_ranges(folded.inputs, dim_bounds or {})
    sizes.update((name, SizeRange.of_value(source)) for name, source in folded.value_sources.items())
    values: dict[str, Value] = {}
    inputs = [_input_value(vi) for vi in folded.inputs]
    values.update((v.name, v) for v in inputs)
    ordered = topological_sort(folded.nodes, [*values, *folded.constants])
    if ordered is None:
        raise CompileError(f"graph '{folded.name}' has a cycle or reads a value nothing defines")
    nodes: list[Node] = []
    node_names = _unique_node_names(ordered)
    for proto, name in zip(ordered, node_names):
        nodes.append(_import_node(proto, name, folded, values, folded.dims))
    outputs = [_lookup(o.name, folded, values, reader=f"graph output '{o.name}'") for o in folded.outputs]
    conditions = {name: _lookup(name, folded, values, reader=f"an If's condition '{name}'")
                  for name in sorted(folded.conditions)}
    for k, keys in folded.output_maps.items():
        if not outputs[k].dtype.is_float or len(outputs[k].shape) != 2 or outputs[k].shape[1] != len(keys):
            raise ShapeError(f"graph output '{outputs[k].name}': ZipMap takes a float [N, {len(keys)}] tensor for its "
                             f"{len(keys)} keys, got {outputs[k].type}")
    graph = Graph(folded.name or "main", nodes, inputs, outputs, dict(folded.opsets), sizes, conditions,
                  dict(folded.output_maps))
    graph.loops = {name: loop for name, loop in folded.run_loops.items() if any(name in n.loops for n in nodes)}
    for node in nodes:
        if node.op_type == "LoopEnd" and node.domain == PHI_DOMAIN:
            _check_loop_states(node)
    return graph


def _check_loop_states(end: Node) -> None:
    """A loop's state keeps its shape from one iteration to the next: its buffer is sized once."""
    count = end.attrs["states"]
    for k, (state, update) in enumerate(zip(end.inputs[:count], end.inputs[count:2 * count])):
        if state.dtype is not update.dtype or len(state.shape) != len(update.shape) or not all(
                same_size(a, b) for a, b in zip(state.shape, update.shape)):
            raise ShapeError(f"loop-carried value {k} ('{state.name}') is {state.type} going into an iteration and "
                             f"{update.type} coming out; tilec runs loops whose carried values keep their type "
                             "and shape")


def _size_ranges(inputs: Sequence[onnx.ValueInfoProto], dim_bounds: Mapping[str, SizeRange]) -> dict[str, SizeRange]:
    """Every symbolic dimension of the graph inputs, in order of appearance, with its range."""
    names = input_dim_names(inputs)
    unknown = sorted(set(dim_bounds) - set(names))
    if unknown:
        raise ShapeError(f"dim_bounds names {', '.join(repr(n) for n in unknown)}, which no graph input has as a "
                         f"symbolic dimension (symbolic dimensions: {', '.join(repr(n) for n in names) or 'none'})")
    ranges = {name: dim_bounds.get(name, SizeRange(0 if maps.is_entries_dim(name) else 1)) for name in names}
    # numpy gives even an array of empty strings one code point per element
    ranges.update((strings.input_chars(vi.name).name, SizeRange()) for vi in inputs
                  if vi.type.tensor_type.elem_type == onnx.TensorProto.STRING)
    return ranges


# --- values ---------------------------------------------------------------------------


def _check_input_types(inputs: Sequence[onnx.ValueInfoProto]) -> None:
    """Every graph input must be a tensor of known rank whose dims are ints or named; name each bad one."""
    problems: list[str] = []
    for vi in inputs:
        kind = vi.type.WhichOneof("value")
        if kind not in ("tensor_type", None):  # not a shape problem: no binding helps
            raise UnsupportedOpError(f"graph input '{vi.name}' is a {kind.removesuffix('_type').replace('_', ' ')}; "
                                     "tilec compiles models whose inputs are tensors")
        if kind == "tensor_type" and not vi.type.tensor_type.elem_type:  # was: "could not be inferred"
            raise ShapeError(f"graph input '{vi.name}' declares no element type")
        dims = _dims(vi.type)
        if dims is None:
            problems.append(f"graph input '{vi.name}' has no declared shape; bind it with "
                            f"input_shapes={{'{vi.name}': (...)}} / --input-shape {vi.name}=AxB")
            continue
        unknown = [i for i, d in enumerate(dims) if d == "?"]
        if unknown:  # the loader names unnamed dims, so this is a bug guard
            raise CompileError(f"graph input '{vi.name}' has unnamed dimension(s) {unknown}")
    if problems:
        raise ShapeError("tilec needs the rank of every input: " + "; ".join(problems))


def _dims(t: onnx.TypeProto) -> list[int | str] | None:
    """Dimensions of a tensor type: ints where known, the symbol (or '?') where not; None if no shape."""
    if t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.tensor_type.shape.dim]


def _input_value(vi: onnx.ValueInfoProto) -> Value:
    label = f"graph input '{vi.name}'"
    t = _tensor_type(label, vi.type)
    if t.dtype is DType.STRING:
        t = TensorType(t.dtype, (*t.shape, strings.input_chars(vi.name)))
    return Value(vi.name, _check_extent(label, t, "as the model declares it"))


def _check_extent(label: str, t: TensorType,
                  why: str = "its inputs are too small for what the node's attributes ask (a kernel or "
                             "dilation larger than the padded input)") -> TensorType:
    """``t`` if its dimensions are non-negative and it fits in :data:`MAX_TENSOR_BYTES`, else a ShapeError."""
    negative = [i for i, d in enumerate(t.shape) if isinstance(d, int) and d < 0]
    if negative:
        raise ShapeError(f"{label} has shape {list(t.shape)} with negative dimension(s) "
                         f"{', '.join(map(str, negative))}: {why}")
    if not t.is_static:
        return t  # the lowering bounds symbolic sizes by their ranges
    numel = 1
    for d in t.shape:
        numel *= d  # Python ints: numpy's int64 product would wrap around
    nbytes = t.dtype.nbytes(numel)
    if nbytes > MAX_TENSOR_BYTES:
        raise ShapeError(f"{label} has shape {list(t.shape)} of {t.dtype.value}: {nbytes} bytes, more than any "
                         f"process can address ({MAX_TENSOR_BYTES} bytes)")
    return t


def _tensor_type(label: str, t: onnx.TypeProto, sizes: SymbolicDims | None = None) -> TensorType:
    """A TensorType, or a ShapeError/CompileError saying what is missing; ``label`` names the value.

    A named dim is the size ``sizes`` knows it by (None: a graph input, whose named dims are the size
    variables); any other name is onnx's for a size it could not infer (``unk__3``): unknown."""
    kind = t.WhichOneof("value")
    if kind != "tensor_type":
        raise UnsupportedOpError(f"{label} is a {kind or 'value of unknown type'}; tilec supports tensors only")
    dims = _dims(t)
    if t.tensor_type.elem_type == 0 or dims is None:
        raise ShapeError(f"the type of {label} could not be inferred at compile time")
    shape = [d if isinstance(d, int) else SizeVar(d) for d in dims]
    if sizes is not None:
        shape = [d if isinstance(d, int) else sizes.size_of(d) for d in dims]
        dims = [d if s is not None else "?" for d, s in zip(dims, shape)]
    unknown = [i for i, d in enumerate(dims) if d == "?"]
    if unknown:
        raise ShapeError(f"{label} has shape [{', '.join(map(str, dims))}] whose dimension(s) "
                         f"{', '.join(map(str, unknown))} stay unknown after shape inference and constant "
                         "folding (a data-dependent size, or a symbolic one tilec cannot express yet); bind the "
                         "symbolic input dimensions with input_shapes= / --input-shape")
    try:
        dtype = DType.from_onnx(t.tensor_type.elem_type)
    except KeyError as exc:
        raise CompileError(f"{label}: {exc.args[0]}") from None
    return TensorType(dtype, tuple(shape))


def _const_value(name: str, array: np.ndarray) -> Value:
    try:
        dtype, data = ir_constant(array)
    except ValueError:
        raise CompileError(f"constant '{name}' has element type {array.dtype}, which tilec does not support") from None
    return Value(name, TensorType(dtype, tuple(data.shape)), const=data)


def _lookup(name: str, folded: FoldedGraph, values: dict[str, Value], reader: str) -> Value:
    """The Value called ``name``, creating constants on first use."""
    if name not in values:
        if name in folded.sizes:
            # A size value (symbolic.py): a constant whose elements are size expressions, computed at run time
            # by the lowering where a kernel reads it.
            dtype = DType.from_onnx(folded.size_types[name])
            values[name] = Value(name, TensorType(dtype, tuple(folded.sizes[name].shape)), const=folded.sizes[name])
        elif name not in folded.constants:
            raise CompileError(f"{reader} reads '{name}', which nothing defines")
        else:
            values[name] = _const_value(name, folded.constants[name])
    return values[name]


# --- nodes ----------------------------------------------------------------------------


def _unique_node_names(nodes: Sequence[onnx.NodeProto]) -> list[str]:
    """Node names for diagnostics and kernel names: empty ones generated, duplicates suffixed."""
    taken = {n.name for n in nodes if n.name}
    seen: set[str] = set()
    names: list[str] = []
    for index, node in enumerate(nodes):
        base = node.name or f"{node.op_type}_{index}"
        name, k = base, 1
        while name in seen or (name != node.name and name in taken):
            name, k = f"{base}__{k}", k + 1
        seen.add(name)
        names.append(name)
    return names


def _import_node(proto: onnx.NodeProto, name: str, folded: FoldedGraph, values: dict[str, Value],
                 sizes: SymbolicDims) -> Node:
    domain = normalize_domain(proto.domain)
    opset = folded.opsets.get(domain, 0)
    node = Node(proto.op_type, name, [], [], _attributes(proto), domain, opset,
                speculative=proto.name in folded.speculative, guard=folded.guards.get(proto.name))
    if proto.name in folded.phis:
        node.attrs["predicate"] = folded.phis[proto.name]
    node.loops = folded.in_loops.get(proto.name, ())
    if domain == PHI_DOMAIN and "loop" in node.attrs:
        node.attrs["run_loop"] = folded.run_loops[node.attrs["loop"]]
    reader = describe_node(proto.op_type, name, opset, domain)
    node.inputs = [None if not n else _lookup(n, folded, values, reader) for n in proto.input]
    strings.check_string_operands(node)
    outputs = list(proto.output)
    while outputs and not outputs[-1]:
        outputs.pop()  # trailing omitted outputs simply do not exist in the IR
    for index, out in enumerate(outputs):
        if not out:
            # An omitted output before a present one keeps its position under a private name; it
            # is never read, and the placeholder type keeps the every-value-is-typed invariant.
            out = f"{name}__unused{index}"
            values[out] = Value(out, TensorType(DType.F32, (0,)), producer=node)
        else:
            t = folded.types.get(out)
            label = f"value '{out}' (output {index} of {reader})"
            try:
                if t is None:
                    raise ShapeError(f"the type of {label} could not be inferred at compile time")
                t = _tensor_type(label, t, sizes)
                if t.dtype is DType.STRING:
                    t = TensorType(t.dtype, (*t.shape, strings.output_chars(node, index)))
                values[out] = Value(out, t, producer=node)
            except ShapeError as exc:
                # Operands that fix a shape (axes, sizes, counts, Range limits) are integer tensors or
                # scalars; the node's data operands are neither.
                runtime = tuple(v.name for v in node.inputs if v is not None and v.const is None
                                and (not v.type.dtype.is_float or v.type.numel in (0, 1)))
                hint = (f"; it depends on the run-time value of {', '.join(repr(n) for n in runtime)} "
                        "(graph inputs can be fixed with constant_inputs= / --constant-input)") if runtime else ""
                raise DataDependentError(f"{exc}{hint}", values=runtime) from None
            _check_extent(label, values[out].type)
        node.outputs.append(values[out])
    strings.move_code_points(node)
    return node


def _attributes(proto: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: _attribute_value(a) for a in proto.attribute}


def _attribute_value(attr: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attr)
    if attr.type == onnx.AttributeProto.STRING:
        return value.decode("utf-8")
    if attr.type == onnx.AttributeProto.STRINGS:
        return [v.decode("utf-8") for v in value]
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(value)
    if attr.type == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(v) for v in value]
    if isinstance(value, (list, tuple)):
        return list(value)
    return value
