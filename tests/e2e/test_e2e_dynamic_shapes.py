"""Symbolic dimensions end to end: compile once, run at many shapes, against onnxruntime.

Models are built with onnx.helper the way exporters leave them: the batch (and sequence) as
``dim_param`` s of the inputs, the outputs named with the same or with other symbols. Each is
compiled once, without binding anything, and run at several shapes, including 1, a prime and the
ends of a bounded range. Tolerance: max |tilec - onnxruntime| <= 1e-4 * max(1, max |onnxruntime|)
(float32, the model tests' rule). Bad inputs must be ``InvalidInputError`` s that name the input,
the axis and the size variable.
"""

from __future__ import annotations

import re

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.models.exported import (attention_model, bert_encoder_model, bert_feeds, cnn_model, dynamic_model, mlp_model,
                             spatial_cnn_model, two_input_model, vit_model)
from runtime_stub import InferenceSession
from runtime_stub.errors import InvalidInputError

RTOL = 1e-4


def _check(session: InferenceSession, reference: ort.InferenceSession, feeds: dict[str, np.ndarray]) -> None:
    got = session.run(None, feeds)
    want = reference.run(None, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        scale = max(1.0, float(np.abs(w).max(initial=0.0)))
        assert float(np.abs(g - w).max(initial=0.0)) <= RTOL * scale


def _image(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)}


CASES = {
    "mlp": (mlp_model, {}, [(1, 64), (2, 64), (7, 64), (64, 64), (1000, 64)]),
    "cnn": (cnn_model, {"N": (1, 9)}, [(1, 3, 16, 16), (2, 3, 16, 16), (3, 3, 16, 16), (5, 3, 16, 16), (9, 3, 16, 16)]),
    "attention": (attention_model, {"sequence": (1, 80)},
                  [(1, 1, 32), (2, 7, 32), (3, 17, 32), (1, 64, 32), (2, 80, 32), (4, 31, 32)]),
}


# Exporter-style models whose shapes are computed in the graph (Shape -> Gather -> Concat -> Reshape, Range,
# ConstantOfShape, Expand): name -> (model, dim_bounds, the feeds of each run).
EXPORTED = {
    "bert": (lambda: bert_encoder_model(), {"sequence": (1, 128)},
             [bert_feeds(b, s) for b, s in [(1, 1), (2, 7), (1, 13), (3, 31), (1, 128), (4, 128)]]),
    "gpt2": (lambda: bert_encoder_model(causal=True), {"sequence": (1, 128)},
             [bert_feeds(b, s) for b, s in [(1, 1), (2, 5), (1, 17), (3, 64), (2, 128)]]),
    "vit": (vit_model, {"batch_size": (1, 16)},
            [{"pixel_values": np.random.default_rng(n).standard_normal((n, 3, 16, 16)).astype(np.float32)}
             for n in (1, 2, 3, 7, 16)]),
    "cnn_hw": (spatial_cnn_model, {},
               [_image(s) for s in [(1, 3, 16, 16), (2, 3, 7, 9), (1, 3, 2, 2), (3, 3, 31, 20), (1, 3, 64, 48)]]),
}


Sessions = dict[str, tuple[InferenceSession, ort.InferenceSession]]


def _compile_all(cases: dict, folder) -> Sessions:
    """Each case's model compiled once (with its dim_bounds) and loaded, next to onnxruntime on it."""
    built = {}
    for name, (make, bounds, _) in cases.items():
        model = make()
        path = compiler.compile(model, folder / f"{name}.tilec", dim_bounds=bounds or None)
        built[name] = (InferenceSession(path), ort.InferenceSession(model.SerializeToString()))
    return built


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Sessions:
    return _compile_all(EXPORTED, tmp_path_factory.mktemp("exported"))


@pytest.mark.parametrize("name", sorted(EXPORTED))
def test_exported_model_runs_every_shape_from_one_artifact(exported, name: str) -> None:
    session, reference = exported[name]
    for feeds in EXPORTED[name][2]:
        _check(session, reference, feeds)


