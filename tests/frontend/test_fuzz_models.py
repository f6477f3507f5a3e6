"""Fuzzing the frontend with mutated ONNX models (issue 17).

Hypothesis takes one of a few small valid models and applies one to three mutations to its
protobuf: dropped fields (inputs, outputs, attributes, types, shapes, initializers, nodes, opset
imports), swapped attribute types, absurd attribute values (huge kernels, pads and axes, negative
axes and strides, perms that are no permutation, group 0), tensors whose data_type, dims or data
disagree (raw_data of the wrong length, dims claiming 2^40 elements), cycles (a node reading its
own output, two nodes feeding each other), dangling and duplicated names, graph outputs that are
inputs or initializers, an empty graph, other op types and domains, opset imports from 0 to
10000 and unknown domains, symbolic, negative, zero and huge input dimensions; or flips, inserts
and truncates bytes of the serialized model. The mutant goes to ``compiler.compile`` as bytes or
as a ModelProto.

Outcome rule: a ``CompileError`` (the TilecError family) with a message, or an artifact that runs
and agrees with onnxruntime on random inputs; never another exception type (KeyError, IndexError,
ValueError, RecursionError, onnx's or protobuf's own from deep inside), a MemoryError, a hang or a
crash, and no "cannot lower this node (IndexError: ...)", the lowering driver's wrapper of an
exception from inside a lowering (a check missing where the node is read). A mutant that compiles
although onnxruntime refuses it fails too, unless onnxruntime's refusal is its own policy
(``ORT_POLICY``: duplicate node names, opsets below 7, precisions outside a schema's list of a kind
it allows); those are checked against onnx's reference evaluator instead.

``TILEC_FUZZ_LOG=<file>`` appends every refusal (type, mutant, message) to the file, for reviewing
what the messages say.

Most mutants are refused in the loader within milliseconds; the few that compile are tiny graphs
(0.1-0.5 s each), and the example count and a wall-clock budget bound the test.
"""

from __future__ import annotations

import copy
import os
import pathlib
import re
import warnings
from typing import Any

import numpy as np
import onnx
import pytest
from fuzz_support import bounded, fuzz_settings, watchdog
from hypothesis import given
from hypothesis import strategies as st
from onnx import AttributeProto, TensorProto, helper, numpy_helper

import compiler
from compiler.errors import CompileError, TilecError
from runtime_stub import InferenceSession
from runtime_stub.artifact import read_artifact

ort = pytest.importorskip("onnxruntime")

BUDGET_S = 60.0
MAX_EXAMPLES = 2500

# --- the seed models ---------------------------------------------------------------------------------

_vi = helper.make_tensor_value_info
_rng = np.random.default_rng(0)


