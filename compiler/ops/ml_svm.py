"""ai.onnx.ml SVMClassifier and SVMRegressor, as onnxruntime computes them.

Kernels (``kernel_params`` = gamma, coef0, degree): LINEAR ``<x, v>``, POLY
``(gamma <x, v> + coef0) ^ degree``, RBF ``exp(-gamma |x - v|^2)``, SIGMOID
``tanh(gamma <x, v> + coef0)``. Inputs are converted to float.

* SVMRegressor: with support vectors (``n_supports > 0``) ``sum_v coef[v] K(x, v) + rho``,
  else the linear ``<x, coefficients> + rho``; ``one_class`` gives +1 / -1 by sign;
  a single target gets PROBIT only.
* SVMClassifier, linear mode (no support vectors): one score per class,
  ``<x, coefficients[c]> + rho[0]``, label the class of the first largest score (two
  classes: ``labels[1]`` when that score is >= 0.5 with all coefficients positive, or > 0
  with mixed ones), scores post-transformed per row.
* SVMClassifier, SVC mode (libsvm's one-vs-one): a decision value per class pair
  ``(i, j)``, ``sum`` over both classes' support vectors of the pair's coefficients times
  the kernel, plus ``rho`` (summed in double, as onnxruntime); each pair votes for ``i``
  when positive, else ``j``; the label is the class with the most votes (the first on a
  tie). Without ``prob_a``/``prob_b`` the scores are the decision values (two classes:
  ``[-s, s]``, ``[1 - s, s]`` under a post transform). With them, each pair's probability
  ``1 - logistic(s * prob_a + prob_b)`` (clamped to ``[1e-7, 1 - 1e-7]``) is coupled into
  class probabilities by libsvm's iterative method, exactly as onnxruntime iterates it
  (``_coupling``); the label still comes from the votes.

The kernel values are one computation over ``[N, vectors]``, the decision values a
contraction of them with a constant ``[pairs, vectors]`` coefficient table.
"""

from __future__ import annotations

import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, binary, call, cast, compare, const, logical_and, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.ml_common import (NONE, PROBIT, argmax_rows, class_labels, floats, label_dtype, label_of, logistic,
                                    named_labels, post_transform, regression_transform, transform_code)
from compiler.ops.registry import OpDef, defop

_ML = "ai.onnx.ml"
_KERNELS = ("LINEAR", "POLY", "RBF", "SIGMOID")


def _input(ctx: LoweringContext) -> tuple[Tensor, int, int]:
    """X, its rows (1 for a 1-D X) and its features (static)."""
    x = ctx.input(0)
    if x.rank not in (1, 2):
        ctx.unsupported(f"X must be 1-D or 2-D (got shape {list(x.shape)})")
    features = x.shape[-1]
    if not isinstance(features, int):
        ctx.unsupported("the feature axis (the last one) must have a static size")
    return x, (x.shape[0] if x.rank == 2 else 1), features


def _kernel(ctx: LoweringContext, x: Tensor, rows, vectors: np.ndarray, kernel: str) -> Tensor:
    """``[rows, vectors]``: the kernel of each row with each vector (float32)."""
    gamma, coef0, degree = (list(np.asarray(ctx.attr("kernel_params", [0.0, 0.0, 0.0]), np.float32)) + [0.0] * 3)[:3]
    table = ctx.add_constant(vectors.astype(np.float32), "svm_vectors")
    f32 = DType.F32

    def feature(i: Index, k: Expr) -> Expr:
        return cast(x[(i[0], k) if x.rank == 2 else (k,)], f32)

    def term(i: Index, r: Index) -> Expr:
        if kernel == "RBF":
            d = feature(i, r[0]) - table[i[1], r[0]]
            return d * d
        return feature(i, r[0]) * table[i[1], r[0]]

    def finish(acc: Expr, i: Index) -> Expr:
        if kernel == "RBF":
            return call("exp", -(const(float(gamma), f32) * acc))
        if kernel == "LINEAR":
            return acc
        inner = const(float(gamma), f32) * acc + const(float(coef0), f32)
        if kernel == "SIGMOID":
            return call("tanh", inner)
        return binary("pow", inner, const(float(degree), f32))

    return ctx.reduce((rows, vectors.shape[0]), [vectors.shape[1]], term, "sum", finish, name="svm_kernel",
                      materialize=True)


