"""Stage 1a', between loading and folding: resolve ONNX tensor sequences at compile time.

Contract of :func:`resolve_sequences`: given a loaded model, rewrite (in place)
every chain of sequence ops in its main graph whose structure is known at
compile time into plain tensor ops, so no sequence-typed value is left for the
importer:

* ``SequenceEmpty`` / ``SequenceConstruct`` / ``SequenceInsert`` /
  ``SequenceErase`` are tracked as Python lists of tensor names,
* ``SequenceAt`` becomes an ``Identity`` of the chosen element,
  ``SequenceLength`` a constant,
* ``SplitToSequence`` becomes a ``Split`` (plus ``Squeeze`` for
  ``keepdims=0``) and ``ConcatFromSequence`` a ``Concat`` (of ``Unsqueeze`` d
  elements for ``new_axis=1``).

Positions and split sizes must be compile-time constants (initializers or
``Constant`` nodes); one that is not raises ``DataDependentError`` naming it,
so a user (or the ONNX backend) can fix it with ``constant_inputs``. Sequences
that leave the graph or enter subgraphs (``Loop``, ``SequenceMap``) are left
alone; the importer then refuses them as non-tensor values.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.errors import DataDependentError, ShapeError
from compiler.frontend.loader import infer_types, node_reads, opsets_of
from compiler.frontend.rewrite import Builder, NameSource, all_names

SEQUENCE_OPS = frozenset({"SequenceEmpty", "SequenceConstruct", "SequenceInsert", "SequenceErase", "SequenceAt",
                          "SequenceLength", "SplitToSequence", "ConcatFromSequence"})

_MAKES_SEQUENCE = SEQUENCE_OPS - {"SequenceAt", "SequenceLength", "ConcatFromSequence"}


def resolve_sequences(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the model's compile-time-resolvable sequence ops by tensor ops, in place; returns the model."""
    graph = model.graph
    if not any(n.op_type in SEQUENCE_OPS and n.domain in ("", "ai.onnx") for n in graph.node):
        return model
    escaping = {o.name for o in graph.output}
    for node in graph.node:
        escaping |= node_reads(node) - set(node.input)  # read inside a subgraph
    if any(name in escaping for n in graph.node if n.op_type in _MAKES_SEQUENCE for name in n.output):
        return model  # a sequence leaves the graph or enters a subgraph: left for the importer to refuse
    rewriter = _Rewriter(model)
    sequences: dict[str, list[str]] = {}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type in SEQUENCE_OPS and node.domain in ("", "ai.onnx"):
            if _is_sequence_op_reading_sequence(node) and node.input[0] not in sequences:
                return model  # a sequence this pass could not track (e.g. a graph input)
            nodes += rewriter.rewrite(node, sequences)
        elif any(name in sequences for name in node.input):
            return model  # a sequence feeds an op this pass does not resolve
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in rewriter.constants.items())
    return model


def _is_sequence_op_reading_sequence(node: onnx.NodeProto) -> bool:
    return node.op_type not in ("SequenceEmpty", "SequenceConstruct", "SplitToSequence")


