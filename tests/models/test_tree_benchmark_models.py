"""The benchmark suite's tree ensembles (compiler/models/trees.py) are valid models tilec and onnxruntime agree on.

Small versions of the suite's shapes (fewer trees, same depth and leaf counts), batch 64,
standard normal inputs with some NaNs: labels equal, scores within 1e-5.
"""

from __future__ import annotations

import numpy as np
import onnx

from compiler.models import trees
from helpers_onnx import ort_reference, run_compiled


def _feeds(batch: int) -> dict[str, np.ndarray]:
    x = np.random.default_rng(5).standard_normal((batch, 20)).astype(np.float32)
    x[::7, 3] = np.nan
    return {"X": x}


def test_random_forest(compile_cache) -> None:
    model = trees.random_forest(trees=12, batch=64)
    onnx.checker.check_model(model)
    feeds = _feeds(64)
    want = ort_reference(model, feeds)
    got = run_compiled(model, feeds, cache_dir=compile_cache)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-5)
    assert len(set(got[0].tolist())) > 1  # the forest separates the rows


def test_gradient_boosting(compile_cache) -> None:
    model = trees.gradient_boosting(trees=20, batch=64)
    onnx.checker.check_model(model)
    feeds = _feeds(64)
    (want,) = ort_reference(model, feeds)
    (got,) = run_compiled(model, feeds, cache_dir=compile_cache)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert np.ptp(got) > 0.1
