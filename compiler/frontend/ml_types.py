"""Output types of ai.onnx.ml ops, which onnx's shape inference mostly leaves without a shape.

onnx infers no shape for most scorers (TreeEnsembleClassifier/Regressor,
SVM*, Scaler, Normalizer, LinearRegressor...) and an unknown batch dim
(``unk__N``) for the rest, so a model with a symbolic batch (skl2onnx's ``[None,
F]`` inputs) would stop at an unknown dim. The shapes follow from the input and the
attributes as onnxruntime computes them: the batch is the input's first dim (one row
for a 1-D input), the columns the number of classes or targets.
:func:`compiler.frontend.shape_fixes.corrected_types` pins these types.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
from onnx import helper

_FLOAT, _INT64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64


def ml_output_types(node: onnx.NodeProto, types: Mapping[str, onnx.TypeProto]) -> dict[str, onnx.TypeProto]:
    """``{output: type}`` for the outputs of an ai.onnx.ml node whose input type is known (every output,
    whatever ``types`` says: the loader pins each once); {} for other nodes."""
    rule = _RULES.get(node.op_type)
    if node.domain != "ai.onnx.ml" or rule is None or not node.input:
        return {}
    x = types.get(node.input[0])
    if x is None or x.WhichOneof("value") != "tensor_type" or not x.tensor_type.HasField("shape"):
        return {}
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    dims = list(x.tensor_type.shape.dim)
    outputs = rule(attrs, dims, x.tensor_type.elem_type, [types.get(i) for i in node.input])
    if outputs is None:
        return {}
    result = {}
    for name, (elem_type, shape) in zip(node.output, outputs):
        if not name:
            continue
        t = onnx.TypeProto()
        t.tensor_type.elem_type = elem_type
        t.tensor_type.shape.SetInParent()
        for d in shape:
            t.tensor_type.shape.dim.add().CopyFrom(d if isinstance(d, onnx.TensorShapeProto.Dimension) else _dim(d))
        result[name] = t
    return result


def _dim(value: int) -> onnx.TensorShapeProto.Dimension:
    d = onnx.TensorShapeProto.Dimension()
    d.dim_value = value
    return d


def _rows(dims: list) -> object:
    """The batch: the input's first dim, or one row for a 1-D input."""
    return dims[0] if len(dims) == 2 else 1


def _label_type(attrs: dict, ints: str, strings: str) -> int:
    return onnx.TensorProto.STRING if attrs.get(strings) else _INT64


def _tree_classifier(attrs, dims, elem, inputs):
    if len(dims) != 2:
        return None
    classes = len(attrs.get("classlabels_int64s") or attrs.get("classlabels_strings") or [])
    return [(_label_type(attrs, "classlabels_int64s", "classlabels_strings"), [dims[0]]),
            (_FLOAT, [dims[0], classes])]


def _tree_regressor(attrs, dims, elem, inputs):
    return [(_FLOAT, [dims[0], int(attrs.get("n_targets", 1))])] if len(dims) == 2 else None


def _tree_ensemble(attrs, dims, elem, inputs):
    return [(elem, [dims[0], int(attrs["n_targets"])])] if len(dims) == 2 and "n_targets" in attrs else None


def _linear_classifier(attrs, dims, elem, inputs):
    labels = attrs.get("classlabels_ints") or attrs.get("classlabels_strings") or []
    classes = len(attrs.get("intercepts") or [])
    columns = 2 if classes == 1 and len(labels) == 2 else classes
    return [(_label_type(attrs, "classlabels_ints", "classlabels_strings"), [_rows(dims)]),
            (_FLOAT, [_rows(dims), columns])]


def _linear_regressor(attrs, dims, elem, inputs):
    return [(_FLOAT, [_rows(dims), int(attrs.get("targets", 1))])]


def _svm_classifier(attrs, dims, elem, inputs):
    labels = attrs.get("classlabels_ints") or attrs.get("classlabels_strings") or []
    classes = max(len(labels), 1)
    svc = sum(attrs.get("vectors_per_class") or []) > 0
    if svc and not attrs.get("prob_a") and classes > 2:
        columns = classes * (classes - 1) // 2  # one decision value per pair of classes
    else:
        columns = 2 if classes == 2 else classes
    return [(_label_type(attrs, "classlabels_ints", "classlabels_strings"), [_rows(dims)]),
            (_FLOAT, [_rows(dims), columns])]


def _svm_regressor(attrs, dims, elem, inputs):
    return [(_FLOAT, [_rows(dims), 1])]


def _same_shape_float(attrs, dims, elem, inputs):
    return [(_FLOAT, dims)]


def _same_type(attrs, dims, elem, inputs):
    return [(elem, dims)]


def _feature_vectorizer(attrs, dims, elem, inputs):
    widths = list(attrs.get("inputdimensions") or [])
    if not widths:
        return None
    return [(_FLOAT, [_rows(dims), sum(int(w) for w in widths)])]


def _array_feature_extractor(attrs, dims, elem, inputs):
    """The last axis gathered at the indices, flattened (one row for a 1-D X)."""
    indices = inputs[1] if len(inputs) > 1 else None
    if indices is None or indices.WhichOneof("value") != "tensor_type" or not indices.tensor_type.HasField("shape"):
        return None
    count = 1
    for d in indices.tensor_type.shape.dim:
        if not d.HasField("dim_value"):
            return None
        count *= d.dim_value
    return [(elem, [*dims[:-1], count] if len(dims) > 1 else [1, count])]


def _one_hot_encoder(attrs, dims, elem, inputs):
    categories = len(attrs.get("cats_int64s") or attrs.get("cats_strings") or [])
    return [(_FLOAT, [*dims, categories])] if categories else None


_RULES = {
    "OneHotEncoder": _one_hot_encoder,
    "ArrayFeatureExtractor": _array_feature_extractor,
    "TreeEnsembleClassifier": _tree_classifier,
    "TreeEnsembleRegressor": _tree_regressor,
    "TreeEnsemble": _tree_ensemble,
    "LinearClassifier": _linear_classifier,
    "LinearRegressor": _linear_regressor,
    "SVMClassifier": _svm_classifier,
    "SVMRegressor": _svm_regressor,
    "Scaler": _same_shape_float,
    "Normalizer": _same_shape_float,
    "Imputer": _same_type,
    "FeatureVectorizer": _feature_vectorizer,
}
