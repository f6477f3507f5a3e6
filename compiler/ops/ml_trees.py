"""ai.onnx.ml tree ensembles: every tree walked to its leaf, leaf weights aggregated per target or class.

One mechanism serves TreeEnsemble (opset 5) and the legacy TreeEnsembleRegressor and
TreeEnsembleClassifier (opsets 1 and 3, ``*_as_tensor`` forms included): each op's
attributes become the same ``_Forest`` tables and a dense ``[leaf, target]`` weight
table (a legacy leaf may weigh several targets or classes), walked and aggregated by
the same computations; only the finish differs (base values, labels, binary rules).

The node tables (``nodes_*``, ``leaf_*``, ``membership_values``; legacy nodes named by
``(tree id, node id)``, ``LEAF`` nodes among them, a tree rooted at its first listed
node) are compile-time attributes. They become constant tables over one id space: interior nodes
``0..n-1``, leaves ``n..n+L-1``, each leaf branching to itself. The walk is a
fixed number of steps, the depth of the tree (trees of equal depth walk
together, deepest first): step ``d`` is one computation over ``[trees, batch]`` that gathers the current node's feature,
split and mode and then one of its two successors (stored side by side), so after
the last step every tree sits on its leaf. Each step is stored, so no step's
expression grows with the depth; the schedule folds the chain of steps into one
loop per tree (``schedule/localize.py``), each step a pass over the batch through
a local slice, so a tree's tables stay in cache while every row walks it. Node ids
are int32.

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
The legacy ops add ``base_values`` after aggregating; in the regressor a target no leaf
of the row scores stays 0 even then (onnxruntime), in the classifier it takes the base value.
The classifier's label is the class of the first largest score (``ml_common``); two
classes follow onnxruntime's binary rules (``_binary``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, binary, call, cast, compare, const, logical_and, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.ml_common import (LOGISTIC, PROBIT, argmax_rows, class_labels, floats, label_dtype, label_of, logistic,
                                    named_labels, post_transform, regression_transform, transform_code)
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
    depths: np.ndarray  # int64 [trees]: the most interior nodes on a root-to-leaf path of each tree
    leaves: int  # n: the first leaf id

    @property
    def leaf_count(self) -> int:
        return self.feature.size - self.leaves


def tree_ensemble(ctx: LoweringContext) -> list[Tensor]:
    x = _features_input(ctx)
    forest = _forest(ctx, x.shape[1])
    out = ctx.output_type(0)
    aggregate = int(ctx.attr("aggregate_function", 1))
    transform = transform_code(ctx)
    if aggregate not in _AGGREGATES:
        ctx.unsupported(f"aggregate_function {aggregate} is not defined")
    weights = np.asarray(ctx.attr("leaf_weights")).reshape(-1)
    targets = np.asarray(ctx.attr("leaf_targetids"), np.int64).reshape(-1)
    if weights.size != targets.size or weights.size == 0:
        ctx.unsupported(f"{weights.size} leaf weights and {targets.size} leaf target ids")
    work = DType.F32 if out.dtype in (DType.F16, DType.BF16) else out.dtype
    table = _leaf_table(ctx, np.arange(weights.size), targets, weights, weights.size, out.shape[1],
                        _AGGREGATES[aggregate], work)
    scores = _aggregate(ctx, _walk(ctx, x, forest), forest, table, _AGGREGATES[aggregate], aggregate == 0)
    scores = regression_transform(ctx, scores, transform)
    return [ctx.compute(out.shape, lambda i: cast(scores[i], out.dtype), dtype=out.dtype, name="tree_ensemble")]


def tree_ensemble_regressor(ctx: LoweringContext) -> list[Tensor]:
    """TreeEnsembleRegressor (opsets 1, 3): the legacy node tables, targets from ``target_*``."""
    x = _features_input(ctx)
    forest, leaf_of = _legacy_forest(ctx, x.shape[1])
    out = ctx.output_type(0)
    n_targets = int(ctx.attr("n_targets", out.shape[1]))
    if out.shape[1] != n_targets:
        ctx.unsupported(f"n_targets {n_targets} but the output has {out.shape[1]} columns")
    names = {"AVERAGE": 0, "SUM": 1, "MIN": 2, "MAX": 3}
    aggregate = names.get(ctx.attr("aggregate_function", "SUM"))
    if aggregate is None:
        ctx.unsupported(f"aggregate_function {ctx.attr('aggregate_function')!r} is not one of {', '.join(names)}")
    leaves, ids, weights = _legacy_leaf_weights(ctx, "target", leaf_of)
    table = _leaf_table(ctx, leaves, ids, weights, forest.leaf_count, n_targets, _AGGREGATES[aggregate], DType.F32)
    leaf = _walk(ctx, x, forest)
    scores = _aggregate(ctx, leaf, forest, table, _AGGREGATES[aggregate], aggregate == 0)
    base = _base_values(ctx, n_targets)
    listed = np.zeros((forest.leaf_count, n_targets), bool)
    listed[leaves, ids] = True
    if base is not None and not listed.all():
        # onnxruntime: a target no leaf of the row scores stays 0, base value or not.
        scored = ctx.add_constant(listed, "tree_scored")
        reached = ctx.reduce(scores.shape, [len(forest.roots)],
                             lambda i, r: cast(scored[cast(leaf[r[0], i[0]], DType.I64) - forest.leaves, i[1]],
                                               DType.U8), "max",
                             name="tree_reached", materialize=True)
        based = _add_base(ctx, scores, base)
        scores = ctx.compute(scores.shape, lambda i: select(compare("eq", reached[i], 0), const(0.0, DType.F32),
                                                            based[i]), dtype=DType.F32, name="tree_unscored")
    else:
        scores = _add_base(ctx, scores, base)
    scores = regression_transform(ctx, scores, transform_code(ctx))
    return [ctx.compute(out.shape, lambda i: cast(scores[i], out.dtype), dtype=out.dtype, name="tree_regressor")]


def tree_ensemble_classifier(ctx: LoweringContext) -> list[Tensor]:
    """TreeEnsembleClassifier (opsets 1, 3): per-class sums of the leaves' ``class_weights``, then
    onnxruntime's rules for the label and the scores (below, ``_binary``)."""
    x = _features_input(ctx)
    forest, leaf_of = _legacy_forest(ctx, x.shape[1])
    labels = class_labels(ctx, "classlabels_int64s", "classlabels_strings")
    if labels is None or labels.size == 0:
        ctx.unsupported("classlabels_int64s is required")
    n_classes = labels.size
    leaves, ids, weights = _legacy_leaf_weights(ctx, "class", leaf_of)
    table = _leaf_table(ctx, leaves, ids, weights, forest.leaf_count, n_classes, "sum", DType.F32)
    sums = _aggregate(ctx, _walk(ctx, x, forest), forest, table, "sum", False)
    base = _base_values(ctx, n_classes)
    transform = transform_code(ctx)
    label_type, score_type = label_dtype(ctx), ctx.output_type(1)
    if n_classes > 2 or n_classes == 1:
        scores = _add_base(ctx, sums, base)
        # Without base values a class no leaf scores never wins (onnxruntime skips unscored classes).
        scored = sorted(set(ids.tolist())) if base is None else None
        index = argmax_rows(ctx, scores, scored)
        label = label_of(ctx, index, labels, label_type)
        probabilities = post_transform(ctx, scores, transform)
    else:
        label, probabilities = _binary(ctx, sums, base, labels, ids, weights, leaves, forest.leaf_count, transform)
    return [named_labels(ctx, label, "classlabels_strings"),
            ctx.compute(score_type.shape, lambda i: cast(probabilities[i], score_type.dtype),
                        dtype=score_type.dtype, name="tree_classifier")]


