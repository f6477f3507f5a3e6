"""Grouped-query attention without ``repeat_kv``: the query heads of a group share one K/V head in place.

Contract of :func:`share_kv_heads`: for each ``MatMul(a, b)`` whose ``b`` is
``repeat_kv(x)`` as exporters spell it (``Reshape(Expand(Unsqueeze(x, 2)))`` from
``x: [batch, kv, L, d]`` over ``[batch, kv, g, L, d]`` to ``[batch, kv * g, L, d]``),
optionally transposed in its last two axes (the scores' ``K^T``), and whose
``a`` is ``[batch, kv * g, s, k]``, rewrite to

    MatMul(a as [batch, kv, g * s, k], x (transposed)) as [batch, kv * g, s, n]

The two reshapes are views (query head ``h = kv_head * g + j`` and its rows
are contiguous), so the g-fold copy of the cache that ``Expand`` made each step
goes, and each K/V head is read once for the g * s query rows that use it.
The result is exact: the same products, summed in the same order. Other
readers of the repeated value keep it (dead-code elimination drops it
otherwise).
"""

from __future__ import annotations

import numpy as np

from compiler.dtypes import DType
from compiler.graph.ir import Graph, Node, TensorType, Value
from compiler.loopir.sizes import Size, same_size, size_mul


def share_kv_heads(graph: Graph) -> Graph:
    """Apply the rewrite to every matching MatMul, in place."""
    nodes: list[Node] = []
    for node in graph.nodes:
        rewritten = _rewrite(graph, node) if node.op_type == "MatMul" and not node.domain else None
        nodes.extend(rewritten or [node])
    graph.nodes = nodes
    return graph


def _rewrite(graph: Graph, matmul: Node) -> list[Node] | None:
    a, b = matmul.inputs
    transposed = _producer(b, "Transpose")
    if transposed is not None and list(transposed.attr("perm", [])) != [0, 1, 3, 2]:
        return None
    source = _repeated(transposed.inputs[0] if transposed is not None else b)
    out = matmul.outputs[0]
    if source is None or len(a.shape) != 4 or len(out.shape) != 4:
        return None
    x, groups = source
    batch, kv = x.shape[0], x.shape[1]
    if not (same_size(a.shape[0], batch) and same_size(a.shape[1], size_mul(kv, groups))):
        return None
    rows, depth = a.shape[2], a.shape[3]
    keep = dict(guard=matmul.guard, loops=matmul.loops, opset=matmul.opset)
    grouped = _view(graph, a, (batch, kv, size_mul(groups, rows), depth), keep)
    new: list[Node] = [grouped.producer]
    operand = x
    if transposed is not None:
        operand = Value(graph.fresh_name(f"{x.name}_t"), TensorType(x.dtype, (x.shape[0], x.shape[1], x.shape[3],
                                                                              x.shape[2])))
        new.append(Node("Transpose", graph.fresh_name("kv_t"), [x], [operand], {"perm": [0, 1, 3, 2]}, **keep))
        operand.producer = new[-1]
    product = Value(graph.fresh_name(f"{out.name}_grouped"),
                    TensorType(out.dtype, (batch, kv, size_mul(groups, rows), out.shape[3])))
    new.append(Node("MatMul", matmul.name, [grouped, operand], [product], dict(matmul.attrs), **keep))
    product.producer = new[-1]
    reshape = Node("Reshape", graph.fresh_name("heads"), [product, _shape_const(graph, out.shape)], [out], **keep)
    out.producer = reshape
    return new + [reshape]


def _producer(value: Value | None, op_type: str) -> Node | None:
    node = value.producer if value is not None else None
    return node if node is not None and node.op_type == op_type and not node.domain else None


def _repeated(value: Value) -> tuple[Value, Size] | None:
    """``(x, g)`` where ``value`` is ``repeat_kv(x)`` with ``g`` query heads per K/V head (see the module
    docstring); None otherwise."""
    reshape = _producer(value, "Reshape")
    expand = _producer(reshape.inputs[0], "Expand") if reshape is not None else None
    unsqueeze = _producer(expand.inputs[0], "Unsqueeze") if expand is not None else None
    if unsqueeze is None:
        return None
    x, wide = unsqueeze.inputs[0], expand.outputs[0]
    if len(x.shape) != 4 or len(wide.shape) != 5 or unsqueeze.outputs[0].shape != (*x.shape[:2], 1, *x.shape[2:]):
        return None
    groups = wide.shape[2]
    expected = (x.shape[0], size_mul(x.shape[1], groups), *x.shape[2:])
    if not all(same_size(w, d) for w, d in zip(wide.shape, (*x.shape[:2], groups, *x.shape[2:]))) or not all(
            same_size(r, e) for r, e in zip(value.shape, expected)) or len(value.shape) != 4:
        return None
    return x, groups


def _view(graph: Graph, value: Value, shape: tuple[Size, ...], keep: dict) -> Value:
    out = Value(graph.fresh_name(f"{value.name}_grouped"), TensorType(value.dtype, shape))
    out.producer = Node("Reshape", graph.fresh_name("group_heads"), [value, _shape_const(graph, shape)], [out], **keep)
    return out


def _shape_const(graph: Graph, shape: tuple[Size, ...]) -> Value:
    """A Reshape's shape operand: int64 where static, else a size value (the view's own type says it all)."""
    if all(isinstance(d, int) for d in shape):
        return graph.add_const("shape", np.array(shape, dtype=np.int64))
    return Value(graph.fresh_name("shape"), TensorType(DType.I64, (len(shape),)), const=np.array(shape, dtype=object))
