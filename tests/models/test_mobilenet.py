"""MobileNetV2 (depthwise separable convs, ReLU6 as Clip, residual Adds) matches onnxruntime.

Tolerance as the light models': max |tilec - ort| <= 1e-3 * max |ort| (float32, different summation
orders). Its padded depthwise convs run with per-channel local padding (compiler/schedule/localize.py).
"""

from __future__ import annotations

import pytest

import compiler
import runtime_stub
from compiler.models.light import random_input
from compiler.models.mobilenet import mobilenet_v2
from helpers_onnx import assert_close_to_max

ort = pytest.importorskip("onnxruntime")


@pytest.mark.slow
def test_mobilenet_v2_matches_onnxruntime(tmp_path) -> None:
    model = mobilenet_v2(resolution=160)
    feeds = random_input(model)
    artifact = compiler.compile(model, tmp_path / "mobilenet_v2.tilec")
    with runtime_stub.InferenceSession(artifact, threads=2) as session:
        got = session.run(None, feeds)
        kernels = session.manifest["kernels"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert_close_to_max(got, want, 1e-3, "mobilenet_v2")
    assert len(kernels) < 60  # Conv+Clip and Conv+Add fuse: one kernel per conv, plus pool and classifier