def _binary(ctx: LoweringContext, sums: Tensor, base: np.ndarray | None, labels: np.ndarray, ids: np.ndarray,
            weights: np.ndarray, leaves: np.ndarray, leaf_count: int, transform: int) -> tuple[Tensor, Tensor]:
    """Two classes, as onnxruntime's TreeAggregatorClassifier decides them.

    Whether class 1 has a score (some leaf reached carries a class-1 weight) decides between two
    score columns and one column expanded to two; it is taken statically, so a forest where only
    some leaves carry class-1 weights is refused. With one score column ``s`` (skl2onnx's forests
    put the class-1 probability there, gradient boosting its margin), the label is ``labels[1]``
    where ``s > 0.5`` (all weights positive) or ``s > 0`` (mixed signs), and the scores are
    ``[1 - s, s]`` (all weights positive), else ``[-s, s]``, or ``[logistic(-s), logistic(s)]`` under LOGISTIC
    (onnxruntime 1.32; older versions wrote ``[s, -s]`` for a negative ``s``)."""
    has_one = np.isin(np.arange(leaf_count), leaves[ids == 1])
    if has_one.any() and not has_one.all():
        ctx.unsupported("only some leaves carry a class-1 weight (onnxruntime decides per row whether class 1 "
                        "has a score; tilec needs every leaf or none to)")
    two_columns = bool(has_one.any())
    n = sums.shape[0]
    zero = const(0.0, DType.F32)

    def c(v: float) -> Expr:
        return const(float(v), DType.F32)

    def s0(i: Index) -> Expr:
        if base is not None and base.size == 2 and two_columns:
            return -(c(base[1]) + sums[i[0], 0])
        return sums[i[0], 0] + (c(base[0]) if base is not None and base.size in (1, 2) else zero)

    def s1(i: Index) -> Expr:
        if base is not None and base.size == 2:
            return c(base[1]) + sums[i[0], 0] if two_columns else c(base[1])
        return sums[i[0], 1]

    adjusted = ctx.compute((n, 2), lambda i: select(compare("eq", i[1], 0), s0(i), s1(i)), dtype=DType.F32,
                           name="tree_binary_scores", materialize=True)
    positive = (lambda i: adjusted[i[0], 1]) if two_columns else (lambda i: adjusted[i[0], 0])
    one_class = len(set(ids.tolist())) == 1
    all_positive = bool((weights >= 0).all())
    threshold = c(0.5 if one_class and all_positive else 0.0)
    yes, no = (labels[1], labels[0]) if one_class else (1, 0)
    label_type = label_dtype(ctx)
    label = ctx.compute((n,), lambda i: select(compare("gt", positive(i), threshold), const(int(yes), label_type),
                                               const(int(no), label_type)), dtype=label_type, name="tree_label")
    if two_columns:
        return label, post_transform(ctx, adjusted, transform)
    if transform == PROBIT or not one_class:
        ctx.unsupported("a binary forest with one score column needs one class id and a post_transform other "
                        "than PROBIT (onnxruntime writes a single score there)")

    def expand(i: Index) -> Expr:
        s = adjusted[i[0], 0]
        first = i[1]
        if all_positive:
            return select(compare("eq", first, 0), c(1.0) - s, s)
        return (logistic if transform == LOGISTIC else (lambda v: v))(select(compare("eq", first, 0), -s, s))

    return label, ctx.compute((n, 2), expand, dtype=DType.F32, name="tree_binary_probabilities")


