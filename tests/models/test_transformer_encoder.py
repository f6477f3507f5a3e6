"""A BERT-style encoder (exporter op patterns) compiles and matches onnxruntime.

Tolerance: max |tilec - ort| <= 1e-3 * max |ort| (float32, LayerNorm outputs ~O(1)).
"""

from __future__ import annotations

import numpy as np
import pytest

import compiler
import runtime_stub
from compiler.models.transformer import encoder, encoder_inputs

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("layers,hidden,heads,seq", [(2, 64, 4, 16), (1, 96, 3, 10)])
def test_encoder_matches_onnxruntime(layers: int, hidden: int, heads: int, seq: int, tmp_path) -> None:
    model = encoder(layers, hidden, heads, seq)
    feeds = encoder_inputs(model)
    artifact = compiler.compile(model, tmp_path / "encoder.tilec")
    with runtime_stub.InferenceSession(artifact, threads=2) as session:
        (got,) = session.run(None, feeds)
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert float(np.abs(got - want).max()) <= 1e-3 * float(np.abs(want).max())
