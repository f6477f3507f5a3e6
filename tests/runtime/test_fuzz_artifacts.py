"""Fuzzing the artifact reader and session construction with mutated artifacts (hypothesis).

Two targets, each bounded in examples and time, derandomized so CI sees the same mutants each run:

* byte mutations (bit flips, overwritten runs, truncation, insertion, deletion) anywhere in the
  file, the header included, with the digest left as it is: every mutant must be refused with a
  TilecError (the digest covers everything after the header; the header's own fields are
  checked one by one);
* JSON edits of the manifest (replace any value by another JSON value, delete a key or a list
  entry, append one) written back with the digest recomputed, as a tool would: each mutant must
  be refused with a TilecError, or load and then run to the unedited artifact's results (or
  refuse the run with a TilecError).

Outcome rule (issue 17): a TilecError naming the problem, or a correct result; never a signal, a
hang, a MemoryError, or an exception from outside the hierarchy. The native section's bytes are
not mutated under a recomputed digest: an artifact is native code, and a "valid" artifact with
other code in it is a different program (docs/ARCHITECTURE.md: load only trusted artifacts).
"""

from __future__ import annotations

import json
import struct
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import compiler
from runtime_stub import InferenceSession, TilecError
from runtime_stub.artifact import HEADER_SIZE, file_digest

BUDGET_S = 30.0  # per target, on top of hypothesis' own example bound
FUZZ = settings(max_examples=2000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, dict[str, np.ndarray], list[np.ndarray]]:
    """A model with weights, two inputs, two outputs and a run-time check; its bytes, feeds and results."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "w")
    table = numpy_helper.from_array(rng.standard_normal((5, 3)).astype(np.float32), "table")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Tanh", ["h"], ["y"]),
             helper.make_node("Gather", ["table", "ids"], ["z"])]
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 6]),
                                              helper.make_tensor_value_info("ids", TensorProto.INT64, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 3])], [w, table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    data = compiler.compile(model, tmp_path_factory.mktemp("fuzz") / "m.tilec").read_bytes()
    feeds = {"x": rng.standard_normal((3, 6)).astype(np.float32), "ids": np.array([0, 4, 2, 1], np.int64)}
    with InferenceSession(data, threads=1) as session:
        return data, feeds, session.run(None, feeds)


class Budget:
    """Stops feeding examples once the wall-clock budget is spent (hypothesis bounds their number)."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.tried = 0

    def spent(self) -> bool:
        self.tried += 1
        return time.monotonic() > self.deadline


def _load_and_run(data: bytes, feeds: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """The outputs, or None where a TilecError refused the artifact or the run; anything else propagates."""
    try:
        with InferenceSession(data, threads=1) as session:
            return session.run(None, feeds)
    except TilecError as exc:
        assert str(exc), "a TilecError must say what is wrong"
        return None


# --- byte mutations ---------------------------------------------------------------------

MUTATION = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 2 ** 31), st.integers(0, 7)),
    st.tuples(st.just("overwrite"), st.integers(0, 2 ** 31), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("truncate"), st.integers(0, 2 ** 31), st.just(b"")),
    st.tuples(st.just("insert"), st.integers(0, 2 ** 31), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 2 ** 31), st.integers(1, 64)),
)


def _mutate_bytes(data: bytes, mutation: tuple, head: int) -> bytes:
    """``data`` mutated; half the positions fall into the first ``head`` bytes (header and manifest)."""
    kind, where, what = mutation
    out = bytearray(data)
    if not out:
        return bytes(what) if kind in ("overwrite", "insert") else b""
    position = where % min(head, len(out)) if where % 2 else where % len(out)
    if kind == "flip":
        out[position] ^= 1 << what
    elif kind == "overwrite":
        out[position:position + len(what)] = what
    elif kind == "truncate":
        del out[position:]
    elif kind == "insert":
        out[position:position] = what
    else:
        del out[position:position + what]
    return bytes(out)


