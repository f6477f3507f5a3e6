"""ai.onnx.ml preprocessing and linear scorers: Scaler, Normalizer, Imputer, LinearRegressor, LinearClassifier.

As onnxruntime computes them (the tests compare with it):

* ``Scaler``: ``(x - offset) * scale`` per column (``offset`` / ``scale`` of one value
  or one per last-axis element), as float (double input computes in double).
* ``Normalizer``: each row (the last axis of a 1-D or 2-D input) divided by its
  ``MAX`` (the largest value, not the largest magnitude), ``L1`` (sum of magnitudes)
  or ``L2`` norm; a row whose norm is 0 is left as it is.
* ``Imputer``: elements equal to ``replaced_value_float`` (any NaN when that is NaN)
  or ``replaced_value_int64`` become the imputed value of their column.
* ``LinearRegressor``: ``X @ coefficients^T + intercepts``, ``targets`` columns;
  post_transform per row (a single target gets PROBIT only).
* ``LinearClassifier``: the same scores, one column per intercept. Several columns:
  the label is the class of the first largest score, the scores post-transformed.
  One column with two class labels: label ``labels[1]`` where the score is positive,
  and the scores become ``[1 - s, s]``, with ``s`` the logistic of the score under
  LOGISTIC and the raw score otherwise (onnxruntime ignores SOFTMAX there).

Inputs of other types are converted to float first (onnxruntime's rule).
"""

from __future__ import annotations

import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Expr, call, cast, compare, const, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.ml_common import (LOGISTIC, PROBIT, argmax_rows, class_labels, floats, label_dtype, label_of, logistic,
                                    named_labels, post_transform, regression_transform, transform_code)
from compiler.ops.registry import OpDef, defop

_ML = "ai.onnx.ml"


def _per_column(ctx: LoweringContext, values: np.ndarray, width, what: str) -> np.ndarray:
    """A table of one value per column: a single value is repeated."""
    if values.size == 1:
        return np.full(int(width), values[0], values.dtype)
    if values.size != width:
        ctx.unsupported(f"{what} has {values.size} values for {width} columns (it must have 1 or {width})")
    return values


def _static_width(ctx: LoweringContext, x: Tensor) -> int:
    width = x.shape[-1] if x.rank else 1
    if not isinstance(width, int):
        ctx.unsupported("the feature axis (the last one) must have a static size")
    return width


