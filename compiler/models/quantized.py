"""Int8 models as users make them: a float model quantized by onnxruntime's own tools.

* :func:`quantize_static_qdq`: ``quant_pre_process`` (optional) then ``quantize_static`` in the QDQ
  format, per-channel int8 weights, uint8 activations, calibrated on given inputs (random data here).
* :func:`quantize_dynamic_int8`: ``quantize_dynamic`` (int8 weights; DynamicQuantizeLinear +
  MatMulInteger at run time), the form used for transformers.

A model below opset 13 is converted to 13 first: onnxruntime's quantizer writes per-axis
DequantizeLinear whatever the opset, and onnxruntime 1.32 refuses to load that below 13.
Needs onnxruntime (a dev dependency), imported on use.
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