# --- shared by the three ops -------------------------------------------------------------


def _features_input(ctx: LoweringContext) -> Tensor:
    x = ctx.input(0)
    if x.rank != 2:
        ctx.unsupported(f"X must be [N, F] (got shape {list(x.shape)})")
    return x


def _leaf_table(ctx: LoweringContext, leaves: np.ndarray, targets: np.ndarray, weights: np.ndarray, leaf_count: int,
                n_targets: int, combiner: str, work: DType) -> np.ndarray:
    """``[leaf, target]``: the leaf's weights for the target, combined as the aggregate combines them
    (a leaf may list a target twice); the aggregate's neutral element where it lists none."""
    if targets.size and (targets.min() < 0 or targets.max() >= n_targets):
        ctx.unsupported(f"a leaf's target or class id is outside [0, {n_targets})")
    neutral = {"sum": 0.0, "min": math.inf, "max": -math.inf}[combiner]
    table = np.full((leaf_count, n_targets), neutral, np.float64)
    combine = {"sum": np.add, "min": np.minimum, "max": np.maximum}[combiner]
    combine.at(table, (leaves, targets), np.asarray(weights, np.float64))
    return table.astype(work.numpy)


def _aggregate(ctx: LoweringContext, leaf: Tensor, forest: _Forest, table: np.ndarray, combiner: str,
               average: bool) -> Tensor:
    """``[N, targets]``: the weights of the leaves each row reaches (``leaf``, from ``_walk``), combined over
    the trees per target (divided by the number of trees for AVERAGE); a target no leaf reaches is 0."""
    work = DType.from_numpy(table.dtype)
    weights = ctx.add_constant(table, "leaf_weights")
    trees = len(forest.roots)
    neutral = const(0.0, work) if combiner == "sum" else const(math.inf if combiner == "min" else -math.inf, work)

    def contribution(i: Index, r: Index) -> Expr:
        return weights[cast(leaf[r[0], i[0]], DType.I64) - forest.leaves, i[1]]

    def finish(acc: Expr, i: Index) -> Expr:
        if average:
            return acc / const(trees, work)
        return acc if combiner == "sum" else select(compare("eq", acc, neutral), const(0.0, work), acc)

    return ctx.reduce((leaf.shape[1], table.shape[1]), [trees], contribution, combiner, finish, name="tree_scores",
                      materialize=True)