def _init(name: str, array: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           initializers: list[TensorProto] = (), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "seed", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _seeds() -> dict[str, onnx.ModelProto]:
    f32 = TensorProto.FLOAT
    return {
        "add_relu": _model(
            [helper.make_node("Add", ["x", "c"], ["t"], name="add"), helper.make_node("Relu", ["t"], ["y"], name="relu")],
            [_vi("x", f32, [2, 3])], [_vi("y", f32, [2, 3])],
            [_init("c", _rng.standard_normal((2, 3)).astype(np.float32))]),
        "conv": _model(
            [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              strides=[1, 1], dilations=[1, 1], group=1)],
            [_vi("x", f32, [1, 2, 5, 5])], [_vi("y", f32, [1, 4, 5, 5])],
            [_init("w", _rng.standard_normal((4, 2, 3, 3)).astype(np.float32)),
             _init("b", _rng.standard_normal(4).astype(np.float32))]),
        "pool": _model(
            [helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 0, 0]),
             helper.make_node("AveragePool", ["p"], ["y"], name="avg", kernel_shape=[2, 2], strides=[1, 1])],
            [_vi("x", f32, [1, 1, 6, 6])], [_vi("y", f32, [1, 1, 2, 2])]),
        "transpose_concat_softmax": _model(
            [helper.make_node("Transpose", ["x"], ["t"], name="transpose", perm=[1, 0, 2]),
             helper.make_node("Concat", ["t", "t"], ["c"], name="concat", axis=1),
             helper.make_node("Softmax", ["c"], ["y"], name="softmax", axis=-1)],
            [_vi("x", f32, [2, 3, 4])], [_vi("y", f32, [3, 4, 4])]),
        "reduce_reshape": _model(
            [helper.make_node("ReduceSum", ["x", "axes"], ["r"], name="reduce", keepdims=1),
             helper.make_node("Reshape", ["r", "shape"], ["y"], name="reshape"),
             helper.make_node("Unsqueeze", ["y", "uaxes"], ["z"], name="unsqueeze")],
            [_vi("x", f32, [2, 3, 4])], [_vi("y", f32, [2, 4]), _vi("z", f32, [1, 2, 4])],
            [_init("axes", np.array([1], np.int64)), _init("shape", np.array([2, 4], np.int64)),
             _init("uaxes", np.array([0], np.int64))]),
        "gather_matmul": _model(
            [helper.make_node("Gather", ["table", "ids"], ["e"], name="gather", axis=0),
             helper.make_node("MatMul", ["e", "w"], ["y"], name="matmul")],
            [_vi("ids", TensorProto.INT64, [3])], [_vi("y", f32, [3, 2])],
            [_init("table", _rng.standard_normal((5, 4)).astype(np.float32)),
             _init("w", _rng.standard_normal((4, 2)).astype(np.float32))]),
        "where_cast_split": _model(
            [helper.make_node("Constant", [], ["neg"], name="const", value=_init("v", np.array(-1.0, np.float32))),
             helper.make_node("Greater", ["x", "zero"], ["m"], name="greater"),
             helper.make_node("Where", ["m", "x", "neg"], ["w"], name="where"),
             helper.make_node("Split", ["w", "parts"], ["a", "b"], name="split", axis=1),
             helper.make_node("Cast", ["a"], ["y"], name="cast", to=TensorProto.INT32)],
            [_vi("x", f32, [2, 5])], [_vi("y", TensorProto.INT32, [2, 2]), _vi("b", f32, [2, 3])],
            [_init("zero", np.array(0.0, np.float32)), _init("parts", np.array([2, 3], np.int64))]),
    }


SEEDS = _seeds()

# --- mutations -----------------------------------------------------------------------------------------

_ABSURD_INTS = [0, 1, -1, 2, 3, 7, -7, 2**31, -2**31, 2**40, -2**40, 2**62, -2**62, 2**63 - 1, -2**63]
_ints = st.sampled_from(_ABSURD_INTS) | st.integers(-8, 8)
_OP_TYPES = ["Add", "Relu", "Conv", "MaxPool", "Transpose", "Concat", "Softmax", "ReduceSum", "Reshape", "Gather",
             "MatMul", "Where", "Split", "Cast", "Identity", "Loop", "If", "Scan", "Unsqueeze", "Squeeze", "Flatten",
             "Expand", "Tile", "Slice", "Pad", "Resize", "TopK", "NonZero", "Shape", "Size", "Range", "ConstantOfShape",
             "LSTM", "Attention", "Frobnicate", "", "add", "Sequence", "SplitToSequence"]
_DOMAINS = ["", "ai.onnx", "ai.onnx.ml", "com.microsoft", "foo.bar", "ai.onnx.preview.training"]
_ELEM_TYPES = list(range(0, 30)) + [999, -1]
_NAMES = st.sampled_from(["x", "y", "t", "c", "w", "b", "ids", "axes", "shape", "a", "m", "", "nothing", "x\x00"])


