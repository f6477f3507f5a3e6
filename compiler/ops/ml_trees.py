"""ai.onnx.ml TreeEnsemble (opset 5): every tree walked to its leaf, leaf weights aggregated per target.

The node tables (``nodes_*``, ``leaf_*``, ``membership_values``) are compile-time
attributes. They become constant tables over one id space: interior nodes
``0..n-1``, leaves ``n..n+L-1``, each leaf branching to itself. The walk is a
fixed number of steps, the depth of the deepest tree: step ``d`` is one
computation over ``[batch, trees]`` that gathers the current node's feature,
split and mode and selects its true or false successor, so after the last step
every tree sits on its leaf. Each step is stored, so no step's expression
grows with the depth.

Decisions follow the spec: ``BRANCH_LEQ/LT/GTE/GT/EQ/NEQ`` compare the feature
with the split (in the wider of the input's and the splits' types, as the
reference compares exactly), ``BRANCH_MEMBER`` tests membership in the node's
set (``membership_values``, sets in node order, each closed by a NaN), and a
NaN feature takes the true branch where ``nodes_missing_value_tracks_true``
says so (otherwise the comparison decides: false, except for NEQ).

Aggregation over trees per target: SUM, AVERAGE (the sum over the number of
trees), MIN, MAX; a target no leaf reaches is 0 (as onnxruntime; the reference
fills MIN/MAX with the type's extremes). ``post_transform`` is applied to each
row of targets (the reference ignores it): SOFTMAX (1), LOGISTIC (2),
SOFTMAX_ZERO (3: zeros stay zero and out of the normalization) and PROBIT (4,
with onnxruntime's ``erfinv`` approximation). The numbering is the spec's
(onnxruntime 1.31 swaps SOFTMAX and LOGISTIC for this op); as in onnxruntime, a
single target gets PROBIT only. Half-precision inputs aggregate in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, binary, call, cast, compare, const, logical_and, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop

_LEQ, _LT, _GTE, _GT, _EQ, _NEQ, _MEMBER = range(7)
_COMPARE = {_LEQ: "le", _LT: "lt", _GTE: "ge", _GT: "gt", _EQ: "eq", _NEQ: "ne"}
_AGGREGATES = {0: "sum", 1: "sum", 2: "min", 3: "max"}  # AVERAGE, SUM, MIN, MAX


@dataclass
class _Forest:
    """The trees as tables over the id space of the module docstring (all numpy, compile time)."""

    feature: np.ndarray  # int64 [n + L]
    split: np.ndarray  # [n + L], the splits' type
    mode: np.ndarray  # int64 [n + L]
    tracks_true: np.ndarray  # bool [n + L]
    on_true: np.ndarray  # int64 [n + L]
    on_false: np.ndarray  # int64 [n + L]
    members: np.ndarray  # [n + L, widest set], NaN-padded (NaN equals nothing)
    roots: np.ndarray  # int64 [trees]
    depth: int
    leaves: int  # n: the first leaf id


def tree_ensemble(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    if x.rank != 2:
        ctx.unsupported(f"X must be [N, F] (got shape {list(x.shape)})")
    forest = _forest(ctx, x.shape[1])
    weights = np.asarray(ctx.attr("leaf_weights")).reshape(-1)
    targets = np.asarray(ctx.attr("leaf_targetids"), np.int64).reshape(-1)
    out = ctx.output_type(0)
    n_targets = out.shape[1]
    if weights.size != targets.size or weights.size == 0:
        ctx.unsupported(f"{weights.size} leaf weights and {targets.size} leaf target ids")
    if targets.min() < 0 or targets.max() >= n_targets:
        ctx.unsupported(f"a leaf target id is outside [0, {n_targets})")
    aggregate = int(ctx.attr("aggregate_function", 1))
    transform = int(ctx.attr("post_transform", 0))
    if aggregate not in _AGGREGATES or transform not in range(5):
        ctx.unsupported(f"aggregate_function {aggregate} / post_transform {transform} is not defined")

    leaf = _walk(ctx, x, forest)
    work = DType.F32 if out.dtype in (DType.F16, DType.BF16) else out.dtype
    weight_table = ctx.add_constant(weights.astype(work.numpy), "leaf_weights")
    target_table = ctx.add_constant(targets, "leaf_targets")
    combiner = _AGGREGATES[aggregate]
    neutral = const(0.0, work) if combiner == "sum" else const(math.inf if combiner == "min" else -math.inf, work)
    trees = len(forest.roots)

    def contribution(i: Index, r: Index) -> Expr:
        k = leaf[i[0], r[0]] - forest.leaves
        return select(compare("eq", target_table[k], i[1]), weight_table[k], neutral)

    def finish(acc: Expr, i: Index) -> Expr:
        if aggregate == 0:
            return acc / const(trees, work)
        # A target no tree reaches keeps the neutral element: it is 0 (onnxruntime's base value).
        return acc if combiner == "sum" else select(compare("eq", acc, neutral), const(0.0, work), acc)

    scores = ctx.reduce((x.shape[0], n_targets), [trees], contribution, combiner, finish, name="tree_scores",
                        materialize=True)
    scores = _post_transform(ctx, scores, transform, n_targets)
    return [ctx.compute(out.shape, lambda i: cast(scores[i], out.dtype), dtype=out.dtype, name="tree_ensemble")]


# --- the walk --------------------------------------------------------------------------


def _walk(ctx: LoweringContext, x: Tensor, forest: _Forest) -> Tensor:
    """``[batch, trees]``: the leaf id each tree reaches for each row."""
    work = DType.from_numpy(np.promote_types(x.dtype.numpy, forest.split.dtype)) \
        if x.dtype not in (DType.F16, DType.BF16) else DType.F32
    feature = ctx.add_constant(forest.feature, "tree_feature")
    split = ctx.add_constant(forest.split.astype(work.numpy), "tree_split")
    mode = ctx.add_constant(forest.mode, "tree_mode")
    tracks = ctx.add_constant(forest.tracks_true, "tree_nan_true")
    on_true = ctx.add_constant(forest.on_true, "tree_true")
    on_false = ctx.add_constant(forest.on_false, "tree_false")
    members = ctx.add_constant(forest.members.astype(work.numpy), "tree_members")
    roots = ctx.add_constant(forest.roots, "tree_roots")
    modes = sorted({int(m) for m in forest.mode[:forest.leaves]})

    def decide(node: Expr, value: Expr) -> Expr:
        def test(m: int) -> Expr:
            if m == _MEMBER:
                hits = [compare("eq", value, members[node, j]) for j in range(forest.members.shape[1])]
                return _any(hits)
            return compare(_COMPARE[m], value, split[node])

        # One mode in the whole forest needs no dispatch on the node's mode.
        taken = test(modes[-1])
        for m in reversed(modes[:-1]):
            taken = select(compare("eq", mode[node], m), test(m), taken)
        if forest.tracks_true.any():
            taken = binary("or", taken, logical_and(tracks[node], call("isnan", value, dtype=DType.BOOL)))
        return taken

    def step(current: Callable[[Index], Expr]) -> Callable[[Index], Expr]:
        def successor(i: Index) -> Expr:
            node = current(i)
            value = cast(x[i[0], feature[node]], work)
            return select(decide(node, value), on_true[node], on_false[node])

        return successor

    def start(i: Index) -> Expr:
        return roots[i[1]]

    position: Callable[[Index], Expr] = start
    for _ in range(forest.depth):
        walked = ctx.compute((x.shape[0], len(forest.roots)), step(position), dtype=DType.I64, name="tree_walk",
                             materialize=True)
        position = walked.__getitem__
    return walked


def _any(conditions: list[Expr]) -> Expr:
    result = conditions[0]
    for c in conditions[1:]:
        result = binary("or", result, c)
    return result


# --- the tables ------------------------------------------------------------------------


def _forest(ctx: LoweringContext, features: int) -> _Forest:
    modes = np.asarray(ctx.attr("nodes_modes"), np.int64).reshape(-1)
    n = modes.size
    columns = {name: np.asarray(ctx.attr(name, []), np.int64).reshape(-1) for name in
               ("nodes_featureids", "nodes_truenodeids", "nodes_falsenodeids", "nodes_trueleafs", "nodes_falseleafs")}
    splits = np.asarray(ctx.attr("nodes_splits")).reshape(-1)
    if any(c.size != n for c in columns.values()) or splits.size != n:
        ctx.unsupported("the nodes_* attributes have different lengths")
    if modes.min(initial=0) < 0 or modes.max(initial=0) > _MEMBER:
        ctx.unsupported(f"unknown node mode(s) {sorted(set(modes.tolist()) - set(range(7)))}")
    leaves = np.asarray(ctx.attr("leaf_weights")).size
    features_of = columns["nodes_featureids"]
    if n and (features_of.min() < 0 or features_of.max() >= features):
        ctx.unsupported(f"a node reads a feature outside [0, {features})")
    tracks = np.asarray(ctx.attr("nodes_missing_value_tracks_true", [0] * n), np.int64).reshape(-1)
    if tracks.size != n:
        ctx.unsupported("nodes_missing_value_tracks_true has a different length than nodes_modes")

    def successor(ids: np.ndarray, is_leaf: np.ndarray) -> np.ndarray:
        bound = np.where(is_leaf != 0, leaves, n)
        if np.any(ids < 0) or np.any(ids >= bound):
            ctx.unsupported("a node branches to a node or leaf that does not exist")
        return np.where(is_leaf != 0, n + ids, ids)

    leaf_ids = np.arange(n, n + leaves, dtype=np.int64)
    on_true = np.concatenate([successor(columns["nodes_truenodeids"], columns["nodes_trueleafs"]), leaf_ids])
    on_false = np.concatenate([successor(columns["nodes_falsenodeids"], columns["nodes_falseleafs"]), leaf_ids])
    roots = np.asarray(ctx.attr("tree_roots"), np.int64).reshape(-1)
    if roots.size == 0 or roots.min() < 0 or roots.max() >= n:
        ctx.unsupported("tree_roots must name at least one node, each in nodes_*")
    pad = np.zeros(leaves, np.int64)
    return _Forest(
        feature=np.concatenate([features_of, pad]),
        split=np.concatenate([splits, np.zeros(leaves, splits.dtype)]),
        mode=np.concatenate([modes, pad]),
        tracks_true=np.concatenate([tracks != 0, np.zeros(leaves, bool)]),
        on_true=on_true, on_false=on_false,
        members=_member_table(ctx, modes, leaves, splits.dtype),
        roots=roots,
        depth=_depth(ctx, roots, on_true, on_false, n),
        leaves=n,
    )


def _member_table(ctx: LoweringContext, modes: np.ndarray, leaves: int, dtype: np.dtype) -> np.ndarray:
    """Row per id: the node's set members, NaN-padded; the sets come from ``membership_values`` in node order."""
    member_nodes = np.flatnonzero(modes == _MEMBER)
    values = ctx.attr("membership_values")
    sets: list[list[float]] = []
    if values is not None:
        current: list[float] = []
        for v in np.asarray(values).reshape(-1).tolist():
            if math.isnan(v):
                sets.append(current)
                current = []
            else:
                current.append(v)
    if len(sets) != member_nodes.size:
        ctx.unsupported(f"{member_nodes.size} BRANCH_MEMBER node(s) but {len(sets)} NaN-delimited set(s) "
                        "in membership_values")
    width = max((len(s) for s in sets), default=0)
    table = np.full((modes.size + leaves, max(width, 1)), np.nan, dtype=dtype if dtype.kind == "f" else np.float64)
    for node, members in zip(member_nodes, sets):
        table[node, :len(members)] = members
    return table


