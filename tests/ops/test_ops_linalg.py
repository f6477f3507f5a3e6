"""MatMul and Gemm (compiler/ops/linalg.py) against onnx's reference, plus their fused epilogues.

Sizes are deliberately not multiples of 8/16 so the register tiles leave row and
lane tails. Tolerance: float32 rtol=1e-4, atol=1e-4 (not 1e-5): outputs are dot
products over K of N(0,1) values, and the tiled FMA summation order moves
near-zero results by ~sqrt(K) ulps of the partial sums.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from helpers_onnx import graph_model, node_model, rand

ATOL = 1e-4

MATMUL_SHAPES = [
    ((3, 5), (5, 8)),
    ((7, 13), (13, 19)),
    ((17, 33), (33, 41)),
    ((1, 64), (64, 100)),
    ((64, 3), (3, 1)),
    ((5,), (5, 9)),
    ((6, 5), (5,)),
    ((11,), (11,)),
    ((2, 3, 4), (4, 6)),
    ((4,), (2, 4, 3)),
    ((2, 1, 3, 4), (5, 4, 6)),
    ((3, 7, 9), (3, 9, 5)),
    ((1, 5, 6), (4, 6, 7)),
    ((2, 3, 5, 4), (3, 4, 2)),
    ((4, 31, 20), (20, 35)),
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=lambda s: f"{s[0]}@{s[1]}")
def test_matmul(check, shapes):
    a, b = rand(shapes[0], seed=1), rand(shapes[1], seed=2)
    check(node_model("MatMul", ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b}, atol=ATOL)


@pytest.mark.parametrize("shapes", [((7, 13), (13, 19)), ((2, 5, 12), (12, 33))], ids=str)
def test_matmul_constant_weights(check, shapes):
    a, b = rand(shapes[0], seed=3), rand(shapes[1], seed=4)
    check(node_model("MatMul", ["a", "b"], {"a": a}, consts={"b": b}), {"a": a}, atol=ATOL)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_matmul_integer(check, dtype):
    a = (rand((5, 7), seed=5) * 10).astype(dtype)
    b = (rand((7, 9), seed=6) * 10).astype(dtype)
    check(node_model("MatMul", ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b})


@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_threaded(check, threads):
    a, b = rand((97, 130), seed=7), rand((130, 75), seed=8)
    check(node_model("MatMul", ["a", "b"], {"a": a, "b": b}), {"a": a, "b": b}, atol=ATOL, threads=(threads,))


GEMM_CASES = {
    "plain": ((5, 7), (7, 9), (9,), {}),
    "transA": ((7, 5), (7, 9), (9,), {"transA": 1}),
    "transB": ((5, 7), (9, 7), (9,), {"transB": 1}),
    "transAB": ((7, 5), (9, 7), (9,), {"transA": 1, "transB": 1}),
    "alpha_beta": ((5, 7), (7, 9), (9,), {"alpha": 0.5, "beta": 2.0}),
    "beta0": ((5, 7), (7, 9), (9,), {"beta": 0.0}),
    "C_full": ((6, 11), (11, 13), (6, 13), {}),
    "C_column": ((6, 11), (11, 13), (6, 1), {"beta": -1.5}),
    "C_row2d": ((6, 11), (11, 13), (1, 13), {}),
    "C_scalar": ((6, 11), (11, 13), (), {}),
    "C_one": ((6, 11), (11, 13), (1,), {"alpha": 2.0}),
    "no_C": ((6, 11), (11, 13), None, {}),
    "no_C_transB_alpha": ((3, 40), (50, 40), None, {"transB": 1, "alpha": 0.25}),
    "linear_layer": ((1, 128), (100, 128), (100,), {"transB": 1}),
    "odd_sizes": ((19, 37), (37, 23), (23,), {"transA": 0, "transB": 0}),
}


@pytest.mark.parametrize("name", sorted(GEMM_CASES))
def test_gemm(check, name):
    a_shape, b_shape, c_shape, attrs = GEMM_CASES[name]
    a = rand(a_shape, seed=9)
    consts = {"b": rand(b_shape, seed=10)}
    inputs = ["a", "b"]
    if c_shape is not None:
        consts["c"] = rand(c_shape, seed=11)
        inputs.append("c")
    check(node_model("Gemm", inputs, {"a": a}, consts=consts, attrs=attrs), {"a": a}, atol=ATOL)


def test_gemm_all_runtime_inputs(check):
    feeds = {"a": rand((8, 6), seed=12), "b": rand((8, 10), seed=13), "c": rand((10,), seed=14)}
    check(node_model("Gemm", ["a", "b", "c"], feeds, attrs={"transA": 1, "alpha": 1.5, "beta": 0.5}), feeds,
          atol=ATOL)


@pytest.mark.parametrize("opset", [7, 11])
def test_gemm_old_opsets(check, opset):
    # Gemm-7..10 require C; from 11 it is optional (here present in both).
    a = rand((4, 6), seed=15)
    consts = {"b": rand((6, 5), seed=16), "c": rand((5,), seed=17)}
    check(node_model("Gemm", ["a", "b", "c"], {"a": a}, consts=consts, opset=opset), {"a": a}, atol=ATOL)


# --- fused chains -------------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_add_relu(check, threads):
    x = rand((2, 37, 48), seed=18)
    consts = {"w": rand((48, 70), seed=19), "b": rand((70,), seed=20)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x}, atol=ATOL, threads=(threads,))


def test_add_before_matmul_bias_first(check):
    # Bias on the left of the Add; the epilogue must keep operand order-independent semantics.
    x = rand((9, 12), seed=21)
    consts = {"w": rand((12, 17), seed=22), "b": rand((9, 1), seed=23)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Sub", ["b", "m"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x}, atol=ATOL)


@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_sigmoid(check, threads):
    x = rand((33, 64), seed=24)
    consts = {"w": rand((50, 64), seed=25), "b": rand((50,), seed=26)}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1), helper.make_node("Sigmoid", ["g"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x}, atol=ATOL, threads=(threads,))


def test_matmul_gelu_chain(check):
    # MatMul → Add → (x * 0.5 * (1 + Erf(x / sqrt 2))): the transformer MLP pattern.
    x = rand((5, 24), seed=27)
    consts = {"w": rand((24, 20), seed=28), "b": rand((20,), seed=29), "s2": np.array(np.sqrt(2), np.float32),
              "half": np.array(0.5, np.float32), "one": np.array(1.0, np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Div", ["a", "s2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["p"]), helper.make_node("Mul", ["a", "p"], ["q"]),
             helper.make_node("Mul", ["q", "half"], ["y"])]
    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x}, atol=ATOL)


def test_two_layer_mlp(check):
    x = rand((4, 30), seed=30)
    consts = {"w1": rand((30, 45), seed=31), "b1": rand((45,), seed=32), "w2": rand((10, 45), seed=33),
              "b2": rand((10,), seed=34)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m"]), helper.make_node("Add", ["m", "b1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    check(graph_model(nodes, {"x": x}, ["y"], consts), {"x": x}, atol=ATOL)
