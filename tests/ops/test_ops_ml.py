"""ai.onnx.ml ops (compiler/ops/ml_basic.py, ml_trees.py) against onnx's reference or onnxruntime.

The lookups and tree walks are exact (comparisons and gathers): results must
match bit for bit, except for aggregations (float32 sums of a few weights that
are multiples of 1/4, also exact) and transcendental post transforms (rtol 1e-5, atol 1e-5).
Oracles: onnx's ReferenceEvaluator, except where it deviates from the spec
(it ignores TreeEnsemble's post_transform, gives MIN/MAX targets no leaf reaches
the type's extremes, and ends a member set at a member 0.0) or lacks a rule
(LabelEncoder-4's NaN keys); there onnxruntime or numpy on the spec is the oracle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from compiler.errors import CompileError
from helpers_onnx import compiled, ort_reference, rand, run_compiled


def _ml_model(op: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any], opset: int,
              expected: list[np.ndarray] | None = None) -> onnx.ModelProto:
    """One ai.onnx.ml node reading ``inputs``; output types from ``expected`` or the reference."""
    node = helper.make_node(op, list(inputs), ["y"], domain="ai.onnx.ml", **attrs)
    infos = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
             for k, v in inputs.items()]

    def build(out: onnx.ValueInfoProto) -> onnx.ModelProto:
        model = helper.make_model(helper.make_graph([node], "ml", infos, [out]),
                                  opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", opset)])
        model.ir_version = 10
        return model

    if expected is None:
        expected = ReferenceEvaluator(build(helper.make_empty_tensor_value_info("y"))).run(None, inputs)
    y = np.asarray(expected[0])
    return build(helper.make_tensor_value_info("y", helper.np_dtype_to_tensor_dtype(y.dtype), y.shape))


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], expected: list[np.ndarray] | None = None,
           cache=None, rtol: float = 0.0, atol: float = 0.0) -> None:
    expected = ReferenceEvaluator(model).run(None, feeds) if expected is None else expected
    got = run_compiled(model, feeds, cache_dir=cache)[0]
    want = np.asarray(expected[0])
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# --- Binarizer, ArrayFeatureExtractor ------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32"])
def test_binarizer(compile_cache, dtype: str) -> None:
    x = (rand((3, 4, 5), seed=1) * 4).astype(dtype)
    if dtype.startswith("float"):
        x[0, 0, :2] = np.nan
    model = _ml_model("Binarizer", {"x": x}, {"threshold": 1.0}, 1)
    _check(model, {"x": x}, cache=compile_cache)


@pytest.mark.parametrize("x_shape,indices", [
    ((3, 4), np.array([0, 3, 3], np.int64)),
    ((2, 3, 5), np.array([[4, -1], [0, 2]], np.int64)),  # 2-D indices flatten; -1 is the last feature
    ((5,), np.array([1, 4], np.int64)),                   # 1-D data gives one row
])
def test_array_feature_extractor(compile_cache, x_shape, indices) -> None:
    for dtype in ("float32", "int64"):
        x = (rand(x_shape, seed=2) * 10).astype(dtype)
        model = _ml_model("ArrayFeatureExtractor", {"x": x, "i": indices}, {}, 1)
        _check(model, {"x": x, "i": indices}, cache=compile_cache)


# --- LabelEncoder ------------------------------------------------------------------------


def _tensor(values: list, dtype: str) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(values, dtype))


@pytest.mark.parametrize("attrs,x", [
    ({"keys_int64s": [1, 3, 5, 3], "values_floats": [0.5, 1.5, 2.5, 9.0]}, np.array([[1, 2, 3], [4, 5, 6]], np.int64)),
    ({"keys_int64s": [7], "values_int64s": [70], "default_int64": 5}, np.array([7, 8, 7], np.int64)),
    ({"keys_floats": [1.0, float("nan"), 0.25], "values_int64s": [7, 8, 9]},  # a NaN key matches nothing in opset 2
     np.array([1.0, np.nan, 0.25, -1.0], np.float32)),
])
def test_label_encoder_opset2(compile_cache, attrs, x) -> None:
    model = _ml_model("LabelEncoder", {"x": x}, attrs, 2)
    _check(model, {"x": x}, cache=compile_cache)


def test_label_encoder_opset4_tensors(compile_cache) -> None:
    x = np.array([[1, 6, 2], [6, 6, 9]], np.int32)
    attrs = {"keys_tensor": _tensor([1, 6, 9, 1], "int32"), "values_tensor": _tensor([10, 60, 90, -10], "int16"),
             "default_tensor": _tensor([3], "int16")}
    _check(_ml_model("LabelEncoder", {"x": x}, attrs, 4), {"x": x}, cache=compile_cache)


def test_label_encoder_opset4_nan_key_matches_any_nan(compile_cache) -> None:
    x = np.array([np.nan, -np.nan, 2.0, 3.0], np.float64)
    attrs = {"keys_tensor": _tensor([np.nan, 2.0], "float64"), "values_tensor": _tensor([1.5, 2.5], "float64")}
    expected = [np.array([1.5, 1.5, 2.5, -0.0])]
    model = _ml_model("LabelEncoder", {"x": x}, attrs, 4, expected)
    np.testing.assert_array_equal(ort_reference(model, {"x": x})[0], expected[0])
    _check(model, {"x": x}, expected, cache=compile_cache)


def test_label_encoder_opset_1_is_refused(tmp_path) -> None:
    """Opset 1's LabelEncoder (a classes_strings table, strings <-> positions) is refused by name."""
    from onnx import TensorProto

    node = helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", classes_strings=["a", "b"])
    graph = helper.make_graph([node], "ml", [helper.make_tensor_value_info("x", TensorProto.STRING, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    with pytest.raises(CompileError, match="LabelEncoder.*classes_strings"):
        compiled(model, tmp_path)


# --- TreeEnsemble --------------------------------------------------------------------------


def _forest(rng: np.random.Generator, trees: int, features: int, targets: int, depth: int, modes: tuple[int, ...],
            dtype: str = "float32", tracks: bool = True) -> dict[str, Any]:
    """Random trees in TreeEnsemble's attributes; splits, weights and members on coarse grids so ties occur."""
    cols: dict[str, list] = {k: [] for k in ("feature", "true", "false", "true_leaf", "false_leaf", "mode", "split",
                                             "nan_true")}
    weights: list[float] = []
    target_ids: list[int] = []
    members: list[float] = []

    def leaf() -> int:
        weights.append(float(rng.integers(-8, 9)) / 4)
        target_ids.append(int(rng.integers(targets)))
        return len(weights) - 1

    def node(level: int) -> int:
        i = len(cols["mode"])
        for c in cols.values():
            c.append(0)
        mode = int(rng.choice(modes))
        cols["mode"][i], cols["feature"][i] = mode, int(rng.integers(features))
        cols["split"][i] = float(rng.integers(-4, 5)) / 4
        cols["nan_true"][i] = int(rng.integers(2)) if tracks else 0
        if mode == 6:  # members avoid 0.0, which ends a set early in the reference
            members.extend(sorted(set(rng.choice([-2.0, -1.0, 0.5, 1.0, 2.0], int(rng.integers(1, 4))).tolist())))
            members.append(np.nan)
        for side in ("true", "false"):
            is_leaf = level >= depth or rng.random() < 0.3
            cols[f"{side}_leaf"][i] = int(is_leaf)
            cols[side][i] = leaf() if is_leaf else node(level + 1)
        return i

    roots = [node(1) for _ in range(trees)]
    attrs = {"nodes_featureids": cols["feature"], "nodes_truenodeids": cols["true"], "nodes_falsenodeids": cols["false"],
             "nodes_trueleafs": cols["true_leaf"], "nodes_falseleafs": cols["false_leaf"], "tree_roots": roots,
             "nodes_modes": _tensor(cols["mode"], "uint8"), "nodes_splits": _tensor(cols["split"], dtype),
             "leaf_weights": _tensor(weights, dtype), "leaf_targetids": target_ids, "n_targets": targets}
    if tracks:
        attrs["nodes_missing_value_tracks_true"] = cols["nan_true"]
    if members:
        attrs["membership_values"] = _tensor(members, dtype)
    return attrs


def _features(rng: np.random.Generator, shape: tuple[int, int], dtype: str = "float32") -> np.ndarray:
    """Features on the splits' and members' grid (ties), with NaNs."""
    x = rng.integers(-10, 11, shape) / 4
    x[rng.random(shape) < 0.1] = np.nan
    return x.astype(dtype)


def _tree_model(attrs: dict[str, Any], x: np.ndarray, targets: int, **extra: Any) -> onnx.ModelProto:
    return _ml_model("TreeEnsemble", {"x": x}, {**attrs, **extra}, 5,
                     expected=[np.zeros((x.shape[0], targets), x.dtype)])


@pytest.mark.parametrize("modes", [(0,), (1,), (2,), (3,), (4,), (5,), (6,), (0, 1, 2, 3, 4, 5, 6)])
@pytest.mark.parametrize("tracks", [False, True])
def test_tree_ensemble_walk(compile_cache, modes, tracks) -> None:
    """Every branch mode, alone and mixed, with and without NaNs tracking the true branch."""
    rng = np.random.default_rng(sum(modes) * 2 + tracks)
    attrs = _forest(rng, trees=4, features=3, targets=2, depth=4, modes=modes, tracks=tracks)
    x = _features(rng, (64, 3))
    model = _tree_model(attrs, x, 2)
    _check(model, {"x": x}, cache=compile_cache)


@pytest.mark.parametrize("dtype", ["float64", "float16"])
def test_tree_ensemble_dtypes(compile_cache, dtype) -> None:
    rng = np.random.default_rng(7)
    attrs = _forest(rng, trees=3, features=4, targets=3, depth=5, modes=(0, 2, 6), dtype=dtype)
    x = _features(rng, (16, 4), dtype)
    _check(_tree_model(attrs, x, 3), {"x": x}, cache=compile_cache)


@pytest.mark.parametrize("aggregate", [0, 1, 2, 3])
def test_tree_ensemble_aggregates(compile_cache, aggregate) -> None:
    """AVERAGE, SUM, MIN, MAX against onnxruntime (0 for a target no leaf reaches)."""
    rng = np.random.default_rng(11 + aggregate)
    attrs = _forest(rng, trees=5, features=4, targets=4, depth=4, modes=(0, 1, 3, 5))
    x = _features(rng, (32, 4))
    model = _tree_model(attrs, x, 4, aggregate_function=aggregate)
    _check(model, {"x": x}, ort_reference(model, {"x": x}), cache=compile_cache, rtol=1e-6)


def _softmax(s: np.ndarray) -> np.ndarray:
    e = np.exp(s - s.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("transform,targets", [(1, 3), (2, 3), (3, 3), (4, 3), (4, 1), (2, 1)])
def test_tree_ensemble_post_transforms(compile_cache, transform, targets) -> None:
    """SOFTMAX and LOGISTIC per the spec on onnxruntime's raw scores (it swaps the two codes);
    SOFTMAX_ZERO and PROBIT (and the single-target rule) as onnxruntime computes them."""
    rng = np.random.default_rng(20 + transform)
    attrs = _forest(rng, trees=4, features=3, targets=targets, depth=3, modes=(0, 2))
    if transform == 4:  # probit wants scores in (0, 1): one tree of small positive weights
        attrs = _forest(rng, trees=1, features=3, targets=targets, depth=3, modes=(0, 2))
        attrs["leaf_weights"] = _tensor(rng.uniform(0.05, 0.95, len(attrs["leaf_targetids"])), "float32")
    x = _features(rng, (24, 3))
    model = _tree_model(attrs, x, targets, post_transform=transform)
    if transform in (1, 2) and targets > 1:
        raw = ort_reference(_tree_model(attrs, x, targets), {"x": x})[0].astype(np.float64)
        expected = _softmax(raw) if transform == 1 else 1 / (1 + np.exp(-raw))
        expected = [expected.astype(np.float32)]
    else:
        expected = ort_reference(model, {"x": x})
    # PROBIT's closed form cancels near p = 0.5: float32 libm differences show as ~1e-5 relative there.
    _check(model, {"x": x}, expected, cache=compile_cache, rtol=1e-5, atol=1e-5)


def test_tree_ensemble_single_leaf_tree(compile_cache) -> None:
    """A tree that is one leaf: a node whose true and false branches name the same leaf."""
    attrs = {"nodes_featureids": [0, 0], "nodes_truenodeids": [0, 1], "nodes_falsenodeids": [0, 2],
             "nodes_trueleafs": [1, 1], "nodes_falseleafs": [1, 1], "tree_roots": [0, 1],
             "nodes_modes": _tensor([0, 0], "uint8"), "nodes_splits": _tensor([0.0, 0.5], "float32"),
             "leaf_weights": _tensor([2.0, 3.0, 5.0], "float32"), "leaf_targetids": [0, 1, 1], "n_targets": 2}
    x = np.array([[0.0], [1.0], [np.nan]], np.float32)
    model = _tree_model(attrs, x, 2)
    _check(model, {"x": x}, [np.array([[2, 3], [2, 5], [2, 5]], np.float32)], cache=compile_cache)


def test_tree_ensemble_refuses_a_cycle(tmp_path) -> None:
    attrs = {"nodes_featureids": [0, 0], "nodes_truenodeids": [1, 0], "nodes_falsenodeids": [0, 0],
             "nodes_trueleafs": [0, 0], "nodes_falseleafs": [1, 1], "tree_roots": [0],
             "nodes_modes": _tensor([0, 0], "uint8"), "nodes_splits": _tensor([0.0, 0.5], "float32"),
             "leaf_weights": _tensor([1.0], "float32"), "leaf_targetids": [0], "n_targets": 1}
    x = np.zeros((2, 1), np.float32)
    with pytest.raises(CompileError, match="cycle"):
        compiled(_tree_model(attrs, x, 1), tmp_path)


# --- TreeEnsembleRegressor / TreeEnsembleClassifier (opsets 1, 3) ----------------------------

_LEGACY_MODES = ["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]


def _legacy_forest(rng: np.random.Generator, trees: int, features: int, targets: int, depth: int,
                   modes: tuple[str, ...], prefix: str, per_leaf: int = 1, tracks: bool = True) -> dict[str, Any]:
    """Random trees in the legacy attributes (``nodes_*`` by tree and node id, ``{prefix}_*`` leaf weights);
    node ids are listed out of order within each tree (the first listed node stays the root)."""
    cols: dict[str, list] = {k: [] for k in ("treeids", "nodeids", "featureids", "modes", "values", "truenodeids",
                                             "falsenodeids", "missing_value_tracks_true")}
    leaf_cols: dict[str, list] = {k: [] for k in ("treeids", "nodeids", "ids", "weights")}
    for tree in range(trees):
        count = [0]
        rows: list[dict[str, Any]] = []

        def node(level: int) -> int:
            nid = count[0]
            count[0] += 1
            row: dict[str, Any] = {"treeids": tree, "nodeids": nid, "featureids": 0, "modes": "LEAF", "values": 0.0,
                                   "truenodeids": 0, "falsenodeids": 0, "missing_value_tracks_true": 0}
            rows.append(row)
            if level > depth or (level > 1 and rng.random() < 0.25):
                for t in rng.choice(targets, per_leaf, replace=False):
                    leaf_cols["treeids"].append(tree)
                    leaf_cols["nodeids"].append(nid)
                    leaf_cols["ids"].append(int(t))
                    leaf_cols["weights"].append(float(rng.integers(-8, 9)) / 4)
                return nid
            row.update(featureids=int(rng.integers(features)), modes=str(rng.choice(modes)),
                       values=float(rng.integers(-4, 5)) / 4, missing_value_tracks_true=int(tracks and rng.random() < 0.5))
            row["truenodeids"] = node(level + 1)
            row["falsenodeids"] = node(level + 1)
            return nid

        node(1)
        rows = rows[:1] + [rows[k] for k in rng.permutation(len(rows) - 1) + 1]
        for row in rows:
            for k, v in row.items():
                cols[k].append(v)
    attrs = {f"nodes_{k}": v for k, v in cols.items()}
    if not tracks:
        del attrs["nodes_missing_value_tracks_true"]
    attrs.update({f"{prefix}_{k}": v for k, v in leaf_cols.items()})
    return attrs


def _as_tensors(attrs: dict[str, Any], names: tuple[str, ...], dtype: str) -> dict[str, Any]:
    """Opset 3's ``*_as_tensor`` forms of float attributes."""
    out = dict(attrs)
    for name in names:
        if name in out:
            out[f"{name}_as_tensor"] = _tensor(out.pop(name), dtype)
    return out


def _ort_check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], cache, rtol: float = 1e-6,
               atol: float = 1e-6) -> None:
    want = ort_reference(model, feeds)
    got = run_compiled(model, feeds, cache_dir=cache)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        if w.dtype.kind in "iuO":  # integers and strings exactly
            np.testing.assert_array_equal(g, w)
        else:
            np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def _ml_model_outputs(op: str, x: np.ndarray, attrs: dict[str, Any], opset: int,
                      outputs: list[tuple[str, int, list[int]]]) -> onnx.ModelProto:
    node = helper.make_node(op, ["x"], [name for name, _, _ in outputs], domain="ai.onnx.ml", **attrs)
    graph = helper.make_graph([node], "ml", [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(
        x.dtype), list(x.shape))], [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21),
                                                    helper.make_opsetid("ai.onnx.ml", opset)])
    model.ir_version = 10
    return model


def _regressor(x: np.ndarray, attrs: dict[str, Any], targets: int, opset: int = 1) -> onnx.ModelProto:
    return _ml_model_outputs("TreeEnsembleRegressor", x, {**attrs, "n_targets": targets}, opset,
                             [("y", onnx.TensorProto.FLOAT, [x.shape[0], targets])])


def _classifier(x: np.ndarray, attrs: dict[str, Any], labels: list[int], opset: int = 1) -> onnx.ModelProto:
    return _ml_model_outputs("TreeEnsembleClassifier", x, {**attrs, "classlabels_int64s": labels}, opset,
                             [("label", onnx.TensorProto.INT64, [x.shape[0]]),
                              ("scores", onnx.TensorProto.FLOAT, [x.shape[0], len(labels)])])


@pytest.mark.parametrize("modes", [("BRANCH_LEQ",), ("BRANCH_LT", "BRANCH_GTE"), tuple(_LEGACY_MODES)])
@pytest.mark.parametrize("tracks", [False, True])
def test_tree_regressor_walk(compile_cache, modes, tracks) -> None:
    """Every legacy branch mode with NaN features, with and without missing_value_tracks_true, vs onnxruntime."""
    rng = np.random.default_rng(len(modes) * 2 + tracks)
    attrs = _legacy_forest(rng, trees=4, features=3, targets=2, depth=4, modes=modes, prefix="target", per_leaf=2,
                           tracks=tracks)
    x = _features(rng, (64, 3))
    _ort_check(_regressor(x, attrs, 2), {"x": x}, compile_cache)


@pytest.mark.parametrize("aggregate", ["SUM", "AVERAGE", "MIN", "MAX"])
def test_tree_regressor_aggregates(compile_cache, aggregate) -> None:
    """Aggregates with base values; a target no leaf of a row reaches is the base value alone."""
    rng = np.random.default_rng(30)
    attrs = _legacy_forest(rng, trees=5, features=4, targets=3, depth=3, modes=("BRANCH_LEQ", "BRANCH_GT"),
                           prefix="target")
    x = _features(rng, (40, 4))
    model = _regressor(x, {**attrs, "aggregate_function": aggregate, "base_values": [0.5, -1.0, 2.0]}, 3)
    _ort_check(model, {"x": x}, compile_cache)


@pytest.mark.parametrize("transform,targets", [("SOFTMAX", 3), ("LOGISTIC", 3), ("SOFTMAX_ZERO", 3),
                                               ("LOGISTIC", 1), ("NONE", 1)])
def test_tree_regressor_post_transforms(compile_cache, transform, targets) -> None:
    rng = np.random.default_rng(40)
    attrs = _legacy_forest(rng, trees=3, features=3, targets=targets, depth=3, modes=("BRANCH_LEQ",), prefix="target")
    x = _features(rng, (24, 3))
    _ort_check(_regressor(x, {**attrs, "post_transform": transform}, targets), {"x": x}, compile_cache,
               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tree_regressor_as_tensor(compile_cache, dtype) -> None:
    """Opset 3's nodes_values_as_tensor / target_weights_as_tensor / base_values_as_tensor, with double input."""
    rng = np.random.default_rng(50)
    attrs = _legacy_forest(rng, trees=3, features=3, targets=1, depth=4, modes=("BRANCH_LEQ", "BRANCH_EQ"),
                           prefix="target")
    attrs = _as_tensors({**attrs, "base_values": [0.25]}, ("nodes_values", "target_weights", "base_values"), dtype)
    x = _features(rng, (32, 3), dtype)
    _ort_check(_regressor(x, attrs, 1, opset=3), {"x": x}, compile_cache)


def test_tree_regressor_single_leaf_tree(compile_cache) -> None:
    """A tree that is only a leaf (its root is LEAF) next to a one-split tree."""
    attrs = {"nodes_treeids": [0, 1, 1, 1], "nodes_nodeids": [0, 0, 1, 2], "nodes_featureids": [0, 0, 0, 0],
             "nodes_modes": ["LEAF", "BRANCH_LEQ", "LEAF", "LEAF"], "nodes_values": [0.0, 0.5, 0.0, 0.0],
             "nodes_truenodeids": [0, 1, 0, 0], "nodes_falsenodeids": [0, 2, 0, 0],
             "target_treeids": [0, 1, 1], "target_nodeids": [0, 1, 2], "target_ids": [0, 0, 0],
             "target_weights": [2.0, 3.0, 5.0]}
    x = np.array([[0.0], [1.0], [np.nan]], np.float32)
    model = _regressor(x, attrs, 1)
    _ort_check(model, {"x": x}, compile_cache)
    np.testing.assert_array_equal(run_compiled(model, {"x": x}, cache_dir=compile_cache)[0], [[5.0], [7.0], [7.0]])


@pytest.mark.parametrize("transform", ["NONE", "SOFTMAX", "LOGISTIC", "SOFTMAX_ZERO"])
def test_tree_classifier_multiclass(compile_cache, transform) -> None:
    rng = np.random.default_rng(60)
    attrs = _legacy_forest(rng, trees=4, features=3, targets=4, depth=4, modes=("BRANCH_LEQ", "BRANCH_GT"),
                           prefix="class", per_leaf=4)
    x = _features(rng, (48, 3))
    model = _classifier(x, {**attrs, "post_transform": transform, "base_values": [0.1, 0.0, -0.2, 0.3]},
                        [3, 5, 7, 11])
    _ort_check(model, {"x": x}, compile_cache, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["probabilities", "margins", "margins_logistic", "two_columns", "two_base_values"])
def test_tree_classifier_binary(compile_cache, case) -> None:
    """onnxruntime's binary rules: one score column expanded to [1 - s, s] (positive weights: a forest's
    class-1 probability), [-s, s] / [s, -s] or logistic of both (margins), or two columns of their own."""
    rng = np.random.default_rng(70)
    two = case in ("two_columns", "two_base_values")
    attrs = _legacy_forest(rng, trees=3, features=3, targets=2 if two else 1, depth=3, modes=("BRANCH_LEQ",),
                           prefix="class", per_leaf=2 if two else 1)
    if case == "probabilities":
        attrs["class_weights"] = [abs(w) / 6 for w in attrs["class_weights"]]
    if case == "margins_logistic":
        attrs.update(post_transform="LOGISTIC", base_values=[0.25])
    if case == "two_base_values":
        attrs["base_values"] = [0.5, -0.5]
    x = _features(rng, (48, 3))
    _ort_check(_classifier(x, attrs, [4, 9]), {"x": x}, compile_cache, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("labels", [["no", "yes"], ["", "ü", "cat", "a longer label 🐈"]], ids=["binary", "four"])
def test_tree_classifier_string_labels(compile_cache, labels) -> None:
    """String class labels come back as onnxruntime returns them (an object array of str), whatever their
    lengths: the empty string, non-ASCII and beyond the basic plane included."""
    rng = np.random.default_rng(80 + len(labels))
    classes = len(labels)
    attrs = _legacy_forest(rng, trees=3, features=3, targets=classes, depth=3, modes=("BRANCH_LEQ",), prefix="class",
                           per_leaf=classes)
    x = _features(rng, (37, 3))
    model = _ml_model_outputs("TreeEnsembleClassifier", x, {**attrs, "classlabels_strings": labels}, 1,
                              [("label", onnx.TensorProto.STRING, [37]), ("scores", onnx.TensorProto.FLOAT, [37, classes])])
    got = run_compiled(model, {"x": x}, cache_dir=compile_cache)
    assert got[0].dtype == object and set(got[0]) <= set(labels) and len(set(got[0])) > 1
    _ort_check(model, {"x": x}, compile_cache)


def test_tree_regressor_refuses_a_dangling_branch(tmp_path) -> None:
    attrs = {"nodes_treeids": [0, 0], "nodes_nodeids": [0, 1], "nodes_featureids": [0, 0],
             "nodes_modes": ["BRANCH_LEQ", "LEAF"], "nodes_values": [0.0, 0.0], "nodes_truenodeids": [1, 0],
             "nodes_falsenodeids": [7, 0], "target_treeids": [0], "target_nodeids": [1], "target_ids": [0],
             "target_weights": [1.0]}
    with pytest.raises(CompileError, match="branches to node 7"):
        compiled(_regressor(np.zeros((2, 1), np.float32), attrs, 1), tmp_path)


# --- Scaler, Normalizer, Imputer ------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("attrs", [{"offset": [0.5, -1.0, 2.0, 0.0], "scale": [2.0, 0.5, -1.0, 3.0]},
                                   {"offset": [1.5], "scale": [0.25]}])
def test_scaler(compile_cache, dtype, attrs) -> None:
    x = (rand((5, 4), seed=3) * 4).astype(dtype)
    model = _ml_model("Scaler", {"x": x}, attrs, 1, expected=[np.zeros(x.shape, np.float32)])  # float, per spec
    _ort_check(model, {"x": x}, compile_cache)
    if dtype == "float32":
        _check(model, {"x": x}, cache=compile_cache, rtol=1e-6)


@pytest.mark.parametrize("norm", ["MAX", "L1", "L2"])
@pytest.mark.parametrize("shape", [(6, 5), (5,)])
def test_normalizer(compile_cache, norm, shape) -> None:
    """Per row; a row of zeros (its norm 0) stays as it is (onnxruntime; the reference divides by 0)."""
    x = rand(shape, seed=4)
    if len(shape) == 2:
        x[2] = 0.0
    expected = ort_reference(_ml_model("Normalizer", {"x": x}, {"norm": norm}, 1,
                                       expected=[np.zeros(shape, np.float32)]), {"x": x})
    model = _ml_model("Normalizer", {"x": x}, {"norm": norm}, 1, expected)
    _check(model, {"x": x}, expected, cache=compile_cache, rtol=1e-6, atol=1e-7)
    if len(shape) == 2:
        np.testing.assert_array_equal(expected[0][2], 0.0)


def test_normalizer_int_input(compile_cache) -> None:
    x = np.array([[1, -3, 2], [0, 0, 0]], np.int64)
    expected = [np.array([[1 / 6, -0.5, 1 / 3], [0, 0, 0]], np.float32)]
    model = _ml_model("Normalizer", {"x": x}, {"norm": "L1"}, 1, expected)
    _check(model, {"x": x}, expected, cache=compile_cache, rtol=1e-6)
    _ort_check(model, {"x": x}, compile_cache)


@pytest.mark.parametrize("attrs,x", [
    ({"imputed_value_floats": [9.0, 8.0, 7.0], "replaced_value_float": float("nan")},
     np.array([[np.nan, 1.0, 2.0], [3.0, np.nan, np.nan]], np.float32)),
    ({"imputed_value_floats": [-1.0], "replaced_value_float": 2.0}, np.array([[2.0, 1.0, 2.0]], np.float32)),
    ({"imputed_value_int64s": [5, 6], "replaced_value_int64": -1}, np.array([[-1, 3], [4, -1]], np.int64)),
])
def test_imputer(compile_cache, attrs, x) -> None:
    model = _ml_model("Imputer", {"x": x}, attrs, 1)
    _check(model, {"x": x}, cache=compile_cache)
    _ort_check(model, {"x": x}, compile_cache)


# --- LinearRegressor, LinearClassifier ------------------------------------------------------


@pytest.mark.parametrize("targets,transform", [(1, "NONE"), (3, "NONE"), (3, "SOFTMAX"), (1, "PROBIT")])
def test_linear_regressor(compile_cache, targets, transform) -> None:
    rng = np.random.default_rng(targets)
    x = rand((7, 4), seed=5)
    scale = 0.05 if transform == "PROBIT" else 1.0  # probit wants scores in (0, 1)
    attrs = {"coefficients": (rng.standard_normal(targets * 4) * scale).tolist(), "targets": targets,
             "intercepts": (rng.uniform(0.4, 0.6, targets) if transform == "PROBIT" else rng.standard_normal(targets)
                            ).tolist(), "post_transform": transform}
    model = _ml_model("LinearRegressor", {"x": x}, attrs, 1, expected=[np.zeros((7, targets), np.float32)])
    _ort_check(model, {"x": x}, compile_cache, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("classes,transform", [(3, "NONE"), (3, "SOFTMAX"), (3, "LOGISTIC"), (3, "SOFTMAX_ZERO"),
                                               (2, "LOGISTIC"), (1, "NONE"), (1, "LOGISTIC")])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
def test_linear_classifier(compile_cache, classes, transform, dtype) -> None:
    """Several score columns (arg max label), two, and one column with two labels ([1 - s, s], onnxruntime)."""
    rng = np.random.default_rng(classes * 7)
    x = (rand((9, 3), seed=6) * 3).astype(dtype)
    labels = [10, 20, 30][:max(classes, 2)]
    attrs = {"coefficients": rng.standard_normal(classes * 3).astype(np.float32).tolist(),
             "intercepts": rng.standard_normal(classes).astype(np.float32).tolist(),
             "classlabels_ints": labels, "post_transform": transform}
    model = _ml_model_outputs("LinearClassifier", x, attrs, 1,
                              [("label", onnx.TensorProto.INT64, [9]),
                               ("scores", onnx.TensorProto.FLOAT, [9, max(classes, 2)])])
    _ort_check(model, {"x": x}, compile_cache, rtol=1e-5, atol=1e-5)


# --- SVMClassifier, SVMRegressor ---------------------------------------------------------------


def _svm_attrs(rng: np.random.Generator, kernel: str, features: int) -> dict[str, Any]:
    return {"kernel_type": kernel, "kernel_params": [0.3, 0.5, 2.0] if kernel != "SIGMOID" else [0.2, 0.1, 0.0]}


@pytest.mark.parametrize("kernel", ["LINEAR", "POLY", "RBF", "SIGMOID"])
@pytest.mark.parametrize("one_class", [0, 1])
def test_svm_regressor(compile_cache, kernel, one_class) -> None:
    rng = np.random.default_rng(90)
    x = rand((11, 3), seed=7)
    attrs = {**_svm_attrs(rng, kernel, 3), "n_supports": 5, "support_vectors": rng.standard_normal(15).tolist(),
             "coefficients": rng.standard_normal(5).tolist(), "rho": [0.25], "one_class": one_class}
    model = _ml_model("SVMRegressor", {"x": x}, attrs, 1, expected=[np.zeros((11, 1), np.float32)])
    _ort_check(model, {"x": x}, compile_cache, rtol=1e-5, atol=1e-5)


def test_svm_regressor_linear_mode(compile_cache) -> None:
    """No support vectors: the coefficients are one weight per feature."""
    x = rand((6, 4), seed=8)
    attrs = {"coefficients": [0.5, -1.0, 2.0, 0.25], "rho": [-0.5], "kernel_type": "LINEAR",
             "kernel_params": [0.0, 0.0, 0.0]}
    model = _ml_model("SVMRegressor", {"x": x}, attrs, 1, expected=[np.zeros((6, 1), np.float32)])
    _ort_check(model, {"x": x}, compile_cache, rtol=1e-6, atol=1e-6)


def _svc_attrs(rng: np.random.Generator, classes: int, kernel: str, probability: bool) -> dict[str, Any]:
    per_class = [2, 3, 1, 2][:classes]
    vectors = sum(per_class)
    pairs = classes * (classes - 1) // 2
    attrs = {**_svm_attrs(rng, kernel, 3), "vectors_per_class": per_class,
             "support_vectors": rng.standard_normal(vectors * 3).tolist(),
             "coefficients": rng.standard_normal((classes - 1) * vectors).tolist(),
             "rho": rng.standard_normal(pairs).tolist(), "classlabels_ints": [5, 6, 7, 8][:classes]}
    if probability:
        attrs.update(prob_a=rng.uniform(-3, -1, pairs).tolist(), prob_b=rng.uniform(-0.2, 0.2, pairs).tolist())
    return attrs


@pytest.mark.parametrize("classes", [2, 3, 4])
@pytest.mark.parametrize("kernel", ["LINEAR", "RBF", "POLY"])
@pytest.mark.parametrize("probability", [False, True])
def test_svm_classifier_svc(compile_cache, classes, kernel, probability) -> None:
    rng = np.random.default_rng(classes * 10 + probability)
    x = rand((13, 3), seed=9)
    attrs = _svc_attrs(rng, classes, kernel, probability)
    columns = classes if probability or classes == 2 else classes * (classes - 1) // 2
    model = _ml_model_outputs("SVMClassifier", x, attrs, 1, [("label", onnx.TensorProto.INT64, [13]),
                                                             ("scores", onnx.TensorProto.FLOAT, [13, columns])])
    _ort_check(model, {"x": x}, compile_cache, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("classes,positive", [(2, True), (2, False), (3, False)])
def test_svm_classifier_linear_mode(compile_cache, classes, positive) -> None:
    """No support vectors: one score per class; two classes take onnxruntime's threshold rule."""
    rng = np.random.default_rng(classes + positive)
    x = rand((10, 3), seed=10, low=0.0, high=1.0) if positive else rand((10, 3), seed=10)
    coefficients = rng.uniform(0, 0.4, classes * 3) if positive else rng.standard_normal(classes * 3)
    attrs = {"coefficients": coefficients.tolist(), "rho": [0.1], "classlabels_ints": [3, 4, 5][:classes],
             "kernel_type": "LINEAR", "kernel_params": [0.0, 0.0, 0.0]}
    model = _ml_model_outputs("SVMClassifier", x, attrs, 1, [("label", onnx.TensorProto.INT64, [10]),
                                                             ("scores", onnx.TensorProto.FLOAT, [10, classes])])
    _ort_check(model, {"x": x}, compile_cache, rtol=1e-5, atol=1e-5)


# --- OneHotEncoder, FeatureVectorizer -----------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int64", "float32", "float64"])
def test_one_hot_encoder(compile_cache, dtype) -> None:
    """A value outside the categories gives zeros; float values are truncated to integers first."""
    x = np.array([[1, 4, 7], [3, 9, 1]], dtype)
    if dtype.startswith("float"):
        x = x + np.array([[0.25, 0.75, 0.0], [0.5, 0.0, 0.9]], dtype)
    model = _ml_model("OneHotEncoder", {"x": x}, {"cats_int64s": [1, 3, 4, 7]}, 1,
                      expected=[np.zeros((2, 3, 4), np.float32)])
    _ort_check(model, {"x": x}, compile_cache)


def test_one_hot_encoder_zeros_0_refuses_unknown_values(compile_cache) -> None:
    from runtime_stub.errors import InvalidInputError

    x = np.array([1, 3], np.int64)
    model = _ml_model("OneHotEncoder", {"x": x}, {"cats_int64s": [1, 3], "zeros": 0}, 1,
                      expected=[np.zeros((2, 2), np.float32)])
    _ort_check(model, {"x": x}, compile_cache)
    with pytest.raises(InvalidInputError, match="not one of the categories"):
        run_compiled(model, {"x": np.array([1, 2], np.int64)}, cache_dir=compile_cache)


def test_feature_vectorizer(compile_cache) -> None:
    """Columns side by side: the second input cut to 1 of its 3 columns, the third padded with zeros."""
    feeds = {"a": rand((4, 2), seed=11), "b": rand((4, 3), seed=12), "c": np.arange(4, dtype=np.float32).reshape(4, 1)}
    node = helper.make_node("FeatureVectorizer", list(feeds), ["y"], domain="ai.onnx.ml", inputdimensions=[2, 1, 2])
    infos = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in feeds.items()]
    model = helper.make_model(helper.make_graph([node], "fv", infos, [helper.make_tensor_value_info(
        "y", onnx.TensorProto.FLOAT, [4, 5])]), opset_imports=[helper.make_opsetid("", 21),
                                                                helper.make_opsetid("ai.onnx.ml", 1)])
    model.ir_version = 10
    want = ort_reference(model, feeds)
    got = run_compiled(model, feeds, cache_dir=compile_cache)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[0][:, 4], 0.0)


def test_dict_vectorizer_int64_keys(compile_cache) -> None:
    """A map(int64, float) input into DictVectorizer (int64_vocabulary): the [1, V] row of each key's value."""
    from onnx import TensorProto

    import runtime_stub

    node = helper.make_node("DictVectorizer", ["X"], ["y"], domain="ai.onnx.ml", int64_vocabulary=[7, -2, 40])
    x = helper.make_value_info("X", helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(
        TensorProto.FLOAT, [1])))
    graph = helper.make_graph([node], "dv", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    ort = pytest.importorskip("onnxruntime")
    reference = ort.InferenceSession(model.SerializeToString())
    with runtime_stub.InferenceSession(compiled(model, compile_cache)) as session:
        for d in [{7: 1.5, 40: -2.0}, {-2: 3.0, 5: 9.0}, {40: float("nan")}]:
            got, want = session.run(None, {"X": d})[0], reference.run(None, {"X": d})[0]
            assert got.dtype == want.dtype and got.shape == want.shape == (1, 3)
            np.testing.assert_array_equal(got, want)
