"""Fusion: partition the graph's nodes into groups that each become one kernel.

An elementwise node joins the group of the node producing one of its inputs
when that input has no other reader, is not a graph output and has the node's
output shape (so the producer's iteration space is the node's). Chains such as
Conv → Add(bias) → Relu or MatMul → Add → Erf → Mul become one group; an
elementwise group ending in another such input merges in too (the two
branches of a tanh-Gelu, ``(x * 0.5) * (1 + tanh(...))``, are one kernel); the
lowering then inlines the elementwise work into the producer's store. View
ops (Reshape & co.) stay alone: they produce no kernel at all; so does a
``phi`` (the output of a run-time If, whose copies the driver emits). Nodes
with different guards (the branches of a run-time If) never share a group:
a kernel runs or is skipped whole; nor do nodes in different loops of the run
(a loop repeats whole kernels).

A decompression of weights (an elementwise node reading only constants and
producing more bytes than it reads: ``tilec.BlockDequantize`` of 4-bit codes)
is computed where it is read: the node reading it (a kernel of its own, not a
view) joins its group, so the lowering inlines it into that node's loads and the kernel streams the compact
codes instead of storing and re-reading the decoded weights.

A group runs at the position of its last node; every value a group reads from
outside is produced before that, and its only visible output is the last
node's, so the order stays topological.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from compiler.graph.ir import Graph, Node


@dataclass(eq=False)
class FusedGroup:
    nodes: list[Node] = field(default_factory=list)
    kind: str = "compute"

    @property
    def label(self) -> str:
        return "+".join(n.op_type for n in self.nodes)


def fuse_groups(graph: Graph, kind_of: Callable[[Node], str]) -> list[FusedGroup]:
    users = graph.consumers()
    outputs = {id(v) for v in [*graph.outputs, *graph.conditions.values()]}  # stored: the run reads them
    group_of: dict[int, FusedGroup] = {}  # id(node) → its group
    groups: list[FusedGroup] = []
    for node in graph.nodes:
        kind = kind_of(node)
        if kind == "elementwise":
            producers = _fusable_producers(node, users, outputs, group_of)
            target = producers[0] if producers else None
            for other in producers[1:]:
                if other.kind == "elementwise":
                    _merge(other, target, groups, group_of)
        else:
            target = _decompressed_weights(node, users, outputs, group_of) if kind == "compute" else None
            if target is not None:
                target.kind = kind  # the weights' group becomes the reader's kernel
        if target is None:
            target = FusedGroup(kind=kind)
            groups.append(target)
        target.nodes.append(node)
        group_of[id(node)] = target
    # A group runs where its last node was: order groups by that position.
    position = {id(n): k for k, n in enumerate(graph.nodes)}
    groups.sort(key=lambda g: position[id(g.nodes[-1])])
    return groups


def _decompressed_weights(node: Node, users: dict[int, list[Node]], outputs: set[int],
                          group_of: dict[int, FusedGroup]) -> FusedGroup | None:
    """The group of a weight decompression ``node`` alone reads, if any."""
    for value in node.inputs:
        if value is None or value.producer is None or id(value) in outputs or len(users.get(id(value), [])) != 1:
            continue
        producer = value.producer
        group = group_of.get(id(producer))
        if group is None or group.kind != "elementwise" or group.nodes != [producer] or len(producer.outputs) != 1:
            continue
        if producer.guard != node.guard or producer.loops != node.loops:
            continue
        sources = [v for v in producer.inputs if v is not None]
        if not all(v.is_const for v in sources) or not value.type.is_static:
            continue
        if sum(v.type.nbytes for v in sources) < value.type.nbytes:
            return group
    return None


def _merge(source: FusedGroup, target: FusedGroup, groups: list[FusedGroup], group_of: dict[int, FusedGroup]) -> None:
    """``source``'s nodes join ``target`` (both end in a value only the next node reads, so neither reads
    the other's nodes and their concatenation stays in topological order)."""
    target.nodes.extend(source.nodes)
    for n in source.nodes:
        group_of[id(n)] = target
    groups.remove(source)


def _fusable_producers(node: Node, users: dict[int, list[Node]], outputs: set[int],
                       group_of: dict[int, FusedGroup]) -> list[FusedGroup]:
    """The groups ``node`` may join, in input order: each ends in a value that ``node`` alone reads."""
    out_shape = node.outputs[0].shape
    found: list[FusedGroup] = []
    for value in node.inputs:
        if value is None or value.producer is None or id(value) in outputs:
            continue
        group = group_of.get(id(value.producer))
        if group is None or group.kind in ("view", "phi", "loop_end") or group.nodes[-1] is not value.producer:
            continue
        if value.producer.guard != node.guard or value.producer.loops != node.loops:
            continue
        if len(users.get(id(value), [])) != 1 or value.shape != out_shape:
            continue
        if len(value.producer.outputs) != 1 or any(g is group for g in found):
            continue
        found.append(group)
    return found
