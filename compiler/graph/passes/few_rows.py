"""Attention scores of a few query rows read K as it is stored, instead of a transposed copy.

Contract of :func:`dot_few_rows`: for each ``MatMul(a, Transpose(k))`` whose transpose swaps the
last two axes of ``k`` (``[..., n, d]`` as ``[..., d, n]``, read by this MatMul alone) and whose
row count ``m`` (``a``'s second-to-last dim) can be at most ``FEW_ROWS``, the product is also
computed as ``Einsum('...md,...nd->...mn', a, k)``: one dot product of contiguous rows per output,
no copy of ``k``. Where ``m`` is a symbolic size (the new tokens of a decoder: one in a decoding
step, the prompt in a prefill), both forms stay, each under a run-time guard on ``m`` (``m <=
FEW_ROWS`` and its negation), joined by a ``Phi``; where ``m`` is a known small number, the dot
form replaces the pair. The results are the same sums of the same products (in another order).

Why: a decoding step multiplies one query row (a group's few, with grouped heads) by the whole
cache. The transposed copy of that cache costs five times the product (a GPT-2 layer at a past of
512: 85 us of transpose for 24 us of MatMul; the dot form takes 16 us in all); with many rows
(a prefill) the register-tiled GEMM over the transposed copy is the faster one (0.13 against 0.32
ms for 128 rows), so a run takes the form its row count calls for.
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.graph.ir import PHI_DOMAIN, Graph, Node, TensorType, Value
from compiler.loopir.expr import compare, logical_and
from compiler.loopir.sizes import negation, size_expr, static_value

EINSUM_SINCE = 12
# Query rows up to which the dot form runs: one decoding step's rows, with grouped heads a group's
# query heads (4 for LLaMA-style 8/2 heads).
FEW_ROWS = 4


def dot_few_rows(graph: Graph) -> Graph:
    """Apply the rewrite to every matching MatMul, in place."""
    users = graph.consumers()
    nodes: list[Node] = []
    for node in graph.nodes:
        rewritten = _rewrite(graph, node, users) if node.op_type == "MatMul" and not node.domain else None
        if rewritten is None:
            nodes.append(node)
            continue
        transpose = node.inputs[1].producer
        nodes = [n for n in nodes if n is not transpose] + rewritten
    graph.nodes = nodes
    return graph


def _swaps_last_axes(node: Node | None, rank: int) -> bool:
    if node is None or node.op_type != "Transpose" or node.domain:
        return False
    return list(node.attr("perm", [])) == [*range(rank - 2), rank - 1, rank - 2]


def _rewrite(graph: Graph, matmul: Node, users: dict[int, list[Node]]) -> list[Node] | None:
    a, t = matmul.inputs
    out = matmul.outputs[0]
    if a is None or t is None or a.dtype not in (DType.F32, DType.F16, DType.F64) or len(a.shape) < 3:
        return None
    transpose = t.producer
    if not _swaps_last_axes(transpose, len(t.shape)) or len(users.get(id(t), [])) != 1 or t.shape[:-2] != a.shape[:-2]:
        return None
    if transpose.guard != matmul.guard or transpose.loops != matmul.loops or id(t) in {id(v) for v in graph.outputs}:
        return None
    rows = static_value(a.shape[-2])
    if rows is not None and rows > FEW_ROWS:
        return None
    k = transpose.inputs[0]
    keep = dict(loops=matmul.loops)
    equation = {"equation": "...md,...nd->...mn"}
    since = max(matmul.opset, EINSUM_SINCE)
    if rows is not None:  # known to be few: the dot form alone
        dot = Node("Einsum", graph.fresh_name("few_rows"), [a, k], [out], equation, guard=matmul.guard, opset=since,
                   **keep)
        out.producer = dot
        return [dot]
    dots = Value(graph.fresh_name(f"{out.name}_dots"), TensorType(out.dtype, out.shape))
    taken = compare("le", size_expr(a.shape[-2]), FEW_ROWS)  # the Phi's predicate: the dot form's result
    few, many = taken, negation(taken)
    if matmul.guard is not None:
        few, many = logical_and(matmul.guard, few), logical_and(matmul.guard, many)
    tiled = Value(graph.fresh_name(f"{out.name}_tiled"), TensorType(out.dtype, out.shape))
    dot = Node("Einsum", graph.fresh_name("few_rows"), [a, k], [dots], equation, guard=few, opset=since, **keep)
    transpose.guard = many
    gemm = Node("MatMul", matmul.name, [a, t], [tiled], dict(matmul.attrs), guard=many, opset=matmul.opset, **keep)
    phi = Node("Phi", graph.fresh_name("Phi"), [dots, tiled], [out],
               {"predicate": taken}, domain=PHI_DOMAIN,
               guard=matmul.guard, opset=matmul.opset, **keep)
    for node in (dot, gemm, phi):
        for value in node.outputs:
            value.producer = node
    return [transpose, gemm, dot, phi]