@st.composite
def attribute_values(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["int", "ints", "float", "floats", "string", "strings", "tensor", "graph", "empty"]))
    if kind == "int":
        return draw(_ints)
    if kind == "ints":
        return draw(st.lists(_ints, max_size=6))
    if kind == "float":
        return draw(st.floats(allow_nan=True, allow_infinity=True, width=32))
    if kind == "floats":
        return draw(st.lists(st.floats(width=32), max_size=4))
    if kind == "string":
        return draw(st.sampled_from(["", "NOTSET", "SAME_UPPER", "VALID", "WHATEVER", "\xff", "x" * 100]))
    if kind == "strings":
        return draw(st.lists(st.sampled_from(["a", "", "NOTSET"]), max_size=3))
    if kind == "tensor":
        return numpy_helper.from_array(np.zeros(draw(st.lists(st.integers(0, 3), max_size=3)), np.float32))
    if kind == "graph":
        return helper.make_graph([], "sub", [], [])
    return []


@st.composite
def mutations(draw: st.DrawFn) -> tuple:
    """One mutation as plain data: (kind, parameters...), applied by ``apply``; indices are taken modulo sizes."""
    kind = draw(st.sampled_from([
        "drop input", "dangling input", "self cycle", "two-node cycle", "duplicate output", "drop output",
        "drop attribute", "attribute value", "attribute type", "unknown attribute", "perm", "op type", "domain",
        "node name", "drop node", "clear nodes", "tensor data_type", "tensor dims", "tensor raw_data",
        "tensor typed data", "drop initializer", "graph output", "graph input", "input elem_type", "input dims",
        "input shape", "input type", "opset", "opset domain", "ir_version", "clear opsets", "extra input"]))
    index = draw(st.integers(0, 7))
    if kind in ("drop input", "drop output", "drop attribute", "drop node", "node name", "self cycle",
                "two-node cycle", "duplicate output", "drop initializer", "clear nodes", "clear opsets",
                "input shape", "input type", "extra input"):
        return (kind, index, draw(st.integers(0, 7)))
    if kind == "dangling input":
        return (kind, index, draw(st.integers(0, 3)), draw(_NAMES))
    if kind == "attribute value":
        return (kind, index, draw(st.integers(0, 7)), draw(attribute_values()))
    if kind == "attribute type":
        return (kind, index, draw(st.integers(0, 7)), draw(st.integers(0, 14)))
    if kind == "unknown attribute":
        return (kind, index, draw(st.sampled_from(["foo", "axis", "axes", "perm", "kernel_shape", "pads", "group",
                                                   "strides", "dilations", "to", "keepdims", "auto_pad"])),
                draw(attribute_values()))
    if kind == "perm":
        return (kind, index, draw(st.lists(st.integers(-4, 4), max_size=5)))
    if kind == "op type":
        return (kind, index, draw(st.sampled_from(_OP_TYPES)))
    if kind == "domain":
        return (kind, index, draw(st.sampled_from(_DOMAINS)))
    if kind == "tensor data_type":
        return (kind, index, draw(st.sampled_from(_ELEM_TYPES)))
    if kind == "tensor dims":
        return (kind, index, draw(st.lists(st.sampled_from([0, 1, 2, 3, 4, 5, -1, 2**20, 2**40, 2**62]), max_size=4)))
    if kind == "tensor raw_data":
        return (kind, index, draw(st.integers(-9, 9)))
    if kind == "tensor typed data":
        return (kind, index, draw(st.integers(0, 12)))
    if kind == "graph output":
        return (kind, index, draw(st.sampled_from(["input", "initializer", "duplicate", "drop", "clear", "unknown",
                                                   "untyped", "wrong type", "wrong shape"])))
    if kind == "graph input":
        return (kind, index, draw(st.sampled_from(["drop", "duplicate", "rename", "make initializer input"])))
    if kind == "input elem_type":
        return (kind, index, draw(st.sampled_from(_ELEM_TYPES)))
    if kind == "input dims":
        return (kind, index, draw(st.integers(0, 4)),
                draw(st.sampled_from([0, 1, -1, -7, 7, 2**31, 2**40, 2**62, "N", ""])))
    if kind == "opset":
        return (kind, draw(st.sampled_from([0, 1, 5, 6, 7, 9, 10, 11, 12, 13, 14, 16, 18, 20, 21, 22, 23, 24, 27, 28,
                                            29, 10000, -1, 2**62])))
    if kind == "opset domain":
        return (kind, draw(st.sampled_from(_DOMAINS[2:])), draw(st.sampled_from([0, 1, 2, 1000, -1])))
    return (kind, draw(st.sampled_from([0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 14, 15, 100, -1])))  # ir_version


