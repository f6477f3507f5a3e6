"""Stage 1a': QDQ models' float contractions become integer contractions (ONNX -> ONNX, before folding).

What ``onnxruntime.quantization.quantize_static`` writes (the QDQ format) is a
float model whose contraction operands come out of ``DequantizeLinear``: the
integer values are there, but a float Conv would multiply their float images.
Contract of :func:`integer_contractions`: each

* ``Conv(DQ(x), DQ(w)[, bias])``,
* ``MatMul(DQ(a), DQ(b))``,
* ``Gemm(DQ(a), DQ(b)[, C])`` (``transA`` = 0; with ``transB`` the weight must be a constant),

where the operands are 8-bit integers (uint8 or int8), the activation's scale and
zero point are per tensor, a weight's are per tensor or per output channel, every
scale and zero point is a constant, and the contraction's result is float32, is
rewritten (its output keeps its name) to the integer contraction
(``ConvInteger``/``MatMulInteger``, int32 accumulation of the raw integers, zero
points compensated by the lowering) followed by ``Cast`` to float32 and ``Mul``
by the product of the two scales (one per output channel where the weight's is).
A bias that is ``DQ(int32)`` at the scale ``x_scale * w_scale`` (what the
quantizer writes) is added to the int32 accumulator, as onnxruntime's QLinearConv
does; any other constant bias is added in float32 after the scaling. The float
result then feeds whatever followed (``Relu``, ``QuantizeLinear``, ...), which
graph fusion folds into the contraction's store. A pattern that does not match
stays float; the DequantizeLinear nodes stay for their other readers (dead ones
are removed later), so semantics never change.

Before that, data-movement ops between a DQ and a Q with the same per-tensor
scale and zero point (``Q(Reshape(DQ(q)))``, ``MaxPool``, ``Concat``, nearest
``Resize``, ...) run on the integers: ``Q(op(DQ(q)))`` becomes ``op(q)``, exactly
equal since such an op only selects or repeats values, so the contraction after
them sees its DQ directly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.frontend.loader import opsets_of
from compiler.frontend.rewrite import Builder, NameSource, all_names

_BYTE_DTYPES = (np.dtype(np.uint8), np.dtype(np.int8))
# How close a bias's scale must be to x_scale * w_scale for its int32 values to be added unscaled.
_SCALE_RTOL = 1e-6


@dataclass(frozen=True)
class _Known:
    """What the rewrites look up: constants (initializers, Constant nodes) and each value's producer."""

    constants: dict[str, np.ndarray]
    producers: dict[str, onnx.NodeProto]


@dataclass(frozen=True)
class _Dequantized:
    """One ``DequantizeLinear``'s operands: the integer value (a name), scale and zero point (constants)."""

    value: str
    scale: np.ndarray
    zero: np.ndarray | None
    axis: int
    constant: np.ndarray | None  # the integer values where they are a constant


