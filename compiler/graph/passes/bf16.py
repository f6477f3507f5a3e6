"""Mixed precision: float32 contractions read bfloat16 operands (``precision="bf16"``).

Contract of :func:`contractions_in_bf16`: every ``MatMul``, ``Gemm`` and ungrouped ``Conv`` whose two
product operands and output are float32 reads those operands rounded to bfloat16 (round to nearest
even, as ``Cast`` does) and still accumulates and writes float32: a constant operand (a weight) is
stored as bfloat16, a computed one passes through one ``Cast`` shared by all its contractions. A Gemm's
C and a Conv's bias stay float32, so does every other op. The lowerings take such a node as they are
(products of the operands widened to the output's type), which makes it ``sum f32(bf16) * f32(bf16)``,
the form the schedule runs as bfloat16 pair dot products (``vdpbf16ps``) where the target has them.

This is what "bf16 inference precision" means in OpenVINO and oneDNN: each product's operands lose
their low 16 mantissa bits (a relative error of at most 2^-9 each), sums stay float32.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
from onnx import TensorProto

from compiler.dtypes import DType
from compiler.graph.ir import Graph, Node, TensorType, Value

#: ``precision=``: ``fp32`` computes in the model's types; ``bf16`` applies this pass.
PRECISIONS = ("fp32", "bf16")
#: The contractions and the positions of their two product operands.
_OPERANDS = {"MatMul": (0, 1), "Gemm": (0, 1), "Conv": (0, 1)}


def contractions_in_bf16(graph: Graph) -> Graph:
    """Apply the rewrite (in place) and return ``graph``."""
    rounded: dict[int, Value] = {}  # id(float32 value) -> its bfloat16 version
    nodes: list[Node] = []
    for node in graph.nodes:
        if _takes_bf16(node):
            for k in _OPERANDS[node.op_type]:
                value = node.inputs[k]
                assert value is not None
                if id(value) not in rounded:
                    rounded[id(value)] = _bf16_constant(graph, value) if value.is_const else _cast(graph, value, nodes)
                node.inputs[k] = rounded[id(value)]
        nodes.append(node)
    graph.nodes = nodes
    return graph


def _takes_bf16(node: Node) -> bool:
    operands = _OPERANDS.get(node.op_type)
    if operands is None or node.domain not in ("", "ai.onnx") or node.outputs[0].dtype is not DType.F32:
        return False
    if node.op_type == "Conv" and node.attr("group", 1) != 1:
        return False  # depthwise and grouped convs are too short per output to gain from pairs
    return all(node.input(k) is not None and node.inputs[k].dtype is DType.F32 for k in operands)


def _bf16_constant(graph: Graph, value: Value) -> Value:
    bits = np.asarray(value.const, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    return Value(graph.fresh_name(f"{value.name}_bf16"), TensorType(DType.BF16, value.shape), const=bits)


def _cast(graph: Graph, value: Value, nodes: list[Node]) -> Value:
    out = Value(graph.fresh_name(f"{value.name}_bf16"), TensorType(DType.BF16, value.shape))
    cast = Node("Cast", graph.fresh_name("to_bf16"), [value], [out], {"to": TensorProto.BFLOAT16},
                opset=graph.opsets.get("", 0), guard=value.producer.guard if value.producer is not None else None)
    out.producer = cast
    nodes.append(cast)
    return out
