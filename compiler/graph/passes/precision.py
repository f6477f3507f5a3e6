"""Contraction precision: float32 contractions on bfloat16 operands (``precision="bf16"``), float16
contractions on float32 copies of their operands (CPU targets).

Contract of :func:`contractions_in_bf16`: every ``MatMul``, ``Gemm`` and ungrouped ``Conv`` whose two
product operands and output are float32 reads those operands rounded to bfloat16 (round to nearest
even, as ``Cast`` does) and still accumulates and writes float32: a constant operand (a weight) is
stored as bfloat16, a computed one passes through one ``Cast`` shared by all its contractions. A Gemm's
C and a Conv's bias stay float32, so does every other op. The lowerings take such a node as they are
(products of the operands widened to the output's type), which makes it ``sum f32(bf16) * f32(bf16)``,
the form the schedule runs as bfloat16 pair dot products (``vdpbf16ps``) where the target has them.

This is what "bf16 inference precision" means in OpenVINO and oneDNN: each product's operands lose
their low 16 mantissa bits (a relative error of at most 2^-9 each), sums stay float32.

Contract of :func:`half_contractions_in_float32`: every float16 ``MatMul``, ``Gemm`` and ``Conv``
reads float32 copies of its inputs (weights widened at compile time, other inputs by one shared
``Cast``), computes in float32 and is followed by one ``Cast`` back to float16. Exactly what its
lowering computes anyway (float32 products and sums, one rounding at the end), but the contraction is
the float32 one, with its packed weights and register tiles, where CPUs without float16 arithmetic
would convert every operand load inside the inner loop. The artifact stores such weights as float32.
"""

from __future__ import annotations

from onnx import TensorProto

from compiler.dtypes import DType, constant_storage, constant_values
from compiler.graph.ir import Graph, Node, TensorType, Value

#: ``precision=``: ``fp32`` computes in the model's types; ``bf16`` applies this pass.
PRECISIONS = ("fp32", "bf16")
#: The contractions and the positions of their two product operands.
_OPERANDS = {"MatMul": (0, 1), "Gemm": (0, 1), "Conv": (0, 1)}


def contractions_in_bf16(graph: Graph) -> Graph:
    """Apply the bfloat16 rewrite (in place) and return ``graph``."""
    rounded: dict[tuple[int, tuple[str, ...]], Value] = {}  # (id(float32 value), loops) -> its bfloat16 version
    nodes: list[Node] = []
    for node in graph.nodes:
        if _takes_bf16(node):
            for k in _OPERANDS[node.op_type]:
                node.inputs[k] = _converted(graph, node.inputs[k], DType.BF16, rounded, nodes, node.loops)
        nodes.append(node)
    graph.nodes = nodes
    return graph


def half_contractions_in_float32(graph: Graph) -> Graph:
    """Apply the float16 rewrite (in place) and return ``graph``."""
    widened: dict[tuple[int, tuple[str, ...]], Value] = {}  # (id(float16 value), loops) -> its float32 version
    nodes: list[Node] = []
    for node in graph.nodes:
        if not _takes_float32(node):
            nodes.append(node)
            continue
        node.inputs = [None if v is None else _converted(graph, v, DType.F32, widened, nodes, node.loops)
                       for v in node.inputs]
        half = node.outputs[0]
        wide = Value(graph.fresh_name(f"{half.name}_f32"), TensorType(DType.F32, half.shape), producer=node)
        node.outputs[0] = wide
        nodes.append(node)
        narrow = Node("Cast", graph.fresh_name("to_f16"), [wide], [half], {"to": TensorProto.FLOAT16},
                      opset=graph.opsets.get("", 0), guard=node.guard, loops=node.loops)
        half.producer = narrow
        nodes.append(narrow)
    graph.nodes = nodes
    return graph


def _converted(graph: Graph, value: Value | None, dtype: DType, done: dict[tuple[int, tuple[str, ...]], Value],
               nodes: list[Node], loops: tuple[str, ...]) -> Value:
    """``value`` in ``dtype``: a converted constant, or the output of one Cast appended to ``nodes`` (one per
    loop of the run its readers are in: a Cast in a loop's body is not computed where the loop runs no
    iteration)."""
    assert value is not None
    key = (id(value), loops)
    if key not in done:
        done[key] = _constant(graph, value, dtype) if value.is_const else _cast(graph, value, dtype, nodes, loops)
    return done[key]


def _takes_bf16(node: Node) -> bool:
    operands = _OPERANDS.get(node.op_type)
    if operands is None or node.domain not in ("", "ai.onnx") or node.outputs[0].dtype is not DType.F32:
        return False
    if node.op_type == "Conv" and node.attr("group", 1) != 1:
        return False  # depthwise and grouped convs are too short per output to gain from pairs
    return all(node.input(k) is not None and node.inputs[k].dtype is DType.F32 for k in operands)


def _takes_float32(node: Node) -> bool:
    return (node.op_type in _OPERANDS and node.domain in ("", "ai.onnx") and node.outputs[0].dtype is DType.F16
            and all(v is None or v.dtype is DType.F16 for v in node.inputs))


def _constant(graph: Graph, value: Value, dtype: DType) -> Value:
    array = constant_storage(constant_values(value.const, value.dtype), dtype)
    return Value(graph.fresh_name(f"{value.name}_{dtype.value}"), TensorType(dtype, value.shape), const=array)


def _cast(graph: Graph, value: Value, dtype: DType, nodes: list[Node], loops: tuple[str, ...]) -> Value:
    out = Value(graph.fresh_name(f"{value.name}_{dtype.value}"), TensorType(dtype, value.shape))
    cast = Node("Cast", graph.fresh_name(f"to_{dtype.value}"), [value], [out], {"to": dtype.onnx},
                opset=graph.opsets.get("", 0), guard=value.producer.guard if value.producer is not None else None,
                loops=loops)
    out.producer = cast
    nodes.append(cast)
    return out
