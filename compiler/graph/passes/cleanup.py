"""Graph cleanup: constant folding, Identity/Dropout removal, dead-code elimination.

Contract of :func:`cleanup`: rewrite the graph in place (and return it) until
none of the three rewrites changes anything:

* a node whose inputs are all constants becomes constants (the frontend's one
  evaluator, :func:`compiler.frontend.folding.evaluate_ir_node`, does the work;
  random ops and nodes with subgraphs are never folded);
* ``Identity`` and inference-mode ``Dropout`` are bypassed; Dropout's mask
  output, where present, becomes a constant all-true tensor (one that folding's
  size rule would refuse and that something reads keeps the Dropout: its
  lowering makes the mask at run time);
* nodes none of whose outputs reach a graph output are deleted.

Graph outputs keep their ONNX names: when bypassing would leave an output
pointing at a differently named value, that value takes the output's name;
where it cannot (it is a graph input or another output), the Identity stays.
Outputs may end up pointing at constants; later stages insert the copies.
"""

from __future__ import annotations

import numpy as np

from compiler.frontend.folding import evaluate_ir_node, fold_allowed
from compiler.graph.ir import Graph, Node, TensorType, Value


def cleanup(graph: Graph) -> Graph:
    """Apply the three rewrites to a fixpoint (see the module docstring)."""
    while True:
        changed = fold_constants(graph)
        changed |= remove_identities(graph)
        changed |= eliminate_dead_code(graph)
        if not changed:
            return graph


def fold_constants(graph: Graph) -> bool:
    """Replace each node whose inputs are all constants by its results; True if any was folded."""
    kept: list[Node] = []
    for node in graph.nodes:
        results = evaluate_ir_node(node, graph.opsets)
        if results is None or any(r is None for r in results[:len(node.outputs)]):
            kept.append(node)
            continue
        for value, (dtype, array) in zip(node.outputs, results):
            # The Value object stays, so readers and graph outputs need no rewiring and names survive.
            value.type = TensorType(dtype, tuple(array.shape))
            value.const = array
            value.producer = None
    folded = len(kept) != len(graph.nodes)
    graph.nodes = kept
    return folded


def remove_identities(graph: Graph) -> bool:
    """Bypass Identity and inference-mode Dropout nodes; True if any was removed."""
    kept: list[Node] = []
    removed = False
    for node in graph.nodes:
        if _is_passthrough(graph, node) and _bypass(graph, node.inputs[0], node.outputs[0]):
            if node.op_type == "Dropout" and len(node.outputs) > 1 and _small(node.outputs[1]):
                _make_all_true(node.outputs[1])
            removed = True
        else:
            kept.append(node)
    graph.nodes = kept
    return removed


def eliminate_dead_code(graph: Graph) -> bool:
    """Delete nodes whose outputs reach no graph output or If condition; True if any was deleted."""
    needed = {id(v) for v in [*graph.outputs, *graph.conditions.values()]}
    live: list[Node] = []
    for node in reversed(graph.nodes):
        if any(id(o) in needed for o in node.outputs):
            live.append(node)
            needed.update(id(v) for v in node.inputs if v is not None)
    live.reverse()
    removed = len(live) != len(graph.nodes)
    graph.nodes = live
    return removed


def _is_passthrough(graph: Graph, node: Node) -> bool:
    if node.domain or not node.inputs or node.inputs[0] is None:
        return False
    if node.op_type == "Identity":
        return True
    if node.op_type != "Dropout":
        return False
    # Opset 12+ says training mode with its third input; absent or constant false is inference.
    training = node.input(2)
    inference = training is None or training.is_const and not bool(np.asarray(training.const).reshape(-1)[0])
    return inference and (len(node.outputs) < 2 or _small(node.outputs[1]) or not _is_read(graph, node.outputs[1]))


def _small(value: Value) -> bool:
    """Whether folding's size rule lets ``value`` (computed from no constants) become a constant; a value of
    symbolic size cannot become one."""
    return value.type.is_static and fold_allowed([], [(value.type.numel, value.type.nbytes)])


def _is_read(graph: Graph, value: Value) -> bool:
    return any(value is v for v in graph.outputs) or any(value is v for n in graph.nodes for v in n.inputs)


def _bypass(graph: Graph, src: Value, dst: Value) -> bool:
    """Make ``dst``'s readers read ``src``; False where that would lose a graph output's name."""
    output_ids = {id(v) for v in graph.outputs}
    if id(dst) in output_ids:
        if id(src) in output_ids or any(src is v for v in graph.inputs):
            return False  # renaming src would rename an input or another output
        src.name = dst.name  # src now carries the output's ONNX name; dst disappears
    graph.replace_uses(dst, src)
    return True


def _make_all_true(mask: Value) -> None:
    """In inference mode Dropout keeps every element: its mask is all true (all ones before opset 10)."""
    mask.const = np.ones(mask.shape, dtype=mask.dtype.numpy)
    mask.producer = None