def _kernel_name(ctx: LoweringContext) -> str:
    kernel = ctx.attr("kernel_type", "LINEAR")
    if kernel not in _KERNELS:
        ctx.unsupported(f"kernel_type {kernel!r} is not one of {', '.join(_KERNELS)}")
    return kernel


def _weighted(ctx: LoweringContext, values: Tensor, weights: np.ndarray, bias: np.ndarray, name: str) -> Tensor:
    """``[rows, outputs]``: ``sum_v weights[o, v] * values[., v] + bias[o]``, summed in double."""
    table = ctx.add_constant(weights.astype(np.float64), f"{name}_weights")
    offset = ctx.add_constant(bias.astype(np.float64), f"{name}_bias")
    f64 = DType.F64
    total = ctx.reduce((values.shape[0], weights.shape[0]), [weights.shape[1]],
                       lambda i, r: cast(values[i[0], r[0]], f64) * table[i[1], r[0]], "sum",
                       lambda acc, i: cast(acc + offset[i[1]], DType.F32), name=name, materialize=True)
    return total


def _support_vectors(ctx: LoweringContext, count: int, features: int) -> np.ndarray:
    vectors = floats(ctx, "support_vectors", [])
    if vectors.size != count * features:
        ctx.unsupported(f"{vectors.size} support vector values for {count} vectors of {features} features")
    return vectors.reshape(count, features)


def svm_regressor(ctx: LoweringContext) -> list[Tensor]:
    x, rows, features = _input(ctx)
    out = ctx.output_type(0)
    supports = int(ctx.attr("n_supports", 0))
    coefficients = floats(ctx, "coefficients", [])
    rho = floats(ctx, "rho", [0.0])
    if rho.size < 1:
        ctx.unsupported("rho is required")
    if supports > 0:
        if coefficients.size < supports:
            ctx.unsupported(f"{coefficients.size} coefficients for {supports} support vectors")
        values = _kernel(ctx, x, rows, _support_vectors(ctx, supports, features), _kernel_name(ctx))
        weights = coefficients[:supports].reshape(1, supports)
    else:
        if coefficients.size != features:
            ctx.unsupported(f"{coefficients.size} coefficients for {features} features (linear mode)")
        values = ctx.compute((rows, features), lambda i: cast(x[(i[0], i[1]) if x.rank == 2 else (i[1],)], DType.F32),
                             dtype=DType.F32, name="svm_features")
        weights = coefficients.reshape(1, features)
    score = _weighted(ctx, values, weights, rho[:1], "svm_score")
    if int(ctx.attr("one_class", 0)):
        one = const(1.0, DType.F32)
        score = ctx.compute(score.shape, lambda i: select(compare("gt", score[i], const(0.0, DType.F32)), one, -one),
                            dtype=DType.F32, name="svm_one_class")
    score = regression_transform(ctx, score, transform_code(ctx))
    return [ctx.compute(out.shape, lambda i: cast(score[i], out.dtype), dtype=out.dtype, name="svm_regressor")]


