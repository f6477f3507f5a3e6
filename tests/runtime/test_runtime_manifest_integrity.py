"""Edits of a compiled artifact's manifest that keep it valid JSON, made by a tool that also
recomputes the header digest: the runtime must refuse each one with CorruptArtifactError by
holding the manifest against the signature the native code declares (runtime_stub/signature.py),
never run the native code on buffers of other sizes (a silently wrong result or a segfault) and
never crash. Damage without a recomputed digest is refused by the digest
(test_runtime_artifact_errors.py)."""

from __future__ import annotations

import json
import pathlib
import struct
from typing import Any, Callable

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from runtime_stub import CorruptArtifactError, InferenceSession
from runtime_stub.artifact import HEADER_SIZE, file_digest
from helpers_onnx import strings_and_maps_model


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small CNN compiled for batch 2: Conv -> Relu -> Gather (a run-time check) -> two outputs."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"]),
             helper.make_node("Gather", ["table", "ids"], ["z"])]
    table = numpy_helper.from_array(rng.standard_normal((10, 5)).astype(np.float32), "table")
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8]),
                                             helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 8, 8]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 3, 5])], [w, table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = compiler.compile(model, tmp_path_factory.mktemp("integrity") / "cnn.tilec")
    return path.read_bytes()


def edited(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The artifact with ``edit`` applied to its manifest and the digest recomputed.

    The edited JSON is padded to the old length with spaces (or may grow into the page padding),
    so the sections stay where they are, as a careful tool would keep them."""
    out = bytearray(data)
    (length,) = struct.unpack("<Q", out[8:16])
    manifest = json.loads(out[HEADER_SIZE:HEADER_SIZE + length])
    first_section = min(s["offset"] for s in manifest["sections"].values())
    edit(manifest)
    encoded = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    assert HEADER_SIZE + len(encoded) <= first_section, "the edit must fit before the sections"
    out[HEADER_SIZE:first_section] = encoded + bytes(first_section - HEADER_SIZE - len(encoded))
    out[8:16] = struct.pack("<Q", len(encoded))
    out[16:HEADER_SIZE] = file_digest(np.frombuffer(bytes(out), np.uint8))
    return bytes(out)


def _feeds(batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((batch, 3, 8, 8)).astype(np.float32),
            "ids": rng.integers(0, 10, size=(batch, 3)).astype(np.int64)}


def test_the_unedited_artifact_runs(artifact: bytes) -> None:
    with InferenceSession(edited(artifact, lambda m: None)) as session:
        y, z = session.run(None, _feeds())
    assert y.shape == (2, 4, 8, 8) and z.shape == (2, 3, 5)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is _DELETE:
            del node[int(last) if isinstance(node, list) else last]
        else:
            node[int(last) if isinstance(node, list) else last] = value
    return edit


_DELETE = object()

ATTACKS = {
    "input batch 2 -> 5": _set("inputs.0.shape.0", 5),
    "output batch 2 -> 5": _set("outputs.0.shape.0", 5),
    "an input dropped": _set("inputs.1", _DELETE),
    "an output dropped": _set("outputs.1", _DELETE),
    "an input's dtype": _set("inputs.1.dtype", "int32"),
    "an output's dtype": _set("outputs.0.dtype", "float64"),
    "inputs renamed into each other": lambda m: (m["inputs"][0].update(name="ids"), m["inputs"][1].update(name="x")),
    "inputs swapped": lambda m: m["inputs"].reverse(),
    "an extra input": lambda m: m["inputs"].append({"name": "extra", "dtype": "float32", "shape": [1]}),
    "a smaller workspace": lambda m: m.update(workspace_size=max(m["workspace_size"] // 2, 0)),
    "no workspace": _set("workspace_size", 0),
    "a run-time check moved": lambda m: m["checks"][0].update(offset=m["checks"][0]["offset"] + 1),
    "run-time checks dropped": _set("checks", _DELETE),
    "profiling switched on": _set("profile", True),
    "kernels dropped": _set("kernels", []),
    "a float where an int stands": lambda m: m.update(workspace_size=float(m["workspace_size"])),
    "inputs not a list": _set("inputs", {"x": 1}),
    # Found by tests/runtime/test_fuzz_artifacts.py (TypeErrors from inside the runtime before):
    "inputs null": _set("inputs", None),
    "outputs null": _set("outputs", None),
    "a CPU feature that is not text": lambda m: m["target"]["features"].append(None),
    "a shape with a negative dim": _set("inputs.0.shape.1", -3),
    "a shape dim as text": _set("inputs.0.shape.1", "3"),
    "two inputs of one name": _set("inputs.1.name", "x"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_manifest_edits_are_refused(artifact: bytes, attack: str) -> None:
    with pytest.raises(CorruptArtifactError):
        InferenceSession(edited(artifact, ATTACKS[attack]))


def test_the_refusal_names_what_differs(artifact: bytes) -> None:
    with pytest.raises(CorruptArtifactError, match=r"manifest does not match its native code \(inputs differ\)"):
        InferenceSession(edited(artifact, ATTACKS["input batch 2 -> 5"]))


def _section_edit(name: str, **change: Any) -> Callable[[dict[str, Any]], None]:
    return lambda manifest: manifest["sections"][name].update(change)


SECTION_ATTACKS = {
    "weights shrunk": lambda m: _section_edit("weights", size=m["sections"]["weights"]["size"] - 4)(m),
    "weights pointed at the native code": lambda m: _section_edit("weights", offset=m["sections"]["native"]["offset"])(m),
    "native code moved a page on": lambda m: _section_edit("native", offset=m["sections"]["native"]["offset"] + 4096)(m),
    "native code cut short": lambda m: _section_edit("native", size=m["sections"]["native"]["size"] // 2)(m),
    "an offset as a string": lambda m: _section_edit("native", offset=str(m["sections"]["native"]["offset"]))(m),
    "a section dropped": lambda m: m["sections"].pop("weights"),
}


@pytest.mark.parametrize("attack", sorted(SECTION_ATTACKS))
def test_sections_moved_or_resized_are_refused(artifact: bytes, attack: str) -> None:
    """The section table must be the writer's canonical layout, so no edit can point the native code
    or the weights at other bytes of the file (which would run, and compute garbage)."""
    with pytest.raises(CorruptArtifactError, match="section|after its last section|weights_size"):
        InferenceSession(edited(artifact, SECTION_ATTACKS[attack]))


def test_harmless_edits_still_run(artifact: bytes) -> None:
    """What the native code does not depend on may change (a tool adding a note): same results."""
    with InferenceSession(edited(artifact, lambda m: None)) as session:
        want = session.run(None, _feeds())

    def note(manifest: dict[str, Any]) -> None:
        manifest["build"]["note"] = "re-signed by a deployment tool"

    with InferenceSession(edited(artifact, note)) as session:
        got = session.run(None, _feeds())
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def dynamic_artifact(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """x[batch, 4] -> Relu, with batch bounded to [1, 8]."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = compiler.compile(model, tmp_path_factory.mktemp("integrity") / "relu.tilec", dim_bounds={"batch": (1, 8)})
    return path.read_bytes()


DYNAMIC_ATTACKS = {
    "a size variable's range widened": _set("dims.0.max", 1 << 40),
    "size variables dropped": _set("dims", _DELETE),
    "a symbolic dim made static": _set("inputs.0.shape.0", 100),
    "a symbolic dim renamed": _set("inputs.0.shape.0", "other"),
    "an output's symbolic dim made static": _set("outputs.0.shape.0", 3),
    "a size variable without a range": _set("dims.0.min", _DELETE),
}


def test_the_unedited_dynamic_artifact_runs(dynamic_artifact: bytes) -> None:
    with InferenceSession(edited(dynamic_artifact, lambda m: None)) as session:
        (y,) = session.run(None, {"x": -np.ones((3, 4), np.float32)})
    assert y.shape == (3, 4) and not y.any()


@pytest.mark.parametrize("attack", sorted(DYNAMIC_ATTACKS))
def test_dynamic_manifest_edits_are_refused(dynamic_artifact: bytes, attack: str) -> None:
    with pytest.raises(CorruptArtifactError):
        InferenceSession(edited(dynamic_artifact, DYNAMIC_ATTACKS[attack]))


@pytest.fixture(scope="module")
def value_artifact(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """ReduceSum(x[3, 4], axes[1]) with the axes read at run time (value sizes)."""
    graph = helper.make_graph([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)], "sum",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4]),
                               helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return compiler.compile(model, tmp_path_factory.mktemp("integrity") / "sum.tilec").read_bytes()


VALUE_ATTACKS = {
    "a value size read from another element": _set("dims.0.value", ["axes", 1]),
    "a value size read from the data input": _set("dims.0.value", ["x", 0]),
    "a value size made a dimension": _set("dims.0.value", _DELETE),
    "a value size's range widened": _set("dims.0.max", 1 << 63),
}


def test_the_unedited_value_artifact_runs(value_artifact: bytes) -> None:
    with InferenceSession(edited(value_artifact, lambda m: None)) as session:
        (y,) = session.run(None, {"x": np.ones((3, 4), np.float32), "axes": np.array([1], np.int64)})
    assert y.tolist() == [4.0] * 3


@pytest.mark.parametrize("attack", sorted(VALUE_ATTACKS))
def test_value_size_manifest_edits_are_refused(value_artifact: bytes, attack: str) -> None:
    with pytest.raises(CorruptArtifactError):
        InferenceSession(edited(value_artifact, VALUE_ATTACKS[attack]))


@pytest.fixture(scope="module")
def text_artifact(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """LabelEncoder(x: string[n]) -> string[n] and a ZipMap'd [n, 2] probability output."""
    model = strings_and_maps_model()
    return compiler.compile(model, tmp_path_factory.mktemp("integrity") / "text.tilec").read_bytes()


TEXT_ATTACKS = {
    "an output's code points shortened": _set("outputs.0.chars", 1),
    "an output's code points widened": _set("outputs.0.chars", 1000),
    "an input's code points fixed": _set("inputs.0.chars", 2),
    "a string output made an int output": _set("outputs.0.dtype", "int32"),
    "the map keys swapped": _set("outputs.1.map_keys", [4, 3]),
    "the map keys dropped": _set("outputs.1.map_keys", _DELETE),
}


def test_the_unedited_text_artifact_runs(text_artifact: bytes) -> None:
    with InferenceSession(edited(text_artifact, lambda m: None)) as session:
        y, maps = session.run(None, {"x": np.array(["bb", "a", "c"])})
    assert y.tolist() == ["no", "yes", "?"] and maps == [{3: 0.5, 4: 0.5}]


@pytest.mark.parametrize("attack", sorted(TEXT_ATTACKS))
def test_text_manifest_edits_are_refused(text_artifact: bytes, attack: str) -> None:
    with pytest.raises(CorruptArtifactError):
        InferenceSession(edited(text_artifact, TEXT_ATTACKS[attack]))


@pytest.fixture(scope="module")
def dict_artifact(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """DictVectorizer over a map(int64, float) input: the run makes two native inputs of one dict."""
    node = helper.make_node("DictVectorizer", ["X"], ["y"], domain="ai.onnx.ml", int64_vocabulary=[7, 9])
    x = helper.make_value_info("X", helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(
        TensorProto.FLOAT, [1])))
    graph = helper.make_graph([node], "dv", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 1)])
    return compiler.compile(model, tmp_path_factory.mktemp("integrity") / "dv.tilec").read_bytes()


DICT_ATTACKS = {
    "the keys read as the values": _set("inputs.0.map.1", "values"),
    "the dict parts made plain inputs": _set("inputs.0.map", _DELETE),
    "the keys assigned to another dict": _set("inputs.0.map.0", "Y"),
}


def test_the_unedited_dict_artifact_runs(dict_artifact: bytes) -> None:
    with InferenceSession(edited(dict_artifact, lambda m: None)) as session:
        (y,) = session.run(None, {"X": {9: 2.5, 3: 1.0}})
    assert y.tolist() == [[0.0, 2.5]]


@pytest.mark.parametrize("attack", sorted(DICT_ATTACKS))
def test_dict_manifest_edits_are_refused(dict_artifact: bytes, attack: str) -> None:
    with pytest.raises(CorruptArtifactError):
        InferenceSession(edited(dict_artifact, DICT_ATTACKS[attack]))
