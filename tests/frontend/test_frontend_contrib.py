"""com.microsoft contrib-op expansion (compiler/frontend/contrib.py): structure, refusals, the loader's domain fix.

Expanded graphs are run with onnx's ReferenceEvaluator (exact enough for
their plain ops) and compared with onnxruntime on the original node, at
float32 rtol=1e-4, atol=2e-5; the compiled numerics live in
tests/ops/test_ops_contrib.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from compiler.errors import UnsupportedOpError
from compiler.frontend import load_graph, load_model
from compiler.frontend.contrib import EXPANDERS
from compiler.frontend.folding import graph_to_model
from compiler.graph.ir import PHI_DOMAIN
from compiler.ops.registry import lookup
from helpers_contrib import MS, single_node_model
from helpers_onnx import rand


def _lowered(op: str, domain: str) -> bool:
    return lookup(op, domain) is not None


class BlockDequantize(OpRun):
    """tilec.BlockDequantize for the reference evaluator: ``codes * scale + offset``, one scale per block of rows."""

    op_domain = PHI_DOMAIN

    def _run(self, codes, scale, offset, axis=None, block_size=None, to=None):
        assert axis == 0 and codes.ndim == 2  # the form MatMulNBits' expansion writes
        rows = np.arange(codes.shape[0]) // block_size
        weights = codes.astype(np.float32) * scale[rows] + offset[rows]
        return (weights.astype(helper.tensor_dtype_to_np_dtype(to)),)


def _expanded(model: onnx.ModelProto) -> onnx.ModelProto:
    """The expanded graph IR as a model of default-domain nodes and tilec's BlockDequantize only."""
    graph = load_graph(model, is_supported=_lowered)
    assert all(n.domain in ("", "ai.onnx") or (n.domain, n.op_type) == (PHI_DOMAIN, "BlockDequantize")
               for n in graph.nodes), [(n.op_type, n.domain) for n in graph.nodes]
    graph.opsets.pop(MS)  # nothing reads it any more (and onnx's IR-version table does not know it)
    return graph_to_model(graph)


def _refusal(model: onnx.ModelProto) -> str:
    with pytest.raises(UnsupportedOpError) as info:
        load_graph(model, is_supported=_lowered)
    return str(info.value)


def _ids(*rows: list[int]) -> np.ndarray:
    return np.array(rows, np.int32)


X, S, G = rand((2, 3, 8), seed=1), rand((2, 3, 8), seed=2), rand((8,), seed=3)