def svm_classifier(ctx: LoweringContext) -> list[Tensor]:
    x, rows, features = _input(ctx)
    labels = class_labels(ctx, "classlabels_ints", "classlabels_strings")
    if labels is None or labels.size == 0:
        ctx.unsupported("classlabels_ints is required")
    classes = labels.size
    per_class = np.asarray(ctx.attr("vectors_per_class", []), np.int64).reshape(-1)
    coefficients = floats(ctx, "coefficients", [])
    rho = floats(ctx, "rho", [])
    prob_a, prob_b = floats(ctx, "prob_a", []), floats(ctx, "prob_b", [])
    if prob_a.size != prob_b.size:
        ctx.unsupported(f"{prob_a.size} prob_a but {prob_b.size} prob_b values")
    transform = transform_code(ctx)
    label_type, score_type = label_dtype(ctx), ctx.output_type(1)
    if per_class.sum() == 0:
        return _svm_linear(ctx, x, rows, features, labels, coefficients, rho, transform)
    if per_class.size != classes:
        ctx.unsupported(f"vectors_per_class has {per_class.size} entries for {classes} classes")
    vectors = int(per_class.sum())
    if coefficients.size < (classes - 1) * vectors:
        ctx.unsupported(f"{coefficients.size} coefficients for {classes - 1} rows of {vectors} support vectors")
    pairs = [(i, j) for i in range(classes) for j in range(i + 1, classes)]
    if rho.size < len(pairs) or (prob_a.size and prob_a.size < len(pairs)):
        ctx.unsupported(f"rho (and prob_a/prob_b) need one value per class pair ({len(pairs)})")
    coef = coefficients[:(classes - 1) * vectors].reshape(classes - 1, vectors)
    start = np.concatenate([[0], np.cumsum(per_class)])
    pair_weights = np.zeros((len(pairs), vectors), np.float64)
    for k, (i, j) in enumerate(pairs):
        pair_weights[k, start[i]:start[i + 1]] = coef[j - 1, start[i]:start[i + 1]]
        pair_weights[k, start[j]:start[j + 1]] = coef[i, start[j]:start[j + 1]]
    kernel = _kernel(ctx, x, rows, _support_vectors(ctx, vectors, features), _kernel_name(ctx))
    decisions = _weighted(ctx, kernel, pair_weights, rho[:len(pairs)], "svm_decisions")
    label = label_of(ctx, _vote(ctx, decisions, pairs, classes), labels, label_type)
    one = const(1.0, DType.F32)
    if prob_a.size:
        pairwise = _pairwise_probabilities(ctx, decisions, pairs, classes, prob_a, prob_b)
        scores = post_transform(ctx, _coupling(ctx, pairwise, classes), transform)
    elif classes == 2:
        if transform == PROBIT:
            ctx.unsupported("PROBIT on a two-class SVM's single decision value (onnxruntime writes one column)")

        def expand(i: Index) -> Expr:
            s = decisions[i[0], 0]
            return select(compare("eq", i[1], 0), -s if transform == NONE else one - s, s)

        scores = ctx.compute((rows, 2), expand, dtype=DType.F32, name="svm_two_classes")
    else:
        scores = regression_transform(ctx, decisions, transform)
    return [named_labels(ctx, label, "classlabels_strings"),
            ctx.compute(score_type.shape, lambda i: cast(scores[i], score_type.dtype), dtype=score_type.dtype,
                        name="svm_classifier")]


def _pairwise_probabilities(ctx: LoweringContext, decisions: Tensor, pairs: list[tuple[int, int]], classes: int,
                            prob_a: np.ndarray, prob_b: np.ndarray) -> Tensor:
    """``[rows, classes, classes]``: libsvm's ``r[i][j]``, the probability that class i beats class j
    (``1 - logistic(s * prob_a + prob_b)`` clamped to ``[1e-7, 1 - 1e-7]``; ``r[j][i] = 1 - r[i][j]``)."""
    f32 = DType.F32
    index = np.zeros((classes, classes), np.int64)
    upper = np.zeros((classes, classes), bool)
    for k, (i, j) in enumerate(pairs):
        index[i, j] = index[j, i] = k
        upper[i, j] = True
    pair_of = ctx.add_constant(index, "svm_pair_index")
    is_upper = ctx.add_constant(upper, "svm_pair_upper")
    a_table = ctx.add_constant(prob_a[:len(pairs)].astype(np.float32), "svm_prob_a")
    b_table = ctx.add_constant(prob_b[:len(pairs)].astype(np.float32), "svm_prob_b")
    low, high, one = const(1e-7, f32), const(1 - 1e-7, f32), const(1.0, f32)

    def probability(i: Index) -> Expr:
        k = pair_of[i[1], i[2]]
        p = one - logistic(decisions[i[0], k] * a_table[k] + b_table[k])
        p = select(compare("gt", p, high), high, select(compare("lt", p, low), low, p))
        return select(compare("eq", i[1], i[2]), const(0.0, f32), select(is_upper[i[1], i[2]], p, one - p))

    return ctx.compute((decisions.shape[0], classes, classes), probability, dtype=f32, name="svm_pairwise",
                       materialize=True)


