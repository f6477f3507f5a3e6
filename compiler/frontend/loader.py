"""Stage 1a: read an ONNX model and bring it into canonical form.

Contract of :func:`load_model`: given a path, serialized bytes or a
``ModelProto``, return a ``ModelProto`` that

* passed ``onnx.checker`` (nodes topologically sorted first, so a file listing
  its nodes out of order is accepted; onnxruntime's own default-domain ops,
  ``SimplifiedLayerNormalization`` and ``LayerNormalization`` below opset 17,
  moved to domain ``com.microsoft`` first, where the frontend expands them;
  the per-axis ``axis`` of Quantize/DequantizeLinear that onnxruntime's
  quantizer writes into models below opset 13 is read as opset 13's, with a
  :class:`TilecWarning` saying so),
* has the user's ``input_shapes`` bound onto its graph inputs, and the graph
  inputs named in ``constant_inputs`` turned into initializers holding the given
  values (for inputs that fix shapes: axes, sizes, pads),
* uses default-domain opset :data:`CANONICAL_OPSET` when the model was older
  and ``onnx.version_converter`` could convert it (otherwise the original
  opset is kept: lowerings consult ``Node.opset``),
* carries shape-inference results in ``graph.value_info`` (onnx's, corrected
  where they depart from the spec: :mod:`.shape_fixes`),
* holds only tensors whose data fits their element type and shape (initializers
  and tensor attributes, subgraphs and functions included), and no node of the
  ONNX domain that ONNX's own shape inference rejects for the types of its
  inputs (an axis out of range, negative pads, a perm that is no permutation,
  incompatible broadcast dimensions), or whose output types contradict it;
  onnx's model-wide inference skips such nodes silently, so the declared types
  would stand in for the ones the node cannot have.

Every failure to read the model is a ``ModelLoadError`` whose one-line
message names the source; binding errors are ``ShapeError``.

:func:`infer_types` is the one shape-inference entry point; the folding stage
calls it again after every round. It never serializes large constants: they
reach ONNX's inference as typed graph inputs, so models with big (or folded)
weights stay cheap to re-infer and below protobuf's 2 GB limit.
"""

from __future__ import annotations

import heapq
import os
import pathlib
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference, version_converter

from compiler.errors import ModelLoadError, ShapeError, TilecWarning, describe_node
from compiler.frontend.shape_fixes import corrected_types

ModelSource = str | os.PathLike | bytes | onnx.ModelProto
InputShapes = Mapping[str, Sequence[int]]
ConstantInputs = Mapping[str, np.ndarray]

#: Default-domain opset older models are converted to.
CANONICAL_OPSET = 17

#: Constants with more elements than this reach shape inference as typed inputs
#: only: their values never matter for shapes (shape tensors are tiny).
_INFERENCE_VALUE_LIMIT = 4096

#: The IR version of the throw-away models handed to shape inference; recent
#: enough that initializers need not be listed as graph inputs.
_PROXY_IR_VERSION = 8


def load_model(model: ModelSource, input_shapes: InputShapes | None = None,
               constant_inputs: ConstantInputs | None = None) -> onnx.ModelProto:
    """Read, check, bind, convert and shape-infer ``model`` (see the module docstring)."""
    proto, source = read_model(model)
    sort_graph(proto.graph)
    check_order(proto.graph, source)
    claim_ort_default_domain_ops(proto)
    early_axes = take_early_quantizer_axes(proto)
    check_model(proto, source)
    check_tensors(proto, source)
    bind_input_shapes(proto.graph, input_shapes or {})
    name_unnamed_dims(proto.graph)
    bind_input_values(proto.graph, constant_inputs or {})
    proto = convert_opset(proto)
    if early_axes:
        restore_quantizer_axes(proto, early_axes, source)
    types = infer_types(proto.graph, opsets_of(proto), constants=None)
    check_node_types(proto, types, source)
    check_output_types(proto, types, source)
    _store_value_info(proto.graph, types)
    return proto


# --- reading ----------------------------------------------------------------------


def read_model(model: ModelSource) -> tuple[onnx.ModelProto, str]:
    """Return the model and a description of where it came from, for messages."""
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # binding and conversion must not touch the caller's object
        return copy, f"ONNX model '{model.graph.name or '<unnamed>'}'"
    if isinstance(model, (bytes, bytearray, memoryview)):
        source = f"ONNX model from {len(model)} bytes"
        try:
            return onnx.load_model_from_string(bytes(model)), source
        except Exception as exc:  # noqa: BLE001 - protobuf and onnx raise assorted types for bad bytes
            raise ModelLoadError(f"{source}: not an ONNX model ({_one_line(exc)})") from exc
    if isinstance(model, (str, os.PathLike)):
        path = pathlib.Path(model)
        source = f"model file '{path}'"
        if not path.exists():
            raise ModelLoadError(f"{source}: no such file")
        if not path.is_file():
            raise ModelLoadError(f"{source}: not a regular file")
        try:
            return onnx.load(str(path)), source
        except OSError as exc:  # unreadable file, or missing external-data file
            raise ModelLoadError(f"{source}: cannot be read ({_one_line(exc)})") from exc
        except Exception as exc:  # noqa: BLE001 - protobuf and onnx raise assorted types for bad bytes
            raise ModelLoadError(f"{source}: not an ONNX model ({_one_line(exc)})") from exc
    raise ModelLoadError(f"cannot load a model from a {type(model).__name__}: pass a path, bytes or onnx.ModelProto")


#: onnxruntime registers these in the default domain, where ONNX has no such op before the given opset
#: (None: never); its transformer optimizer writes them there, which fails the checker.
_ORT_DEFAULT_DOMAIN_OPS: dict[str, int | None] = {"SimplifiedLayerNormalization": None, "LayerNormalization": 17}
ORT_DOMAIN = "com.microsoft"