def _node(model: onnx.ModelProto, index: int) -> onnx.NodeProto | None:
    nodes = model.graph.node
    return nodes[index % len(nodes)] if nodes else None


def _tensors(model: onnx.ModelProto) -> list[TensorProto]:
    found = list(model.graph.initializer)
    for node in model.graph.node:
        found += [a.t for a in node.attribute if a.type == AttributeProto.TENSOR]
    return found


def _set_attribute(node: onnx.NodeProto, name: str, value: Any) -> None:
    for attr in list(node.attribute):
        if attr.name == name:
            node.attribute.remove(attr)
    try:
        node.attribute.append(helper.make_attribute(name, value))
    except (ValueError, TypeError):  # an empty list: make_attribute cannot tell its type
        node.attribute.append(AttributeProto(name=name, type=AttributeProto.INTS))


def apply(model: onnx.ModelProto, mutation: tuple) -> None:  # noqa: PLR0912, PLR0915 - one case per mutation
    kind, *args = mutation
    graph = model.graph
    node = _node(model, args[0]) if args and isinstance(args[0], int) else None
    if kind == "drop input" and node is not None and node.input:
        del node.input[args[1] % len(node.input)]
    elif kind == "dangling input" and node is not None and node.input:
        node.input[args[1] % len(node.input)] = args[2]
    elif kind == "self cycle" and node is not None and node.input and node.output:
        node.input[args[1] % len(node.input)] = node.output[0]
    elif kind == "two-node cycle" and len(graph.node) >= 2:
        a, b = graph.node[args[0] % len(graph.node)], graph.node[args[1] % len(graph.node)]
        if a.input and b.output and b.input and a.output:
            a.input[0], b.input[0] = b.output[0], a.output[0]
    elif kind == "duplicate output" and len(graph.node) >= 2:
        a, b = graph.node[args[0] % len(graph.node)], graph.node[args[1] % len(graph.node)]
        if a.output and b.output:
            a.output[0] = b.output[0]
    elif kind == "drop output" and node is not None and node.output:
        del node.output[args[1] % len(node.output)]
    elif kind == "drop attribute" and node is not None and node.attribute:
        del node.attribute[args[1] % len(node.attribute)]
    elif kind == "attribute value" and node is not None and node.attribute:
        attr = node.attribute[args[1] % len(node.attribute)]
        _set_attribute(node, attr.name, args[2])
    elif kind == "attribute type" and node is not None and node.attribute:
        node.attribute[args[1] % len(node.attribute)].type = args[2]  # the value fields stay as they were
    elif kind == "unknown attribute" and node is not None:
        _set_attribute(node, args[1], args[2])
    elif kind == "perm" and node is not None:
        _set_attribute(node, "perm", args[1])
    elif kind == "op type" and node is not None:
        node.op_type = args[1]
    elif kind == "domain" and node is not None:
        node.domain = args[1]
    elif kind == "node name" and node is not None:
        node.name = graph.node[args[1] % len(graph.node)].name  # duplicate node names are allowed
    elif kind == "drop node" and node is not None:
        graph.node.remove(node)
    elif kind == "clear nodes":
        del graph.node[:]
    elif kind in ("tensor data_type", "tensor dims", "tensor raw_data", "tensor typed data"):
        tensors = _tensors(model)
        if not tensors:
            return
        tensor = tensors[args[0] % len(tensors)]
        if kind == "tensor data_type":
            tensor.data_type = args[1]
        elif kind == "tensor dims":
            del tensor.dims[:]
            tensor.dims.extend(args[1])
        elif kind == "tensor raw_data":
            data = tensor.raw_data
            tensor.raw_data = data[:len(data) + args[1]] if args[1] < 0 else data + b"\x01" * args[1]
        else:
            tensor.ClearField("raw_data")
            tensor.float_data.extend([1.5] * args[1]) if tensor.data_type == TensorProto.FLOAT else \
                tensor.int64_data.extend([1] * args[1])
    elif kind == "drop initializer" and graph.initializer:
        del graph.initializer[args[0] % len(graph.initializer)]
    elif kind == "graph output":
        how = args[1]
        out = graph.output[args[0] % len(graph.output)] if graph.output else None
        if how == "input" and out is not None and graph.input:
            out.CopyFrom(graph.input[0])
        elif how == "initializer" and out is not None and graph.initializer:
            init = graph.initializer[0]
            out.CopyFrom(_vi(init.name, init.data_type, list(init.dims)))
        elif how == "duplicate" and out is not None:
            graph.output.append(copy.deepcopy(out))
        elif how == "drop" and out is not None:
            graph.output.remove(out)
        elif how == "clear":
            del graph.output[:]
        elif how == "unknown" and out is not None:
            out.name = "nothing"
        elif how == "untyped" and out is not None:
            out.ClearField("type")
        elif how == "wrong type" and out is not None and out.type.HasField("tensor_type"):
            out.type.tensor_type.elem_type = TensorProto.INT64
        elif how == "wrong shape" and out is not None and out.type.HasField("tensor_type"):
            for d in out.type.tensor_type.shape.dim:
                d.dim_value = 7
    elif kind == "graph input" and graph.input:
        vi = graph.input[args[0] % len(graph.input)]
        if args[1] == "drop":
            graph.input.remove(vi)
        elif args[1] == "duplicate":
            graph.input.append(copy.deepcopy(vi))
        elif args[1] == "rename":
            vi.name = "renamed"
        elif graph.initializer:  # an initializer listed as a graph input too (IR < 4 style)
            init = graph.initializer[0]
            graph.input.append(_vi(init.name, init.data_type, list(init.dims)))
    elif kind in ("input elem_type", "input dims", "input shape", "input type") and graph.input:
        vi = graph.input[args[0] % len(graph.input)]
        tensor_type = vi.type.tensor_type
        if kind == "input elem_type":
            tensor_type.elem_type = args[1]
        elif kind == "input dims" and tensor_type.shape.dim:
            dim = tensor_type.shape.dim[args[1] % len(tensor_type.shape.dim)]
            if isinstance(args[2], str):
                dim.dim_param = args[2]
            else:
                dim.dim_value = args[2]
        elif kind == "input shape":
            tensor_type.ClearField("shape") if args[1] % 2 else tensor_type.shape.dim.add()
        elif kind == "input type":
            vi.type.CopyFrom(helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2]))
                             if args[1] % 2 else onnx.TypeProto())
    elif kind == "extra input":
        graph.input.append(_vi(f"extra{args[0]}", TensorProto.FLOAT, [args[1]]))
    elif kind == "opset" and model.opset_import:
        model.opset_import[0].version = args[0]
    elif kind == "opset domain":
        model.opset_import.append(helper.make_opsetid(args[0], args[1]))
    elif kind == "ir_version":
        model.ir_version = args[0]
    elif kind == "clear opsets":
        del model.opset_import[:]


