"""Data movement: Concat, Transpose and the views (Reshape, Flatten, Squeeze, Unsqueeze, Identity).

Views produce no kernel: their output shares the input's storage. They are
tested both as graph outputs (the driver must add a copy) and as intermediates
feeding another op (the reader must index the shared storage with the view's
shape). Values are moved, not computed, so results must match exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers_onnx import graph_model, node_model, rand

EXACT = {"rtol": 0, "atol": 0}


@pytest.mark.parametrize("axis,shapes", [
    (0, [(2, 5), (3, 5)]),
    (1, [(2, 5), (2, 1), (2, 17)]),
    (-1, [(2, 3, 4), (2, 3, 9), (2, 3, 1), (2, 3, 4)]),
    (1, [(1, 3, 4, 4), (1, 5, 4, 4), (1, 2, 4, 4)]),
    (-2, [(2, 3, 7), (2, 6, 7)]),
    (0, [(4,), (1,), (11,)]),
], ids=lambda v: str(v) if isinstance(v, int) else "_".join("x".join(map(str, s)) for s in v))
def test_concat(check, axis, shapes):
    feeds = {f"x{k}": rand(s, seed=k) for k, s in enumerate(shapes)}
    check(node_model("Concat", list(feeds), feeds, attrs={"axis": axis}), feeds, **EXACT)


def test_concat_with_constant_and_repeated_input(check):
    x = rand((2, 3), seed=1)
    model = node_model("Concat", ["x", "c", "x"], {"x": x}, consts={"c": rand((2, 4), seed=2)}, attrs={"axis": 1})
    check(model, {"x": x}, **EXACT)


def test_concat_of_computed_inputs_then_relu(check):
    a, b = rand((2, 3, 5), seed=3), rand((2, 4, 5), seed=4)
    nodes = [helper.make_node("Neg", ["a"], ["na"]), helper.make_node("Exp", ["b"], ["eb"]),
             helper.make_node("Concat", ["na", "eb"], ["c"], axis=1), helper.make_node("Relu", ["c"], ["y"])]
    check(graph_model(nodes, {"a": a, "b": b}, ["y"]), {"a": a, "b": b})


@pytest.mark.parametrize("shape,perm", [
    ((3, 17), None),
    ((3, 17), [1, 0]),
    ((2, 3, 5), [0, 2, 1]),
    ((2, 3, 5), [2, 0, 1]),
    ((2, 3, 5, 7), [0, 2, 3, 1]),
    ((2, 3, 5, 7), [0, 3, 1, 2]),
    ((2, 3, 5, 7), [3, 2, 1, 0]),
    ((1, 33, 1, 9), [0, 2, 3, 1]),
], ids=lambda v: "x".join(map(str, v)) if v is not None else "default")
def test_transpose(check, shape, perm):
    x = rand(shape, seed=5)
    attrs = {} if perm is None else {"perm": perm}
    check(node_model("Transpose", ["x"], {"x": x}, attrs=attrs), {"x": x}, **EXACT)


@pytest.mark.parametrize("threads", [1, 2])
def test_transpose_large_threaded(check, threads):
    x = rand((8, 64, 9, 15), seed=6)
    check(node_model("Transpose", ["x"], {"x": x}, attrs={"perm": [0, 2, 3, 1]}), {"x": x}, threads=(threads,),
          **EXACT)


# --- views -------------------------------------------------------------------------------


def _view_node(op: str, x_shape: tuple[int, ...], arg) -> tuple[list, dict]:
    """The view node (input "x", output "v") and its constant inputs."""
    if op == "Reshape":
        return [helper.make_node("Reshape", ["x", "shape"], ["v"])], {"shape": np.array(arg, np.int64)}
    if op == "Flatten":
        return [helper.make_node("Flatten", ["x"], ["v"], axis=arg)], {}
    if op in ("Squeeze", "Unsqueeze"):
        if arg is None:
            return [helper.make_node(op, ["x"], ["v"])], {}
        return [helper.make_node(op, ["x", "axes"], ["v"])], {"axes": np.array(arg, np.int64)}
    return [helper.make_node("Identity", ["x"], ["v"])], {}


VIEW_CASES = [
    ("Reshape", (2, 3, 4), [4, 6]),
    ("Reshape", (2, 3, 4), [-1]),
    ("Reshape", (2, 3, 4), [0, -1]),
    ("Reshape", (6, 5), [3, 1, 10]),
    ("Flatten", (2, 3, 4, 5), 1),
    ("Flatten", (2, 3, 4, 5), 0),
    ("Flatten", (2, 3, 4, 5), -1),
    ("Flatten", (2, 3, 4, 5), 3),
    ("Squeeze", (1, 3, 1, 5), [0, 2]),
    ("Squeeze", (1, 3, 1, 5), None),
    ("Squeeze", (3, 1), [-1]),
    ("Unsqueeze", (3, 5), [0]),
    ("Unsqueeze", (3, 5), [1, -1]),
    ("Unsqueeze", (3,), [0, 2]),
    ("Identity", (4, 7), None),
]
_IDS = [f"{op}-{'x'.join(map(str, s))}-{a}" for op, s, a in VIEW_CASES]


@pytest.mark.parametrize("op,shape,arg", VIEW_CASES, ids=_IDS)
def test_view_as_graph_output(check, op, shape, arg):
    x = rand(shape, seed=7)
    nodes, consts = _view_node(op, shape, arg)
    check(graph_model(nodes, {"x": x}, ["v"], consts), {"x": x}, **EXACT)


@pytest.mark.parametrize("op,shape,arg", VIEW_CASES, ids=_IDS)
def test_view_between_computations(check, op, shape, arg):
    # Computed input (Relu) → view → computed reader (Exp with a broadcast add).
    x = rand(shape, seed=8)
    nodes, consts = _view_node(op, shape, arg)
    nodes = [helper.make_node("Relu", ["x0"], ["x"])] + nodes + [helper.make_node("Exp", ["v"], ["y"])]
    check(graph_model(nodes, {"x0": x}, ["y"], consts), {"x0": x})


@pytest.mark.parametrize("op,shape,arg", VIEW_CASES[:9], ids=_IDS[:9])
def test_view_of_graph_input_feeding_an_op(check, op, shape, arg):
    x = rand(shape, seed=9)
    nodes, consts = _view_node(op, shape, arg)
    nodes = nodes + [helper.make_node("Neg", ["v"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x}, **EXACT)


def test_view_output_and_its_reader_output(check):
    # The view's value is both a graph output and the input of another op.
    x = rand((2, 3, 4), seed=10)
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"]),
             helper.make_node("Reshape", ["s", "shape"], ["v"]),
             helper.make_node("Neg", ["v"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["v", "y"], {"shape": np.array([6, 4], np.int64)}), {"x": x})


def test_chained_views(check):
    x = rand((2, 3, 4), seed=11)
    nodes = [helper.make_node("Tanh", ["x"], ["t"]),
             helper.make_node("Reshape", ["t", "s1"], ["a"]),
             helper.make_node("Unsqueeze", ["a", "ax"], ["b"]),
             helper.make_node("Flatten", ["b"], ["c"], axis=2),
             helper.make_node("Softmax", ["c"], ["y"])]
    consts = {"s1": np.array([6, 4], np.int64), "ax": np.array([1], np.int64)}
    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x})


def test_flatten_into_gemm(check):
    # The classifier head pattern: conv features → Flatten → Gemm.
    x = rand((1, 8, 3, 3), seed=12)
    consts = {"w": rand((10, 72), seed=13), "b": rand((10,), seed=14)}
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Flatten", ["r"], ["f"]),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x}, atol=1e-4)


def test_transpose_reshape_matmul(check):
    # Attention-style head split: [B, S, H*D] → [B, S, H, D] → [B, H, S, D] @ [B, H, D, S].
    x = rand((2, 5, 12), seed=15)
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]),
             helper.make_node("Transpose", ["r"], ["q"], perm=[0, 2, 1, 3]),
             helper.make_node("Transpose", ["r"], ["k"], perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["q", "k"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["y"], {"s": np.array([2, 5, 3, 4], np.int64)}), {"x": x}, atol=1e-4)
