"""Reading .tilec artifacts (file format version 2, docs/ARCHITECTURE.md).

Contract:

* The format constants live here (``MAGIC``, ``FORMAT_VERSION``, ``ALIGNMENT``,
  ``HEADER_SIZE``); the compiler's writer imports them, never the other way round.
* ``read_artifact(source)`` accepts a path or the artifact's bytes and returns an
  ``Artifact`` whose sections are read-only numpy views of the file: for a path they
  are slices of one ``np.memmap`` (no copy; the weights are paged in on demand).
* Integrity: the header holds the sha256 of every byte after it (manifest, padding, sections),
  so no byte the runtime or the native code relies on can change unnoticed; the session also
  cross-checks the manifest against the signature the native code declares (runtime_stub/signature.py).
* Failures: ``NotAnArtifactError`` (wrong magic; the message says what the file looks
  like), ``CorruptArtifactError`` (truncated, bad manifest JSON, digest mismatch),
  ``IncompatibleArtifactError`` (a format version this runtime does not know).
* ``Artifact.checks``: the run-time checks (``manifest["checks"]``): after a run, each
  ``RunCheck``'s flag byte at ``offset`` in the workspace is 0, or the run failed with
  its ``message`` (e.g. an index out of range; the executors raise ``InvalidInputError``).

Only numpy and the standard library are used.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Union

import numpy as np

from runtime_stub.errors import CorruptArtifactError, IncompatibleArtifactError, NotAnArtifactError

MAGIC = b"TILEC\x00\x02\n"
MAGIC_PREFIX = MAGIC[:6]  # byte 6 is the format generation; another value is another format
FORMAT_VERSION = 2
ALIGNMENT = 4096
DIGEST_SIZE = 32  # sha256
HEADER_SIZE = 16 + DIGEST_SIZE  # magic + u64 manifest length + digest of everything after the header
WEIGHTS_SECTION = "weights"
NATIVE_SECTION = "native"

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


def align_up(value: int, alignment: int = ALIGNMENT) -> int:
    return (value + alignment - 1) // alignment * alignment


def data_start(manifest_length: int) -> int:
    """File offset where the section area (and the checksummed bytes) begins."""
    return align_up(HEADER_SIZE + manifest_length)


@dataclass(frozen=True)
class RunCheck:
    offset: int  # of the flag byte in the workspace
    message: str


@dataclass(frozen=True)
class Artifact:
    """A parsed artifact. ``sections`` maps names to read-only uint8 views of the file."""

    manifest: dict[str, Any]
    sections: Mapping[str, np.ndarray]
    path: pathlib.Path | None = None

    @property
    def weights(self) -> np.ndarray:
        """The weights section (page-aligned inside the file), empty if the model has none."""
        section = self.sections.get(WEIGHTS_SECTION)
        return _readonly(np.zeros(0, np.uint8)) if section is None else section

    @property
    def checks(self) -> list[RunCheck]:
        workspace = int(self.manifest.get("workspace_size", 0))
        result = []
        for entry in self.manifest.get("checks", []):
            try:
                check = RunCheck(int(entry["offset"]), str(entry["message"]))
            except (TypeError, KeyError, ValueError):
                raise CorruptArtifactError(f"the manifest has a malformed run-time check: {entry!r}") from None
            if not 0 <= check.offset < workspace:
                raise CorruptArtifactError(f"a run-time check's flag (offset {check.offset}) lies outside the "
                                           f"{workspace}-byte workspace")
            result.append(check)
        return result

    @property
    def native(self) -> bytes:
        """The native shared object (a copy: it is small and ctypes needs a file anyway)."""
        section = self.sections.get(NATIVE_SECTION)
        return b"" if section is None else section.tobytes()


def read_artifact(source: Source, verify_digest: bool = True) -> Artifact:
    """Parse and validate an artifact from a path or from its bytes."""
    buffer, label, path = _open(source)
    _check_magic(buffer, label)
    if len(buffer) < HEADER_SIZE:
        raise CorruptArtifactError(f"{label} is truncated: {len(buffer)} bytes, shorter than the header")
    (manifest_length,) = struct.unpack("<Q", buffer[8:16].tobytes())
    if HEADER_SIZE + manifest_length > len(buffer):
        raise CorruptArtifactError(
            f"{label} is truncated: the manifest needs {HEADER_SIZE + manifest_length} bytes "
            f"but the file has {len(buffer)}"
        )
    if verify_digest:
        _verify_digest(buffer, label)
    manifest = _parse_manifest(buffer[HEADER_SIZE:HEADER_SIZE + manifest_length], label)
    _check_version(manifest, label)
    _check_fields(manifest, label)
    start = data_start(manifest_length)
    layout = _section_layout(manifest, label, start, len(buffer))
    sections = {name: _readonly(buffer[off:off + size]) for name, (off, size) in layout.items()}
    return Artifact(manifest=manifest, sections=sections, path=path)


def describe_content(head: bytes) -> str:
    """A best guess at what a non-artifact file is, from its first bytes."""
    if not head:
        return "an empty file"
    if head.startswith(b"\x7fELF"):
        return "an ELF binary (a native executable or shared object), not a .tilec artifact"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (e.g. a PyTorch checkpoint), not a .tilec artifact"
    if head.startswith(b"\x93NUMPY"):
        return "a numpy .npy file, not a .tilec artifact"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (e.g. a Keras model), not a .tilec artifact"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip file, not a .tilec artifact"
    if head[:1] == b"\x08":
        # ModelProto field 1 (ir_version, varint) encodes as tag byte 0x08.
        return "an ONNX model (protobuf); compile it with tilec first to get a .tilec artifact"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON document, not a .tilec artifact"
    return f"unknown content (first bytes {head[:8].hex(' ')}), not a .tilec artifact"


def _open(source: Source) -> tuple[np.ndarray, str, pathlib.Path | None]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return np.frombuffer(source, dtype=np.uint8), "the given artifact bytes", None
    path = pathlib.Path(os.fspath(source))
    label = f"'{path}'"
    if path.stat().st_size == 0:  # np.memmap cannot map an empty file
        raise NotAnArtifactError(f"{label} is not a tilec artifact: it is an empty file")
    return np.memmap(path, dtype=np.uint8, mode="r"), label, path


def _check_magic(buffer: np.ndarray, label: str) -> None:
    head = buffer[:len(MAGIC)].tobytes()
    if head == MAGIC:
        return
    if head.startswith(MAGIC_PREFIX) and len(head) == len(MAGIC):
        newer = "upgrade the runtime" if head[6] > MAGIC[6] else "rebuild it with this tilec"
        raise IncompatibleArtifactError(
            f"{label} uses artifact format generation {head[6]}, but this runtime reads only "
            f"format {FORMAT_VERSION}: {newer}"
        )
    if MAGIC.startswith(head):
        raise CorruptArtifactError(f"{label} is truncated: only {len(head)} bytes")
    raise NotAnArtifactError(f"{label} is not a tilec artifact: it looks like {describe_content(head)}")


def _parse_manifest(raw: np.ndarray, label: str) -> dict[str, Any]:
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptArtifactError(f"{label} has an unreadable manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise CorruptArtifactError(f"{label} has a manifest that is not a JSON object")
    return manifest


def _check_version(manifest: dict[str, Any], label: str) -> None:
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise IncompatibleArtifactError(
            f"{label} has format_version {version!r}, but this runtime reads only version "
            f"{FORMAT_VERSION}; rebuild it with a matching tilec or upgrade the runtime"
        )


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _is_tensor(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("shape"), list)
            and all(_is_count(d) or (isinstance(d, str) and d) for d in entry["shape"]))


def _is_size_variable(d: dict) -> bool:
    """``{name, min, max}``, or a value size with ``value: [input, index]`` (which may be negative)."""
    if not isinstance(d.get("name"), str):
        return False
    if "value" not in d:
        return _is_count(d.get("min")) and _is_count(d.get("max"))
    value = d["value"]
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and _is_count(value[1])
            and all(isinstance(d.get(k), int) and not isinstance(d.get(k), bool) for k in ("min", "max")))


def _check_fields(manifest: dict[str, Any], label: str) -> None:
    """The fields every executor reads have the types format 2 gives them (the executors' own checks,
    and the native signature, come after)."""
    problems = []
    for role in ("inputs", "outputs"):
        entries = manifest.get(role)
        if not isinstance(entries, list) or not all(_is_tensor(e) for e in entries):
            problems.append(f"'{role}' is not a list of {{name, dtype, shape}} tensors")
        elif role == "inputs" and len({e["name"] for e in entries}) != len(entries):
            # A graph may list one output twice (onnxruntime returns it twice); an input is fed once.
            problems.append("'inputs' repeats a name")
    dims = manifest.get("dims", [])
    if not isinstance(dims, list) or not all(isinstance(d, dict) and _is_size_variable(d) for d in dims):
        problems.append("'dims' is not a list of {name, min, max} size variables")
    if not isinstance(manifest.get("size_constraints", []), list) or not all(
            isinstance(m, str) for m in manifest.get("size_constraints", [])):
        problems.append("'size_constraints' is not a list of messages")
    if not _is_count(manifest.get("workspace_size")):
        problems.append("'workspace_size' is not a non-negative integer")
    if not isinstance(manifest.get("kernels"), list) or not all(isinstance(k, dict) for k in manifest["kernels"]):
        problems.append("'kernels' is not a list of objects")
    target = manifest.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("kind"), str):
        problems.append("'target' is not an object with a 'kind'")
    elif not all(isinstance(target.get(k, ""), str) for k in ("arch", "triple", "cpu")) or not (
            isinstance(target.get("features", []), list) and all(isinstance(f, str) for f in target.get("features", []))):
        problems.append("'target' has an arch, triple, cpu or features list that is not text")
    if not isinstance(manifest.get("checks", []), list):
        problems.append("'checks' is not a list")
    if not isinstance(manifest.get("profile", False), bool):
        problems.append("'profile' is not true or false")
    if problems:
        raise CorruptArtifactError(f"{label} has a malformed manifest: {'; '.join(problems)}")


def _section_layout(manifest: dict[str, Any], label: str, start: int, file_size: int) -> dict[str, tuple[int, int]]:
    """The sections' (offset, size), which must be the writer's one canonical layout: sorted by name,
    the first at the page after the manifest, each next at the page after the previous one, the
    last ending the file. So no edit can point a section at other bytes of the file."""
    sections = manifest.get("sections")
    if not isinstance(sections, dict):
        raise CorruptArtifactError(f"{label} has no 'sections' table in its manifest")
    layout: dict[str, tuple[int, int]] = {}
    expected = start
    for name in sorted(sections):
        entry = sections[name]
        try:
            offset, size = entry["offset"], entry["size"]
        except (TypeError, KeyError):
            raise CorruptArtifactError(f"{label}: section {name!r} has no valid offset/size") from None
        if type(offset) is not int or type(size) is not int or size < 0 or offset != expected:
            raise CorruptArtifactError(
                f"{label}: section {name!r} has offset {offset!r} and size {size!r}; the layout puts it at {expected}")
        if offset + size > file_size:
            raise CorruptArtifactError(
                f"{label} is truncated: section {name!r} ends at byte {offset + size} "
                f"but the file has only {file_size} bytes"
            )
        layout[name] = (offset, size)
        expected = align_up(offset + size)
    end = max((off + size for off, size in layout.values()), default=start)
    if end != file_size:
        raise CorruptArtifactError(f"{label} has {file_size - end} bytes after its last section")
    return layout


def file_digest(buffer: np.ndarray | memoryview) -> bytes:
    """The digest the header holds: sha256 of every byte after the header."""
    # hashlib reads the (memory-mapped) buffer directly: no copy of the weights.
    return hashlib.sha256(memoryview(buffer)[HEADER_SIZE:]).digest()


def _verify_digest(buffer: np.ndarray, label: str) -> None:
    stored = buffer[16:HEADER_SIZE].tobytes()
    actual = file_digest(buffer)
    if actual != stored:
        raise CorruptArtifactError(
            f"{label} is corrupt: its sha256 digest does not match its content (header says {stored.hex()}, "
            f"content hashes to {actual.hex()}); the file was modified or damaged, rebuild or re-copy it"
        )


def _readonly(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view
