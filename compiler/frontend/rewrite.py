"""ONNX-level graph rewriting for the frontend's expansions: fresh names, subgraph inlining, node building.

Contract:

* :class:`NameSource` hands out value/node names unique against every name of
  the model (subgraphs included) and every name it handed out before;
* :func:`inline_graph` copies a subgraph's nodes into the enclosing graph with
  its inputs bound to outer values and its outputs produced under given names;
  every other name it defines is renamed fresh, nested subgraphs' reads of
  renamed values follow, and reads of outer-scope values stay as they are;
* :class:`Builder` emits ONNX nodes for a given default-domain opset (spelling
  ``Unsqueeze``/``Split``/``Slice``/``Clip`` the way that opset wants their
  arguments) and collects new constants, so that an expansion commits nothing
  until it has succeeded;
* :class:`NotExpandable` is how an expansion says why it cannot (yet) rewrite a
  node; the frontend keeps the node and reports the reason if it survives.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.frontend.loader import graph_attrs


class NotExpandable(Exception):
    """A node an expansion cannot rewrite; the message says why (completing 'Op 'name' (opset N): ...').

    ``values`` names run-time values whose contents would make it expandable (a trip count, a
    condition): the frontend then reports a ``DataDependentError`` naming them.
    """

    def __init__(self, message: str, values: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.values = tuple(values)


class NameSource:
    """Fresh value/node names, unique against every name in the model (subgraphs included)."""

    def __init__(self, taken: set[str]) -> None:
        self._taken = taken
        self._counter = itertools.count()

    def fresh(self, hint: str) -> str:
        name = hint
        while name in self._taken:
            name = f"{hint}__{next(self._counter)}"
        self._taken.add(name)
        return name


def all_names(graph: onnx.GraphProto) -> set[str]:
    """Every value and node name ``graph`` and its subgraphs use."""
    names = {i.name for i in graph.input} | {o.name for o in graph.output} | {t.name for t in graph.initializer}
    for node in graph.node:
        names |= set(node.input) | set(node.output) | {node.name}
        for attr in node.attribute:
            for sub in graph_attrs(attr):
                names |= all_names(sub)
    return names


def has_subgraph(node: onnx.NodeProto) -> bool:
    return any(graph_attrs(a) for a in node.attribute)


def subgraph(node: onnx.NodeProto, name: str) -> onnx.GraphProto:
    return next(a.g for a in node.attribute if a.name == name)


# --- inlining ---------------------------------------------------------------------------


def inline_graph(graph: onnx.GraphProto, bindings: Mapping[str, str], outputs: Sequence[str], prefix: str,
                 names: NameSource, constants: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """``graph``'s nodes for the enclosing scope (see the module docstring).

    ``bindings`` maps the graph's input names to outer value names; ``outputs``
    gives the outer name of each graph output ('' where nobody reads it: the
    output then keeps a fresh name). The graph's initializers land in
    ``constants`` under fresh names.
    """
    defined = [t.name for t in graph.initializer] + [o for n in graph.node for o in n.output if o]
    mapping: dict[str, str] = dict(bindings)
    # An output computed inside the graph takes its outer name directly (the first one, if it repeats).
    for inner, outer in zip(graph.output, outputs):
        if outer and inner.name in defined and inner.name not in mapping:
            mapping[inner.name] = outer
    for name in defined:
        if name not in mapping:
            mapping[name] = names.fresh(prefix + name)
    for t in graph.initializer:
        constants[mapping[t.name]] = numpy_helper.to_array(t)
    nodes = [_renamed_node(n, mapping, names.fresh(prefix + (n.name or n.op_type))) for n in graph.node]
    # Outputs that are bound inputs, outer values, or repeat another output need a copy under their name.
    for inner, outer in zip(graph.output, outputs):
        source = mapping.get(inner.name, inner.name)
        if outer and source != outer:
            nodes.append(helper.make_node("Identity", [source], [outer], name=names.fresh(prefix + "output")))
    return nodes


def _renamed_node(node: onnx.NodeProto, mapping: Mapping[str, str], name: str) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    copy.name = name
    _rename_list(copy.input, mapping)
    _rename_list(copy.output, mapping)
    for attr in copy.attribute:
        for sub in graph_attrs(attr):
            _rename_outer_refs(sub, mapping)
    return copy


def _rename_outer_refs(graph: onnx.GraphProto, mapping: Mapping[str, str]) -> None:
    """Rename a nested subgraph's reads of renamed outer values (names it defines itself shadow them)."""
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output}
    visible = {k: v for k, v in mapping.items() if k not in local}
    for node in graph.node:
        _rename_list(node.input, visible)
        for attr in node.attribute:
            for sub in graph_attrs(attr):
                _rename_outer_refs(sub, visible)
    for out in graph.output:
        out.name = visible.get(out.name, out.name)


