"""The artifact writer: byte layout, determinism, and round trip through the runtime reader."""

from __future__ import annotations

import hashlib
import json
import pathlib
import struct

import numpy as np
import pytest

from compiler.artifact.format import write_artifact
from runtime_stub.artifact import ALIGNMENT, FORMAT_VERSION, HEADER_SIZE, MAGIC, read_artifact

MANIFEST = {
    "format_version": FORMAT_VERSION,
    "compiler_version": "0.1.0",
    "target": {"kind": "cpu", "triple": "x86_64-unknown-linux-gnu", "arch": "x86_64", "cpu": "x86-64", "features": []},
    "inputs": [{"name": "x", "dtype": "float32", "shape": [2, 3]}],
    "outputs": [{"name": "y", "dtype": "float32", "shape": [2, 3]}],
    "workspace_size": 0,
    "kernels": [],
    "build": {"options": {"b": 1, "a": 2}},
}
SECTIONS = {"weights": np.arange(5000, dtype=np.float32).tobytes(), "native": b"\x7fELF" + bytes(100)}


def test_layout_follows_the_spec(tmp_path: pathlib.Path) -> None:
    data = write_artifact(tmp_path / "m.tilec", MANIFEST, SECTIONS).read_bytes()
    assert data[:8] == MAGIC
    (length,) = struct.unpack("<Q", data[8:16])
    assert HEADER_SIZE == 48 and data[16:48] == hashlib.sha256(data[48:]).digest()  # covers the manifest too
    raw = data[48:48 + length]
    manifest = json.loads(raw)
    assert raw == json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    start = -(-(48 + length) // ALIGNMENT) * ALIGNMENT
    assert data[48 + length:start] == bytes(start - 48 - length)
    sections = manifest["sections"]
    # sorted name order: native before weights, each 4096-aligned
    assert sections["native"]["offset"] == start
    assert sections["weights"]["offset"] > sections["native"]["offset"]
    for name, entry in sections.items():
        assert entry["offset"] % ALIGNMENT == 0
        assert data[entry["offset"]:entry["offset"] + entry["size"]] == SECTIONS[name]
    assert "checksum" not in manifest


def test_writes_are_deterministic(tmp_path: pathlib.Path) -> None:
    first = write_artifact(tmp_path / "a.tilec", MANIFEST, SECTIONS).read_bytes()
    reordered = dict(reversed(list(SECTIONS.items())))
    second = write_artifact(tmp_path / "b.tilec", dict(reversed(list(MANIFEST.items()))), reordered).read_bytes()
    assert first == second


def test_round_trip_is_zero_copy(tmp_path: pathlib.Path) -> None:
    path = write_artifact(tmp_path / "m.tilec", MANIFEST, SECTIONS)
    artifact = read_artifact(path)
    assert artifact.native == SECTIONS["native"]
    assert isinstance(artifact.weights, np.memmap)
    assert not artifact.weights.flags.writeable
    assert artifact.weights.ctypes.data % ALIGNMENT == 0
    np.testing.assert_array_equal(artifact.weights.view(np.float32), np.arange(5000, dtype=np.float32))
    assert artifact.manifest["build"] == MANIFEST["build"]


def test_caller_manifest_is_not_modified(tmp_path: pathlib.Path) -> None:
    manifest = json.loads(json.dumps(MANIFEST))
    write_artifact(tmp_path / "m.tilec", manifest, SECTIONS)
    assert manifest == MANIFEST


def test_empty_and_large_manifest(tmp_path: pathlib.Path) -> None:
    # A manifest longer than one page pushes the sections to the next boundary.
    manifest = dict(MANIFEST, build={"log": "x" * 9000})
    path = write_artifact(tmp_path / "m.tilec", manifest, {"native": b"", "weights": b"w"})
    artifact = read_artifact(path)
    assert artifact.manifest["sections"]["native"]["offset"] == 3 * ALIGNMENT
    assert artifact.native == b"" and artifact.weights.tobytes() == b"w"


def test_rejects_other_format_version(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="format_version"):
        write_artifact(tmp_path / "m.tilec", dict(MANIFEST, format_version=FORMAT_VERSION - 1), SECTIONS)