def claim_ort_default_domain_ops(model: onnx.ModelProto) -> None:
    """Move onnxruntime's default-domain ops that ONNX lacks at the model's opset to ``com.microsoft``."""
    opset = opsets_of(model).get("", 0)
    ops = {op for op, since in _ORT_DEFAULT_DOMAIN_OPS.items() if since is None or opset < since}

    def claim(graph: onnx.GraphProto) -> bool:
        moved = False
        for node in graph.node:
            if normalize_domain(node.domain) == "" and node.op_type in ops:
                node.domain = ORT_DOMAIN
                moved = True
            for attr in node.attribute:
                for sub in graph_attrs(attr):
                    moved = claim(sub) or moved
        return moved

    if claim(model.graph) and ORT_DOMAIN not in opsets_of(model):
        model.opset_import.append(helper.make_opsetid(ORT_DOMAIN, 1))


_QUANTIZERS = ("QuantizeLinear", "DequantizeLinear")


def take_early_quantizer_axes(model: onnx.ModelProto) -> dict[str, int]:
    """Remove the ``axis`` attribute from Quantize/DequantizeLinear nodes of a model below opset 13 (in place);
    returns it per node (keyed by the node's output).

    onnxruntime's quantizer writes per-channel scales with ``axis`` whatever the model's opset (onnxruntime
    1.32 itself then refuses the file); the attribute (per-axis quantization) exists from opset 13 on, with
    one meaning, so the checker is shown the node without it and the model gets it back once converted.
    """
    if opsets_of(model).get("", CANONICAL_OPSET) >= 13:
        return {}
    axes = {}
    for node in model.graph.node:
        if node.op_type in _QUANTIZERS and node.domain in ("", "ai.onnx"):
            kept = [a for a in node.attribute if a.name != "axis"]
            if len(kept) < len(node.attribute):
                axes[node.output[0]] = next(a.i for a in node.attribute if a.name == "axis")
                del node.attribute[:]
                node.attribute.extend(kept)
    return axes


def restore_quantizer_axes(model: onnx.ModelProto, axes: Mapping[str, int], source: str) -> None:
    """Give the converted model's quantizers back the ``axis`` that :func:`take_early_quantizer_axes` took."""
    version = opsets_of(model).get("")
    if version is None or version < 13:
        raise ModelLoadError(f"{source}: {len(axes)} QuantizeLinear/DequantizeLinear node(s) use attribute 'axis' "
                             f"(per-axis quantization, opset 13) in an opset-{version} model that could not be "
                             f"converted to opset {CANONICAL_OPSET}")
    for node in model.graph.node:
        if node.op_type in _QUANTIZERS and node.output[0] in axes:
            node.attribute.append(helper.make_attribute("axis", axes[node.output[0]]))
    warnings.warn(f"{source}: read the 'axis' attribute of {len(axes)} QuantizeLinear/DequantizeLinear node(s) "
                  f"below opset 13 as opset 13's per-axis quantization (what onnxruntime's quantizer meant by it)", TilecWarning,
                  stacklevel=2)


def check_model(model: onnx.ModelProto, source: str) -> None:
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise ModelLoadError(f"{source}: invalid ONNX model: {_one_line(exc)}") from exc
    # The checker takes any opset above the newest it knows (each op's latest schema stands in); onnxruntime
    # refuses them, and what a future opset means is not known to anyone here.
    newest = {"": onnx.defs.onnx_opset_version(), "ai.onnx.ml": onnx.defs.onnx_ml_opset_version()}
    for domain, version in opsets_of(model).items():
        if domain in newest and version > newest[domain]:
            raise ModelLoadError(f"{source}: imports opset {version} of domain '{domain or 'ai.onnx'}', newer than "
                                 f"the newest this onnx ({onnx.__version__}) defines ({newest[domain]})")
    # The checker lets an IR < 3 model import no opset at all; inference then fails on its first node.
    local = {normalize_domain(f.domain) for f in model.functions}
    used = {normalize_domain(n.domain): n.op_type for n in _graph_nodes(model.graph)}
    missing = sorted(used.keys() - opsets_of(model).keys() - local)
    if missing:
        raise ModelLoadError(f"{source}: invalid ONNX model: it imports no opset for domain "
                             f"'{missing[0] or 'ai.onnx'}', which its node {used[missing[0]]} is from")


def _graph_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in graph_attrs(attr):
                yield from _graph_nodes(sub)


# --- tensor data ------------------------------------------------------------------

#: Bits per element of the ONNX types stored packed below a byte (raw_data, and int32_data entries of a
#: byte each); the 6-bit floats are packed in raw_data only, one int32_data entry per element.
_PACKED_BITS = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4, onnx.TensorProto.FLOAT4E2M1: 4,
                onnx.TensorProto.INT2: 2, onnx.TensorProto.UINT2: 2}
_SIX_BIT = {onnx.TensorProto.FLOAT6E2M3, onnx.TensorProto.FLOAT6E3M2}
_COMPLEX = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}


def check_tensors(model: onnx.ModelProto, source: str) -> None:
    """Every tensor of the model (initializers, tensor attributes; subgraphs and functions too) has an ONNX
    element type and exactly the data its shape takes. The checker only refuses too little data; too much,
    or an unknown ``data_type``, made numpy fail deep inside the frontend (a reshape, a KeyError)."""
    for where, tensor in _model_tensors(model):
        problem = tensor_data_problem(tensor)
        if problem is not None:
            raise ModelLoadError(f"{source}: invalid ONNX model: {where}: {problem}")
    graph = model.graph
    for role, infos in (("graph input", graph.input), ("graph output", graph.output), ("value_info", graph.value_info)):
        for vi in infos:
            elem_type = vi.type.tensor_type.elem_type if vi.type.WhichOneof("value") == "tensor_type" else 0
            if elem_type and elem_type not in onnx.TensorProto.DataType.values():
                raise ModelLoadError(f"{source}: invalid ONNX model: {role} '{vi.name}' has elem_type {elem_type}, "
                                     "which is not an ONNX element type")


