"""The nine light models compile and match onnxruntime on their logits (random weights).

Tolerance: max |tilec - ort| <= 1e-3 * max |ort| (issue 2's bar); the models are
float32 throughout and summation orders differ between the two.
"""

from __future__ import annotations

import pytest

import compiler
import runtime_stub
from compiler.models.light import LIGHT_MODELS, light_model, random_input
from helpers_onnx import assert_close_to_max

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
    assert_close_to_max(got, want, 1e-3, name)
