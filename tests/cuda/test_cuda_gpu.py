"""CUDA artifacts on a real GPU against onnxruntime on the CPU (``make gpu-test``; skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import compiler
import runtime_stub
from cuda_gpu import gpu_reason
from compiler.models.light import LIGHT_MODELS, light_model, random_input

ort = pytest.importorskip("onnxruntime")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(gpu_reason() is not None, reason=f"no usable NVIDIA GPU: {gpu_reason()}")]


def _compare(model: onnx.ModelProto, feeds, tmp_path, name: str, bar: float = 1e-3) -> None:
    artifact = compiler.compile(model, tmp_path / f"{name}.tilec", target="cuda")
    with runtime_stub.InferenceSession(artifact) as session:
        got = session.run(None, feeds)
        again = session.run(None, feeds)  # weights uploaded once; a second run gives the same answer
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for g, a, w in zip(got, again, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, a)
        scale = max(float(np.abs(w).max()), 1e-6)
        err = float(np.abs(g - w).max())
        assert err <= bar * scale, f"{name}: max error {err:.3g} vs max |ort| {scale:.3g}"


def test_lenet_on_gpu(tmp_path) -> None:
    model = onnx.load("examples/models/lenet.onnx")
    _compare(model, random_input(model), tmp_path, "lenet")


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_on_gpu(name: str, tmp_path) -> None:
    model = light_model(name)
    _compare(model, random_input(model), tmp_path, name)
