"""Every way an artifact can be refused at load time, each with its own error type."""

from __future__ import annotations

import json
import pathlib
import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from runtime_stub import (
    CorruptArtifactError,
    IncompatibleArtifactError,
    InferenceSession,
    NotAnArtifactError,
)
from runtime_stub.artifact import FORMAT_VERSION, HEADER_SIZE, MAGIC, file_digest, read_artifact


def test_truncated_file(fake_artifact: pathlib.Path) -> None:
    data = fake_artifact.read_bytes()
    fake_artifact.write_bytes(data[:-100])
    with pytest.raises(CorruptArtifactError, match="truncated"):
        InferenceSession(fake_artifact)


def test_truncated_inside_manifest(fake_artifact: pathlib.Path) -> None:
    fake_artifact.write_bytes(fake_artifact.read_bytes()[:HEADER_SIZE + 10])
    with pytest.raises(CorruptArtifactError, match="truncated"):
        read_artifact(fake_artifact)


def with_valid_digest(data: bytearray) -> bytes:
    """``data`` with its header digest recomputed: an edit made by a tool, not by damage."""
    data[16:HEADER_SIZE] = file_digest(np.frombuffer(bytes(data), np.uint8))
    return bytes(data)


@pytest.mark.parametrize("where", ["weights", "manifest", "digest"])
def test_flipped_byte_fails_the_digest(fake_artifact: pathlib.Path, where: str) -> None:
    data = bytearray(fake_artifact.read_bytes())
    data[{"weights": -5, "manifest": HEADER_SIZE + 30, "digest": 20}[where]] ^= 0x40
    fake_artifact.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match="digest does not match"):
        InferenceSession(fake_artifact)


def test_bad_manifest_json(fake_artifact: pathlib.Path) -> None:
    data = bytearray(fake_artifact.read_bytes())
    data[HEADER_SIZE] = ord("!")  # the manifest's opening brace
    fake_artifact.write_bytes(with_valid_digest(data))
    with pytest.raises(CorruptArtifactError, match="unreadable manifest"):
        read_artifact(fake_artifact)


def test_onnx_file_is_not_an_artifact(tmp_path: pathlib.Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), path)
    with pytest.raises(NotAnArtifactError, match="ONNX model"):
        InferenceSession(path)


@pytest.mark.parametrize(
    "content, looks_like",
    [(b"", "empty file"), (b"\x7fELF\x02\x01\x01" + bytes(60), "ELF"), (b'{"a": 1}', "JSON"),
     (b"PK\x03\x04" + bytes(30), "zip archive")],
)
def test_other_files_are_described(tmp_path: pathlib.Path, content: bytes, looks_like: str) -> None:
    path = tmp_path / "thing.bin"
    path.write_bytes(content)
    with pytest.raises(NotAnArtifactError, match=looks_like):
        read_artifact(path)


def test_newer_format_version(make_artifact) -> None:
    path = make_artifact()
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack("<Q", data[8:16])
    manifest = json.loads(data[HEADER_SIZE:HEADER_SIZE + length])
    manifest["format_version"] = FORMAT_VERSION + 1
    encoded = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    assert len(encoded) == length  # same length: only a digit changed
    data[HEADER_SIZE:HEADER_SIZE + length] = encoded
    path.write_bytes(with_valid_digest(data))
    with pytest.raises(IncompatibleArtifactError, match=f"format_version {FORMAT_VERSION + 1}"):
        InferenceSession(path)


@pytest.mark.parametrize("generation, advice", [(MAGIC[6] + 1, "upgrade the runtime"),
                                                (MAGIC[6] - 1, "rebuild it with this tilec")])
def test_other_magic_generation(fake_artifact: pathlib.Path, generation: int, advice: str) -> None:
    data = bytearray(fake_artifact.read_bytes())
    data[6] = generation
    fake_artifact.write_bytes(bytes(data))
    with pytest.raises(IncompatibleArtifactError, match=f"generation {generation}.*{advice}"):
        read_artifact(fake_artifact)


def test_wrong_architecture(make_artifact) -> None:
    from runtime_fake_model import HOST_ARCH

    other = "aarch64" if HOST_ARCH == "x86_64" else "x86_64"

    def edit(m: dict) -> None:
        m["target"].update(arch=other, triple=f"{other}-unknown-linux-gnu")

    with pytest.raises(IncompatibleArtifactError, match=f"built for {other}.*this machine is {HOST_ARCH}"):
        InferenceSession(make_artifact(edit=edit))


def test_missing_cpu_feature(make_artifact) -> None:
    def edit(m: dict) -> None:
        m["target"]["features"] = ["avx512_nonexistent"]

    with pytest.raises(IncompatibleArtifactError, match="lacks: avx512_nonexistent"):
        InferenceSession(make_artifact(edit=edit))


def test_unknown_target_kind(make_artifact) -> None:
    def edit(m: dict) -> None:
        m["target"]["kind"] = "cuda"

    with pytest.raises(IncompatibleArtifactError, match="CUDA executor"):
        InferenceSession(make_artifact(edit=edit))


def test_unloadable_native_code_is_refused(tmp_path: pathlib.Path, fake_native: bytes) -> None:
    from compiler.artifact.format import write_artifact
    from runtime_fake_model import fake_manifest

    path = write_artifact(tmp_path / "bad.tilec", fake_manifest(), {"native": b"not an elf", "weights": b""})
    with pytest.raises(IncompatibleArtifactError, match="cannot load the artifact's native code"):
        InferenceSession(path)
