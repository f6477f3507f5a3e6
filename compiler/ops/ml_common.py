"""What the ai.onnx.ml scorers share: post transforms, class labels, the arg max that picks a label.

The classifiers (trees, linear models, SVMs) and regressors end in the same
steps: a ``post_transform`` over each row of scores (``NONE``, ``SOFTMAX``,
``LOGISTIC``, ``SOFTMAX_ZERO``, ``PROBIT``; the legacy ops spell them as
strings, TreeEnsemble-5 as the numbers 0-4 in that order), then a label: the
index of the first largest score, gathered from the class label table.
Formulas are onnxruntime's: LOGISTIC as ``1 / (1 + exp(-|v|))`` mirrored for
negative ``v``, PROBIT with its closed-form ``erfinv`` (a = 0.147), SOFTMAX_ZERO
leaving near-zero scores out of the normalisation.

String class labels are computed as positions in their table and become
strings (code points, see compiler/dtypes.py) in ``named_labels``, the last step.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, call, compare, const, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.text import strings_at

NONE, SOFTMAX, LOGISTIC, SOFTMAX_ZERO, PROBIT = range(5)
_TRANSFORMS = {"NONE": NONE, "SOFTMAX": SOFTMAX, "LOGISTIC": LOGISTIC, "SOFTMAX_ZERO": SOFTMAX_ZERO, "PROBIT": PROBIT}


def transform_code(ctx: LoweringContext) -> int:
    """The node's ``post_transform`` as a number (a legacy op's string, or TreeEnsemble-5's int)."""
    value: Any = ctx.attr("post_transform", "NONE")
    if isinstance(value, str):
        if value not in _TRANSFORMS:
            ctx.unsupported(f"post_transform {value!r} is not one of {', '.join(_TRANSFORMS)}")
        return _TRANSFORMS[value]
    if int(value) not in range(5):
        ctx.unsupported(f"post_transform {value} is not defined")
    return int(value)


def floats(ctx: LoweringContext, name: str, default: list[float] | None = None) -> np.ndarray | None:
    """A float attribute given as a list or, from opset 3, as ``<name>_as_tensor`` (float or double)."""
    value = ctx.attr(name)
    tensor = ctx.attr(f"{name}_as_tensor")
    if value is not None and tensor is not None:
        ctx.unsupported(f"both {name} and {name}_as_tensor are set")
    if tensor is not None:
        return np.asarray(tensor).reshape(-1)
    if value is not None:
        return np.asarray(value, np.float32).reshape(-1)
    return None if default is None else np.asarray(default, np.float32)


def class_labels(ctx: LoweringContext, ints: str, strings: str) -> np.ndarray | None:
    """The int64 class labels (None when the node has none); for string labels (``strings``) their positions,
    which ``named_labels`` turns into the strings at the end."""
    names = ctx.attr(strings)
    if names is not None and ctx.attr(ints) is not None:
        ctx.invalid(f"both {ints} and {strings} are set")
    if names is not None:
        return np.arange(len(names), dtype=np.int64)
    labels = ctx.attr(ints)
    return None if labels is None else np.asarray(labels, np.int64).reshape(-1)


def label_dtype(ctx: LoweringContext) -> DType:
    """The type the label is computed in: the label output's, or int64 positions for string labels."""
    dtype = ctx.output_type(0).dtype
    return DType.I64 if dtype is DType.STRING else dtype


def named_labels(ctx: LoweringContext, label: Tensor, strings: str) -> Tensor:
    """``label`` as the node's label output: for string labels each position's string, its code points on
    one more axis (compiler/dtypes.py); other labels as they are."""
    names = ctx.attr(strings)
    if names is None:
        return label
    last = len(names) - 1

    def row(i: Index) -> Expr:
        return select(compare("gt", label[i], last), Const(last), label[i])

    return strings_at(ctx, np.asarray(names, dtype=str), label.shape, row, "ml_label_name")


def logistic(v: Expr) -> Expr:
    one = const(1.0, v.dtype)
    p = one / (one + call("exp", -call("abs", v)))
    return select(compare("lt", v, const(0.0, v.dtype)), one - p, p)