class _Rewriter:
    """Turns one sequence op into tensor nodes, tracking sequences as lists of tensor names."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.names = NameSource(all_names(model.graph))
        self.opset = opsets_of(model).get("", 11)
        self.known = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.known[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.constants: dict[str, np.ndarray] = {}  # made for the new nodes, added at the end
        self._shapes: dict[str, list[int]] | None = None

    def rewrite(self, node: onnx.NodeProto, sequences: dict[str, list[str]]) -> list[onnx.NodeProto]:
        op, ins, out = node.op_type, list(node.input), node.output[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        b = Builder(self.names, f"{node.name or op}/", self.opset)
        if op == "SequenceEmpty":
            sequences[out] = []
        elif op == "SequenceConstruct":
            sequences[out] = ins
        elif op == "SequenceInsert":
            items = list(sequences[ins[0]])
            items.insert(self._position(node, 2, len(items), len(items), inclusive=True), ins[1])
            sequences[out] = items
        elif op == "SequenceErase":
            items = list(sequences[ins[0]])
            del items[self._position(node, 1, len(items), len(items) - 1)]
            sequences[out] = items
        elif op == "SequenceAt":
            items = sequences[ins[0]]
            b.op("Identity", [items[self._position(node, 1, len(items), None)]], out)
        elif op == "SequenceLength":
            b.op("Identity", [b.const(np.array(len(sequences[ins[0]]), np.int64), "length")], out)
        elif op == "SplitToSequence":
            sequences[out] = self._split(node, attrs, b)
        elif op == "ConcatFromSequence":
            self._concat(node, attrs, sequences[ins[0]], b)
        self.constants.update(b.constants)
        return b.nodes

    # --- operands ---------------------------------------------------------------------

    def _position(self, node: onnx.NodeProto, index: int, length: int, default: int | None,
                  inclusive: bool = False) -> int:
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            if default is None:
                raise ShapeError(f"{node.op_type} '{node.name}': the position input is required")
            return default
        pos = int(self._known(node, name, "position").reshape(-1)[0])
        limit = length + 1 if inclusive else length
        if not -length <= pos < limit:
            raise ShapeError(f"{node.op_type} '{node.name}': position {pos} is outside a sequence of {length}")
        return pos + length if pos < 0 else pos

    def _known(self, node: onnx.NodeProto, name: str, what: str) -> np.ndarray:
        if name not in self.known:
            raise DataDependentError(f"{node.op_type} '{node.name}': the {what} '{name}' must be a compile-time "
                                     "constant to resolve the sequence, but it is only known at run time",
                                     values=(name,))
        return self.known[name]

    def _shape(self, name: str) -> list[int]:
        if self._shapes is None:
            types = infer_types(self.model.graph, opsets_of(self.model), constants=None)
            self._shapes = {}
            for value, t in types.items():
                if t.HasField("tensor_type") and t.tensor_type.HasField("shape") and \
                        all(d.HasField("dim_value") for d in t.tensor_type.shape.dim):
                    self._shapes[value] = [d.dim_value for d in t.tensor_type.shape.dim]
            self._shapes.update({n: list(a.shape) for n, a in self.known.items()})
        if name not in self._shapes:
            raise ShapeError(f"the shape of '{name}' must be static to split it into a sequence")
        return self._shapes[name]

    # --- the two ops that make tensor nodes -------------------------------------------------

    def _split(self, node: onnx.NodeProto, attrs: dict, b: Builder) -> list[str]:
        x = node.input[0]
        shape = self._shape(x)
        axis = int(attrs.get("axis", 0)) % len(shape)
        dim = shape[axis]
        split_name = node.input[1] if len(node.input) > 1 else ""
        keepdims = int(attrs.get("keepdims", 1)) or bool(split_name)  # keepdims applies only without split
        if not split_name:
            sizes = [1] * dim
        else:
            split = self._known(node, split_name, "split").astype(np.int64)
            if split.ndim == 0:
                chunk = int(split)
                sizes = [chunk] * (dim // chunk) + ([dim % chunk] if dim % chunk else [])
            else:
                sizes = [int(s) for s in split]
        parts = b.split(x, sizes, axis)
        return parts if keepdims else [b.squeeze(part, [axis]) for part in parts]

    def _concat(self, node: onnx.NodeProto, attrs: dict, items: list[str], b: Builder) -> None:
        if not items:
            raise ShapeError(f"ConcatFromSequence '{node.name}': the sequence is empty")
        axis = int(attrs.get("axis"))
        if int(attrs.get("new_axis", 0)):
            b.stack(items, axis % (len(self._shape(items[0])) + 1), node.output[0])
        else:
            b.concat(items, axis, node.output[0])