def scaler(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    width = _static_width(ctx, x)
    work = DType.F64 if x.dtype is DType.F64 else DType.F32
    offset = ctx.add_constant(_per_column(ctx, floats(ctx, "offset", [0.0]), width, "offset").astype(work.numpy),
                              "scaler_offset")
    scale = ctx.add_constant(_per_column(ctx, floats(ctx, "scale", [1.0]), width, "scale").astype(work.numpy),
                             "scaler_scale")

    def scaled(i: Index) -> Expr:
        column = i[-1] if x.rank else 0
        return cast((cast(x[i], work) - offset[column]) * scale[column], out.dtype)

    return [ctx.compute(x.shape, scaled, dtype=out.dtype, name="scaler")]


def normalizer(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    if x.rank not in (1, 2):
        ctx.unsupported(f"X must be 1-D or 2-D (got shape {list(x.shape)})")
    norm = ctx.attr("norm", "MAX")
    if norm not in ("MAX", "L1", "L2"):
        ctx.unsupported(f"norm {norm!r} is not one of MAX, L1, L2")
    width = x.shape[-1]
    rows = (x.shape[0], 1) if x.rank == 2 else (1,)

    def element(i: Index, k: Expr) -> Expr:
        return cast(x[(i[0], k) if x.rank == 2 else (k,)], DType.F32)

    def term(i: Index, r: Index) -> Expr:
        v = element(i, r[0])
        return v if norm == "MAX" else call("abs", v) if norm == "L1" else v * v

    total = ctx.reduce(rows, [width], term, "max" if norm == "MAX" else "sum",
                       (lambda acc, i: call("sqrt", acc)) if norm == "L2" else None, name="normalizer_norm",
                       materialize=True)

    def normalized(i: Index) -> Expr:
        v = cast(x[i], DType.F32)
        n = total[(i[0], 0) if x.rank == 2 else (0,)]
        return select(compare("eq", n, const(0.0, DType.F32)), v, v / n)

    return [ctx.compute(x.shape, lambda i: cast(normalized(i), out.dtype), dtype=out.dtype, name="normalizer")]


def imputer(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    width = _static_width(ctx, x)
    if x.dtype.is_float:
        values = floats(ctx, "imputed_value_floats")
        replaced = float(ctx.attr("replaced_value_float", 0.0))
    else:
        values = ctx.attr("imputed_value_int64s")
        values = None if values is None else np.asarray(values, np.int64).reshape(-1)
        replaced = int(ctx.attr("replaced_value_int64", 0))
    if values is None or values.size == 0:
        ctx.unsupported(f"imputed values for {x.dtype.value} input are missing "
                        f"({'imputed_value_floats' if x.dtype.is_float else 'imputed_value_int64s'})")
    table = ctx.add_constant(_per_column(ctx, values, width, "the imputed values").astype(x.dtype.numpy),
                             "imputer_values")

    def impute(i: Index) -> Expr:
        v = x[i]
        if isinstance(replaced, float) and np.isnan(replaced):
            missing = call("isnan", v, dtype=DType.BOOL)
        else:
            missing = compare("eq", v, const(replaced, x.dtype))
        return select(missing, table[i[-1] if x.rank else 0], v)

    return [ctx.compute(x.shape, impute, dtype=x.dtype, name="imputer")]


# --- linear scorers ----------------------------------------------------------------------


def _linear_scores(ctx: LoweringContext, columns: int, intercepts: np.ndarray) -> Tensor:
    """``[N, columns]``: ``X @ coefficients^T + intercepts`` in float (a 1-D X is one row)."""
    x = ctx.input(0)
    if x.rank not in (1, 2):
        ctx.unsupported(f"X must be 1-D or 2-D (got shape {list(x.shape)})")
    features = _static_width(ctx, x)
    coefficients = floats(ctx, "coefficients")
    if coefficients is None or coefficients.size != columns * features:
        got = 0 if coefficients is None else coefficients.size
        ctx.unsupported(f"{got} coefficients for {columns} score columns of {features} features")
    weights = ctx.add_constant(coefficients.astype(np.float32).reshape(columns, features), "linear_weights")
    bias = ctx.add_constant(intercepts.astype(np.float32), "linear_bias")
    rows = x.shape[0] if x.rank == 2 else 1

    def product(i: Index, r: Index) -> Expr:
        v = x[(i[0], r[0]) if x.rank == 2 else (r[0],)]
        return cast(v, DType.F32) * weights[i[1], r[0]]

    return ctx.reduce((rows, columns), [features], product, "sum", lambda acc, i: acc + bias[i[1]],
                      name="linear_scores", materialize=True)


def linear_regressor(ctx: LoweringContext) -> list[Tensor]:
    out = ctx.output_type(0)
    targets = int(ctx.attr("targets", 1))
    intercepts = floats(ctx, "intercepts", [0.0] * targets)
    if intercepts.size != targets:
        ctx.unsupported(f"{intercepts.size} intercepts for {targets} targets")
    scores = regression_transform(ctx, _linear_scores(ctx, targets, intercepts), transform_code(ctx))
    return [ctx.compute(out.shape, lambda i: cast(scores[i], out.dtype), dtype=out.dtype, name="linear_regressor")]


def linear_classifier(ctx: LoweringContext) -> list[Tensor]:
    labels = class_labels(ctx, "classlabels_ints", "classlabels_strings")
    if labels is None or labels.size == 0:
        ctx.unsupported("classlabels_ints is required")
    intercepts = floats(ctx, "intercepts")
    if intercepts is None or intercepts.size == 0:
        ctx.unsupported("intercepts are required (one per score column)")
    columns = intercepts.size
    transform = transform_code(ctx)
    scores = _linear_scores(ctx, columns, intercepts)
    label_type, score_type = label_dtype(ctx), ctx.output_type(1)
    if columns > 1:
        if labels.size != columns:
            ctx.unsupported(f"{labels.size} class labels for {columns} score columns")
        label = label_of(ctx, argmax_rows(ctx, scores), labels, label_type)
        probabilities = post_transform(ctx, scores, transform)
    else:
        yes, no = (labels[1], labels[0]) if labels.size == 2 else (1, 0)
        label = ctx.compute(score_type.shape[:1], lambda i: select(compare("gt", scores[i[0], 0], const(0.0, DType.F32)),
                                                                   const(int(yes), label_type),
                                                                   const(int(no), label_type)),
                            dtype=label_type, name="linear_label")
        if labels.size == 2:
            if transform == PROBIT:
                ctx.unsupported("PROBIT on a single score column with two classes (onnxruntime leaves the "
                                "second column unwritten)")
            one = const(1.0, DType.F32)

            def two_classes(i: Index) -> Expr:
                s = logistic(scores[i[0], 0]) if transform == LOGISTIC else scores[i[0], 0]
                return select(compare("eq", i[1], 0), one - s, s)

            probabilities = ctx.compute(score_type.shape, two_classes, dtype=DType.F32, name="linear_two_classes")
        else:
            probabilities = regression_transform(ctx, scores, transform)
    return [named_labels(ctx, label, "classlabels_strings"),
            ctx.compute(score_type.shape, lambda i: cast(probabilities[i], score_type.dtype),
                        dtype=score_type.dtype, name="linear_classifier")]


OPS: list[OpDef] = [
    defop("Scaler", scaler, kind="elementwise", domain=_ML),
    defop("Normalizer", normalizer, domain=_ML),
    defop("Imputer", imputer, kind="elementwise", domain=_ML),
    defop("LinearRegressor", linear_regressor, domain=_ML),
    defop("LinearClassifier", linear_classifier, domain=_ML),
]