def test_fuzz_byte_mutations_are_refused(original) -> None:
    data, feeds, _ = original
    head = HEADER_SIZE + struct.unpack("<Q", data[8:16])[0]
    budget = Budget(BUDGET_S)

    @FUZZ
    @given(st.lists(MUTATION, min_size=1, max_size=3))
    def target(mutations: list) -> None:
        if budget.spent():
            return
        mutant = data
        for mutation in mutations:
            mutant = _mutate_bytes(mutant, mutation, head)
        if mutant == data:
            return
        assert _load_and_run(mutant, feeds) is None, f"a damaged artifact loaded and ran: {mutations}"

    target()
    print(f"byte mutants tried: {budget.tried}")


# --- manifest edits with a recomputed digest ---------------------------------------------

JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12) | st.sampled_from([0, 1, -1, 2 ** 31, 2 ** 40, "float32", "int64", "x", "ids", "y"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)
EDIT = st.tuples(st.sampled_from(["replace", "delete", "append"]), st.lists(st.integers(0, 2 ** 16), max_size=6),
                 JSON_VALUE)


def _apply_edit(manifest: dict[str, Any], edit: tuple) -> None:
    """Walk ``path`` (indices into keys / list entries, modulo their count), then change what it reaches."""
    kind, path, value = edit
    parent: Any = None
    key: Any = None
    node: Any = manifest
    for step in path:
        if isinstance(node, dict) and node:
            parent, key = node, sorted(node)[step % len(node)]
        elif isinstance(node, list) and node:
            parent, key = node, step % len(node)
        else:
            break
        node = parent[key]
    if kind == "append" and isinstance(node, list):
        node.append(value)
    elif kind == "append" and isinstance(node, dict):
        node[f"k{len(node)}"] = value
    elif parent is None:
        return  # the root stays a dict (a non-object manifest has its own test)
    elif kind == "delete":
        del parent[key]
    else:
        parent[key] = value


def _rewrite_manifest(data: bytes, manifest: dict[str, Any]) -> bytes:
    """``data`` with ``manifest`` in place of its own, padded so the sections stay put, digest recomputed."""
    out = bytearray(data)
    (length,) = struct.unpack("<Q", data[8:16])
    first_section = -(-(HEADER_SIZE + length) // 4096) * 4096
    encoded = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    if HEADER_SIZE + len(encoded) > first_section:
        encoded = encoded[:first_section - HEADER_SIZE]  # too long to fit: a cut-off manifest, also a mutant
    out[HEADER_SIZE:first_section] = encoded + bytes(first_section - HEADER_SIZE - len(encoded))
    out[8:16] = struct.pack("<Q", len(encoded))
    out[16:HEADER_SIZE] = file_digest(np.frombuffer(bytes(out), np.uint8))
    return bytes(out)


def test_fuzz_manifest_edits_are_refused_or_harmless(original) -> None:
    data, feeds, want = original
    (length,) = struct.unpack("<Q", data[8:16])
    pristine = json.loads(data[HEADER_SIZE:HEADER_SIZE + length])
    budget = Budget(BUDGET_S)
    outcomes = {"refused": 0, "ran correctly": 0}

    @FUZZ
    @given(st.lists(EDIT, min_size=1, max_size=3))
    def target(edits: list) -> None:
        if budget.spent():
            return
        manifest = json.loads(json.dumps(pristine))
        for edit in edits:
            _apply_edit(manifest, edit)
        got = _load_and_run(_rewrite_manifest(data, manifest), feeds)
        if got is None:
            outcomes["refused"] += 1
            return
        outcomes["ran correctly"] += 1
        assert len(got) == len(want), edits
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b, err_msg=f"an edited artifact ran with other results: {edits}")

    target()
    print(f"manifest mutants tried: {budget.tried}, {outcomes}")
    assert outcomes["refused"] > 0