# Sweeps unrolled; onnxruntime allows 100, but rows converge in at most 4 (k = 2..10, thousands of random
# and saturated pairwise tables), so 8 are kept and a row still running after them fails the run.
_COUPLING_SWEEPS = 8


def _coupling(ctx: LoweringContext, r: Tensor, k: int) -> Tensor:
    """``[rows, k]``: class probabilities from the pairwise ones by libsvm's method (Wu, Lin and Weng 2004,
    method 2), step for step as onnxruntime runs it: sweeps that stop the row once
    ``max_i |Qp_i - pQp| < 0.005 / k``, otherwise update every class in turn. The sweeps are unrolled
    (``_COUPLING_SWEEPS``; a row not finished by then is a run-time error, never a different answer): a
    row's state ``[p (k), Qp (k), pQp, done]`` is stored after each step; a finished row keeps it."""
    f32 = DType.F32
    rows = r.shape[0]

    def c(v: float) -> Expr:
        return const(v, f32)

    def q_entry(i: Index) -> Expr:
        b, a, e = i
        diagonal = None
        for j in range(k):  # Q[a][a] = sum over j != a of r[j][a]^2, summed in j order
            term = select(compare("eq", a, j), c(0.0), r[b, j, a] * r[b, j, a])
            diagonal = term if diagonal is None else diagonal + term
        return select(compare("eq", a, e), diagonal, -(r[b, e, a] * r[b, a, e]))

    q = ctx.compute((rows, k, k), q_entry, dtype=f32, name="svm_coupling_q", materialize=True)
    width = 2 * k + 2
    state = ctx.compute((rows, width), lambda i: select(compare("lt", i[1], k), c(1.0 / k), c(0.0)), dtype=f32,
                        name="svm_coupling_start", materialize=True)
    eps = c(0.005 / k)

    def p_(s: Tensor, b: Expr, j: int) -> Expr:
        return s[b, j]

    for sweep in range(_COUPLING_SWEEPS + 1):
        previous = state

        def qp_entry(i: Index, s: Tensor = previous) -> Expr:
            total = None
            for j in range(k):
                term = q[i[0], i[1], j] * p_(s, i[0], j)
                total = term if total is None else total + term
            return total

        qp = ctx.compute((rows, k), qp_entry, dtype=f32, name="svm_coupling_qp", materialize=True)

        def check(i: Index, s: Tensor = previous, qp: Tensor = qp) -> Expr:
            b, col = i
            pqp = None
            for j in range(k):
                term = p_(s, b, j) * qp[b, j]
                pqp = term if pqp is None else pqp + term
            worst = None
            for j in range(k):
                error = call("abs", qp[b, j] - pqp)
                worst = error if worst is None else select(compare("gt", error, worst), error, worst)
            was_done = compare("ne", s[b, 2 * k + 1], c(0.0))
            done = select(was_done, c(1.0), select(compare("lt", worst, eps), c(1.0), c(0.0)))
            fresh = select(compare("lt", col, k), s[i], select(compare("lt", col, 2 * k), qp[b, _slot(col, k)],
                                                              select(compare("eq", col, 2 * k), pqp, done)))
            return select(compare("eq", col, 2 * k + 1), done, select(was_done, s[i], fresh))

        state = ctx.compute((rows, width), check, dtype=f32, name="svm_coupling_check", materialize=True)
        if sweep == _COUPLING_SWEEPS:
            break
        for t in range(k):
            previous = state

            def update(i: Index, s: Tensor = previous, t: int = t) -> Expr:
                b, col = i
                qtt = q[b, t, t]
                diff = (s[b, 2 * k] - s[b, k + t]) / qtt
                scale = c(1.0) + diff
                p_col = select(compare("eq", col, t), s[i] + diff, s[i]) / scale
                pqp = (s[b, 2 * k] + diff * (diff * qtt + c(2.0) * s[b, k + t])) / scale / scale
                qp_col = (s[i] + diff * q[b, t, _slot(col, k)]) / scale
                fresh = select(compare("lt", col, k), p_col, select(compare("lt", col, 2 * k), qp_col,
                                                                     select(compare("eq", col, 2 * k), pqp, s[i])))
                return select(compare("ne", s[b, 2 * k + 1], c(0.0)), s[i], fresh)

            state = ctx.compute((rows, width), update, dtype=f32, name="svm_coupling_step", materialize=True)
    final = state
    ctx.check((rows,), lambda i: compare("eq", final[i[0], 2 * k + 1], c(0.0)),
              f"libsvm's pairwise coupling of the {k} class probabilities did not converge in {_COUPLING_SWEEPS} "
              "sweeps (onnxruntime allows 100)")
    return ctx.compute((rows, k), lambda i: final[i], dtype=f32, name="svm_coupling", materialize=True)