def tensor_data_problem(tensor: onnx.TensorProto) -> str | None:
    """What is wrong with ``tensor``'s element type or the amount of its data, or None."""
    data_type = tensor.data_type
    try:
        type_name = onnx.TensorProto.DataType.Name(data_type)
        np_dtype = helper.tensor_dtype_to_np_dtype(data_type)
    except (ValueError, KeyError):
        return f"data_type {data_type} is not an ONNX element type"
    if data_type == onnx.TensorProto.STRING or tensor.data_location == onnx.TensorProto.EXTERNAL:
        return None  # strings have no fixed size; external data is read (and checked) by onnx
    numel = 1
    for d in tensor.dims:
        numel *= int(d)  # Python ints: dims may claim more elements than int64 holds
    shape = f"shape [{', '.join(str(d) for d in tensor.dims)}] of {type_name}"
    if tensor.HasField("raw_data"):
        bits = _PACKED_BITS.get(data_type) or (6 if data_type in _SIX_BIT else 8 * np_dtype.itemsize)
        expected = -(-numel * bits // 8)
        if len(tensor.raw_data) != expected:
            return f"raw_data holds {len(tensor.raw_data)} bytes, but {shape} takes {expected}"
        return None
    field = helper.tensor_dtype_to_field(data_type)
    per_entry = 8 // _PACKED_BITS[data_type] if data_type in _PACKED_BITS else 1
    expected = -(-numel // per_entry) * (2 if data_type in _COMPLEX else 1)
    count = len(getattr(tensor, field))
    if count != expected:
        return f"{field} holds {count} values, but {shape} takes {expected}"
    return None


def _model_tensors(model: onnx.ModelProto) -> Iterable[tuple[str, onnx.TensorProto]]:
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node, f" (function '{function.name}')")


def _graph_tensors(graph: onnx.GraphProto) -> Iterable[tuple[str, onnx.TensorProto]]:
    where = f" (graph '{graph.name}')" if graph.name else ""
    for tensor in graph.initializer:
        yield f"initializer '{tensor.name}'{where}", tensor
    for node in graph.node:
        yield from _node_tensors(node, where)


def _node_tensors(node: onnx.NodeProto, where: str) -> Iterable[tuple[str, onnx.TensorProto]]:
    for attr in node.attribute:
        label = f"attribute '{attr.name}' of {node.op_type} '{node.name or '<unnamed>'}'{where}"
        if attr.type == onnx.AttributeProto.TENSOR:
            yield label, attr.t
        elif attr.type == onnx.AttributeProto.TENSORS:
            for k, tensor in enumerate(attr.tensors):
                yield f"{label}[{k}]", tensor
        for sub in graph_attrs(attr):
            yield from _graph_tensors(sub)


# --- node types -----------------------------------------------------------------------


def check_node_types(model: onnx.ModelProto, types: Mapping[str, onnx.TypeProto], source: str) -> None:
    """Ask ONNX's inference about each node of the ONNX domain on its own, with the types ``types`` gives
    its inputs (and the values of its small initializer inputs): a node it rejects (strict mode) makes the
    model invalid, and so does an output whose element type in ``types`` contradicts the node's.

    Model-wide inference (``infer_types``, non-strict) skips a node it rejects and lets the declared types
    of the node's outputs stand: a Conv whose pads are negative, a Concat whose axis is out of range
    compiled to code for shapes the node cannot have. onnxruntime refuses such models when it loads them.
    Nodes with subgraphs, of other domains, without an inference function or with an input of unknown
    type are left alone (their expansions and lowerings check them), and so are input types outside the
    schema's type constraints: tilec lowers some ops for more types than ONNX lists (bfloat16 Conv).
    """
    graph = model.graph
    opsets = opsets_of(model)
    opset_ids = [helper.make_opsetid(d, v) for d, v in opsets.items()]
    initializer_types = {t.name: helper.make_tensor_type_proto(t.data_type, list(t.dims)) for t in graph.initializer}
    small = {t.name: t for t in graph.initializer
             if t.data_location != onnx.TensorProto.EXTERNAL and int(np.prod(t.dims, dtype=object)) <= _INFERENCE_VALUE_LIMIT}
    for node in graph.node:
        domain = normalize_domain(node.domain)
        if domain != "" or any(graph_attrs(a) for a in node.attribute):
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opsets.get(domain, 1), domain)
        except onnx.defs.SchemaError:
            continue
        formal = schema.inputs
        for k, name in enumerate(node.input):
            param = formal[min(k, len(formal) - 1)] if formal else None
            # The checker refuses an empty name for a single input, not among variadic ones (Concat's).
            if not name and param is not None and param.option != onnx.defs.OpSchema.FormalParameterOption.Optional:
                raise ModelLoadError(f"{source}: invalid ONNX model: {_describe(node, opsets)}: input {k} "
                                     f"('{param.name}') is required, but its name is empty")
        if not schema.has_type_and_shape_inference_function:
            continue
        input_types = {n: initializer_types.get(n) or types.get(n) for n in node.input if n}
        _check_type_parameters(node, schema, input_types, opsets, source)
        if any(t is None for t in input_types.values()):
            continue
        try:
            outputs = shape_inference.infer_node_outputs(schema, node, input_types,
                                                         {n: small[n] for n in node.input if n in small},
                                                         opset_imports=opset_ids, ir_version=_PROXY_IR_VERSION)
        except onnx.checker.ValidationError:
            continue  # a type outside the schema's constraints (bfloat16 Conv): tilec's lowerings decide
        except shape_inference.InferenceError as exc:
            raise ModelLoadError(f"{source}: invalid ONNX model: {_describe(node, opsets)}: {_one_line(exc)}") from None
        for name, inferred in outputs.items():
            have = types.get(name)
            if (have is None or inferred.WhichOneof("value") != "tensor_type"
                    or have.WhichOneof("value") != "tensor_type"):
                continue
            want_elem, have_elem = inferred.tensor_type.elem_type, have.tensor_type.elem_type
            if want_elem and have_elem and want_elem != have_elem:
                raise ModelLoadError(
                    f"{source}: invalid ONNX model: {_describe(node, opsets)} computes '{name}' as "
                    f"{onnx.TensorProto.DataType.Name(want_elem)}, but the model declares it "
                    f"{onnx.TensorProto.DataType.Name(have_elem)}")