def probit(p: Expr) -> Expr:
    """sqrt(2) * erfinv(2p - 1) with onnxruntime's closed-form erfinv approximation (a = 0.147)."""
    dtype = p.dtype

    def c(v: float) -> Expr:
        return const(v, dtype)

    y = p * c(2.0) - c(1.0)
    log = call("log", (c(1.0) - y) * (c(1.0) + y))
    v = c(2.0 / (3.14159 * 0.147)) + c(0.5) * log
    root = call("sqrt", call("sqrt", v * v - log / c(0.147)) - v)
    return c(1.41421356) * select(compare("lt", y, c(0.0)), -root, root)


def post_transform(ctx: LoweringContext, scores: Tensor, transform: int) -> Tensor:
    """``transform`` over each row of ``scores`` ``[N, C]`` (every element for PROBIT and LOGISTIC)."""
    dtype, n = scores.dtype, scores.shape[1]
    if transform == NONE:
        return scores
    if transform == PROBIT:
        return ctx.compute(scores.shape, lambda i: probit(scores[i]), dtype=dtype, name="ml_probit")
    if transform == LOGISTIC:
        return ctx.compute(scores.shape, lambda i: logistic(scores[i]), dtype=dtype, name="ml_logistic")
    # SOFTMAX and SOFTMAX_ZERO, whose near-zero scores are left out of the sum and scaled by
    # exp(-max) instead of exp(score - max): what onnxruntime computes.
    peak = ctx.reduce((scores.shape[0], 1), [n], lambda i, r: scores[i[0], r[0]], "max",
                      name="ml_softmax_max", materialize=True)

    def kept(v: Expr) -> Expr:
        return compare("gt", call("abs", v), const(1e-7, dtype)) if transform == SOFTMAX_ZERO \
            else Const(True, DType.BOOL)

    def numerator(i: Index) -> Expr:
        v, m = scores[i], peak[i[0], 0]
        return select(kept(v), call("exp", v - m), v * call("exp", -m))

    total = ctx.reduce((scores.shape[0], 1), [n],
                       lambda i, r: select(kept(scores[i[0], r[0]]), call("exp", scores[i[0], r[0]] - peak[i[0], 0]),
                                           const(0.0, dtype)), "sum", name="ml_softmax_sum", materialize=True)
    return ctx.compute(scores.shape, lambda i: numerator(i) / total[i[0], 0], dtype=dtype, name="ml_softmax")


def regression_transform(ctx: LoweringContext, scores: Tensor, transform: int) -> Tensor:
    """The post transform of a regressor's rows; a single target gets PROBIT only (onnxruntime's rule)."""
    if scores.shape[1] == 1 and transform != PROBIT:
        return scores
    return post_transform(ctx, scores, transform)


def argmax_rows(ctx: LoweringContext, scores: Tensor, columns: list[int] | None = None) -> Tensor:
    """``[N]`` int64: the first column of each row holding its largest score, among ``columns`` (all by default)."""
    n = scores.shape[1]
    allowed = list(range(n)) if columns is None else columns
    lowest = const(-np.inf, scores.dtype)
    mask = ctx.add_constant(np.isin(np.arange(n), allowed), "ml_argmax_columns") if len(allowed) < n else None

    def candidate(i: Index, r: Index) -> Expr:
        return scores[i[0], r[0]] if mask is None else select(mask[r[0]], scores[i[0], r[0]], lowest)

    peak = ctx.reduce((scores.shape[0],), [n], candidate, "max", name="ml_argmax_peak", materialize=True)
    return ctx.reduce((scores.shape[0],), [n],
                      lambda i, r: select(compare("eq", candidate(i, r), peak[i]), r[0], Const(n)), "min",
                      name="ml_argmax", materialize=True)


def label_of(ctx: LoweringContext, index: Tensor, labels: np.ndarray, out_dtype: DType) -> Tensor:
    """``labels[index]`` per row, in the label output's type."""
    table = ctx.add_constant(labels.astype(out_dtype.numpy), "ml_labels")
    last = len(labels) - 1
    return ctx.compute(index.shape, lambda i: table[select(compare("gt", index[i], last), Const(last), index[i])],
                       dtype=out_dtype, name="ml_label")