def integer_contractions(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every matching pattern rewritten (see the module docstring); the model itself
    is not modified. A model without DequantizeLinear is returned as it is."""
    if not any(n.op_type == "DequantizeLinear" for n in model.graph.node):
        return model
    return _contractions(_selections_on_integers(model))


def _selections_on_integers(model: onnx.ModelProto) -> onnx.ModelProto:
    """``Q(op(DQ(q, s, z)), s, z)`` -> ``op(q)`` for ops that only select, move or take the maximum of their
    data (:data:`_SELECTIONS`), the parameters per tensor and equal: dequantizing is increasing, so picking
    values commutes with it, and requantizing a picked value gives back its integer exactly."""
    graph = model.graph
    known = _Known(_constants(graph), {o: n for n in graph.node for o in n.output})
    readers = _readers(graph)
    outputs = {o.name for o in graph.output}
    replaced: dict[str, onnx.NodeProto] = {}  # a Q's output -> the integer op now producing it
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.domain not in ("", "ai.onnx"):
            continue
        op = known.producers.get(node.input[0])
        if op is None or op.domain not in ("", "ai.onnx") or op.op_type not in _SELECTIONS \
                or op.output[0] != node.input[0] or len(readers.get(op.output[0], [])) != 1 \
                or op.output[0] in outputs or len([o for o in op.output if o]) != 1 or not _selects(op):
            continue
        requantized = _parameters(node, known)
        data = [0] if op.op_type != "Concat" else range(len(op.input))
        sources = [_dequantized(op.input[k], known) for k in data]
        if requantized is None or any(q is None or not _same_parameters(q, requantized) for q in sources):
            continue
        integer_op = onnx.NodeProto()
        integer_op.CopyFrom(op)
        for k, q in zip(data, sources):
            integer_op.input[k] = q.value
        integer_op.output[0] = node.output[0]
        replaced[node.output[0]] = integer_op
    if not replaced:
        return model
    # The float op and the DequantizeLinear stay for any other reader; dead ones are removed later.
    return _with_nodes(model, [replaced.get(n.output[0], n) if n.op_type == "QuantizeLinear" else n
                               for n in graph.node], {})


#: Ops whose outputs are elements of their data inputs (or the largest of some): they commute with
#: an increasing elementwise map.
_SELECTIONS = frozenset({"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Slice", "Gather",
                         "Expand", "Tile", "DepthToSpace", "SpaceToDepth", "Concat", "MaxPool", "Resize"})


def _selects(node: onnx.NodeProto) -> bool:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "Resize":
        return attrs.get("mode", b"nearest") in (b"nearest", "nearest")
    return True


def _parameters(node: onnx.NodeProto, known: _Known) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A Quantize/DequantizeLinear's scale and zero point if both are constants (or the zero point absent)."""
    scale = known.constants.get(node.input[1])
    has_zero = len(node.input) > 2 and bool(node.input[2])
    zero = known.constants.get(node.input[2]) if has_zero else None
    return None if scale is None or (has_zero and zero is None) else (scale, zero)


def _same_parameters(q: _Dequantized, parameters: tuple[np.ndarray, np.ndarray | None]) -> bool:
    scale, zero = parameters
    if q.scale.size != 1 or scale.size != 1 or q.scale.reshape(()) != scale.reshape(()) or not scale.reshape(()) > 0:
        return False
    # Zero points on both sides: they say the integer type (a QuantizeLinear without one writes uint8).
    return q.zero is not None and zero is not None and zero.size == 1 and q.zero.size == 1 \
        and zero.dtype == q.zero.dtype and q.zero.reshape(()) == zero.reshape(())


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _with_nodes(model: onnx.ModelProto, nodes: list[onnx.NodeProto], added: dict[str, np.ndarray]) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    out.graph.initializer.extend(numpy_helper.from_array(a, name) for name, a in added.items())
    return out


def _contractions(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    known = _Known(_constants(graph), {o: n for n in graph.node for o in n.output})
    readers = _readers(graph)
    outputs = {o.name for o in graph.output}
    names = NameSource(all_names(graph))
    opset = opsets_of(model).get("", 1)
    nodes: list[onnx.NodeProto] = []
    added: dict[str, np.ndarray] = {}
    absorbed: set[str] = set()  # outputs of the QuantizeLinear nodes a rewrite took over
    rewrites = {"Conv": _conv, "MatMul": _matmul, "Gemm": _gemm}
    for node in graph.node:
        if node.output[0] in absorbed:
            continue
        rewrite = rewrites.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rewrite is not None:  # float32 in, float32 out: each DequantizeLinear's scale is float32
            operands = [_dequantized(name, known) for name in node.input[:2]]
            if all(o is not None for o in operands):
                build = Builder(names, f"{node.name or node.output[0]}_int_", opset)
                tail = _tail(node.output[0], readers, outputs, known)
                if rewrite(node, operands[0], operands[1], known, build, tail):
                    nodes.extend(build.nodes)
                    added.update(build.constants)
                    if tail.quantizer is not None:
                        absorbed.add(tail.out)
                    continue
        nodes.append(node)
    if not added and len(nodes) == len(graph.node):
        return model
    return _with_nodes(model, nodes, added)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1 \
                and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _dequantized(name: str, known: _Known) -> _Dequantized | None:
    """The DequantizeLinear producing ``name`` if it is one of 8-bit values with constant parameters."""
    constants = known.constants
    node = known.producers.get(name)
    if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("block_size", 0) or attrs.get("output_dtype", onnx.TensorProto.FLOAT) != onnx.TensorProto.FLOAT:
        return None
    scale = constants.get(node.input[1])
    zero = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None or scale.dtype != np.float32 or (len(node.input) > 2 and node.input[2] and zero is None):
        return None
    value = constants.get(node.input[0])
    if zero is not None and zero.dtype not in _BYTE_DTYPES or value is not None and value.dtype not in _BYTE_DTYPES:
        return None
    return _Dequantized(node.input[0], scale, zero, int(attrs.get("axis", 1)), value)


def _per_channel(q: _Dequantized, rank: int, axis: int) -> bool | None:
    """Whether ``q``'s parameters are per tensor (False) or along ``axis`` of its ``rank``-d value (True);
    None for any other layout."""
    if q.scale.size == 1 and (q.zero is None or q.zero.size == 1):
        return False
    if q.scale.ndim != 1 or (q.axis + rank if q.axis < 0 else q.axis) != axis:
        return None
    return q.zero is None or q.zero.shape == q.scale.shape


def _zero(q: _Dequantized, build: Builder, hint: str) -> str:
    """The zero point input of the integer op: empty where it is absent (0)."""
    if q.zero is None:
        return ""
    return build.const(q.zero.reshape(q.zero.shape if q.zero.size > 1 else ()), hint)


def _integer_operand(q: _Dequantized, build: Builder, hint: str) -> str:
    return q.value if q.constant is None else build.const(q.constant, hint)


@dataclass(frozen=True)
class _Tail:
    """Where a rewritten contraction's float result goes: ``out`` itself, or, where its one reader is a
    per-tensor QuantizeLinear with constant parameters (``quantizer``: its scale and zero point), straight
    into that node's output ``out`` with one multiplier, as onnxruntime's fused kernels requantize."""

    out: str
    quantizer: tuple[np.ndarray, np.ndarray | None] | None = None

    def emit(self, build: Builder, acc: str, scale: np.ndarray, bias: np.ndarray | None = None) -> None:
        """``Cast(acc) * scale [+ bias]`` into ``out``; under a quantizer, ``Q(Cast(acc) * (scale / y_scale)
        [+ bias / y_scale], 1, y_zero_point)`` (the multiplier rounded to float32 as onnxruntime does)."""
        as_float = build.op("Cast", [acc], to=onnx.TensorProto.FLOAT)
        if self.quantizer is not None:
            y_scale, zero = self.quantizer
            scale = scale.astype(np.float32) / y_scale.astype(np.float32).reshape(())
            bias = None if bias is None else bias.astype(np.float32) / y_scale.astype(np.float32).reshape(())
        target = "" if self.quantizer is not None else self.out
        result = build.op("Mul", [as_float, build.const(scale.astype(np.float32), "scale")],
                          "" if bias is not None else target)
        if bias is not None:
            result = build.op("Add", [result, build.const(bias.astype(np.float32), "bias")], target)
        if self.quantizer is not None:
            y_scale, zero = self.quantizer
            inputs = [result, build.const(np.ones((), np.float32), "unit_scale")]
            if zero is not None:
                inputs.append(build.const(zero.reshape(()), "y_zero"))
            build.op("QuantizeLinear", inputs, self.out)


def _tail(out: str, readers: dict[str, list[onnx.NodeProto]], outputs: set[str], known: _Known) -> _Tail:
    users = readers.get(out, [])
    if out in outputs or len(users) != 1 or users[0].op_type != "QuantizeLinear" \
            or users[0].domain not in ("", "ai.onnx") or users[0].input[0] != out:
        return _Tail(out)
    node = users[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get("block_size", 0) or "output_dtype" in attrs or "precision" in attrs:
        return _Tail(out)
    scale = known.constants.get(node.input[1])
    zero = known.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None or scale.size != 1 or scale.dtype != np.float32 or not scale.reshape(()) > 0 \
            or (len(node.input) > 2 and node.input[2] and (zero is None or zero.size != 1)):
        return _Tail(out)
    if zero is None:
        return _Tail(out)  # without a zero point the output type is uint8; keep the node that says so
    return _Tail(node.output[0], (scale, zero))


def _bias(name: str, scale: np.ndarray, known: _Known) -> tuple[np.ndarray | None, np.ndarray | None] | None:
    """A bias as (int32 values at the accumulator's scale, None) or (None, float values); None if not constant."""
    constants = known.constants
    node = known.producers.get(name)
    if node is not None and node.op_type == "DequantizeLinear" and node.domain in ("", "ai.onnx"):
        values = constants.get(node.input[0])
        bias_scale = constants.get(node.input[1])
        zero = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        if values is not None and values.dtype == np.int32 and bias_scale is not None and (zero is None or not zero.any()):
            if bias_scale.shape in ((), (1,), scale.shape) and np.allclose(
                    np.broadcast_to(bias_scale, scale.shape), scale, rtol=_SCALE_RTOL, atol=0):
                return values, None
            return None, (values.astype(np.float64) * bias_scale.astype(np.float64)).astype(np.float32)
        return None
    value = constants.get(name)
    return None if value is None or value.dtype != np.float32 else (None, value)


# --- the three contractions -----------------------------------------------------------


def _conv(node: onnx.NodeProto, x: _Dequantized, w: _Dequantized, known: _Known, build: Builder,
          tail: _Tail) -> bool:
    if w.constant is None or w.constant.ndim < 3 or _per_channel(x, 0, 0) is not False:
        return False
    channel_wise = _per_channel(w, w.constant.ndim, 0)
    if channel_wise is None:
        return False
    out_channels = w.constant.shape[0]
    broadcast = (1, out_channels) + (1,) * (w.constant.ndim - 2)
    scale = (x.scale.astype(np.float32).reshape(()) * np.broadcast_to(w.scale.astype(np.float32).reshape(-1),
                                                                       (out_channels,))).reshape(broadcast)
    bias_int = bias_float = None
    if len(node.input) > 2 and node.input[2]:
        bias = _bias(node.input[2], scale.reshape(-1), known)
        if bias is None:
            return False
        bias_int, bias_float = bias
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    acc = build.op("ConvInteger", [x.value, _integer_operand(w, build, "w"), _zero(x, build, "x_zero"),
                                   _zero(w, build, "w_zero")], **attrs)
    if bias_int is not None:
        acc = build.op("Add", [acc, build.const(bias_int.reshape(broadcast).astype(np.int32), "bias")])
    tail.emit(build, acc, scale, None if bias_float is None else bias_float.reshape(broadcast))
    return True


def _matmul(node: onnx.NodeProto, a: _Dequantized, b: _Dequantized, known: _Known, build: Builder,
          tail: _Tail) -> bool:
    if _per_channel(a, 0, 0) is not False:
        return False
    rank = b.constant.ndim if b.constant is not None else None
    if b.constant is None or rank < 2:
        if _per_channel(b, 0, 0) is not False:
            return False
        scale = a.scale.astype(np.float32).reshape(()) * b.scale.astype(np.float32).reshape(())
    else:
        channel_wise = _per_channel(b, rank, rank - 1)
        if channel_wise is None or (channel_wise and rank != 2):
            return False
        scale = a.scale.astype(np.float32).reshape(()) * b.scale.astype(np.float32).reshape(-1)
    acc = build.op("MatMulInteger", [a.value, _integer_operand(b, build, "b"), _zero(a, build, "a_zero"),
                                     _zero(b, build, "b_zero")])
    tail.emit(build, acc, np.asarray(scale))
    return True


def _gemm(node: onnx.NodeProto, a: _Dequantized, b: _Dequantized, known: _Known, build: Builder,
          tail: _Tail) -> bool:
    attrs = {a_.name: helper.get_attribute_value(a_) for a_ in node.attribute}
    if attrs.get("transA", 0) or b.constant is None or b.constant.ndim != 2 or _per_channel(a, 0, 0) is not False:
        return False
    weights, axis = (b.constant.T, 1 - _axis(b, 2)) if attrs.get("transB", 0) else (b.constant, _axis(b, 2))
    columns = weights.shape[1]
    channel_wise = _per_channel(_Dequantized(b.value, b.scale, b.zero, axis, weights), 2, 1)
    if channel_wise is None:
        return False
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    scale = np.float32(alpha) * a.scale.astype(np.float32).reshape(()) * np.broadcast_to(
        b.scale.astype(np.float32).reshape(-1), (columns,))
    bias_int = bias_float = None
    if len(node.input) > 2 and node.input[2]:
        bias = _bias(node.input[2], scale, known)
        if bias is None:
            return False
        bias_int, bias_float = bias
        if bias_int is not None and beta != 1.0:
            bias_int, bias_float = None, beta * bias_int.astype(np.float64) * scale
        elif bias_float is not None:
            bias_float = beta * bias_float.astype(np.float64)
    zero = "" if b.zero is None else build.const(b.zero.reshape(b.zero.shape if b.zero.size > 1 else ()), "b_zero")
    acc = build.op("MatMulInteger", [a.value, build.const(np.ascontiguousarray(weights), "b"),
                                     _zero(a, build, "a_zero"), zero])
    if bias_int is not None:
        acc = build.op("Add", [acc, build.const(bias_int.astype(np.int32), "bias")])
    tail.emit(build, acc, scale, bias_float)
    return True


def _axis(q: _Dequantized, rank: int) -> int:
    return q.axis + rank if q.axis < 0 else q.axis
