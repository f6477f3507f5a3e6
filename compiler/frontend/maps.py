"""Maps at the graph's edges: ZipMap's list of dicts out, DictVectorizer's dict in.

ZipMap turns a ``[N, C]`` float tensor into a sequence of N maps, class label -> probability, which is what
skl2onnx and onnxmltools write after every classifier by default. Nothing is computed: the expansion makes
the map's output an Identity of the tensor and records, in ``FoldedGraph.output_maps``, which graph output
it is and its keys (``classlabels_int64s`` or ``classlabels_strings``); the runtime builds the dicts from
the returned rows, as onnxruntime returns them. A ZipMap whose maps another node reads is refused, as is
one with neither or both key lists.

A graph input that is a map (DictVectorizer's, as skl2onnx writes a ``DictVectorizer`` pipeline) becomes two
tensor inputs, ``<name>:keys`` and ``<name>:values``, one element per entry (their length, the size variable
``<name>:entries``, may be 0); ``map_inputs`` returns which inputs it made of which map (``Graph.input_maps``),
so the runtime takes the dict and hands the native code its keys and values. Each DictVectorizer reading it becomes
standard ops: keys compared with the vocabulary (Equal, of strings too), the matching values placed (Where)
and summed over the entries (ReduceSum) into the ``[1, V]`` result. A map input read by anything else is left
for the importer to refuse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.frontend.loader import graph_inputs, node_reads, opsets_of
from compiler.frontend.rewrite import Builder, NotExpandable

if TYPE_CHECKING:
    from compiler.frontend.folding import FoldedGraph


def expand_zipmap(node: onnx.NodeProto, state: "FoldedGraph", builder: Builder) -> None:
    out = node.output[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    ints, strings = attrs.get("classlabels_int64s"), attrs.get("classlabels_strings")
    if (ints is None) == (strings is None):
        raise NotExpandable("it needs exactly one of classlabels_int64s and classlabels_strings")
    positions = [k for k, o in enumerate(state.outputs) if o.name == out]
    if any(out in node_reads(n) for n in state.nodes if n is not node):
        raise NotExpandable("its sequence of maps is read by another node; tilec returns ZipMap's maps only as a "
                            "graph output (convert with zipmap=False for the probabilities as a tensor)")
    if not positions:
        return  # nothing reads the maps: the node goes
    keys = [int(k) for k in ints] if ints is not None else [s.decode("utf-8") for s in strings]
    builder.op("Identity", [node.input[0]], out)
    for k in positions:
        state.output_maps[k] = tuple(keys)
        state.outputs[k] = helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)


def entries_dim(name: str) -> str:
    """The size variable of a map input's entry count."""
    return f"{name}:entries"


def is_entries_dim(dim: str) -> bool:
    return dim.endswith(":entries")


def map_parts(name: str) -> tuple[str, str]:
    """The tensor inputs a map input ``name`` becomes: its keys and its values."""
    return f"{name}:keys", f"{name}:values"


def map_inputs(model: onnx.ModelProto) -> dict[str, tuple[str, str]]:
    """Rewrite, in place, each map graph input read only by DictVectorizers (see the module docstring); returns
    the tensor inputs made: name -> (the map input's name, "keys" or "values")."""
    graph = model.graph
    made: dict[str, tuple[str, str]] = {}
    opset = opsets_of(model).get("", 0)
    for vi in [i for i in graph_inputs(graph) if i.type.WhichOneof("value") == "map_type"]:
        readers = [n for n in graph.node if vi.name in node_reads(n)]
        if not readers or any(n.op_type != "DictVectorizer" or vi.name not in n.input for n in readers):
            continue
        map_type = vi.type.map_type
        keys, values = map_parts(vi.name)
        value_type = map_type.value_type.tensor_type.elem_type
        position = list(graph.input).index(vi)
        graph.input.remove(vi)
        for k, (name, elem) in enumerate([(keys, map_type.key_type), (values, value_type)]):
            graph.input.insert(position + k, helper.make_tensor_value_info(name, elem, [entries_dim(vi.name)]))
        for node in readers:
            _vectorize(graph, node, keys, values, value_type, opset)
        made.update({keys: (vi.name, "keys"), values: (vi.name, "values")})
    return made


def _vectorize(graph: onnx.GraphProto, node: onnx.NodeProto, keys: str, values: str, value_type: int,
               opset: int) -> None:
    """DictVectorizer(keys, values) as Equal / Where / ReduceSum, in ``node``'s place."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    strings, ints = attrs.get("string_vocabulary"), attrs.get("int64_vocabulary")
    vocabulary = (helper.make_tensor(f"{node.output[0]}:vocabulary", onnx.TensorProto.STRING, [1, len(strings)], strings)
                  if strings else numpy_helper.from_array(np.asarray([ints], np.int64), f"{node.output[0]}:vocabulary"))
    column = numpy_helper.from_array(np.array([-1, 1], np.int64), f"{node.output[0]}:column")
    zero = numpy_helper.from_array(np.zeros((), helper.tensor_dtype_to_np_dtype(value_type)), f"{node.output[0]}:zero")
    axis = numpy_helper.from_array(np.array([0], np.int64), f"{node.output[0]}:axis")
    graph.initializer.extend([vocabulary, column, zero, axis])
    out = node.output[0]
    nodes = [helper.make_node("Reshape", [keys, column.name], [f"{out}:key_column"]),
             helper.make_node("Reshape", [values, column.name], [f"{out}:value_column"]),
             helper.make_node("Equal", [f"{out}:key_column", vocabulary.name], [f"{out}:hits"]),
             helper.make_node("Where", [f"{out}:hits", f"{out}:value_column", zero.name], [f"{out}:placed"]),
             helper.make_node("ReduceSum", [f"{out}:placed", axis.name], [out], keepdims=1) if opset >= 13 else
             helper.make_node("ReduceSum", [f"{out}:placed"], [out], axes=[0], keepdims=1)]
    index = list(graph.node).index(node)
    graph.node.remove(node)
    for k, new in enumerate(nodes):
        graph.node.insert(index + k, new)
