"""TfIdfVectorizer: counts of the pool's n-grams (with skips) in each row of integer tokens, weighted.

The pool (``pool_int64s``, n-grams of each length one after another from ``ngram_counts``) is a compile-time
table. An n-gram g of n tokens is counted at every start t and skip distance d (1 to ``max_skip_count + 1``)
where ``X[t + k d] == g[k]`` for every k < n and ``t + (n - 1) d`` is inside the row, for the lengths from
``min_gram_length`` to ``max_gram_length``; a 1-gram counts once per position (d = 1 only), as onnxruntime and
the reference count. That is one sum-reduction over (d, t) per row and pool entry, the n-gram's tokens
compared in one unrolled conjunction (the pool padded to its longest n-gram). Each n-gram's count is
weighted by ``mode`` (TF the count, IDF its weight, 1 without weights, where the count is not 0, TFIDF the
weight times the count) and lands in its ``ngram_indexes`` column. ``weights[k]`` is the k-th n-gram's of
the pool, as the spec and onnxruntime read it (onnx's reference evaluator indexes it by output column).
Inputs are ``[C]`` or ``[N, C]`` int32/int64; string pools are not supported yet.
"""

from __future__ import annotations

import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Expr, cast, compare, const, logical_and, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop

MODES = ("TF", "IDF", "TFIDF")


def tfidf_vectorizer(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    mode = ctx.attr("mode", "TF")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in MODES:
        ctx.unsupported(f"mode {mode!r} is none of {', '.join(MODES)}")
    if ctx.attr("pool_strings") is not None or ctx.input_value(0).dtype not in (DType.I32, DType.I64):
        ctx.unsupported("string pools and inputs are not supported yet: integer tokens only")
    if len(x.shape) not in (1, 2) or not all(isinstance(d, int) for d in x.shape):
        ctx.unsupported(f"the input must be [C] or [N, C] of static sizes, got {list(x.shape)}")
    pool = [int(v) for v in ctx.attr("pool_int64s", [])]
    starts = [int(v) for v in ctx.attr("ngram_counts", [])]
    columns = [int(v) for v in ctx.attr("ngram_indexes", [])]
    lo, hi = int(ctx.attr("min_gram_length", 1)), int(ctx.attr("max_gram_length", 1))
    skips = int(ctx.attr("max_skip_count", 0)) + 1
    grams = _ngrams(ctx, pool, starts, lo, hi)
    if any(k >= len(columns) for k, _ in grams) or any(c < 0 for c in columns):
        ctx.unsupported(f"ngram_indexes {columns} do not give every n-gram of the pool a column")
    if len({columns[k] for k, _ in grams}) != len(grams):
        ctx.unsupported(f"ngram_indexes {columns} give two counted n-grams one column")
    width = max(columns) + 1 if columns else 0
    weights = [float(w) for w in ctx.attr("weights", [])]
    rows = tuple(x.shape[:-1])
    length = x.shape[-1]
    if tuple(out.shape) != (*rows, width) or not grams:
        ctx.unsupported(f"the output shape {list(out.shape)} is not the rows of the input by {width} columns")
    longest = max(len(g) for _, g in grams)
    table = ctx.add_constant(np.array([g + [0] * (longest - len(g)) for _, g in grams], np.int64), "tfidf_pool")
    sizes = ctx.add_constant(np.array([len(g) for _, g in grams], np.int64), "tfidf_lengths")
    column_of = ctx.add_constant(np.array([columns[k] for k, _ in grams], np.int64), "tfidf_columns")
    one, zero = const(1.0, DType.F32), const(0.0, DType.F32)
    last = const(length - 1, DType.I64)

    def token(i: Index, position: Expr) -> Expr:
        return cast(x[(*i[:-1], min_(position, last))], DType.I64)

    def hit(i: Index, r: Index) -> Expr:
        j, step, t = i[-1], r[0] + 1, r[1]
        n = sizes[j]
        matched = compare("lt", t + (n - 1) * step, const(length, DType.I64))
        # A 1-gram counts once per position: at the first skip distance only.
        matched = logical_and(matched, select(compare("gt", n, 1), const(True, DType.BOOL), compare("eq", r[0], 0)))
        for k in range(longest):  # tokens past the n-gram's own length compare true
            same = compare("eq", token(i, t + k * step), table[j, k])
            matched = logical_and(matched, select(compare("lt", const(k, DType.I64), n), same, const(True, DType.BOOL)))
        return select(matched, one, zero)

    counts = ctx.reduce((*rows, len(grams)), [skips, length], hit, "sum", name="tfidf_counts", materialize=True)
    if weights and len(weights) <= max(k for k, _ in grams):
        ctx.unsupported(f"{len(weights)} weights for a pool of more n-grams")
    weight = ctx.add_constant(np.array([weights[k] if weights else 1.0 for k, _ in grams], np.float32),
                              "tfidf_weights")

    def weighted(count: Expr, j: Expr) -> Expr:
        if mode == "TF":
            return count
        if mode == "IDF":
            return select(compare("gt", count, zero), weight[j], zero)
        return weight[j] * count

    def column(i: Index, r: Index) -> Expr:
        return select(compare("eq", column_of[r[0]], i[-1]), weighted(counts[(*i[:-1], r[0])], r[0]), zero)

    return [ctx.reduce(out.shape, [len(grams)], column, "sum", name="tfidf")]


def _all_of(pool: list[int], starts: list[int], n: int) -> list[list[int]]:
    """The pool's n-grams of length ``n`` (its ``n``-th section)."""
    begin = starts[n - 1]
    end = starts[n] if n < len(starts) else len(pool)
    return [pool[k:k + n] for k in range(begin, end - n + 1, n)]


def _ngrams(ctx: LoweringContext, pool: list[int], starts: list[int], lo: int, hi: int) -> list[tuple[int, list[int]]]:
    """(pool position, tokens) of the n-grams of the lengths counted: [lo, hi]."""
    if lo < 1 or hi < lo or any(b < a for a, b in zip(starts, starts[1:])):
        ctx.unsupported(f"min_gram_length {lo}, max_gram_length {hi}, ngram_counts {starts}")
    grams, position = [], 0
    for n in range(1, len(starts) + 1):
        for g in _all_of(pool, starts, n):
            if lo <= n <= hi:
                grams.append((position, g))
            position += 1
    if len({tuple(g) for _, g in grams}) != len(grams):
        ctx.unsupported("the pool repeats an n-gram")
    return grams


OPS: list[OpDef] = [defop("TfIdfVectorizer", tfidf_vectorizer)]