@st.composite
def byte_edits(draw: st.DrawFn) -> list[tuple[str, int, int]]:
    return draw(st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
                                   st.integers(0, 2**16), st.integers(0, 255)), min_size=1, max_size=4))


def apply_bytes(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, where, value in edits:
        if not buffer:
            break
        at = where % len(buffer)
        if kind == "flip":
            buffer[at] ^= 1 << (value % 8)
        elif kind == "set":
            buffer[at] = value
        elif kind == "insert":
            buffer[at:at] = bytes([value])
        elif kind == "delete":
            del buffer[at]
        else:
            del buffer[at:]
    return bytes(buffer)


@st.composite
def mutants(draw: st.DrawFn) -> tuple[str, Any, Any]:
    """(seed name, the mutations or byte edits, how the mutant is handed over: 'proto' or 'bytes')."""
    seed = draw(st.sampled_from(sorted(SEEDS)))
    if draw(st.integers(0, 4)) == 0:
        return seed, ("bytes", draw(byte_edits())), "bytes"
    return seed, ("proto", draw(st.lists(mutations(), min_size=1, max_size=3))), draw(st.sampled_from(["proto",
                                                                                                        "bytes"]))


def build(seed: str, edits: tuple) -> tuple[onnx.ModelProto | None, bytes]:
    model = copy.deepcopy(SEEDS[seed])
    if edits[0] == "bytes":
        return None, apply_bytes(model.SerializeToString(), edits[1])
    for mutation in edits[1]:
        apply(model, mutation)
    return model, model.SerializeToString()


# --- the oracle ------------------------------------------------------------------------------------------


#: The value a mutant's symbolic dim (a dim_param, an unnamed dim) takes in the comparison runs.
SYMBOLIC_DIM = 2


def _concrete(shape: list) -> list[int]:
    return [SYMBOLIC_DIM if isinstance(d, str) else int(d) for d in shape]


def _feeds(session: InferenceSession, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        shape = _concrete(arg.shape)
        if arg.dtype == np.bool_:
            feeds[arg.name] = rng.integers(0, 2, shape).astype(bool)
        elif arg.dtype.kind in "iu":
            feeds[arg.name] = rng.integers(0, 3, shape).astype(arg.dtype)  # indices: in range of the seeds
        else:
            feeds[arg.name] = rng.standard_normal(shape).astype(arg.dtype)
    return feeds


def _ort_run(data: bytes, feeds: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]] | Exception:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the mutants make it log errors it then raises anyway
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return [o.name for o in session.get_outputs()], session.run(None, feeds)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's refusal, whatever its type, is the comparison
        return exc


#: onnxruntime refusals that are its policy, not ONNX's: tilec's answer is the defined one.
#: onnx's reference evaluator checks the results instead.
ORT_POLICY = {
    # ONNX names are optional and need not be unique; tilec makes them unique (importer._unique_node_names).
    "two nodes with same node name": "duplicate node names",
    # onnxruntime has no kernels for opsets below 7 (Add-1); tilec converts them to opset 17.
    "Could not find an implementation for": "an op version it has no kernel for",
    # An element type outside the schema's list but of a kind it allows (uint8 Gather indices, bfloat16
    # Conv): tilec lowers those (loader._check_type_parameters refuses other kinds).
    "of input parameter (": "a type outside the op's type constraints",
    # An import of an opset newer than the onnxruntime build knows, here of a domain no node uses.
    "is under development and support for this is limited": "an opset import newer than it knows",
    # A pool or conv over zero channels: its NCHWc layout transform refuses; ONNX defines the empty result.
    "invalid channel count": "zero channels in its NCHWc layout transform",
}


def _reference_run(data: bytes, feeds: dict[str, np.ndarray]) -> tuple[list[str], list[np.ndarray]] | None:
    """onnx's reference evaluator's results, or None where it cannot run the model either."""
    from onnx.reference import ReferenceEvaluator

    try:
        model = onnx.load_model_from_string(data)
        return [o.name for o in model.graph.output], list(ReferenceEvaluator(model).run(None, feeds))
    except Exception:  # noqa: BLE001 - the evaluator's own limits
        return None


#: Artifacts needing more memory than this (workspace, inputs, outputs) are compiled but not run here.
RUN_LIMIT_BYTES = 256 << 20


def _footprint(manifest: dict[str, Any]) -> int:
    tensors = [*manifest.get("inputs", []), *manifest.get("outputs", [])]
    return int(manifest.get("workspace_size", 0)) + sum(
        int(np.prod(_concrete(t["shape"]), dtype=object)) * max(np.dtype(_api_dtype(t["dtype"])).itemsize, 1) for t in tensors)


def _api_dtype(name: str) -> str:
    return name if hasattr(np, name) else "uint16" if name == "bfloat16" else "uint8"


def _compare(compiled_path: pathlib.Path, data: bytes, stats) -> None:
    if _footprint(read_artifact(compiled_path).manifest) > RUN_LIMIT_BYTES:
        stats.count("compiled; too large to run here")
        return
    with InferenceSession(compiled_path, threads=1) as session:
        if any(a.element_type.name != a.dtype.name for a in [*session.get_inputs(), *session.get_outputs()]):
            # bfloat16 / float8 / int4 travel as uint codes here; onnxruntime's numpy API has no such types.
            stats.count("compiled; narrow-type inputs or outputs, not compared")
            return
        feeds = _feeds(session, 0)
        names = [o.name for o in session.get_outputs()]
        try:
            ours: list[np.ndarray] | TilecError = session.run(None, feeds)
        except TilecError as exc:  # a run-time check (an index out of range): onnxruntime must refuse too
            ours = exc
    theirs = _ort_run(data, feeds)
    if isinstance(theirs, Exception):
        if isinstance(ours, TilecError):
            stats.count("run refused by both")
            return
        policy = next((why for text, why in ORT_POLICY.items() if text in str(theirs)), None)
        if not names:
            stats.count("compiled; onnxruntime refuses a model without outputs")
            return
        if policy is None:
            raise AssertionError(f"tilec compiled and ran a model onnxruntime refuses: {theirs}")
        theirs = _reference_run(data, feeds)
        if theirs is None:
            stats.count(f"compiled; onnxruntime refuses {policy}, the reference evaluator fails")
            return
        stats.count(f"onnxruntime refuses {policy}; checked against the reference evaluator")
    assert not isinstance(ours, TilecError), f"tilec refused to run what the reference runs: {ours!r}"
    their_names, their_results = theirs
    assert names == their_names, (names, their_names)
    for name, got, want in zip(names, ours, their_results):
        want = np.asarray(want)
        assert got.shape == want.shape and got.dtype == want.dtype, (name, got.dtype, got.shape, want.dtype, want.shape)
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
    stats.count("compiled, matches onnxruntime")


@pytest.fixture(scope="module")
def artifact_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("fuzz_models") / "mutant.tilec"


@fuzz_settings(MAX_EXAMPLES)
@given(mutant=mutants())
@bounded(BUDGET_S)
def test_fuzz_compile_mutated_models(artifact_path: pathlib.Path, mutant: tuple[str, Any, Any], *, stats) -> None:
    seed, edits, form = mutant
    model, data = build(seed, edits)
    source = data if form == "bytes" or model is None else model
    with watchdog(120), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # onnx's converter and numpy warn about what the mutants hold
        try:
            compiler.compile(source, artifact_path)
        except CompileError as exc:
            message = str(exc)
            assert message.strip(), f"{type(exc).__name__} without a message"
            # The lowering driver wraps exceptions from inside a lowering; for a fuzzed model that means a
            # check is missing where the node's attributes or shapes are read.
            assert not re.search(r"cannot lower this node \((ValueError|TypeError|KeyError|IndexError|AssertionError)",
                                 message), message
            if os.environ.get("TILEC_FUZZ_LOG"):
                with open(os.environ["TILEC_FUZZ_LOG"], "a") as log:
                    log.write(f"{type(exc).__name__}\t{' '.join(repr(mutant).split())[:400]}\t{' '.join(message.split())[:300]}\n")
            stats.count(type(exc).__name__)
            return
        _compare(artifact_path, data, stats)


def test_fuzz_compile_summary() -> None:
    """Reports what the fuzz test above did (visible with -s / -rA); fails if it tried too few mutants."""
    stats = test_fuzz_compile_mutated_models.hypothesis.inner_test.stats
    print(f"frontend fuzzing: {stats.summary()}")
    if stats.started is not None:
        assert stats.ran >= 100, stats.summary()
