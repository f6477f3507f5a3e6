"""The nine light models compile and match onnxruntime on their logits (random weights).

Tolerance: max |tilec - ort| <= 1e-3 * max |ort| (issue 2's bar); the models are
float32 throughout and summation orders differ between the two.
"""

from __future__ import annotations

import numpy as np
import pytest

import compiler
import runtime_stub
from compiler.models.light import LIGHT_MODELS, light_model, random_input

ort = pytest.importorskip("onnxruntime")


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_onnxruntime(name: str, tmp_path) -> None:
    model = light_model(name)
    feeds = random_input(model)
    artifact = compiler.compile(model, tmp_path / f"{name}.tilec")
    with runtime_stub.InferenceSession(artifact, threads=2) as session:
        got = session.run(None, feeds)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert np.isfinite(w).all()
        scale = float(np.abs(w).max())
        assert scale > 0
        err = float(np.abs(g - w).max())
        assert err <= 1e-3 * scale, f"{name}: max error {err:.3g} vs max |ort| {scale:.3g}"
