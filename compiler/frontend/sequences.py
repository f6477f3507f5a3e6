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

import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from compiler.errors import DataDependentError, ShapeError
from compiler.frontend.loader import node_reads, opsets_of

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
    graph.initializer.extend(rewriter.initializers)
    return model


def _is_sequence_op_reading_sequence(node: onnx.NodeProto) -> bool:
    return node.op_type not in ("SequenceEmpty", "SequenceConstruct", "SplitToSequence")


class _Rewriter:
    """Turns one sequence op into tensor nodes, tracking sequences as lists of tensor names."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.opset = opsets_of(model).get("", 11)
        self.constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        for node in model.graph.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.initializers: list[onnx.TensorProto] = []  # made for the new nodes, added at the end
        self._shapes: dict[str, list[int]] | None = None
        self._names = itertools.count()

    def rewrite(self, node: onnx.NodeProto, sequences: dict[str, list[str]]) -> list[onnx.NodeProto]:
        op, ins, out = node.op_type, list(node.input), node.output[0]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if op == "SequenceEmpty":
            sequences[out] = []
        elif op == "SequenceConstruct":
            sequences[out] = ins
        elif op == "SequenceInsert":
            items = list(sequences[ins[0]])
            at = self._position(node, 2, len(items), len(items), inclusive=True)
            items.insert(at, ins[1])
            sequences[out] = items
        elif op == "SequenceErase":
            items = list(sequences[ins[0]])
            del items[self._position(node, 1, len(items), len(items) - 1)]
            sequences[out] = items
        elif op == "SequenceAt":
            items = sequences[ins[0]]
            return [helper.make_node("Identity", [items[self._position(node, 1, len(items), None)]], [out])]
        elif op == "SequenceLength":
            return [_constant(out, np.array(len(sequences[ins[0]]), np.int64))]
        elif op == "SplitToSequence":
            return self._split(node, attrs, sequences)
        elif op == "ConcatFromSequence":
            return self._concat(node, attrs, sequences[ins[0]])
        return []

    # --- operands ---------------------------------------------------------------------

    def _position(self, node: onnx.NodeProto, index: int, length: int, default: int | None,
                  inclusive: bool = False) -> int:
        name = node.input[index] if index < len(node.input) else ""
        if not name:
            if default is None:
                raise ShapeError(f"{node.op_type} '{node.name}': the position input is required")
            return default
        value = self._constant(node, name, "position")
        pos = int(value.reshape(-1)[0])
        limit = length + 1 if inclusive else length
        if not -length <= pos < limit:
            raise ShapeError(f"{node.op_type} '{node.name}': position {pos} is outside a sequence of {length}")
        return pos + length if pos < 0 else pos

    def _constant(self, node: onnx.NodeProto, name: str, what: str) -> np.ndarray:
        if name not in self.constants:
            raise DataDependentError(f"{node.op_type} '{node.name}': the {what} '{name}' must be a compile-time "
                                     "constant to resolve the sequence, but it is only known at run time",
                                     values=(name,))
        return self.constants[name]

    def _shape(self, name: str) -> list[int]:
        if self._shapes is None:
            inferred = shape_inference.infer_shapes(self.model)
            self._shapes = {}
            for vi in [*inferred.graph.input, *inferred.graph.value_info]:
                t = vi.type.tensor_type
                if vi.type.HasField("tensor_type") and t.HasField("shape") and \
                        all(d.HasField("dim_value") for d in t.shape.dim):
                    self._shapes[vi.name] = [d.dim_value for d in t.shape.dim]
            self._shapes.update({n: list(a.shape) for n, a in self.constants.items()})
        if name not in self._shapes:
            raise ShapeError(f"the shape of '{name}' must be static to split it into a sequence")
        return self._shapes[name]

    def _fresh(self, hint: str) -> str:
        return f"{hint}__seq{next(self._names)}"

    # --- the two ops that make tensor nodes -------------------------------------------------

    def _split(self, node: onnx.NodeProto, attrs: dict, sequences: dict[str, list[str]]) -> list[onnx.NodeProto]:
        x = node.input[0]
        shape = self._shape(x)
        axis = int(attrs.get("axis", 0)) % len(shape)
        dim = shape[axis]
        split_name = node.input[1] if len(node.input) > 1 else ""
        keepdims = int(attrs.get("keepdims", 1)) or bool(split_name)  # keepdims applies only without split
        if not split_name:
            sizes = [1] * dim
        else:
            split = self._constant(node, split_name, "split").astype(np.int64)
            if split.ndim == 0:
                chunk = int(split)
                sizes = [chunk] * (dim // chunk) + ([dim % chunk] if dim % chunk else [])
            else:
                sizes = [int(s) for s in split]
        parts = [self._fresh(f"{node.output[0]}_part") for _ in sizes]
        nodes = [self._split_node(x, parts, sizes, axis)]
        if not keepdims:
            squeezed = [self._fresh(f"{node.output[0]}_item") for _ in parts]
            nodes += [self._axes_node("Squeeze", p, s, axis) for p, s in zip(parts, squeezed)]
            parts = squeezed
        sequences[node.output[0]] = parts
        return nodes

    def _concat(self, node: onnx.NodeProto, attrs: dict, items: list[str]) -> list[onnx.NodeProto]:
        if not items:
            raise ShapeError(f"ConcatFromSequence '{node.name}': the sequence is empty")
        axis, nodes = int(attrs.get("axis")), []
        if int(attrs.get("new_axis", 0)):
            rank = len(self._shape(items[0])) + 1
            axis %= rank
            expanded = [self._fresh(f"{node.output[0]}_item") for _ in items]
            nodes = [self._axes_node("Unsqueeze", i, e, axis) for i, e in zip(items, expanded)]
            items = expanded
        return nodes + [helper.make_node("Concat", items, [node.output[0]], axis=axis)]

    def _split_node(self, x: str, parts: list[str], sizes: list[int], axis: int) -> onnx.NodeProto:
        if self.opset < 13:
            return helper.make_node("Split", [x], parts, axis=axis, split=sizes)
        sizes_name = self._fresh("split_sizes")
        self.initializers.append(numpy_helper.from_array(np.array(sizes, np.int64), sizes_name))
        return helper.make_node("Split", [x, sizes_name], parts, axis=axis)

    def _axes_node(self, op: str, x: str, y: str, axis: int) -> onnx.NodeProto:
        if self.opset < 13:
            return helper.make_node(op, [x], [y], axes=[axis])
        axes_name = self._fresh("axes")
        self.initializers.append(numpy_helper.from_array(np.array([axis], np.int64), axes_name))
        return helper.make_node(op, [x, axes_name], [y])


def _constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))
