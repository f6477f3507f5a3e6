"""GPT-2-style decoder blocks and a ViT (exporter op patterns, compiler/models/transformer.py) match onnxruntime.

GPT-2: token + position embeddings (Gather; positions from Shape/Gather/Range), pre-LN blocks with
a fused QKV MatMul + Split, a causal mask through Where (from Trilu over ConstantOfShape, or
sliced from a constant lower-triangular buffer), tanh-Gelu (with Pow) or Erf-Gelu, residuals.
ViT: Conv patch embedding (stride = kernel = patch), tokens via Reshape + Transpose or
Transpose + Flatten + Reshape, class token Expand + Concat, position embedding Add, an encoder
layer, Gemm classifier on the class token.

Tolerance: max |tilec - ort| <= 1e-4 * max |ort| (float32; outputs are LayerNorm'd or logits, O(1)).
"""

from __future__ import annotations

import numpy as np
import pytest

import compiler
import runtime_stub
from compiler.bench import random_inputs
from compiler.models.transformer import gpt2, vit
from helpers_onnx import assert_close_to_max

ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4


def _check(model, feeds, tmp_path, threads: int = 2) -> None:
    artifact = compiler.compile(model, tmp_path / "model.tilec")
    with runtime_stub.InferenceSession(artifact, threads=threads) as session:
        got = session.run(None, feeds)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert_close_to_max(got, want, TOLERANCE)


@pytest.mark.parametrize("mask, gelu", [("trilu", "tanh"), ("slice", "erf")])
def test_gpt2_blocks_match_onnxruntime(mask: str, gelu: str, tmp_path) -> None:
    model = gpt2(layers=2, hidden=64, heads=4, seq=16, batch=2, vocab=100, mask=mask, gelu=gelu)
    ids = np.random.default_rng(1).integers(0, 100, (2, 16)).astype(np.int64)
    _check(model, {"input_ids": ids}, tmp_path)


def test_gpt2_odd_sizes_one_thread(tmp_path) -> None:
    model = gpt2(layers=1, hidden=48, heads=3, seq=7, batch=1, vocab=50, max_positions=9)
    ids = np.random.default_rng(2).integers(0, 50, (1, 7)).astype(np.int64)
    _check(model, {"input_ids": ids}, tmp_path, threads=1)


@pytest.mark.parametrize("tokens", ["reshape", "flatten"])
def test_vit_matches_onnxruntime(tokens: str, tmp_path) -> None:
    model = vit(image=32, patch=8, hidden=64, heads=4, layers=1, classes=10, batch=2, tokens=tokens)
    feeds = random_inputs([("pixel_values", "float32", (2, 3, 32, 32))], seed=3)
    _check(model, feeds, tmp_path)


def test_vit_odd_sizes(tmp_path) -> None:
    # 5 patches per side (image 20, patch 4), hidden 96 with 6 heads: nothing is a power of two.
    model = vit(image=20, patch=4, channels=1, hidden=96, heads=6, layers=2, classes=7, batch=1)
    feeds = random_inputs([("pixel_values", "float32", (1, 1, 20, 20))], seed=4)
    _check(model, feeds, tmp_path)
