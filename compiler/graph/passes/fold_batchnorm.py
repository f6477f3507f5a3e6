"""Fold inference-mode BatchNormalization into the Conv before it.

Contract of :func:`fold_batchnorm`: for each ``Y = BatchNormalization(Conv(X, W, b), scale, B, mean, var)``
where the Conv's output has no other reader and is not a graph output, W (and b
if present) and all four BN parameters are constants, and the BN is in
inference mode, rewrite to ``Y = Conv(X, W', b')`` with

    s  = scale / sqrt(var + epsilon)
    W' = W * s  (per output channel)
    b' = (b - mean) * s + B        (b = 0 when the Conv had no bias)

computed in float64 and stored in W's dtype. New constants are created (W may
be shared with another Conv). Any other BatchNormalization is left alone; the
lowering treats it as elementwise arithmetic.
"""

from __future__ import annotations

import numpy as np

from compiler.dtypes import DType
from compiler.graph.ir import Graph, Node, Value

_FOLDABLE_DTYPES = (DType.F16, DType.F32, DType.F64)  # bfloat16 constants are stored as raw bits


def fold_batchnorm(graph: Graph) -> Graph:
    """Apply the rewrite to every matching Conv/BatchNormalization pair, in place."""
    readers = graph.consumers()
    output_ids = {id(v) for v in graph.outputs}
    folded: set[int] = set()
    for bn in graph.nodes:
        conv = _foldable_conv(bn, readers, output_ids)
        if conv is not None:
            _fold_into(graph, conv, bn)
            folded.add(id(bn))
    graph.nodes = [n for n in graph.nodes if id(n) not in folded]
    return graph


def _foldable_conv(bn: Node, readers: dict[int, list[Node]], output_ids: set[int]) -> Node | None:
    """The Conv ``bn`` can be folded into, or None."""
    if bn.op_type != "BatchNormalization" or bn.domain or bn.attr("training_mode", 0):
        return None
    # Opsets before 14 may list running-statistics outputs; folding needs them unread.
    if any(readers.get(id(o)) or id(o) in output_ids for o in bn.outputs[1:]):
        return None
    x = bn.inputs[0]
    conv = x.producer if x is not None else None
    if conv is None or conv.op_type != "Conv" or conv.domain or conv.outputs[0] is not x:
        return None
    if len(readers.get(id(x), [])) != 1 or id(x) in output_ids:
        return None
    weight, bias = conv.input(1), conv.input(2)
    params = bn.inputs[1:5]
    if weight is None or not weight.is_const or weight.dtype not in _FOLDABLE_DTYPES:
        return None
    if bias is not None and not bias.is_const:
        return None
    channels = weight.shape[0]
    # Pre-opset-9 non-spatial BN has per-element parameters; only per-channel ones fold.
    if len(params) != 4 or any(p is None or not p.is_const or p.shape != (channels,) for p in params):
        return None
    return conv


def _fold_into(graph: Graph, conv: Node, bn: Node) -> None:
    weight = conv.inputs[1]
    bias = conv.input(2)
    scale, shift, mean, var = (np.asarray(p.const, dtype=np.float64) for p in bn.inputs[1:5])
    s = scale / np.sqrt(var + float(bn.attr("epsilon", 1e-5)))
    w = np.asarray(weight.const, dtype=np.float64) * s.reshape((-1,) + (1,) * (weight.type.rank - 1))
    b = np.zeros_like(s) if bias is None else np.asarray(bias.const, dtype=np.float64)
    b = (b - mean) * s + shift
    dtype = weight.dtype.numpy
    new_weight = graph.add_const(f"{weight.name}_bnfold", w.astype(dtype))
    new_bias = graph.add_const(f"{conv.name}_bias_bnfold", b.astype(dtype))
    conv.inputs = [conv.inputs[0], new_weight, new_bias]
    # The BN's output Value (and name) now comes straight from the Conv.
    y: Value = bn.outputs[0]
    conv.outputs[0] = y
    y.producer = conv