def _base_values(ctx: LoweringContext, n: int) -> np.ndarray | None:
    base = floats(ctx, "base_values")
    if base is None or base.size == 0:
        return None
    if base.size not in (1, 2, n):
        ctx.unsupported(f"{base.size} base_values for {n} targets or classes")
    return base


def _add_base(ctx: LoweringContext, scores: Tensor, base: np.ndarray | None) -> Tensor:
    """Scores plus the base values: one per column, or a single one for a single column (onnxruntime
    ignores base values of any other length)."""
    n = scores.shape[1]
    if base is None or not (base.size == n or (n == 1 and base.size == 1)):
        return scores
    table = ctx.add_constant(base.astype(scores.dtype.numpy), "tree_base")
    return ctx.compute(scores.shape, lambda i: scores[i] + table[i[1]], dtype=scores.dtype, name="tree_base_add",
                       materialize=True)


# --- the walk --------------------------------------------------------------------------


def _walk(ctx: LoweringContext, x: Tensor, forest: _Forest) -> Tensor:
    """``[batch, trees]``: the leaf id each tree reaches for each row."""
    work = DType.from_numpy(np.promote_types(x.dtype.numpy, forest.split.dtype)) \
        if x.dtype not in (DType.F16, DType.BF16) else DType.F32
    # Node ids and feature numbers in int32 (every id space here fits): half the table bytes to cache.
    feature = ctx.add_constant(forest.feature.astype(np.int32), "tree_feature")
    split = ctx.add_constant(forest.split.astype(work.numpy), "tree_split")
    mode = ctx.add_constant(forest.mode, "tree_mode")
    tracks = ctx.add_constant(forest.tracks_true, "tree_nan_true")
    # Both successors of node k side by side (2k: true, 2k + 1: false): a step gathers one of them.
    children = ctx.add_constant(np.stack([forest.on_true, forest.on_false], 1).reshape(-1).astype(np.int32),
                                "tree_children")
    members = ctx.add_constant(forest.members.astype(work.numpy), "tree_members")
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
            node = cast(current(i), DType.I64)
            value = cast(x[i[1], cast(feature[node], DType.I64)], work)
            return children[node * 2 + select(decide(node, value), Const(0), Const(1))]

        return successor

    # Trees of one depth walk together, as many steps as they need (at least one: a single-leaf tree);
    # deepest first, each group's last step writing its rows of the [trees, batch] leaf table.
    order = np.argsort(-forest.depths, kind="stable")
    leaf = ctx.temp((len(order), x.shape[0]), DType.I32, "tree_leaf")
    start = 0
    for depth in sorted(set(forest.depths.tolist()), reverse=True):
        group = order[forest.depths[order] == depth]
        group_roots = ctx.add_constant(forest.roots[group].astype(np.int32), "tree_roots")
        position: Callable[[Index], Expr] = lambda i, group_roots=group_roots: group_roots[i[0]]
        for _ in range(max(depth, 1) - 1):
            walked = ctx.compute((group.size, x.shape[0]), step(position), dtype=DType.I32, name="tree_walk",
                                 materialize=True)
            position = walked.__getitem__
        ctx.write_region(leaf, (start, 0), (group.size, x.shape[0]), step(position))
        start += group.size
    return Tensor(leaf)


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
        depths=_depths(ctx, roots, on_true, on_false, n),
        leaves=n,
    )


_LEGACY_MODES = {"BRANCH_LEQ": _LEQ, "BRANCH_LT": _LT, "BRANCH_GTE": _GTE, "BRANCH_GT": _GT, "BRANCH_EQ": _EQ,
                 "BRANCH_NEQ": _NEQ}


