"""scikit-learn models converted by skl2onnx (ai.onnx.ml scorers) compile and match onnxruntime and scikit-learn.

Models are trained at test time on ``make_classification`` / ``make_regression`` data
with fixed seeds, converted with ``options={"zipmap": False}`` (labels and probabilities as
tensors) and a symbolic batch (skl2onnx's ``[None, F]`` input), compiled once, and run on
the training rows plus NaN-free rows far outside them. Labels must equal onnxruntime's and
the model's ``predict``; probabilities and regression outputs must be within 1e-5 of
onnxruntime's (absolute, relative for regression targets of size ~100). skl2onnx's default
output (ZipMap's list of dicts) and string class labels are checked the same way.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import (ExtraTreesClassifier, GradientBoostingClassifier, GradientBoostingRegressor,
                              RandomForestClassifier, RandomForestRegressor)
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, Normalizer, StandardScaler
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import OneHotEncoder
from sklearn.svm import SVC, SVR, LinearSVC, LinearSVR, OneClassSVM
from sklearn.tree import DecisionTreeRegressor
from skl2onnx import to_onnx

import runtime_stub
from helpers_onnx import compiled, ort_reference

TOLERANCE = 1e-5


def _data(classes: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    if classes is None:
        x, y = make_regression(400, 8, n_informative=5, noise=1.0, random_state=seed)
    else:
        x, y = make_classification(400, 8, n_informative=5, n_classes=classes, random_state=seed)
    return x.astype(np.float32), y


def _convert(model, x: np.ndarray, tensors: bool):
    options = {id(model): {"zipmap": False}} if tensors else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_onnx(model, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})


def _feeds(x: np.ndarray) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    far = (rng.standard_normal((16, x.shape[1])) * 4).astype(np.float32)  # beyond every threshold
    return {"X": np.concatenate([x, far, x[:1]])}  # 417 rows: not a multiple of any vector width


def _run(onnx_model, feeds, compile_cache) -> list[np.ndarray]:
    with runtime_stub.InferenceSession(compiled(onnx_model, compile_cache)) as session:
        return session.run(None, feeds)


def _check_classifier(model, onnx_model, feeds, compile_cache, rtol: float = TOLERANCE) -> list[np.ndarray]:
    """Labels equal to onnxruntime's and to ``model.predict``; scores within ``rtol`` / 1e-5 of onnxruntime's."""
    want = ort_reference(onnx_model, feeds)
    got = _run(onnx_model, feeds, compile_cache)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[0], model.predict(feeds["X"]))
    np.testing.assert_allclose(got[1], want[1], rtol=rtol, atol=TOLERANCE)
    return got


CLASSIFIERS = {
    "scaler_random_forest": lambda: make_pipeline(StandardScaler(),
                                                  RandomForestClassifier(12, max_depth=6, random_state=0)),
    "extra_trees": lambda: ExtraTreesClassifier(8, random_state=0),
    "gradient_boosting": lambda: GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0),
    "scaler_logistic_regression": lambda: make_pipeline(StandardScaler(), LogisticRegression()),
    "maxabs_normalizer_logistic": lambda: make_pipeline(MaxAbsScaler(), Normalizer("l2"), LogisticRegression()),
}


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
def test_classifier(compile_cache, name: str, classes: int) -> None:
    x, y = _data(classes)
    model = CLASSIFIERS[name]().fit(x, y)
    onnx_model = _convert(model, x, tensors=True)
    feeds = _feeds(x)
    label, proba = _check_classifier(model, onnx_model, feeds, compile_cache, rtol=0)
    assert label.dtype == np.int64 and proba.dtype == np.float32
    assert proba.shape == (feeds["X"].shape[0], classes)


@pytest.mark.parametrize("classes", [2, 3])
def test_linear_svc(compile_cache, classes: int) -> None:
    """LinearSVC: decision values, no probabilities (one column for two classes, via ArrayFeatureExtractor)."""
    x, y = _data(classes, seed=3)
    model = LinearSVC(random_state=0).fit(x, y)
    onnx_model = _convert(model, x, tensors=False)
    _check_classifier(model, onnx_model, _feeds(x), compile_cache)


REGRESSORS = {
    "gradient_boosting": lambda: GradientBoostingRegressor(n_estimators=30, max_depth=4, random_state=0),
    "random_forest": lambda: RandomForestRegressor(10, max_depth=6, random_state=0),
    "decision_tree": lambda: DecisionTreeRegressor(max_depth=5, random_state=0),
    "scaler_linear": lambda: make_pipeline(StandardScaler(), LinearRegression()),
    "linear_svr": lambda: LinearSVR(random_state=0, max_iter=5000),
    "svr_rbf": lambda: make_pipeline(StandardScaler(), SVR(C=50.0)),
    "svr_poly": lambda: make_pipeline(StandardScaler(), SVR(kernel="poly", C=50.0)),
}


@pytest.mark.parametrize("name", sorted(REGRESSORS))
def test_regressor(compile_cache, name: str) -> None:
    x, y = _data(None, seed=5)
    model = REGRESSORS[name]().fit(x, y)
    onnx_model = _convert(model, x, tensors=False)
    feeds = _feeds(x)
    (want,) = ort_reference(onnx_model, feeds)
    (got,) = _run(onnx_model, feeds, compile_cache)
    assert got.shape == want.shape == (feeds["X"].shape[0], 1)
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE * scale)
    np.testing.assert_allclose(got[:, 0], model.predict(feeds["X"]), rtol=0, atol=1e-4 * scale)


def test_multi_target_regressor(compile_cache) -> None:
    x, y = make_regression(300, 6, n_targets=3, random_state=2)
    x = x.astype(np.float32)
    model = RandomForestRegressor(6, max_depth=5, random_state=0).fit(x, y)
    onnx_model = _convert(model, x, tensors=False)
    feeds = _feeds(x)
    (want,) = ort_reference(onnx_model, feeds)
    (got,) = _run(onnx_model, feeds, compile_cache)
    assert got.shape == want.shape == (feeds["X"].shape[0], 3)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOLERANCE * float(np.abs(want).max()))


@pytest.mark.parametrize("classes", [2, 3, 4])
@pytest.mark.parametrize("kernel", ["rbf", "poly", "sigmoid", "linear"])
@pytest.mark.parametrize("probability", [False, True])
def test_svc(compile_cache, kernel: str, classes: int, probability: bool) -> None:
    """One-vs-one decision values or (probability=True) libsvm's coupled probabilities."""
    x, y = _data(classes, seed=7)
    x, y = x[:200], y[:200]
    model = SVC(kernel=kernel, probability=probability, random_state=0).fit(x, y)
    onnx_model = _convert(model, x, tensors=True)
    _check_classifier(model, onnx_model, _feeds(x), compile_cache)


