"""The signature an artifact's native code declares: the facts its generated code hard-codes.

Contract: ``native_signature(manifest, weights_size)`` is the canonical bytes (JSON, sorted
keys, no spaces) of what the native code was compiled to read and write: the ABI version, the
name, element type and native shape of every input and output in order (a symbolic dim by its name or
expression; ``native_shape``: a string tensor's code-point axis last), an output's map keys (ZipMap), the dict an input is made of (DictVectorizer's), the size variables with their ranges (and, for a value size, the input element it is read from), the static workspace size, the weights
section's size, the kernel count (profiling counters) and the run-time checks' flag offsets. The
compiler embeds it in the shared object, returned by ``tilec_signature()``; the CPU executor
recomputes it from the manifest it read and refuses the artifact with ``CorruptArtifactError``
when the two differ, so an edited manifest can never make the runtime hand the native code
buffers of other sizes than it was compiled for. Raises ``CorruptArtifactError`` for a manifest
whose fields are malformed. Only the standard library.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from runtime_stub.errors import CorruptArtifactError

ABI_VERSION = 3


def native_shape(entry: Mapping[str, Any]) -> list[Any]:
    """An input's or output's shape as its native buffer has it: a string tensor's ``chars`` axis last."""
    shape = list(entry["shape"])
    return [*shape, entry["chars"]] if "chars" in entry else shape


def _io_facts(entry: Mapping[str, Any]) -> list[Any]:
    facts = [entry["name"], entry["dtype"], native_shape(entry)]
    return [*facts, *(entry[k] for k in ("map_keys", "map") if k in entry)]


def native_signature(manifest: Mapping[str, Any], weights_size: int) -> bytes:
    try:
        facts = {
            "abi": ABI_VERSION,
            "inputs": [_io_facts(e) for e in manifest["inputs"]],
            "outputs": [_io_facts(e) for e in manifest["outputs"]],
            "workspace_size": manifest["workspace_size"],
            "dims": [[d["name"], d["min"], d["max"], *(["value", d["value"]] if "value" in d else [])]
                     for d in manifest.get("dims", [])],
            "size_constraints": len(manifest.get("size_constraints", [])),
            "weights_size": weights_size,
            "kernels": len(manifest["kernels"]),
            "profile": bool(manifest.get("profile", False)),
            "checks": [c["offset"] for c in manifest.get("checks", [])],
        }
    except (KeyError, TypeError, IndexError) as exc:
        raise CorruptArtifactError(f"the manifest lacks what the native code needs ({type(exc).__name__}: {exc})") from None
    return json.dumps(facts, sort_keys=True, separators=(",", ":")).encode("utf-8")