def _rename_list(names: Any, mapping: Mapping[str, str]) -> None:
    for i, n in enumerate(names):
        if n in mapping:
            names[i] = mapping[n]


# --- building nodes -----------------------------------------------------------------------


class Builder:
    """Emits the nodes (and constants) of one expansion, spelled for default-domain ``opset``."""

    def __init__(self, names: NameSource, prefix: str, opset: int) -> None:
        self.names = names
        self.prefix = prefix
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.constants: dict[str, np.ndarray] = {}

    def fresh(self, hint: str) -> str:
        return self.names.fresh(self.prefix + hint)

    def const(self, array: Any, hint: str = "const") -> str:
        name = self.fresh(hint)
        self.constants[name] = np.asarray(array)
        return name

    def ints(self, values: Sequence[int], hint: str = "ints") -> str:
        return self.const(np.array(values, dtype=np.int64), hint)

    def op(self, op_type: str, inputs: Sequence[str], out: str = "", **attrs: Any) -> str:
        """One single-output node; its output is ``out``, or a fresh name when that is empty."""
        return self.multi(op_type, inputs, [out or self.fresh(op_type.lower())], **attrs)[0]

    def multi(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> list[str]:
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=self.fresh(op_type), **attrs))
        return list(outputs)

    def inline(self, graph: onnx.GraphProto, bindings: Mapping[str, str], outputs: Sequence[str]) -> None:
        self.nodes.extend(inline_graph(graph, bindings, outputs, self.prefix, self.names, self.constants))

    # Ops whose arguments moved from attributes to inputs between opsets.

    def unsqueeze(self, x: str, axes: Sequence[int], out: str = "") -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", [x, self.ints(axes, "axes")], out)
        return self.op("Unsqueeze", [x], out, axes=list(axes))

    def squeeze(self, x: str, axes: Sequence[int], out: str = "") -> str:
        if self.opset >= 13:
            return self.op("Squeeze", [x, self.ints(axes, "axes")], out)
        return self.op("Squeeze", [x], out, axes=list(axes))

    def slice(self, x: str, start: int, end: int, axis: int) -> str:
        if self.opset >= 10:
            return self.op("Slice", [x, self.ints([start], "starts"), self.ints([end], "ends"), self.ints([axis], "axes")])
        return self.op("Slice", [x], starts=[start], ends=[end], axes=[axis])

    def split(self, x: str, sizes: Sequence[int], axis: int) -> list[str]:
        outputs = [self.fresh("split") for _ in sizes]
        if self.opset >= 13:
            return self.multi("Split", [x, self.ints(sizes, "split")], outputs, axis=axis)
        return self.multi("Split", [x], outputs, axis=axis, split=list(sizes))

    def clip(self, x: str, bound: float, dtype: np.dtype) -> str:
        if self.opset >= 11:
            return self.op("Clip", [x, self.const(np.array(-bound, dtype), "min"), self.const(np.array(bound, dtype), "max")])
        return self.op("Clip", [x], min=-bound, max=bound)

    # Conveniences over opset-stable ops.

    def gather(self, x: str, index: int, axis: int) -> str:
        """``x`` at ``index`` along ``axis``, that axis removed (a scalar index drops it)."""
        return self.op("Gather", [x, self.const(np.array(index, np.int64), "index")], axis=axis)

    def concat(self, xs: Sequence[str], axis: int, out: str = "") -> str:
        return self.op("Concat", xs, out, axis=axis)

    def stack(self, xs: Sequence[str], axis: int, out: str = "") -> str:
        """``xs`` stacked along a new ``axis`` (numpy's ``stack``)."""
        return self.concat([self.unsqueeze(x, [axis]) for x in xs], axis, out)

    def transpose(self, x: str, perm: Sequence[int], out: str = "") -> str:
        return self.op("Transpose", [x], out, perm=list(perm))
