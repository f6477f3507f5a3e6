"""Int8 models as users make them: a float model quantized by onnxruntime's own tools.

* :func:`quantize_static_qdq`: ``quant_pre_process`` (optional) then ``quantize_static`` in the QDQ
  format, per-channel int8 weights, uint8 activations, calibrated on given inputs (random data here).
* :func:`quantize_dynamic_int8`: ``quantize_dynamic`` (int8 weights; DynamicQuantizeLinear +
  MatMulInteger at run time), the form used for transformers.
* :func:`weights_to_4bit`: every MatMul with a constant 2-D weight becomes a com.microsoft MatMulNBits of
  4-bit codes, as onnxruntime's ``MatMulNBitsQuantizer`` writes them (round to nearest, asymmetric, one scale
  and packed zero point per block along K); written here because that tool needs ``onnx_ir``, which the
  lock does not hold.

A model below opset 13 is converted to 13 first: onnxruntime's quantizer writes per-axis
DequantizeLinear whatever the opset, and onnxruntime 1.32 refuses to load that below 13.
The first two need onnxruntime (a dev dependency), imported on use.
"""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Iterable, Mapping

import numpy as np
import onnx
from onnx import version_converter

PER_AXIS_OPSET = 13


def _at_least_opset_13(model: onnx.ModelProto) -> onnx.ModelProto:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), PER_AXIS_OPSET)
    return version_converter.convert_version(model, PER_AXIS_OPSET) if version < PER_AXIS_OPSET else model


def quantize_static_qdq(model: onnx.ModelProto, calibration: Iterable[Mapping[str, np.ndarray]],
                        preprocess: bool = True, per_channel: bool = True) -> onnx.ModelProto:
    """``model`` quantized by onnxruntime's quantize_static (QDQ, s8 weights, u8 activations)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = iter(list(calibration))

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    with tempfile.TemporaryDirectory(prefix="tilec-quantize-") as tmp:
        source, prepared, quantized = (pathlib.Path(tmp) / n for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(_at_least_opset_13(model), source)
        if preprocess:
            quant_pre_process(str(source), str(prepared))
        else:
            prepared = source
        quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return onnx.load(quantized)


def quantize_dynamic_int8(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` quantized by onnxruntime's quantize_dynamic (int8 weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="tilec-quantize-") as tmp:
        source, quantized = pathlib.Path(tmp) / "float.onnx", pathlib.Path(tmp) / "int8.onnx"
        onnx.save(_at_least_opset_13(model), source)
        quantize_dynamic(str(source), str(quantized), weight_type=QuantType.QInt8)
        return onnx.load(quantized)


def random_calibration(model: onnx.ModelProto, batches: int = 4, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Standard-normal float32 batches for every graph input of ``model`` (all float, static shapes)."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in inputs}
    return [{name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
            for _ in range(batches)]


def weights_to_4bit(model: onnx.ModelProto, block_size: int = 32) -> onnx.ModelProto:
    """``model`` with each MatMul by a float32 [K, N] initializer turned into MatMulNBits (bits 4)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    weights = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2}
    quantized: set[str] = set()
    for k, node in enumerate(graph.node):
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or node.input[1] not in weights:
            continue
        name = node.input[1]
        w = onnx.numpy_helper.to_array(weights[name])
        codes, scales, zeros = _blockwise_4bit(w, block_size)
        prefix = f"{name}_q4"
        graph.initializer.extend([onnx.numpy_helper.from_array(codes, prefix), onnx.numpy_helper.from_array(
            scales, f"{prefix}_scales"), onnx.numpy_helper.from_array(zeros, f"{prefix}_zero_points")])
        graph.node[k].CopyFrom(onnx.helper.make_node(
            "MatMulNBits", [node.input[0], prefix, f"{prefix}_scales", f"{prefix}_zero_points"], list(node.output),
            name=node.name or prefix, domain="com.microsoft", K=w.shape[0], N=w.shape[1], bits=4,
            block_size=block_size))
        quantized.add(name)
    still_read = {name for n in graph.node for name in n.input}
    kept = [t for t in graph.initializer if t.name not in quantized or t.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return model


def _blockwise_4bit(w: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[K, N] weights -> (codes [N, blocks, block / 2] bytes, scales [N * blocks], zero points [N * ceil(blocks / 2)]
    bytes), codes and zero points two per byte, low nibble first; each block's range includes 0."""
    k, n = w.shape
    blocks = -(-k // block)
    rows = np.zeros((n, blocks * block), np.float32)
    rows[:, :k] = w.T
    rows = rows.reshape(n, blocks, block)
    low, high = np.minimum(rows.min(axis=2), 0), np.maximum(rows.max(axis=2), 0)
    scale = np.where(high > low, (high - low) / 15, 1).astype(np.float32)
    zero = np.clip(np.round(-low / scale), 0, 15).astype(np.uint8)
    codes = np.clip(np.round(rows / scale[:, :, None]) + zero[:, :, None], 0, 15).astype(np.uint8)
    packed = codes[:, :, 0::2] | (codes[:, :, 1::2] << 4)
    zero_pairs = np.zeros((n, -(-blocks // 2) * 2), np.uint8)
    zero_pairs[:, :blocks] = zero
    return packed, scale.reshape(-1), (zero_pairs[:, 0::2] | (zero_pairs[:, 1::2] << 4)).reshape(-1)