#: op -> (feeds, constants, single_node_model keywords): one model per expander.
CASES = {
    "Gelu": ({"x": X}, {}, {}),
    "BiasGelu": ({"x": X}, {"b": G}, {}),
    "FastGelu": ({"x": X}, {"b": G}, {}),
    "QuickGelu": ({"x": X}, {}, {"alpha": 1.5}),
    "BiasAdd": ({"x": X, "s": S}, {"b": G}, {"inputs": ["x", "b", "s"], "expected": [X + G + S]}),
    "FusedMatMul": ({"a": rand((4, 2, 3), seed=1)}, {"b": rand((2, 4, 5), seed=2)},
                    {"transBatchA": 1, "transA": 1, "alpha": 0.5}),
    "FusedConv": ({"x": rand((1, 2, 5, 5), seed=1), "z": rand((1, 3, 5, 5), seed=4)},
                  {"w": rand((3, 2, 3, 3), seed=2), "b": rand((3,), seed=3)},
                  {"inputs": ["x", "w", "b", "z"], "pads": [1, 1, 1, 1], "activation": "Clip",
                   "activation_params": [-0.5, 0.5]}),
    "FusedGemm": ({"a": rand((3, 4), seed=1)}, {"b": rand((4, 5), seed=2)},
                  {"activation": "LeakyRelu", "activation_alpha": 0.2}),
    "SkipLayerNormalization": ({"x": X, "s": S}, {"g": G, "be": rand((8,), seed=4), "bi": rand((8,), seed=5)},
                               {"outputs": ("y", "mean", "inv", "sum"), "epsilon": 1e-5}),
    "SkipSimplifiedLayerNormalization": ({"x": X, "s": S}, {"g": G}, {"outputs": ("y", "", "inv", "sum")}),
    "SimplifiedLayerNormalization": ({"x": X}, {"g": rand((3, 8), seed=3)},
                                     {"outputs": ("y", "inv"), "domain": "", "axis": 1}),
    "LayerNormalization": ({"x": X}, {"g": G, "b": rand((8,), seed=4)}, {"domain": "", "opset": 13}),
    "EmbedLayerNormalization": ({"ids": _ids([1, 4, 2], [3, 0, 0]), "mask": _ids([1, 1, 1], [1, 0, 0])},
                                {"w": rand((5, 8), seed=1), "p": rand((3, 8), seed=2), "g": G, "b": rand((8,), seed=4)},
                                {"inputs": ["ids", "", "w", "p", "", "g", "b", "mask"],
                                 "outputs": ("y", "mask_index", "sum")}),
    "Attention": ({"x": rand((2, 4, 8), seed=1), "mask": _ids([1, 1, 1, 0], [1, 1, 1, 1])},
                  {"w": rand((8, 24), seed=2), "b": rand((24,), seed=3)},
                  {"inputs": ["x", "w", "b", "mask"], "num_heads": 2, "unidirectional": 1}),
    "RotaryEmbedding": ({"x": rand((2, 2, 3, 4), seed=1), "pos": np.array([1], np.int64)},
                        {"cos": np.cos(np.arange(8.0)[:, None] * [1.0, 0.5]).astype(np.float32),
                         "sin": np.sin(np.arange(8.0)[:, None] * [1.0, 0.5]).astype(np.float32)}, {"interleaved": 1}),
    "MultiHeadAttention": ({"q": X, "k": rand((2, 5, 8), seed=2), "v": rand((2, 5, 4), seed=3),
                            "mask": _ids([1, 1, 1, 0, 0], [1, 1, 1, 1, 1])},
                           {"b": rand((20,), seed=4)}, {"inputs": ["q", "k", "v", "b", "mask"], "num_heads": 2}),
    # K=40 in blocks of 32 (the last one padded), packed 4-bit zero points, a bias.
    "MatMulNBits": ({"a": rand((2, 3, 40), seed=1)},
                    {"w": np.random.default_rng(2).integers(0, 256, (5, 2, 16)).astype(np.uint8),
                     "s": rand((10,), seed=3), "z": np.random.default_rng(4).integers(0, 256, (5,)).astype(np.uint8),
                     "bias": rand((5,), seed=5)},
                    {"inputs": ["a", "w", "s", "z", "", "bias"], "K": 40, "N": 5, "bits": 4, "block_size": 32}),
}


def test_every_expander_has_a_case():
    assert set(CASES) == set(EXPANDERS)


@pytest.mark.parametrize("op", sorted(CASES))
def test_expansion_leaves_standard_ops_that_match_onnxruntime(op):
    feeds, consts, kwargs = CASES[op]
    model, expected = single_node_model(op, feeds, consts, **kwargs)
    got = ReferenceEvaluator(_expanded(model), new_ops=[BlockDequantize]).run(None, feeds)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=2e-5)


# --- refusals -------------------------------------------------------------------------------------------


def _unchecked(op: str, feeds: dict, consts: dict, out_shape: tuple[int, ...], **kwargs) -> onnx.ModelProto:
    """A contrib model onnxruntime need not run (its output typed by hand)."""
    return single_node_model(op, feeds, consts, expected=[np.zeros(out_shape, np.float32)], **kwargs)[0]