def test_exported_shapes_show_the_input_names(exported) -> None:
    assert [a.shape for a in exported["bert"][0].get_inputs()] == [["batch", "sequence"]] * 2
    assert exported["bert"][0].get_outputs()[0].shape == ["batch", "sequence", 32]
    assert exported["cnn_hw"][0].get_inputs()[0].shape == ["N", 3, "height", "width"]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Sessions:
    return _compile_all(CASES, tmp_path_factory.mktemp("dynamic"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_artifact_runs_every_shape(artifacts, name: str) -> None:
    session, reference = artifacts[name]
    rng = np.random.default_rng(7)
    for shape in CASES[name][2]:
        _check(session, reference, {"x": rng.standard_normal(shape).astype(np.float32)})


def test_symbolic_dims_show_as_names(artifacts) -> None:
    session, _ = artifacts["attention"]
    assert session.get_inputs()[0].shape == ["batch", "sequence", 32]
    assert session.get_outputs()[0].shape == ["batch", "sequence", 32]
    assert session.manifest["dims"] == [{"name": "batch", "min": 1, "max": 1 << 20},
                                        {"name": "sequence", "min": 1, "max": 80}]
    # The output's own symbol (unk__7) is the input's N: the runtime shows what the compiler proved.
    assert artifacts["cnn"][0].get_outputs()[0].shape == ["N", 10]


def test_shape_outside_the_bounds_is_refused(artifacts) -> None:
    session, _ = artifacts["attention"]
    with pytest.raises(InvalidInputError, match=r"input 'x' axis 1 \(sequence\) is 81, outside the compiled range "
                                                r"of sequence: \[1, 80\]"):
        session.run(None, {"x": np.zeros((1, 81, 32), np.float32)})
    with pytest.raises(InvalidInputError, match=r"axis 0 \(N\) is 0, outside the compiled range of N: \[1, 9\]"):
        artifacts["cnn"][0].run(None, {"x": np.zeros((0, 3, 16, 16), np.float32)})


def test_fixed_dim_and_rank_are_checked(artifacts) -> None:
    session, _ = artifacts["attention"]
    with pytest.raises(InvalidInputError, match=r"input 'x' has shape \[2, 3, 31\], expected \[batch, sequence, 32\]: "
                                                r"axis 2 must be 32"):
        session.run(None, {"x": np.zeros((2, 3, 31), np.float32)})
    with pytest.raises(InvalidInputError, match=r"rank 2, expected rank 3"):
        session.run(None, {"x": np.zeros((2, 32), np.float32)})


def test_inputs_sharing_a_size_variable_must_agree(tmp_path) -> None:
    model = two_input_model()
    session = InferenceSession(compiler.compile(model, tmp_path / "two.tilec"))
    reference = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(3)
    for n in (1, 4, 13):
        _check(session, reference, {k: rng.standard_normal((n, 5)).astype(np.float32) for k in "ab"})
    with pytest.raises(InvalidInputError, match=r"inputs disagree on 'batch': input 'a' axis 0 has 2, input 'b' axis 0 has 3"):
        session.run(None, {"a": np.zeros((2, 5), np.float32), "b": np.zeros((3, 5), np.float32)})


def test_growing_and_shrinking_runs_reuse_the_session(artifacts) -> None:
    """A larger run grows the workspace, smaller ones after it reuse it: results stay exact."""
    session, reference = artifacts["mlp"]
    rng = np.random.default_rng(11)
    for n in (3, 500, 2, 999, 1):
        _check(session, reference, {"x": rng.standard_normal((n, 64)).astype(np.float32)})


def test_strip_mined_blocks_share_one_copy_of_the_packed_weights(tmp_path) -> None:
    """A contraction over a symbolic row count runs in blocks of 14, 8, 4, 2 and 1 rows; each must read the
    same packed weights, not a copy of its own (five copies made the artifact 4.7x larger and small runs
    slower, reading several copies through the cache)."""
    model = attention_model()
    dynamic = InferenceSession(compiler.compile(model, tmp_path / "dynamic.tilec"))
    static = InferenceSession(compiler.compile(model, tmp_path / "static.tilec", input_shapes={"x": (2, 16, 32)}))
    weights = [s.manifest["sections"]["weights"]["size"] for s in (dynamic, static)]
    assert weights[0] <= 1.1 * weights[1], weights


def test_sizes_beyond_int64_are_refused_before_running(tmp_path) -> None:
    """An outer product of four vectors: each input is small, the output has n*m*k*l elements; at
    2^16 each that overflows int64, which the native size computation reports instead of wrapping."""
    names = ["a", "b", "c", "d"]
    nodes = [helper.make_node("Unsqueeze", [v, f"axes_{v}"], [f"u_{v}"]) for v in names]
    nodes += [helper.make_node("Mul", ["u_a", "u_b"], ["ab"]), helper.make_node("Mul", ["ab", "u_c"], ["abc"]),
              helper.make_node("Mul", ["abc", "u_d"], ["y"])]
    axes = {v: [k for k in range(4) if k != i] for i, v in enumerate(names)}
    model = dynamic_model(nodes, [helper.make_tensor_value_info(v, TensorProto.FLOAT, [f"n_{v}"]) for v in names],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n_a", "n_b", "n_c", "n_d"])],
                   [numpy_helper.from_array(np.array(axes[v], np.int64), f"axes_{v}") for v in names])
    session = InferenceSession(compiler.compile(model, tmp_path / "outer.tilec"))
    reference = ort.InferenceSession(model.SerializeToString())
    rng = np.random.default_rng(5)
    _check(session, reference, {v: rng.standard_normal(n).astype(np.float32) for v, n in zip(names, (2, 3, 5, 7))})
    with pytest.raises(InvalidInputError, match="too large to address"):
        session.run(None, {v: np.ones(1 << 16, np.float32) for v in names})


def test_differently_named_dims_of_one_axis_are_unified_and_checked(tmp_path) -> None:
    """tf2onnx names one dim differently on each input (unk__655, unk__656): an Add of the two proves
    them one size for the compiler; the run checks that they are."""
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    model = dynamic_model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["unk__655", 4]),
                                  helper.make_tensor_value_info("b", TensorProto.FLOAT, ["unk__656", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["unk__657", 4])], [])
    session = InferenceSession(compiler.compile(model, tmp_path / "unify.tilec"))
    reference = ort.InferenceSession(model.SerializeToString())
    assert session.get_outputs()[0].shape == ["unk__655", 4]
    rng = np.random.default_rng(8)
    for n in (1, 3, 10):
        _check(session, reference, {k: rng.standard_normal((n, 4)).astype(np.float32) for k in "ab"})
    with pytest.raises(InvalidInputError, match=r"Add 'Add_0' \(opset 17\): operands must broadcast: needs "
                                                r"unk__656 == unk__655 \(unk__655=3, unk__656=2\)"):
        session.run(None, {"a": np.zeros((3, 4), np.float32), "b": np.zeros((2, 4), np.float32)})


