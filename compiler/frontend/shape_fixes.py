"""Output types onnx's shape inference gets wrong, computed as the ONNX spec (and onnxruntime) define them.

:func:`compiler.frontend.loader.infer_types` asks :func:`corrected_types` after
every inference run and pins the values it names to the corrected types (each
becomes an input of the proxy graph, so everything downstream is re-inferred
from the right shape).

Pools with ``ceil_mode=1`` (MaxPool, AveragePool, LpPool): onnx (1.23 and
earlier) takes ``ceil((in + pads - dilation*(k-1) - 1) / stride) + 1`` and
keeps a last window that would start in the end padding (or, with VALID or
small kernels, past the input), and with ``auto_pad=SAME_*`` it applies that
formula to SAME's padding instead of giving ``ceil(in / stride)``. The spec
("sliding windows that would start in the right padded region are ignored"),
onnxruntime and PyTorch drop that window: one row/column fewer. With
``ceil_mode=0`` inference agrees with the spec and nothing is corrected.

ai.onnx.ml scorers, whose outputs onnx mostly leaves shapeless: :mod:`.ml_types`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx
from onnx import helper

from compiler.frontend.ml_types import ml_output_types

#: Pools whose output size depends on ``ceil_mode``.
CEIL_MODE_POOLS = frozenset({"MaxPool", "AveragePool", "LpPool"})


def pool_output_spatial(in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                        dilations: Sequence[int], pads: Sequence[int], auto_pad: str,
                        ceil_mode: bool) -> tuple[int, ...]:
    """A pool's output spatial dims as the spec and onnxruntime compute them.

    ``pads`` is begins then ends (ignored unless ``auto_pad`` is NOTSET). SAME_* gives
    ``ceil(in / stride)`` whatever ``ceil_mode``; VALID is explicit padding of zeros (onnxruntime's
    reading: with ``ceil_mode`` a last window that starts inside the input and overhangs its end is
    kept). In ceil mode a last window that would start at or past ``in + pad_begin`` is dropped.
    """
    rank = len(in_spatial)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        return tuple(-(-in_spatial[d] // strides[d]) for d in range(rank))
    if auto_pad == "VALID":
        pads = [0] * (2 * rank)
    out = []
    for d in range(rank):
        span = in_spatial[d] + pads[d] + pads[rank + d] - dilations[d] * (kernel[d] - 1) - 1
        if not ceil_mode:
            out.append(span // strides[d] + 1)
            continue
        size = -(-span // strides[d]) + 1
        if (size - 1) * strides[d] >= in_spatial[d] + pads[d]:
            size -= 1
        out.append(size)
    return tuple(out)


def corrected_types(node: onnx.NodeProto, types: Mapping[str, onnx.TypeProto]) -> dict[str, onnx.TypeProto]:
    """``{output name: type}`` for the outputs of ``node`` whose correct type differs from ``types``
    (the current inference results, the node's input included); empty when nothing is known to be wrong."""
    if node.domain == "ai.onnx.ml":
        return ml_output_types(node, types)
    if node.op_type not in CEIL_MODE_POOLS or node.domain not in ("", "ai.onnx") or not node.input:
        return {}
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if not attrs.get("ceil_mode") or "kernel_shape" not in attrs:
        return {}
    shape = _static_shape(types.get(node.input[0]))
    if shape is None or len(shape) < 3:
        return {}
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    kernel = list(attrs["kernel_shape"])
    rank = len(kernel)
    if len(shape) != rank + 2:
        return {}
    spatial = pool_output_spatial(shape[2:], kernel, list(attrs.get("strides", [1] * rank)),
                                  list(attrs.get("dilations", [1] * rank)), list(attrs.get("pads", [0] * (2 * rank))),
                                  auto_pad, True)
    if min(spatial) < 1:
        return {}  # a window larger than the padded input: left for the checks downstream to refuse
    want = (*shape[:2], *spatial)
    fixes = {}
    for k, name in enumerate(node.output[:2]):  # MaxPool's Indices have the values' shape
        if not name:
            continue
        have = types.get(name)
        if _static_shape(have) == want:
            continue
        if have is not None and have.WhichOneof("value") == "tensor_type" and have.tensor_type.elem_type:
            elem_type = have.tensor_type.elem_type
        elif k == 0:
            elem_type = types[node.input[0]].tensor_type.elem_type
        else:
            elem_type = onnx.TensorProto.INT64
        fixes[name] = helper.make_tensor_type_proto(elem_type, list(want))
    return fixes


def _static_shape(t: onnx.TypeProto | None) -> tuple[int, ...] | None:
    if t is None or t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return None
    dims = t.tensor_type.shape.dim
    if not all(d.HasField("dim_value") for d in dims):
        return None
    return tuple(d.dim_value for d in dims)