def _depth(ctx: LoweringContext, roots: np.ndarray, on_true: np.ndarray, on_false: np.ndarray, leaves: int) -> int:
    """The most interior nodes on any root-to-leaf path; a cycle is refused."""
    memo: dict[int, int] = {}

    def depth(node: int, path: frozenset[int]) -> int:
        if node >= leaves:
            return 0
        if node in path:
            ctx.unsupported(f"the trees have a cycle through node {node}")
        if node not in memo:
            inner = path | {node}
            memo[node] = 1 + max(depth(int(on_true[node]), inner), depth(int(on_false[node]), inner))
        return memo[node]

    return max(depth(int(r), frozenset()) for r in roots)


# --- post transforms -------------------------------------------------------------------


def _post_transform(ctx: LoweringContext, scores: Tensor, transform: int, n_targets: int) -> Tensor:
    dtype = scores.dtype
    if transform == 4:
        return ctx.compute(scores.shape, lambda i: _probit(scores[i]), dtype=dtype, name="tree_probit")
    if transform == 0 or n_targets == 1:
        return scores
    if transform == 2:
        one = const(1.0, dtype)
        return ctx.compute(scores.shape, lambda i: one / (one + call("exp", -scores[i])), dtype=dtype,
                           name="tree_logistic")
    # SOFTMAX (1) and SOFTMAX_ZERO (3), whose near-zero scores are left out of the sum and scaled by
    # exp(-max) instead of exp(score - max): what onnxruntime computes.
    peak = ctx.reduce((scores.shape[0], 1), [n_targets], lambda i, r: scores[i[0], r[0]], "max",
                      name="tree_softmax_max", materialize=True)

    def kept(v: Expr) -> Expr:
        return compare("gt", call("abs", v), const(1e-7, dtype)) if transform == 3 else Const(True, DType.BOOL)

    def numerator(i: Index) -> Expr:
        v, m = scores[i], peak[i[0], 0]
        return select(kept(v), call("exp", v - m), v * call("exp", -m))

    total = ctx.reduce((scores.shape[0], 1), [n_targets],
                       lambda i, r: select(kept(scores[i[0], r[0]]), call("exp", scores[i[0], r[0]] - peak[i[0], 0]),
                                           const(0.0, dtype)), "sum", name="tree_softmax_sum", materialize=True)
    return ctx.compute(scores.shape, lambda i: numerator(i) / total[i[0], 0], dtype=dtype, name="tree_softmax")


def _probit(p: Expr) -> Expr:
    """sqrt(2) * erfinv(2p - 1) with onnxruntime's closed-form erfinv approximation (a = 0.147)."""
    dtype = p.dtype

    def c(v: float) -> Expr:
        return const(v, dtype)

    y = p * c(2.0) - c(1.0)
    log = call("log", (c(1.0) - y) * (c(1.0) + y))
    v = c(2.0 / (3.14159 * 0.147)) + c(0.5) * log
    root = call("sqrt", call("sqrt", v * v - log / c(0.147)) - v)
    return c(1.41421356) * select(compare("lt", y, c(0.0)), -root, root)


OPS: list[OpDef] = [defop("TreeEnsemble", tree_ensemble, domain="ai.onnx.ml", since=5)]