def test_row_blocks_share_each_pass_over_big_weights(tmp_path) -> None:
    """A symbolic-row MatMul whose weights outgrow the L2 (a decoder's vocabulary projection): groups of
    14-row blocks run inside each column panel, so the weights stream once per group, not once per block.
    Row counts around the 14-row blocks and the groups (18 blocks of 14 for K=512) must all be right."""
    rng = np.random.default_rng(9)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    model = dynamic_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "rows", 512])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "rows", 1024])],
                          [numpy_helper.from_array(rng.standard_normal((512, 1024)).astype(np.float32), "w")])
    path = compiler.compile(model, tmp_path / "vocab.tilec", dump_ir=tmp_path / "ir")
    kernel = next((tmp_path / "ir").glob("*MatMul*.loop.txt")).read_text()
    assert re.search(r"for \w+_blk_o in .*\n\s+parallel for i2_o in .*\n\s+for \w+_blk_i in 0\.\.18 ", kernel)
    session, reference = InferenceSession(path), ort.InferenceSession(model.SerializeToString())
    for batch, rows in [(1, 1), (1, 13), (1, 14), (1, 15), (1, 252), (1, 253), (2, 130), (3, 7)]:
        _check(session, reference, {"x": rng.standard_normal((batch, rows, 512)).astype(np.float32)})