def _slot(col: Expr, k: int) -> Expr:
    """``col - k`` where ``col`` is in ``[k, 2k)``, else 0: every load stays in bounds even where its value is
    selected away (an out-of-bounds load is undefined behaviour that LLVM may reason backwards from)."""
    return select(logical_and(compare("ge", col, k), compare("lt", col, 2 * k)), col - k, Const(0))


def _vote(ctx: LoweringContext, decisions: Tensor, pairs: list[tuple[int, int]], classes: int) -> Tensor:
    """``[rows]``: the class with the most one-vs-one votes (pair ``(i, j)`` votes ``i`` when positive), first on ties."""
    first = ctx.add_constant(np.array([i for i, _ in pairs], np.int64), "svm_pair_first")
    second = ctx.add_constant(np.array([j for _, j in pairs], np.int64), "svm_pair_second")

    def vote(i: Index, r: Index) -> Expr:
        winner = select(compare("gt", decisions[i[0], r[0]], const(0.0, DType.F32)), first[r[0]], second[r[0]])
        return select(compare("eq", winner, i[1]), const(1.0, DType.F32), const(0.0, DType.F32))

    votes = ctx.reduce((decisions.shape[0], classes), [len(pairs)], vote, "sum", name="svm_votes", materialize=True)
    return argmax_rows(ctx, votes)


def _svm_linear(ctx: LoweringContext, x: Tensor, rows, features: int, labels: np.ndarray, coefficients: np.ndarray,
                rho: np.ndarray, transform: int) -> list[Tensor]:
    classes = labels.size
    if coefficients.size != classes * features:
        ctx.unsupported(f"{coefficients.size} coefficients for {classes} classes of {features} features (linear mode)")
    if rho.size < 1:
        ctx.unsupported("rho is required")
    values = ctx.compute((rows, features), lambda i: cast(x[(i[0], i[1]) if x.rank == 2 else (i[1],)], DType.F32),
                         dtype=DType.F32, name="svm_features")
    scores = _weighted(ctx, values, coefficients.reshape(classes, features), np.full(classes, rho[0]), "svm_scores")
    label_type, score_type = label_dtype(ctx), ctx.output_type(1)
    best = argmax_rows(ctx, scores)
    label = label_of(ctx, best, labels, label_type)
    if classes == 2:
        threshold = 0.5 if (coefficients >= 0).all() else 0.0
        strict = threshold == 0.0
        peak = ctx.reduce((rows,), [2], lambda i, r: scores[i[0], r[0]], "max", name="svm_peak", materialize=True)
        chosen = label

        def binary_label(i: Index) -> Expr:
            above = compare("gt" if strict else "ge", peak[i], const(threshold, DType.F32))
            return select(above, const(int(labels[1]), label_type), chosen[i])

        label = ctx.compute((rows,), binary_label, dtype=label_type, name="svm_binary_label")
    scores = regression_transform(ctx, scores, transform)
    return [named_labels(ctx, label, "classlabels_strings"),
            ctx.compute(score_type.shape, lambda i: cast(scores[i], score_type.dtype), dtype=score_type.dtype,
                        name="svm_classifier")]


OPS: list[OpDef] = [
    defop("SVMClassifier", svm_classifier, domain=_ML),
    defop("SVMRegressor", svm_regressor, domain=_ML),
]