def _check_type_parameters(node: onnx.NodeProto, schema: onnx.defs.OpSchema,
                           input_types: Mapping[str, onnx.TypeProto | None], opsets: Mapping[str, int],
                           source: str) -> None:
    """Each input's element type must be of a kind (float, integer, bool, complex, string) its schema allows,
    and inputs bound to one type parameter (Add's A and B are both T) must have one element type.

    tilec lowers some ops for more precisions than their schemas list (bfloat16 Conv), so within a kind
    the lowerings decide; another kind reached code that cannot exist (exp of int64: invalid LLVM IR),
    and inputs of different types would meet in one kernel with nothing to convert them (the lowering
    failed with 'operand types differ')."""
    allowed = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    formal = schema.inputs
    bound: dict[str, tuple[str, int]] = {}
    for k, name in enumerate(node.input):
        t = input_types.get(name) if name else None
        if t is None or t.WhichOneof("value") != "tensor_type" or not t.tensor_type.elem_type or not formal:
            continue
        param = formal[min(k, len(formal) - 1)]
        elem = t.tensor_type.elem_type
        kinds = {_kind(text[len("tensor("):-1]) for text in allowed.get(param.type_str, [param.type_str])
                 if text.startswith("tensor(")}
        if elem in onnx.TensorProto.DataType.values() and kinds and _kind(_elem_name(elem)) not in kinds:
            raise ModelLoadError(
                f"{source}: invalid ONNX model: {_describe(node, opsets)}: input '{name}' ('{param.name}') is "
                f"{_type_name(t)}, but the op takes {' or '.join(sorted(kinds))} tensors there")
        if param.type_str not in allowed or (param.option == onnx.defs.OpSchema.FormalParameterOption.Variadic
                                             and not param.is_homogeneous):
            continue
        first = bound.setdefault(param.type_str, (name, elem))
        if first[1] != elem:
            raise ModelLoadError(
                f"{source}: invalid ONNX model: {_describe(node, opsets)}: inputs '{first[0]}' "
                f"({_type_name(input_types[first[0]])}) and '{name}' ({_type_name(t)}) must have one type "
                f"(both are its type parameter {param.type_str})")


def _elem_name(elem: int) -> str:
    return onnx.TensorProto.DataType.Name(elem).lower()


def _kind(type_name: str) -> str:
    """The kind of an ONNX element type by its name (``float16``, ``uint8``; the ``tensor(...)`` spelling's)."""
    if type_name.startswith("float") or type_name in ("double", "bfloat16"):
        return "float"
    if type_name.startswith(("int", "uint")):
        return "integer"
    return "complex" if type_name.startswith("complex") else type_name  # bool, string


def check_output_types(model: onnx.ModelProto, types: Mapping[str, onnx.TypeProto], source: str) -> None:
    """Each graph output's declared type must be of the kind (and element type) computed for it: inference's
    result wins over a declaration (declared shapes may predate an input binding), so a contradicting one
    would pass unnoticed; onnxruntime refuses such models."""
    for out in model.graph.output:
        declared, computed = out.type, types.get(out.name)
        if computed is None or declared.WhichOneof("value") is None or computed.WhichOneof("value") is None:
            continue
        kinds_differ = declared.WhichOneof("value") != computed.WhichOneof("value")
        elems_differ = (not kinds_differ and declared.WhichOneof("value") == "tensor_type"
                        and declared.tensor_type.elem_type and computed.tensor_type.elem_type
                        and declared.tensor_type.elem_type != computed.tensor_type.elem_type)
        if kinds_differ or elems_differ:
            raise ModelLoadError(f"{source}: invalid ONNX model: graph output '{out.name}' is declared "
                                 f"{_type_name(declared)}, but the graph computes {_type_name(computed)}")


def _type_name(t: onnx.TypeProto) -> str:
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        elem = t.tensor_type.elem_type
        return f"a tensor of {onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() else elem}"
    return {"sequence_type": "a sequence", "map_type": "a map", "optional_type": "an optional",
            "sparse_tensor_type": "a sparse tensor"}.get(kind, kind or "untyped")


def _describe(node: onnx.NodeProto, opsets: Mapping[str, int]) -> str:
    domain = normalize_domain(node.domain)
    return describe_node(node.op_type, node.name or "<unnamed>", opsets.get(domain), domain)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- topological order ------------------------------------------------------------


def sort_graph(graph: onnx.GraphProto) -> None:
    """Sort ``graph.node`` topologically in place; leave it alone if that is impossible.

    An unsortable graph (a cycle, an undefined input) is left for the checker
    to reject with its own message.
    """
    available = [i.name for i in graph.input] + [t.name for t in graph.initializer]
    ordered = topological_sort(list(graph.node), available)
    if ordered is not None and [id(n) for n in ordered] != [id(n) for n in graph.node]:
        copies = [_copy_node(n) for n in ordered]
        del graph.node[:]
        graph.node.extend(copies)