REFUSALS = [
    ("Attention", {"x": X, "past": rand((2, 2, 2, 1, 4), seed=2)}, {"w": rand((8, 24), seed=2)},
     {"inputs": ["x", "w", "", "", "past"], "num_heads": 2}, "past/present state is not supported"),
    ("Attention", {"x": X}, {"w": rand((8, 24), seed=2)}, {"num_heads": 2, "do_rotary": 1}, "do_rotary"),
    ("Attention", {"x": X, "mask": np.ones((2, 1, 3, 3), np.int32)}, {"w": rand((8, 24), seed=2)},
     {"inputs": ["x", "w", "", "mask"], "num_heads": 2}, "mask shape [2, 1, 3, 3]"),
    ("Attention", {"x": X}, {"w": rand((8, 24), seed=2)}, {"num_heads": 3}, "not a multiple of num_heads 3"),
    ("MultiHeadAttention", {"q": rand((2, 3, 2, 3, 4), seed=1)}, {}, {"num_heads": 2}, "packed QKV"),
    ("MultiHeadAttention", {"q": X, "k": rand((2, 5, 8), seed=2), "v": rand((2, 5, 8), seed=3)}, {},
     {"num_heads": 2, "unidirectional": 1}, "unidirectional attention of 3 queries over 5 keys"),
    ("MultiHeadAttention", {"q": X, "k": X, "v": X, "pk": rand((2, 2, 1, 4), seed=4), "pv": rand((2, 2, 1, 4), seed=5)},
     {}, {"inputs": ["q", "k", "v", "", "", "", "pk", "pv"], "num_heads": 2}, "past state"),
    ("FusedConv", {"x": rand((1, 2, 5, 5), seed=1)}, {"w": rand((3, 2, 3, 3), seed=2)}, {"activation": "Gelu"},
     "unknown activation 'Gelu'"),
    ("FusedGemm", {"a": rand((3, 4), seed=1)}, {"b": rand((4, 5), seed=2)}, {"activation": "LeakyRelu"},
     "activation 'LeakyRelu' needs its alpha parameter"),
    ("RotaryEmbedding", {"x": X, "pos": np.array([0], np.int64)},
     {"cos": np.ones((4, 4), np.float32), "sin": np.zeros((4, 4), np.float32)},
     {"num_heads": 2, "rotary_embedding_dim": 2},
     "rotary_embedding_dim 2 does not fit head size 4 and cos/sin cache width 4"),
    ("FusedMatMul", {"a": rand((2, 3, 4), seed=1)}, {"b": rand((4, 5), seed=2)}, {"transBatchA": 1},
     "transBatchA/transBatchB need A and B of one rank >= 3 (ranks [3, 2])"),
    ("MatMulNBits", {"a": rand((2, 3, 40), seed=1), "w": np.zeros((8, 2, 16), np.uint8)}, {"s": rand((16,), seed=2)},
     {"K": 40, "N": 8, "block_size": 32}, "B must be constants (weights known at compile time)"),
    ("MatMulNBits", {"a": rand((2, 3, 40), seed=1)}, {"w": np.zeros((8, 2, 16), np.uint8), "s": rand((16,), seed=2)},
     {"K": 40, "N": 8, "block_size": 32, "bits": 3}, "bits=3 (2, 4 and 8 are supported)"),
    ("MatMulNBits", {"a": rand((2, 3, 40), seed=1)},
     {"w": np.zeros((8, 2, 16), np.uint8), "s": rand((16,), seed=2), "z": np.zeros(8, np.uint8),
      "g": np.zeros(40, np.int32)}, {"K": 40, "N": 8, "block_size": 32}, "onnxruntime ignores those zero points"),
]


@pytest.mark.parametrize("op,feeds,consts,kwargs,reason", REFUSALS, ids=[r[-1] for r in REFUSALS])
def test_unsupported_forms_are_refused_naming_the_node_and_the_reason(op, feeds, consts, kwargs, reason):
    message = _refusal(_unchecked(op, feeds, consts, (2, 3, 8), **kwargs))
    assert f"com.microsoft.{op} '{op.lower()}' (opset 1): " in message
    assert reason in message


def test_contrib_ops_without_an_expansion_stay_unsupported():
    model = _unchecked("QuickGeluButNot", {"x": X}, {}, (2, 3, 8))
    assert "com.microsoft.QuickGeluButNot 'quickgelubutnot' (opset 1)" in _refusal(model)


# --- domains ------------------------------------------------------------------------------------------------


def test_the_loader_moves_onnxruntimes_default_domain_ops_to_com_microsoft():
    """SimplifiedLayerNormalization at any opset, LayerNormalization below 17; the opset import is added."""
    nodes = [helper.make_node("SimplifiedLayerNormalization", ["x", "g"], ["n"]),
             helper.make_node("LayerNormalization", ["n", "g"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 8])],
                              [onnx.numpy_helper.from_array(G, "g")])
    for opset, layer_norm_domain in ((13, MS), (17, "")):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        loaded = load_model(model)
        assert [n.domain for n in loaded.graph.node] == [MS, layer_norm_domain]
        assert {o.domain: o.version for o in loaded.opset_import}[MS] == 1


@pytest.mark.parametrize("op,opset,attrs", [("Gelu", 20, {}), ("LayerNormalization", 17, {"epsilon": 1e-5})])
def test_default_domain_ops_sharing_a_contrib_name_are_not_expanded(op, opset, attrs):
    inputs = ["x"] if op == "Gelu" else ["x", "g"]
    model, _ = single_node_model(op, {"x": X}, {} if op == "Gelu" else {"g": G}, inputs=inputs, domain="",
                                 opset=opset, **attrs)
    graph = load_graph(model, is_supported=_lowered)
    assert [(n.op_type, n.domain) for n in graph.nodes] == [(op, "")]
