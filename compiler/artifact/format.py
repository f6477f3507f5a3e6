"""Writing .tilec artifacts (file format version 2, docs/ARCHITECTURE.md).

Contract: ``write_artifact(path, manifest, sections)`` writes the header, the manifest
and the sections, and returns the path. The output is a pure function of its inputs:

* the manifest is serialised with ``json.dumps(sort_keys=True, separators=(",", ":"))``;
* sections are laid out in sorted name order, each at a 4096-aligned file offset,
  zero-padded in between;
* ``manifest["sections"]`` is filled in here (any value the caller passed is replaced);
  the header's digest is the sha256 of every byte after the header: manifest, padding and
  sections, so the manifest is as protected as the code and weights.

The file is written to a temporary name next to ``path`` and renamed, so a reader never
sees half an artifact. The format constants come from ``runtime_stub.artifact``, the
reader, so writer and reader cannot disagree.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pathlib
import struct
import tempfile
from typing import Any, Mapping, Union

from runtime_stub.artifact import ALIGNMENT, FORMAT_VERSION, HEADER_SIZE, MAGIC, align_up, data_start

Buffer = Union[bytes, bytearray, memoryview]
_ZERO_PAGE = bytes(ALIGNMENT)


def serialize_manifest(manifest: Mapping[str, Any]) -> bytes:
    """The canonical manifest bytes (sorted keys, no whitespace)."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")


def write_artifact(path: str | os.PathLike[str], manifest: Mapping[str, Any], sections: Mapping[str, Buffer]) -> pathlib.Path:
    """Write an artifact with ``manifest`` and ``sections`` to ``path``; return the path."""
    final = copy.deepcopy(dict(manifest))
    if final.setdefault("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"this writer produces format_version {FORMAT_VERSION}, not {final['format_version']}")
    views = {name: memoryview(sections[name]).cast("B") for name in sorted(sections)}
    sizes = {name: view.nbytes for name, view in views.items()}
    relative = _relative_layout(sizes)
    manifest_bytes = _fix_layout(final, relative, sizes)
    out = pathlib.Path(path)
    _write_atomically(out, manifest_bytes, views, relative)
    return out


def _relative_layout(sizes: Mapping[str, int]) -> dict[str, int]:
    """Offsets of each section relative to the start of the section area, in sorted order."""
    offsets: dict[str, int] = {}
    position = 0
    for name in sorted(sizes):
        offsets[name] = position
        position = align_up(position + sizes[name])
    return offsets


def _padding_runs(views: Mapping[str, memoryview], relative: Mapping[str, int]):
    """Yield the section area as a sequence of buffers: zero padding and section bytes."""
    position = 0
    for name, view in views.items():
        gap = relative[name] - position
        while gap > 0:
            chunk = min(gap, ALIGNMENT)
            yield _ZERO_PAGE[:chunk]
            gap -= chunk
        yield view
        position = relative[name] + view.nbytes


def _fix_layout(manifest: dict[str, Any], relative: Mapping[str, int], sizes: Mapping[str, int]) -> bytes:
    """Fill in the sections; iterate because the offsets depend on the manifest's own length."""
    manifest.pop("checksum", None)  # format 1's; the header's digest replaces it
    start = data_start(0)
    while True:
        manifest["sections"] = {name: {"offset": start + relative[name], "size": sizes[name]} for name in relative}
        encoded = serialize_manifest(manifest)
        needed = data_start(len(encoded))
        if needed == start:
            return encoded
        start = needed  # only grows, so this settles after a step or two


def _write_atomically(out: pathlib.Path, manifest_bytes: bytes, views: Mapping[str, memoryview],
                      relative: Mapping[str, int]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    body = [manifest_bytes, bytes(data_start(len(manifest_bytes)) - HEADER_SIZE - len(manifest_bytes)),
            *_padding_runs(views, relative)]
    digest = hashlib.sha256()
    for run in body:
        digest.update(run)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC)
            f.write(struct.pack("<Q", len(manifest_bytes)))
            f.write(digest.digest())
            for run in body:
                f.write(run)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