def check_order(graph: onnx.GraphProto, source: str) -> None:
    """A ModelLoadError naming the value nothing defines, or the nodes of a cycle, when ``graph`` cannot be
    sorted (the checker only says that a node's input is not the output of a previous node)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    produced = {name: node for node in graph.node for name in node.output if name}
    for node in graph.node:
        # key=repr: protobuf hands a name that is not UTF-8 (a corrupted file) over as bytes
        for name in sorted(node_reads(node), key=repr):
            if name not in produced and name not in available:
                raise ModelLoadError(f"{source}: invalid ONNX model: {_label(node)} reads '{name}', which no node, "
                                     "graph input or initializer defines")
    if topological_sort(list(graph.node), available) is not None:
        return
    cycle = _find_cycle(list(graph.node), produced, available)
    if len(cycle) == 2 and cycle[0] is cycle[1]:
        raise ModelLoadError(f"{source}: invalid ONNX model: {_label(cycle[0])} reads its own output")
    raise ModelLoadError(f"{source}: invalid ONNX model: the nodes {' -> '.join(_label(n) for n in cycle)} form a "
                         "cycle (each reads an output of the one before it)")


def _label(node: onnx.NodeProto) -> str:
    return f"{node.op_type} '{node.name or '<unnamed>'}'"


def _find_cycle(nodes: list[onnx.NodeProto], produced: Mapping[str, onnx.NodeProto],
                available: set[str]) -> list[onnx.NodeProto]:
    """A cycle of ``nodes`` (first node repeated at the end), every read being defined (see check_order)."""
    def producers(node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [produced[n] for n in sorted(node_reads(node), key=repr) if n not in available]

    state: dict[int, int] = {}  # id -> 1 on the current path, 2 done
    for start in nodes:
        if state.get(id(start)):
            continue
        path, stack = [start], [iter(producers(start))]
        state[id(start)] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[id(path.pop())] = 2
                stack.pop()
            elif state.get(id(nxt)) == 1:
                cycle = path[[id(n) for n in path].index(id(nxt)):]
                return [*reversed(cycle), cycle[-1]] if len(cycle) > 1 else [nxt, nxt]
            elif not state.get(id(nxt)):
                state[id(nxt)] = 1
                path.append(nxt)
                stack.append(iter(producers(nxt)))
    return []


def topological_sort(nodes: Sequence[onnx.NodeProto], available: Iterable[str]) -> list[onnx.NodeProto] | None:
    """Kahn's algorithm, stable (keeps the given order where it is valid); None if impossible.

    Names read only inside a node's subgraphs count as its inputs too.
    """
    produced_by: dict[str, int] = {}
    for index, node in enumerate(nodes):
        for name in node.output:
            if name:
                produced_by[name] = index
    known = set(available)
    deps: list[set[int]] = []
    for node in nodes:
        deps.append({produced_by[n] for n in node_reads(node) if n in produced_by and n not in known})
    users: dict[int, list[int]] = {}
    for index, ds in enumerate(deps):
        for d in ds:
            users.setdefault(d, []).append(index)
    pending = [len(ds) for ds in deps]
    ready = sorted(i for i, p in enumerate(pending) if p == 0)
    order: list[int] = []
    heapq.heapify(ready)
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for user in users.get(index, []):
            pending[user] -= 1
            if pending[user] == 0:
                heapq.heappush(ready, user)
    if len(order) != len(nodes):
        return None
    return [nodes[i] for i in order]


def node_reads(node: onnx.NodeProto) -> set[str]:
    """Every value name ``node`` reads: its inputs and the outer names its subgraphs use."""
    reads = {n for n in node.input if n}
    for attr in node.attribute:
        for sub in graph_attrs(attr):
            reads |= outer_names(sub)
    return reads


def outer_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from enclosing scopes (not defined inside it)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    reads: set[str] = set()
    for node in graph.node:
        reads |= node_reads(node) - defined
        defined |= set(node.output)
    reads |= {o.name for o in graph.output} - defined
    return reads


def graph_attrs(attr: onnx.AttributeProto) -> list[onnx.GraphProto]:
    """The subgraphs an attribute holds (If branches, Loop/Scan bodies)."""
    if attr.type == onnx.AttributeProto.GRAPH:
        return [attr.g]
    if attr.type == onnx.AttributeProto.GRAPHS:
        return list(attr.graphs)
    return []


def _copy_node(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy


# --- input shapes -------------------------------------------------------------------


def graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """The real graph inputs: old models list initializers as inputs too."""
    initializers = {t.name for t in graph.initializer}
    return [i for i in graph.input if i.name not in initializers]


def bind_input_shapes(graph: onnx.GraphProto, input_shapes: InputShapes) -> None:
    """Write the user's static shapes onto the graph inputs (in place), and the values they give
    symbolic dims onto every other declared shape that names them."""
    inputs = {i.name: i for i in graph_inputs(graph)}
    bound: dict[str, int] = {}
    for name, dims in input_shapes.items():
        if name not in inputs:
            known = ", ".join(f"'{n}'" for n in inputs) or "none"
            raise ShapeError(f"input_shapes names '{name}', which is not a graph input (inputs: {known})")
        dims = _check_dims(name, dims)
        tensor_type = inputs[name].type.tensor_type
        if tensor_type.HasField("shape"):
            declared = tensor_type.shape.dim
            if len(declared) != len(dims):
                raise ShapeError(f"input_shapes gives input '{name}' rank {len(dims)} ({_fmt_dims(dims)}), "
                                 f"but the model declares rank {len(declared)} ({_fmt_proto_dims(declared)})")
            for axis, (have, want) in enumerate(zip(declared, dims)):
                if have.HasField("dim_value") and have.dim_value != want:
                    raise ShapeError(f"input_shapes gives input '{name}' dimension {axis} = {want}, "
                                     f"but the model fixes it to {have.dim_value} ({_fmt_proto_dims(declared)})")
            for have, want in zip(declared, dims):
                if have.dim_param:
                    bound[have.dim_param] = want
        tensor_type.ClearField("shape")
        tensor_type.shape.SetInParent()  # a scalar's shape has no dims but must stay present
        for d in dims:
            tensor_type.shape.dim.add().dim_value = d
    # A bound symbol has its value everywhere: declared outputs and value_info that name it say so too
    # (left symbolic, they contradict the bound input, and opset conversion refuses the model).
    for vi in [*graph.output, *graph.value_info, *graph_inputs(graph)]:
        if vi.type.WhichOneof("value") == "tensor_type":
            for d in vi.type.tensor_type.shape.dim:
                if not d.HasField("dim_value") and d.dim_param in bound:
                    d.dim_value = bound[d.dim_param]


def input_dim_names(inputs: Iterable[onnx.ValueInfoProto]) -> list[str]:
    """The symbolic dims of the graph inputs ``inputs``, in order of appearance."""
    names = [d.dim_param for vi in inputs if vi.type.WhichOneof("value") == "tensor_type"
             for d in vi.type.tensor_type.shape.dim if not d.HasField("dim_value") and d.dim_param]
    return list(dict.fromkeys(names))


def name_unnamed_dims(graph: onnx.GraphProto) -> None:
    """Give every unnamed unknown dimension of a graph input a name of its own (``<input>_dim<axis>``),
    so it becomes a size variable like the named ones (skl2onnx and some tf2onnx exports leave them unnamed)."""
    for vi in graph_inputs(graph):
        if vi.type.WhichOneof("value") != "tensor_type" or not vi.type.tensor_type.HasField("shape"):
            continue
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if not d.HasField("dim_value") and not d.dim_param:
                d.dim_param = f"{vi.name}_dim{axis}"


def bind_input_values(graph: onnx.GraphProto, constant_inputs: ConstantInputs) -> None:
    """Turn the named graph inputs into initializers with the given values (in place).

    Each value must match the input's declared element type and any static dimensions.
    """
    inputs = {i.name: i for i in graph_inputs(graph)}
    for name, value in constant_inputs.items():
        if name not in inputs:
            known = ", ".join(f"'{n}'" for n in inputs) or "none"
            raise ShapeError(f"constant_inputs names '{name}', which is not a graph input (inputs: {known})")
        array = np.asarray(value)
        tensor_type = inputs[name].type.tensor_type
        try:
            declared = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        except KeyError:
            declared = None
        if declared is not None and array.dtype != declared:
            raise ShapeError(f"constant_inputs['{name}'] has dtype {array.dtype}, but the input is {declared}")
        if tensor_type.HasField("shape"):
            dims = tensor_type.shape.dim
            if len(dims) != array.ndim or any(d.HasField("dim_value") and d.dim_value != n
                                              for d, n in zip(dims, array.shape)):
                raise ShapeError(f"constant_inputs['{name}'] has shape {_fmt_dims(array.shape)}, but the "
                                 f"model declares {_fmt_proto_dims(dims)}")
        graph.input.remove(inputs[name])
        graph.initializer.append(numpy_helper.from_array(array, name))


def _check_dims(name: str, dims: Sequence[int]) -> tuple[int, ...]:
    try:
        out = tuple(int(d) for d in dims)
    except (TypeError, ValueError):
        raise ShapeError(f"input_shapes['{name}'] must be a sequence of integers, got {dims!r}") from None
    if any(d < 0 for d in out) or any(int(d) != d for d in dims):
        raise ShapeError(f"input_shapes['{name}'] must hold non-negative integers, got {dims!r}")
    return out


def _fmt_dims(dims: Sequence[int]) -> str:
    return "x".join(map(str, dims)) or "scalar"


def _fmt_proto_dims(dims: Iterable[onnx.TensorShapeProto.Dimension]) -> str:
    parts = [str(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    return "[" + ", ".join(parts) + "]"


# --- opset conversion ---------------------------------------------------------------


def opsets_of(model: onnx.ModelProto) -> dict[str, int]:
    """The model's opset imports, with 'ai.onnx' spelled as the default domain ''."""
    return {normalize_domain(o.domain): o.version for o in model.opset_import}


