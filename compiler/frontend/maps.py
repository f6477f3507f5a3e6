"""ai.onnx.ml's ZipMap at the graph's edge: a classifier's probabilities returned as a list of dicts.

ZipMap turns a ``[N, C]`` float tensor into a sequence of N maps, class label -> probability, which is what
skl2onnx and onnxmltools write after every classifier by default. Nothing is computed: the expansion makes
the map's output an Identity of the tensor and records, in ``FoldedGraph.output_maps``, which graph output
it is and its keys (``classlabels_int64s`` or ``classlabels_strings``); the runtime builds the dicts from
the returned rows, as onnxruntime returns them. A ZipMap whose maps another node reads is refused, as is
one with neither or both key lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx
from onnx import helper

from compiler.frontend.loader import node_reads
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
    if not positions or any(out in node_reads(n) for n in state.nodes if n is not node):
        raise NotExpandable("its sequence of maps is read by another node; tilec returns ZipMap's maps only as a "
                            "graph output (convert with zipmap=False for the probabilities as a tensor)")
    keys = [int(k) for k in ints] if ints is not None else [s.decode("utf-8") for s in strings]
    builder.op("Identity", [node.input[0]], out)
    for k in positions:
        state.output_maps[k] = tuple(keys)
        state.outputs[k] = helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None)