def _legacy_forest(ctx: LoweringContext, features: int) -> tuple[_Forest, dict[tuple[int, int], int]]:
    """TreeEnsembleClassifier/Regressor's tables (nodes named by tree and node id, ``LEAF`` nodes among
    them) in the shared id space, and each leaf's (tree id, node id) → leaf number. A tree's root is its
    first listed node (as onnx's reference takes it); a tree may be a single leaf."""
    modes = [str(m) for m in ctx.attr("nodes_modes", [])]
    n_all = len(modes)
    columns = {name: np.asarray(ctx.attr(name, []), np.int64).reshape(-1) for name in
               ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_truenodeids", "nodes_falsenodeids")}
    splits = floats(ctx, "nodes_values")
    if n_all == 0:
        ctx.unsupported("the ensemble has no nodes")
    if splits is None:
        splits = np.zeros(n_all, np.float32)
    if any(c.size != n_all for c in columns.values()) or splits.size != n_all:
        ctx.unsupported("the nodes_* attributes have different lengths")
    unknown = sorted(set(modes) - set(_LEGACY_MODES) - {"LEAF"})
    if unknown:
        ctx.unsupported(f"unknown node mode(s) {unknown}")
    tracks = np.asarray(ctx.attr("nodes_missing_value_tracks_true", [0] * n_all), np.int64).reshape(-1)
    if tracks.size != n_all:
        ctx.unsupported("nodes_missing_value_tracks_true has a different length than nodes_modes")
    trees, nodes = columns["nodes_treeids"].tolist(), columns["nodes_nodeids"].tolist()
    is_leaf = np.array([m == "LEAF" for m in modes])
    interior = np.flatnonzero(~is_leaf)
    n = interior.size
    ids = np.empty(n_all, np.int64)
    ids[interior] = np.arange(n)
    ids[is_leaf] = n + np.arange(int(is_leaf.sum()))
    position = {}
    for k, key in enumerate(zip(trees, nodes)):
        if key in position:
            ctx.unsupported(f"tree {key[0]} lists node {key[1]} twice")
        position[key] = k

    def successor(name: str) -> np.ndarray:
        out = []
        for k in interior:
            key = (trees[k], int(columns[name][k]))
            if key not in position:
                ctx.unsupported(f"node {nodes[k]} of tree {trees[k]} branches to node {key[1]}, which does not exist")
            out.append(ids[position[key]])
        return np.asarray(out, np.int64)

    leaf_ids = np.arange(n, n_all, dtype=np.int64)
    features_of = columns["nodes_featureids"][interior]
    if n and (features_of.min() < 0 or features_of.max() >= features):
        ctx.unsupported(f"a node reads a feature outside [0, {features})")
    on_true = np.concatenate([successor("nodes_truenodeids"), leaf_ids])
    on_false = np.concatenate([successor("nodes_falsenodeids"), leaf_ids])
    first = {}
    for k, t in enumerate(trees):
        first.setdefault(t, k)
    roots = ids[list(first.values())]
    pad = np.zeros(n_all - n, np.int64)
    forest = _Forest(
        feature=np.concatenate([features_of, pad]),
        split=np.concatenate([splits[interior], np.zeros(n_all - n, splits.dtype)]),
        mode=np.concatenate([np.array([_LEGACY_MODES[modes[k]] for k in interior], np.int64), pad]),
        tracks_true=np.concatenate([tracks[interior] != 0, np.zeros(n_all - n, bool)]),
        on_true=on_true, on_false=on_false,
        members=np.full((n_all, 1), np.nan, splits.dtype),
        roots=roots,
        depths=_depths(ctx, roots, on_true, on_false, n),
        leaves=n,
    )
    leaf_of = {key: int(ids[k]) - n for key, k in position.items() if is_leaf[k]}
    return forest, leaf_of


def _legacy_leaf_weights(ctx: LoweringContext, prefix: str,
                         leaf_of: dict[tuple[int, int], int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``{prefix}_treeids/_nodeids/_ids/_weights``: (leaf number, target or class id, weight) per entry."""
    trees = np.asarray(ctx.attr(f"{prefix}_treeids", []), np.int64).reshape(-1)
    nodes = np.asarray(ctx.attr(f"{prefix}_nodeids", []), np.int64).reshape(-1)
    ids = np.asarray(ctx.attr(f"{prefix}_ids", []), np.int64).reshape(-1)
    weights = floats(ctx, f"{prefix}_weights", [])
    if not trees.size == nodes.size == ids.size == weights.size:
        ctx.unsupported(f"the {prefix}_* attributes have different lengths")
    leaves = []
    for t, v in zip(trees.tolist(), nodes.tolist()):
        if (t, v) not in leaf_of:
            ctx.unsupported(f"a {prefix} weight names node {v} of tree {t}, which is not a LEAF node")
        leaves.append(leaf_of[t, v])
    return np.asarray(leaves, np.int64), ids, weights


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


def _depths(ctx: LoweringContext, roots: np.ndarray, on_true: np.ndarray, on_false: np.ndarray,
            leaves: int) -> np.ndarray:
    """Per tree, the most interior nodes on any root-to-leaf path; a cycle is refused."""
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

    return np.array([depth(int(r), frozenset()) for r in roots], np.int64)


OPS: list[OpDef] = [
    defop("TreeEnsemble", tree_ensemble, domain="ai.onnx.ml", since=5),
    defop("TreeEnsembleRegressor", tree_ensemble_regressor, domain="ai.onnx.ml"),
    defop("TreeEnsembleClassifier", tree_ensemble_classifier, domain="ai.onnx.ml"),
]
