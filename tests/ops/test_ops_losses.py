"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (compiler/ops/losses.py) against onnx's reference.

Targets are random classes with some positions set to ``ignore_index`` when a
case has one (including a negative index and one outside ``[0, C)``), so the
mean's divisor is the weight sum over the non-ignored targets only.
Tolerance: float32 rtol=1e-4, atol=1e-5 (sums of at most a few hundred terms);
float64 rtol=1e-9; float16 rtol=atol=1e-2 (inputs rounded to half precision,
the sum accumulated in float32 by tilec and by numpy's pairwise float16 sum).
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, rand

TOL = {"float32": {}, "float64": {"rtol": 1e-9, "atol": 1e-10}, "float16": {"rtol": 1e-2, "atol": 1e-2}}

SHAPES = [(5, 4), (3, 5, 6), (2, 3, 4, 5), (2, 3, 2, 1, 3, 2)]


def _targets(shape: tuple[int, ...], classes: int, ignore: int | None, seed: int,
             dtype: str = "int64") -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = rng.integers(0, classes, size=(shape[0], *shape[2:]))
    if ignore is not None:
        t[rng.random(t.shape) < 0.3] = ignore
    return t.astype(dtype)


def _feeds(shape, ignore, weighted, dtype="float32", seed=0, target_dtype="int64"):
    feeds = {"x": rand(shape, seed=seed, dtype=dtype), "t": _targets(shape, shape[1], ignore, seed + 1, target_dtype)}
    if weighted:
        feeds["w"] = rand((shape[1],), seed=seed + 2, low=0.1, high=2.0, dtype=dtype)
    return feeds


def _attrs(reduction: str, ignore: int | None) -> dict:
    attrs = {"reduction": reduction}
    if ignore is not None:
        attrs["ignore_index"] = ignore
    return attrs


@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("ignore", [None, 1, -3], ids=["all", "ii1", "ii_neg"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_losses(check, op, reduction, weighted, ignore, shape):
    feeds = _feeds(shape, ignore, weighted)
    inputs = ["x", "t", "w"] if weighted else ["x", "t"]
    check(node_model(op, inputs, feeds, attrs=_attrs(reduction, ignore), opset=13), feeds)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_softmax_cross_entropy_log_prob_output(check, reduction, weighted):
    feeds = _feeds((3, 5, 4), 2, weighted, seed=3)
    inputs = ["x", "t", "w"] if weighted else ["x", "t"]
    model = node_model("SoftmaxCrossEntropyLoss", inputs, feeds, attrs=_attrs(reduction, 2),
                       outputs=("loss", "log_prob"), opset=13)
    check(model, feeds)


@pytest.mark.parametrize("opset", [12, 13, 22])
def test_nll_opsets_and_int32_targets(check, opset):
    feeds = _feeds((4, 6, 3), 7, True, seed=4, target_dtype="int32")  # ignore_index outside [0, C)
    check(node_model("NegativeLogLikelihoodLoss", ["x", "t", "w"], feeds, attrs=_attrs("mean", 7), opset=opset),
          feeds)


@pytest.mark.parametrize("opset", [12, 13])
def test_sce_opsets_default_reduction(check, opset):
    feeds = _feeds((4, 6, 3), None, False, seed=5)
    check(node_model("SoftmaxCrossEntropyLoss", ["x", "t"], feeds, opset=opset), feeds)


@pytest.mark.parametrize("dtype", ["float64", "float16"])
@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
def test_float_dtypes(check, op, dtype):
    feeds = _feeds((3, 5, 7), 0, True, dtype=dtype, seed=6)
    check(node_model(op, ["x", "t", "w"], feeds, attrs=_attrs("mean", 0), opset=13), feeds, **TOL[dtype])


def test_mean_with_every_target_ignored_is_nan(check):
    x = rand((2, 3, 4), seed=7)
    t = np.full((2, 4), 1, dtype=np.int64)
    feeds = {"x": x, "t": t}
    with np.errstate(invalid="ignore"):
        model = node_model("NegativeLogLikelihoodLoss", ["x", "t"], feeds, attrs=_attrs("mean", 1), opset=13)
        got = check(model, feeds)
    assert np.isnan(got[0])
