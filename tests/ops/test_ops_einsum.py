"""Einsum against onnx's reference (numpy.einsum): explicit and implicit outputs, diagonals, traces,
ellipsis broadcasting, several operands, upper-case labels, integer data.

Tolerance: float32 rtol=1e-4 atol=1e-5 (sums of at most a few dozen products); integers exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import compiler
from helpers_onnx import node_model, rand
from runtime_stub import InferenceSession

CASES = {
    "matmul": ("ij,jk->ik", [(3, 4), (4, 5)]),
    "batch_matmul": ("bij, bjk -> bik", [(2, 3, 4), (2, 4, 5)]),
    "transpose": ("ijk->kij", [(2, 3, 4)]),
    "diagonal": ("ii->i", [(5, 5)]),
    "trace_implicit": ("ii", [(4, 4)]),
    "batch_diagonal": ("...ii->...i", [(2, 3, 4, 4)]),
    "outer": ("i,j->ij", [(3,), (4,)]),
    "inner_implicit": ("i,i", [(6,)] * 2),
    "sum_all": ("ij->", [(3, 4)]),
    "implicit_sorted": ("ba", [(3, 4)]),
    # Every ellipsis stands for as many dimensions (the spec; onnx's inference and onnxruntime refuse 2 and 1).
    "ellipsis_broadcast": ("...ij,...jk", [(2, 1, 3, 4), (1, 5, 4, 2)]),
    "ellipsis_middle": ("a...b,b...->a...", [(2, 3, 4), (4, 3)]),
    "three_operands": ("abc,cd,de->abe", [(2, 3, 4), (4, 5), (5, 2)]),
    "upper_case": ("Ab,bA->A", [(3, 4), (4, 3)]),
    "repeated_three": ("iii->i", [(3, 3, 3)]),
    "bilinear": ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_einsum(check, name):
    equation, shapes = CASES[name]
    feeds = {f"x{k}": rand(s, seed=k + 1) for k, s in enumerate(shapes)}
    check(node_model("Einsum", list(feeds), feeds, attrs={"equation": equation}, opset=12), feeds)


def test_einsum_int32(check):
    rng = np.random.default_rng(3)
    feeds = {"a": rng.integers(-5, 5, size=(2, 3, 4)).astype(np.int32),
             "b": rng.integers(-5, 5, size=(2, 4, 3)).astype(np.int32)}
    check(node_model("Einsum", ["a", "b"], feeds, attrs={"equation": "bij,bjk->bik"}, opset=12), feeds)


def test_symbolic_dims_one_artifact_at_several_shapes(tmp_path):
    """Labels of symbolic size (a batch, two lengths), one broadcasting from 1: compiled once, run at three shapes."""
    info = [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["b", 3, "m", 8]),
            helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 3, "n", 8])]
    node = helper.make_node("Einsum", ["a", "k"], ["y"], equation="...md,...nd->...mn")
    graph = helper.make_graph([node], "einsum", info, [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                                                     ["b", 3, "m", "n"])])
    artifact = compiler.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)]),
                                tmp_path / "einsum.tilec")
    rng = np.random.default_rng(3)
    with InferenceSession(artifact) as session:
        for b, m, n in ((1, 1, 5), (2, 7, 33), (3, 2, 1)):
            a, k = rng.standard_normal((b, 3, m, 8)).astype(np.float32), rng.standard_normal((1, 3, n, 8)).astype(np.float32)
            np.testing.assert_allclose(session.run(None, {"a": a, "k": k})[0], np.einsum("...md,...nd->...mn", a, k),
                                       rtol=1e-5, atol=1e-5)
