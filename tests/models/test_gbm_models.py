"""LightGBM and XGBoost models converted by onnxmltools compile and match onnxruntime and the library's predict.

Trained at test time with fixed seeds; classifiers converted with ``zipmap=False``
(labels and probabilities as tensors), inputs with a symbolic batch. Labels equal
onnxruntime's and ``predict``; probabilities within 1e-5 of onnxruntime's; regression
outputs within 1e-5 of onnxruntime's relative to their largest magnitude (float32 sums of
hundreds of leaf values in another order) and 1e-4 of ``predict`` (which sums in double).
"""

from __future__ import annotations

import warnings

import lightgbm
import numpy as np
import pytest
import xgboost
from onnxmltools import convert_lightgbm, convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType
from sklearn.datasets import make_classification, make_regression

import runtime_stub
from helpers_onnx import compiled, ort_reference

TOLERANCE = 1e-5
OPSET = 15  # the newest onnxmltools 1.16 converts to


def _convert(model, features: int, classifier: bool):
    convert = convert_lightgbm if isinstance(model, (lightgbm.LGBMClassifier, lightgbm.LGBMRegressor)) \
        else convert_xgboost
    options = {"zipmap": False} if classifier and convert is convert_lightgbm else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(model, initial_types=[("X", FloatTensorType([None, features]))], target_opset=OPSET, **options)


def _run(onnx_model, feeds, compile_cache) -> list[np.ndarray]:
    with runtime_stub.InferenceSession(compiled(onnx_model, compile_cache)) as session:
        return session.run(None, feeds)


def _rows(x: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    x = np.concatenate([x, (rng.standard_normal((9, x.shape[1])) * 4).astype(np.float32)])
    x[::37, 1] = np.nan  # missing values: both libraries route NaN by a learned default direction
    return {"X": x}


CLASSIFIERS = {
    "lightgbm": lambda: lightgbm.LGBMClassifier(n_estimators=30, num_leaves=15, verbose=-1, random_state=0),
    "xgboost": lambda: xgboost.XGBClassifier(n_estimators=30, max_depth=4, random_state=0),
}


@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("library", sorted(CLASSIFIERS))
def test_classifier(compile_cache, library: str, classes: int) -> None:
    x, y = make_classification(500, 10, n_informative=6, n_classes=classes, random_state=classes)
    x = x.astype(np.float32)
    x[::29, 1] = np.nan
    model = CLASSIFIERS[library]().fit(x, y)
    onnx_model = _convert(model, x.shape[1], classifier=True)
    feeds = _rows(x)
    want = ort_reference(onnx_model, feeds)
    label, proba = _run(onnx_model, feeds, compile_cache)[:2]
    np.testing.assert_array_equal(label, want[0])
    np.testing.assert_array_equal(label, model.predict(feeds["X"]))
    np.testing.assert_allclose(proba, want[1], rtol=0, atol=TOLERANCE)
    assert proba.shape == (feeds["X"].shape[0], classes)


REGRESSORS = {
    "lightgbm": lambda: lightgbm.LGBMRegressor(n_estimators=40, num_leaves=31, verbose=-1, random_state=0),
    "xgboost": lambda: xgboost.XGBRegressor(n_estimators=40, max_depth=5, random_state=0),
}


@pytest.mark.parametrize("library", sorted(REGRESSORS))
def test_regressor(compile_cache, library: str) -> None:
    x, y = make_regression(500, 10, n_informative=6, noise=1.0, random_state=4)
    x = x.astype(np.float32)
    x[::31, 2] = np.nan
    model = REGRESSORS[library]().fit(x, y)
    onnx_model = _convert(model, x.shape[1], classifier=False)
    feeds = _rows(x)
    (want,) = ort_reference(onnx_model, feeds)
    (got,) = _run(onnx_model, feeds, compile_cache)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE * scale)
    np.testing.assert_allclose(got.reshape(-1), model.predict(feeds["X"]), rtol=0, atol=1e-4 * scale)
