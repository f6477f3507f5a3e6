"""MobileNetV2 (Sandler et al. 2018, width 1.0) as exporters write it: BatchNorm folded into each Conv's
bias, ReLU6 as ``Clip(0, 6)``, residual ``Add``s, then GlobalAveragePool, Flatten and a Gemm classifier.

``mobilenet_v2(resolution)`` builds it for a 1x3xRxR input (default 224); weights are seeded random,
He-scaled so activations stay O(1) through the 17 inverted-residual blocks. IR version 8, opset 17.
Its cost is spread over 1x1 convs (most FLOPs) and 3x3 depthwise convs (little arithmetic per byte).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.models.synthetic import model_of

# Inverted-residual stages: (expansion t, output channels c, blocks n, first stride s).
_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def _const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(array.astype(np.float32), name))
        return name

    def conv(self, x: str, c_in: int, c_out: int, kernel: int, stride: int, groups: int, relu6: bool,
             name: str) -> str:
        fan_in = c_in // groups * kernel * kernel
        w = self._const(f"{name}.w", self.rng.normal(0, np.sqrt(2 / fan_in), (c_out, c_in // groups, kernel, kernel)))
        b = self._const(f"{name}.b", self.rng.normal(0, 0.01, c_out))
        pad = kernel // 2
        self.nodes.append(helper.make_node("Conv", [x, w, b], [f"{name}.conv"], kernel_shape=[kernel, kernel],
                                           strides=[stride, stride], pads=[pad] * 4, group=groups, name=name))
        if not relu6:
            return f"{name}.conv"
        self.nodes.append(helper.make_node("Clip", [f"{name}.conv", "zero", "six"], [f"{name}.relu6"],
                                           name=f"{name}.clip"))
        return f"{name}.relu6"


def mobilenet_v2(resolution: int = 224, classes: int = 1000, seed: int = 0) -> onnx.ModelProto:
    b = _Builder(seed)
    b.inits += [numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                numpy_helper.from_array(np.array(6.0, np.float32), "six")]
    x = b.conv("input", 3, 32, 3, 2, 1, True, "stem")
    channels = 32
    for stage, (t, c, n, s) in enumerate(_STAGES):
        for k in range(n):
            name = f"block{stage}_{k}"
            hidden = channels * t
            y = b.conv(x, channels, hidden, 1, 1, 1, True, f"{name}.expand") if t != 1 else x
            y = b.conv(y, hidden, hidden, 3, s if k == 0 else 1, hidden, True, f"{name}.depthwise")
            y = b.conv(y, hidden, c, 1, 1, 1, False, f"{name}.project")
            if k > 0:  # same shape in and out: a residual connection
                b.nodes.append(helper.make_node("Add", [x, y], [f"{name}.sum"], name=f"{name}.add"))
                y = f"{name}.sum"
            x, channels = y, c
    x = b.conv(x, channels, 1280, 1, 1, 1, True, "head")
    b.nodes += [helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"),
                helper.make_node("Flatten", ["pooled"], ["features"], name="flatten")]
    w = b._const("fc.w", b.rng.normal(0, np.sqrt(1 / 1280), (classes, 1280)))
    bias = b._const("fc.b", np.zeros(classes))
    b.nodes.append(helper.make_node("Gemm", ["features", w, bias], ["logits"], transB=1, name="fc"))
    return model_of("mobilenet_v2", b.nodes,
                    [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, resolution, resolution])],
                    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], b.inits)