def test_one_class_svm(compile_cache) -> None:
    x, _ = _data(None, seed=8)
    model = OneClassSVM(gamma=0.05).fit(x)
    onnx_model = _convert(model, x, tensors=False)
    feeds = _feeds(x)
    want = ort_reference(onnx_model, feeds)
    got = _run(onnx_model, feeds, compile_cache)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[0].reshape(-1), model.predict(feeds["X"]))
    # Decision values: a sum over ~200 support vectors; onnxruntime sums in float, tilec in double.
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=TOLERANCE * float(np.abs(want[1]).max()))


def _mixed_columns(seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Three numeric columns and two integer-coded categorical ones (4 categories each)."""
    x, y = make_classification(300, 5, n_informative=3, n_classes=3, random_state=seed)
    cats = np.stack([(x[:, 3] > 0) + 2 * (x[:, 4] > 0.5), np.digitize(x[:, 4], [-1, 0, 1])], 1)
    return np.concatenate([x[:, :3], cats], 1).astype(np.float32), y


@pytest.mark.parametrize("name", ["svc_probability", "svc_linear_kernel", "linear_svc"])
def test_mixed_columns_pipeline(compile_cache, name: str) -> None:
    """ColumnTransformer(StandardScaler on numbers, OneHotEncoder on categories) then an SVM: Gather, Cast,
    OneHotEncoder, Concat and Reshape([-1, C]) over the symbolic batch, then the scorer."""
    x, y = _mixed_columns()
    classifier = {"svc_probability": lambda: SVC(probability=True, random_state=0),
                  "svc_linear_kernel": lambda: SVC(kernel="linear"),
                  "linear_svc": lambda: LinearSVC(random_state=0)}[name]()
    columns = ColumnTransformer([("num", StandardScaler(), [0, 1, 2]),
                                 ("cat", OneHotEncoder(handle_unknown="ignore"), [3, 4])])
    model = make_pipeline(columns, classifier).fit(x, y)
    # skl2onnx wants an option it knows for LinearSVC inside a pipeline (it adds a zipmap default otherwise).
    options = {id(classifier): {"zipmap": False} if isinstance(classifier, SVC) else {"nocl": False}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_model = to_onnx(model, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    assert "OneHotEncoder" in {n.op_type for n in onnx_model.graph.node}
    _check_classifier(model, onnx_model, {"X": np.concatenate([x, x[:5]])}, compile_cache)


LABEL_NAMES = np.array(["setosa", "ü", "a much longer class name", "🐈"])

ZIPMAP_CLASSIFIERS = {
    "logistic_binary": (lambda: LogisticRegression(), 2),
    "random_forest": (lambda: RandomForestClassifier(6, max_depth=4, random_state=0), 3),
    "svc": (lambda: SVC(probability=True, random_state=0), 3),
    "gradient_boosting": (lambda: GradientBoostingClassifier(n_estimators=8, max_depth=2, random_state=0), 4),
}


@pytest.mark.parametrize("labels", ["int", "str"])
@pytest.mark.parametrize("name", sorted(ZIPMAP_CLASSIFIERS))
def test_default_zipmap_output(compile_cache, name, labels) -> None:
    """skl2onnx's default output, ZipMap's list of {label: probability} dicts (after every classifier), and
    string labels as object arrays: as onnxruntime returns them, keys in its order, values within 1e-5."""
    import onnxruntime

    make, classes = ZIPMAP_CLASSIFIERS[name]
    x, y = _data(classes)
    target = LABEL_NAMES[y] if labels == "str" else y
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = make().fit(x, target)
        onnx_model = _convert(model, x, tensors=False)
    assert "ZipMap" in {n.op_type for n in onnx_model.graph.node}
    feeds = _feeds(x)
    want = onnxruntime.InferenceSession(onnx_model.SerializeToString()).run(None, feeds)
    with runtime_stub.InferenceSession(compiled(onnx_model, compile_cache)) as session:
        assert [(o.name, o.type, o.shape) for o in session.get_outputs()][1] == \
            ("output_probability", f"seq(map({'string' if labels == 'str' else 'int64'},tensor(float)))", [])
        got = session.run(None, feeds)
    assert got[0].dtype == want[0].dtype
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[0], model.predict(feeds["X"]))
    assert isinstance(got[1], list) and len(got[1]) == len(want[1])
    for mine, theirs in zip(got[1], want[1]):
        assert list(mine) == list(theirs)
        np.testing.assert_allclose(list(mine.values()), list(theirs.values()), atol=TOLERANCE)


def test_a_zipmap_read_by_another_node_is_refused(tmp_path) -> None:
    from onnx import helper

    from compiler.errors import UnsupportedOpError

    x, y = _data(2)
    onnx_model = _convert(LogisticRegression().fit(x, y), x, tensors=False)
    graph = onnx_model.graph
    graph.node.append(helper.make_node("Identity", ["output_probability"], ["again"]))
    graph.output.append(helper.make_value_info("again", graph.output[1].type))
    with pytest.raises(UnsupportedOpError, match=r"ZipMap.*read by another node"):
        compiled(onnx_model, tmp_path)


def test_one_hot_encoder_on_string_columns(compile_cache) -> None:
    """OneHotEncoder(handle_unknown='ignore') over a string input (skl2onnx Gathers each column, one-hot encodes
    it against its categories, concatenates), LogisticRegression with string labels, default ZipMap."""
    from skl2onnx.common.data_types import StringTensorType

    rng = np.random.default_rng(3)
    x = np.stack([rng.choice(["red", "green", "blü"], 300), rng.choice(["S", "M", "XL", ""], 300)], axis=1)
    y = np.where((x[:, 0] == "red") | (x[:, 1] == "S"), "yes", "no")
    model = make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression()).fit(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_model = to_onnx(model, initial_types=[("X", StringTensorType([None, 2]))],
                             target_opset={"": 17, "ai.onnx.ml": 3})
    feeds = {"X": np.concatenate([x, [["unknown colour", "S"], ["green", "XXL"]]]).astype(object)}
    import onnxruntime

    want = onnxruntime.InferenceSession(onnx_model.SerializeToString()).run(None, feeds)
    got = _run(onnx_model, feeds, compile_cache)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[0][:300], model.predict(x))
    for mine, theirs in zip(got[1], want[1]):
        assert list(mine) == list(theirs)
        np.testing.assert_allclose(list(mine.values()), list(theirs.values()), atol=TOLERANCE)


def test_dict_vectorizer_pipeline_takes_a_dict(compile_cache) -> None:
    """DictVectorizer + LogisticRegression with a dict input ({feature name: value}, as onnxruntime takes it):
    unknown keys ignored, missing ones 0, one artifact for dicts of any size; bad dicts are InvalidInputErrors."""
    import onnxruntime
    from sklearn.feature_extraction import DictVectorizer
    from skl2onnx.common.data_types import DictionaryType, FloatTensorType, StringTensorType

    rng = np.random.default_rng(4)
    names = ["a", "bb", "ü", "d"]
    data = [{k: float(rng.standard_normal()) for k in rng.choice(names, rng.integers(1, 4), replace=False)}
            for _ in range(60)]
    y = [int(sum(d.values()) > 0) for d in data]
    model = make_pipeline(DictVectorizer(sparse=False), LogisticRegression()).fit(data, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_model = to_onnx(model, initial_types=[("X", DictionaryType(StringTensorType([1]), FloatTensorType([1])))],
                             target_opset={"": 17, "ai.onnx.ml": 3})
    reference = onnxruntime.InferenceSession(onnx_model.SerializeToString())
    with runtime_stub.InferenceSession(compiled(onnx_model, compile_cache)) as session:
        assert [(i.name, i.type, i.shape) for i in session.get_inputs()] == [("X", "map(string,tensor(float))", [])]
        for d in [*data[:8], {"a": 2.0, "unknown": 5.0}, {"ü": -1.0, "bb": 1, "a": np.float32(0.5), "d": 3.0}]:
            got, want = session.run(None, {"X": d}), reference.run(None, {"X": d})
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_allclose(list(got[1][0].values()), list(want[1][0].values()), atol=TOLERANCE)
        for bad, why in [({"a": "x"}, "values must each be a real number"), ({1: 2.0}, "keys must each be str"),
                         ([("a", 1.0)], "must be a dict")]:
            with pytest.raises(runtime_stub.InvalidInputError, match=f"input 'X'.*{why}"):
                session.run(None, {"X": bad})
