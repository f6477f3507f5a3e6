"""Tree-ensemble benchmark models, shaped like converter output but built without the ML libraries.

``random_forest`` is a TreeEnsembleClassifier as skl2onnx writes a RandomForestClassifier:
every leaf weighs every class (the tree's class probabilities, divided by the number of
trees), trees grown to ``depth`` with early leaves. ``gradient_boosting`` is a
TreeEnsembleRegressor as onnxmltools writes a LightGBM regressor: ``trees`` trees of at
most ``leaves`` leaves (grown best-first, so unbalanced), one weight per leaf, SUM.
Splits are drawn from the standard normal inputs' range; everything comes from a seeded
generator, so a model is the same bytes on every build.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper


def _model(node: onnx.NodeProto, features: int, batch: int, outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    graph = helper.make_graph([node], node.op_type, [helper.make_tensor_value_info(
        "X", onnx.TensorProto.FLOAT, [batch, features])], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    return model


def _grow(rng: np.random.Generator, features: int, leaves: int, depth: int, balanced: bool) -> list[dict]:
    """One tree as rows of (nodeid, feature, split, true, false, is_leaf); node 0 is the root.
    ``balanced``: split every node to ``depth`` but stop early at random; else split the
    leaf chosen at random until ``leaves`` leaves (LightGBM's best-first growth)."""
    nodes = [{"feature": 0, "split": 0.0, "true": 0, "false": 0, "leaf": True, "level": 0}]
    frontier = [0]
    while frontier:
        if not balanced and len([n for n in nodes if n["leaf"]]) >= leaves:
            break
        k = frontier.pop(0 if balanced else int(rng.integers(len(frontier))))
        node = nodes[k]
        if node["level"] >= depth or (balanced and node["level"] >= 3 and rng.random() < 0.15):
            continue
        node.update(leaf=False, feature=int(rng.integers(features)), split=float(rng.normal(0, 0.8)),
                    true=len(nodes), false=len(nodes) + 1)
        for _ in range(2):
            nodes.append({"feature": 0, "split": 0.0, "true": 0, "false": 0, "leaf": True, "level": node["level"] + 1})
            frontier.append(len(nodes) - 1)
    return nodes


def _node_attrs(trees: list[list[dict]]) -> dict[str, list]:
    attrs: dict[str, list] = {k: [] for k in ("nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values",
                                              "nodes_modes", "nodes_truenodeids", "nodes_falsenodeids",
                                              "nodes_hitrates", "nodes_missing_value_tracks_true")}
    for t, nodes in enumerate(trees):
        for k, n in enumerate(nodes):
            attrs["nodes_treeids"].append(t)
            attrs["nodes_nodeids"].append(k)
            attrs["nodes_featureids"].append(n["feature"])
            attrs["nodes_values"].append(n["split"])
            attrs["nodes_modes"].append("LEAF" if n["leaf"] else "BRANCH_LEQ")
            attrs["nodes_truenodeids"].append(n["true"])
            attrs["nodes_falsenodeids"].append(n["false"])
            attrs["nodes_hitrates"].append(1.0)
            attrs["nodes_missing_value_tracks_true"].append(0)
    return attrs


def random_forest(trees: int = 200, depth: int = 8, features: int = 20, classes: int = 3, batch: int = 1,
                  seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    grown = [_grow(rng, features, 0, depth, balanced=True) for _ in range(trees)]
    attrs = _node_attrs(grown)
    weights: dict[str, list] = {"class_treeids": [], "class_nodeids": [], "class_ids": [], "class_weights": []}
    for t, nodes in enumerate(grown):
        for k, n in enumerate(nodes):
            if n["leaf"]:
                p = rng.dirichlet(np.full(classes, 0.5)) / trees
                for c in range(classes):
                    weights["class_treeids"].append(t)
                    weights["class_nodeids"].append(k)
                    weights["class_ids"].append(c)
                    weights["class_weights"].append(float(p[c]))
    node = helper.make_node("TreeEnsembleClassifier", ["X"], ["label", "probabilities"], domain="ai.onnx.ml",
                            classlabels_int64s=list(range(classes)), post_transform="NONE", **attrs, **weights)
    return _model(node, features, batch, [helper.make_tensor_value_info("label", onnx.TensorProto.INT64, [batch]),
                                          helper.make_tensor_value_info("probabilities", onnx.TensorProto.FLOAT,
                                                                        [batch, classes])])


def gradient_boosting(trees: int = 500, leaves: int = 31, depth: int = 12, features: int = 20, batch: int = 1,
                      seed: int = 1) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    grown = [_grow(rng, features, leaves, depth, balanced=False) for _ in range(trees)]
    attrs = _node_attrs(grown)
    weights: dict[str, list] = {"target_treeids": [], "target_nodeids": [], "target_ids": [], "target_weights": []}
    for t, nodes in enumerate(grown):
        for k, n in enumerate(nodes):
            if n["leaf"]:
                weights["target_treeids"].append(t)
                weights["target_nodeids"].append(k)
                weights["target_ids"].append(0)
                weights["target_weights"].append(float(rng.normal(0, 0.1)))
    node = helper.make_node("TreeEnsembleRegressor", ["X"], ["variable"], domain="ai.onnx.ml", n_targets=1,
                            aggregate_function="SUM", post_transform="NONE", base_values=[0.5], **attrs, **weights)
    return _model(node, features, batch, [helper.make_tensor_value_info("variable", onnx.TensorProto.FLOAT,
                                                                        [batch, 1])])