def normalize_domain(domain: str) -> str:
    return "" if domain == "ai.onnx" else domain


_CONVERTED_WITHOUT_DATA_BYTES = 4096  # initializers above this go through the converter without data


def convert_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert a model older than CANONICAL_OPSET; keep it unchanged if conversion fails.

    The converter lacks adapters for some ops/versions; the lowerings handle
    the original opsets too, so a failed conversion is not an error.
    """
    version = opsets_of(model).get("")
    if version is None or version >= CANONICAL_OPSET:
        return model
    if version < 7:
        _per_channel_prelu_slopes(model)
    if version < 11 and any(n.op_type in ("Upsample", "Resize") for n in model.graph.node):
        # onnx's Resize 10->11 adapter keeps the defaults (half_pixel), changing what the model computes.
        return model
    try:
        converted = _converted_without_weights(model) or version_converter.convert_version(model, CANONICAL_OPSET)
        onnx.checker.check_model(converted)
    except Exception:  # noqa: BLE001 - any converter failure means "keep the original"
        return model
    # Some adapters rewrite the graph's signature (Scan 8 -> 9 drops the batch axis of the inputs): wrong.
    if _signature(converted.graph) != _signature(model.graph):
        return model
    return converted


def _converted_without_weights(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """``model`` converted with its large initializers' data left out and put back after: the converter
    round-trips the whole proto through C++ (ResNet-50's 98 MB: 1.3 s, against 0.3 s this way), and its
    adapters read only the small shape-like tensors. None (convert the whole model) where the converter
    renamed, dropped or reshaped a tensor whose data it was not given."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    weights = {t.name: t for t in model.graph.initializer if t.ByteSize() > _CONVERTED_WITHOUT_DATA_BYTES}
    if not weights:
        return None
    for tensor in light.graph.initializer:
        if tensor.name in weights:
            for data in ("raw_data", "float_data", "double_data", "int32_data", "int64_data", "uint64_data"):
                tensor.ClearField(data)
    converted = version_converter.convert_version(light, CANONICAL_OPSET)
    restored = 0
    for tensor in converted.graph.initializer:
        original = weights.get(tensor.name)
        if original is not None:
            if list(tensor.dims) != list(original.dims) or tensor.data_type != original.data_type:
                return None
            tensor.CopyFrom(original)
            restored += 1
    return converted if restored == len(weights) else None


def _per_channel_prelu_slopes(model: onnx.ModelProto) -> None:
    """Give PRelu-6's 1-D constant slopes shape [C, 1, ...] (in place).

    Before opset 7 a slope of C values applies per channel (axis 1); from 7 on it broadcasts
    numpy-style from the right. The version converter does not adapt it; the reshaped slope
    means the same under both rules.
    """
    initializers = {t.name: t for t in model.graph.initializer}
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim)
             for vi in shape_inference.infer_shapes(model).graph.value_info[:] + list(model.graph.input)
             if vi.type.tensor_type.HasField("shape")}
    for node in model.graph.node:
        if node.op_type != "PRelu" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        slope, rank = initializers[node.input[1]], ranks.get(node.input[0], 0)
        if len(slope.dims) == 1 and slope.dims[0] > 1 and rank > 2:
            slope.dims.extend([1] * (rank - 2))


