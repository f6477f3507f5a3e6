"""TfIdfVectorizer (compiler/ops/tfidf.py) against onnxruntime (the conformance cases check it against onnx's own data): every mode, with
and without weights, 1-gram to 3-gram pools with skips, rows and a single row, int32 and int64 tokens; and
what it refuses."""

from __future__ import annotations

import numpy as np
import pytest

import compiler
from compiler.errors import UnsupportedOpError
from helpers_onnx import check_model, node_model, ort_reference

def _tokens(shape: tuple[int, ...], dtype: type, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 10, shape).astype(dtype)


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("lengths,skip", [((1, 1), 0), ((2, 2), 0), ((1, 2), 3), ((2, 3), 2), ((1, 3), 5)])
def test_tfidf_matches_the_reference(mode: str, weighted: bool, lengths: tuple[int, int], skip: int) -> None:
    attrs = dict(mode=mode, min_gram_length=lengths[0], max_gram_length=lengths[1], max_skip_count=skip,
                 ngram_counts=[0, 4, 8], ngram_indexes=[3, 1, 4, 0, 2, 6, 5, 7, 9, 8],
                 pool_int64s=[2, 3, 5, 4, 5, 6, 7, 8, 1, 2, 3, 7, 8, 9])
    if weighted:
        attrs["weights"] = [0.5, 1.5, 2.0, 0.25, 3.0, 1.0, 0.75, 2.5, 1.25, 4.0]
    x = _tokens((3, 12), np.int64, seed=lengths[1] * 10 + skip)
    # onnxruntime as the reference: onnx's evaluator fails on IDF without weights.
    model = node_model("TfIdfVectorizer", ["x"], {"x": x}, attrs=attrs, expected=[np.zeros((3, 10), np.float32)])
    want = ort_reference(model, {"x": x})
    assert want[0].any()  # the tokens hit the pool: a case that can fail
    check_model(model, {"x": x}, expected=want)


def test_one_row_of_int32_tokens_against_onnxruntime() -> None:
    attrs = dict(mode="TFIDF", min_gram_length=1, max_gram_length=2, max_skip_count=1, ngram_counts=[0, 3],
                 ngram_indexes=[2, 0, 1, 4, 3], pool_int64s=[1, 2, 3, 1, 2, 2, 3],
                 weights=[1.0, 2.0, 3.0, 4.0, 5.0])
    x = np.array([1, 2, 3, 1, 2, 2, 3, 3, 1], np.int32)
    # ngram_indexes permute the columns: weights are per pool n-gram (the spec, onnxruntime), which onnx's
    # evaluator gets wrong (it indexes them by column).
    model = node_model("TfIdfVectorizer", ["x"], {"x": x}, attrs=attrs, expected=[np.zeros(5, np.float32)])
    want = ort_reference(model, {"x": x})
    np.testing.assert_array_equal(want[0], [6, 9, 3, 20, 12])
    check_model(model, {"x": x}, expected=want)


def test_string_pools_are_refused_by_name(tmp_path) -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], mode="TF", min_gram_length=1, max_gram_length=1,
                            max_skip_count=0, ngram_counts=[0], ngram_indexes=[0, 1], pool_strings=["a", "b"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.STRING, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(UnsupportedOpError, match="TfIdfVectorizer.*string tensor"):
        compiler.compile(model, tmp_path / "m.tilec")