def _signature(graph: onnx.GraphProto) -> list[bytes]:
    return [vi.SerializeToString(deterministic=True) for vi in [*graph_inputs(graph), *graph.output]]


# --- shape inference ----------------------------------------------------------------


def infer_types(graph: onnx.GraphProto, opsets: Mapping[str, int],
                constants: Mapping[str, np.ndarray] | None,
                typed_values: Mapping[str, onnx.TypeProto] | None = None,
                corrections: Callable[[onnx.NodeProto, Mapping[str, onnx.TypeProto]],
                                      Mapping[str, onnx.TypeProto]] | None = None) -> dict[str, onnx.TypeProto]:
    """Run ONNX shape inference (non-strict, with data propagation where needed) and return every value's type.

    ``graph`` supplies nodes, inputs, outputs and (unless ``constants`` is
    given) initializers; ``constants`` replaces ``graph.initializer`` with
    numpy values. Declared shapes of outputs and ``value_info`` are not fed
    in, because binding input shapes can make them stale; where inference
    leaves a value without a type, the declared one is used instead. Types
    onnx gets wrong (:mod:`.shape_fixes`) or cannot know (``corrections``: the
    folder's symbolic shapes) are corrected, and the values downstream of them
    inferred from the corrected ones. ``typed_values`` are values no node
    produces whose types are known (the folder's symbolic shape values).
    """
    proxy = onnx.GraphProto(name=graph.name or "g")
    proxy.node.extend(graph.node)
    proxy.input.extend(graph_inputs(graph))
    proxy.input.extend(helper.make_value_info(name, t) for name, t in (typed_values or {}).items())
    # A graph output that is a graph input or a constant passed through keeps that value's type: listed as
    # a shapeless proxy output, it erased the shape onnx gives the input, and every value computed from it.
    passed_through = {i.name for i in graph.input} | {t.name for t in graph.initializer} | set(constants or ())
    for out in graph.output:
        if out.name in passed_through:
            continue
        elem_type = out.type.tensor_type.elem_type if out.type.HasField("tensor_type") else 0
        proxy.output.append(helper.make_tensor_value_info(out.name, elem_type, None) if elem_type
                            else helper.make_value_info(out.name, onnx.TypeProto()))
    if constants is None:
        _add_initializer_protos(proxy, graph.initializer)
    else:
        _add_constants(proxy, constants)
    model = helper.make_model(proxy, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              ir_version=_PROXY_IR_VERSION)
    declared = {vi.name: vi.type for vi in [*graph.value_info, *graph.output] if _has_type(vi.type)}
    types, data_prop = _inferred_types(model, declared)
    # Inference lists no initializers; a correction may need their shapes (ArrayFeatureExtractor's indices).
    constant_types = {t.name: helper.make_tensor_type_proto(t.data_type, list(t.dims)) for t in proxy.initializer}
    # Where onnx's inference is wrong (shape_fixes), pin the value to the right type: it becomes an input
    # of the proxy (its producer writes a private name instead) and inference runs again, so every value
    # downstream follows. A pin can depend on another (a pool after a pool): repeat until none changes
    # (at most once per node, as each round settles every pin whose input was settled before).
    pinned: set[str] = set()
    # A node's corrections are a function of its inputs' types: between rounds only the nodes whose inputs
    # changed are asked again (a 12-layer GPT-2 export settles its pins over ~80 rounds of ~1500 nodes).
    # Nodes with subgraphs read outer values too, and tilec's own nodes (loops of the run) more than their
    # inputs: those are asked every round.
    asked: dict[int, tuple[list[onnx.TypeProto | None], dict[str, onnx.TypeProto]]] = {}
    for _ in range(len(graph.node)):
        # A value not pinned yet is pinned even where ``types`` agrees: that may be a declared type, which
        # inference (and so every consumer of the value) does not see.
        known = {**constant_types, **types}
        fixes = {}
        for k, node in enumerate(graph.node):
            seen = [known.get(name) for name in node.input]
            previous = asked.get(k)
            if previous is not None and _same_types(previous[0], seen):
                answer = previous[1]
            else:
                answer = dict(corrected_types(node, known))
                if corrections is not None:
                    answer |= corrections(node, types)
                if node.domain in ("", "ai.onnx", "ai.onnx.ml") and not _has_subgraph(node):
                    asked[k] = (seen, answer)
            fixes |= {name: t for name, t in answer.items() if name not in pinned or not _same_type(t, types.get(name))}
        if not fixes:
            break
        _pin(model.graph, fixes, pinned)
        pinned |= fixes.keys()
        types, _ = _inferred_types(model, declared, needs_data_prop=data_prop)
    for name in pinned:
        types.pop(_private_name(name), None)
    return types


def _same_types(a: Sequence[onnx.TypeProto | None], b: Sequence[onnx.TypeProto | None]) -> bool:
    return all(x is y or (x is not None and y is not None and x == y) for x, y in zip(a, b))


def _has_subgraph(node: onnx.NodeProto) -> bool:
    return any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)


def _inferred_types(model: onnx.ModelProto, declared: Mapping[str, onnx.TypeProto],
                    needs_data_prop: bool = False) -> tuple[dict[str, onnx.TypeProto], bool]:
    """Every value's type, and whether it took data propagation. ``needs_data_prop``: an earlier round of the
    same graph needed it (pins only settle values, so it still does, and the plain pass would be wasted)."""
    data_prop = needs_data_prop
    if not data_prop:
        inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=False)
        data_prop = not _all_outputs_static(inferred.graph, model.graph.node)
    if data_prop:
        # Data propagation (the values of shape tensors) can settle shapes plain inference leaves open. It
        # runs only then: onnx expands every 1-D tensor it meets element by element (~140 bytes each), so a
        # large 1-D activation would cost memory in proportion to its size.
        inferred = shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    types = dict(declared)
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if not _has_type(vi.type):
            continue
        # Inference wins (declared shapes may predate the input binding), unless it is less static and says
        # nothing against the declared shape (a rank or a fixed dim of its own: the declaration is stale).
        if (vi.name in declared and _is_static(declared[vi.name]) and not _is_static(vi.type)
                and _refines(declared[vi.name], vi.type)):
            continue
        types[vi.name] = vi.type
    return types, data_prop


def _refines(static: onnx.TypeProto, inferred: onnx.TypeProto) -> bool:
    """Whether the static type is one the inferred type allows: the same rank, equal where the inferred dim
    is fixed, and no inferred dim that follows an input's symbolic dim (onnx's ``unk__`` names are unknowns)."""
    if inferred.WhichOneof("value") != "tensor_type" or not inferred.tensor_type.HasField("shape"):
        return True
    have, want = static.tensor_type.shape.dim, inferred.tensor_type.shape.dim
    return len(have) == len(want) and all(
        w.dim_value == h.dim_value if w.HasField("dim_value") else not w.dim_param or w.dim_param.startswith("unk__")
        for h, w in zip(have, want))


def _same_type(a: onnx.TypeProto, b: onnx.TypeProto | None) -> bool:
    return b is not None and a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def _private_name(name: str) -> str:
    """The name a pinned value's producer writes instead (no name in a checked model has a NUL)."""
    return name + "\x00onnx_inferred"


def _pin(proxy: onnx.GraphProto, fixes: Mapping[str, onnx.TypeProto], pinned: set[str]) -> None:
    """Make each value of ``fixes`` a proxy input of its type (its producer renamed; a re-pin updates the input)."""
    for node in proxy.node:
        for k, name in enumerate(node.output):
            if name in fixes:
                node.output[k] = _private_name(name)
    # A graph output of the pinned name would be a second value of it beside the input: onnx's inference
    # then types none of the input's readers. The output follows its producer's private name instead.
    for vi in proxy.output:
        if vi.name in fixes:
            vi.name = _private_name(vi.name)
    for vi in proxy.input:
        if vi.name in fixes:
            vi.type.CopyFrom(fixes[vi.name])
    proxy.input.extend(helper.make_value_info(name, t) for name, t in fixes.items() if name not in pinned)


def _all_outputs_static(inferred: onnx.GraphProto, nodes: Iterable[onnx.NodeProto]) -> bool:
    """Whether inference gave every node output a type, and every tensor among them a static shape."""
    types = {vi.name: vi.type for vi in [*inferred.value_info, *inferred.output]}
    return all(name in types and (types[name].WhichOneof("value") != "tensor_type" or _is_static(types[name]))
               for node in nodes for name in node.output if name)


def _is_static(t: onnx.TypeProto) -> bool:
    return t.WhichOneof("value") == "tensor_type" and t.tensor_type.HasField("shape") and all(
        d.HasField("dim_value") for d in t.tensor_type.shape.dim)


def _has_type(t: onnx.TypeProto) -> bool:
    kind = t.WhichOneof("value")
    if kind == "tensor_type":
        return t.tensor_type.elem_type != 0 and t.tensor_type.HasField("shape")
    return kind is not None


def _add_initializer_protos(proxy: onnx.GraphProto, initializers: Iterable[onnx.TensorProto]) -> None:
    for t in initializers:
        numel = int(np.prod(t.dims, dtype=np.int64))
        if numel <= _INFERENCE_VALUE_LIMIT and t.data_location != onnx.TensorProto.EXTERNAL:
            proxy.initializer.append(t)
        else:
            proxy.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))


def _add_constants(proxy: onnx.GraphProto, constants: Mapping[str, np.ndarray]) -> None:
    for name, array in constants.items():
        if array.size <= _INFERENCE_VALUE_LIMIT:
            proxy.initializer.append(numpy_helper.from_array(array, name))
        else:
            elem_type = helper.np_dtype_to_tensor_dtype(array.dtype)
            proxy.input.append(helper.make_tensor_value_info(name, elem_type, list(array.shape)))


def _store_value_info(graph: onnx.GraphProto, types: Mapping[str, onnx.TypeProto]) -> None:
    """Record inferred types of intermediate values (not inputs/outputs/initializers) in value_info."""
    skip = {i.name for i in graph.input} | {o.name for o in graph.output} | {t.name for t in graph.initializer}
    del graph.value_info[:]
    for node in graph.node:
        for name in node.output:
            if name and name not in skip and name in types:
                graph.value_info.append(helper.make_value_info(name, types[name]))
