"""Shared helpers for numerical op tests: build small ONNX models, compile them once, run, compare.

A test describes a model with ``node_model`` (one node) or ``graph_model`` (a
chain of nodes), then calls ``check_model``: it runs onnx's ReferenceEvaluator
on the same feeds, compiles the model with ``compiler.compile`` (once per
distinct model: artifacts are cached by the SHA-256 of the model bytes), runs
the artifact with ``runtime_stub.InferenceSession`` and compares every output.

Output types and shapes are taken from the reference run, so a test never
spells an output shape by hand (and a wrong shape in the test cannot mask a
wrong shape in the compiler).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import compiler
import runtime_stub

# Default float32 tolerances; ops that accumulate long sums or go through libm may loosen them.
RTOL = 1e-4
ATOL = 1e-5

_ONNX_TYPES = {np.dtype(k): v for k, v in (
    ("float32", onnx.TensorProto.FLOAT), ("float64", onnx.TensorProto.DOUBLE), ("float16", onnx.TensorProto.FLOAT16),
    ("int8", onnx.TensorProto.INT8), ("int16", onnx.TensorProto.INT16), ("int32", onnx.TensorProto.INT32),
    ("int64", onnx.TensorProto.INT64), ("uint8", onnx.TensorProto.UINT8), ("uint16", onnx.TensorProto.UINT16), ("bool", onnx.TensorProto.BOOL),
)}


def rand(shape: Sequence[int], seed: int = 0, low: float | None = None, high: float | None = None,
         dtype: str = "float32") -> np.ndarray:
    """Reproducible random data: standard normal, or uniform in [low, high) when bounds are given."""
    rng = np.random.default_rng(seed)
    if low is not None:
        data = rng.uniform(low, high if high is not None else low + 1.0, size=tuple(shape))
    else:
        data = rng.standard_normal(tuple(shape))
    return data.astype(dtype)


def _value_info(name: str, array_or_dtype: Any, shape: Sequence[int] | None = None) -> onnx.ValueInfoProto:
    if isinstance(array_or_dtype, np.ndarray):
        return helper.make_tensor_value_info(name, _ONNX_TYPES[array_or_dtype.dtype], list(array_or_dtype.shape))
    return helper.make_tensor_value_info(name, _ONNX_TYPES[np.dtype(array_or_dtype)], shape)


def graph_model(nodes: Sequence[onnx.NodeProto], feeds: Mapping[str, np.ndarray], outputs: Sequence[str],
                consts: Mapping[str, np.ndarray] | None = None, opset: int = 17,
                expected: Sequence[np.ndarray] | None = None) -> onnx.ModelProto:
    """A model of ``nodes`` with graph inputs ``feeds`` (name → example array) and initializers ``consts``.

    The outputs' types and shapes come from running the reference evaluator once on ``feeds``,
    or from ``expected`` where the reference evaluator itself is wrong for the case.
    """
    consts = dict(consts or {})
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    inputs = [_value_info(k, v) for k, v in feeds.items()]

    def build(out_infos: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
        graph = helper.make_graph(list(nodes), "test", inputs, out_infos, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = min(model.ir_version, 8)  # readable by every onnx/ort this repo pins
        return model

    # Untyped outputs are enough for the reference evaluator; it tells us the real types.
    if expected is None:
        draft = build([helper.make_empty_tensor_value_info(name) for name in outputs])
        expected = ReferenceEvaluator(draft).run(None, dict(feeds))
    results = expected
    model = build([_value_info(name, np.asarray(r)) for name, r in zip(outputs, results)])
    onnx.checker.check_model(model)
    return model


def node_model(op_type: str, inputs: Sequence[str], feeds: Mapping[str, np.ndarray],
               consts: Mapping[str, np.ndarray] | None = None, attrs: Mapping[str, Any] | None = None,
               opset: int = 17, outputs: Sequence[str] = ("y",),
               expected: Sequence[np.ndarray] | None = None) -> onnx.ModelProto:
    """A one-node model; ``inputs`` lists the node's input names in order ("" for an omitted optional one)."""
    node = helper.make_node(op_type, list(inputs), list(outputs), name=op_type.lower(), **dict(attrs or {}))
    return graph_model([node], feeds, outputs, consts, opset, expected)


# --- compile cache ------------------------------------------------------------------------


def f32(name: str, shape: Sequence[int | str | None]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape)


def i64(name: str, shape: Sequence[int | str | None]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, onnx.TensorProto.INT64, shape)


def bool_scalar(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, onnx.TensorProto.BOOL, [])


def model_of(nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
             outputs: Sequence[onnx.ValueInfoProto], inits: Sequence[onnx.TensorProto] = (),
             opset: int = 17) -> onnx.ModelProto:
    """A model of graph ``g`` with the given typed inputs and outputs (IR version 8, the default domain at
    ``opset``)."""
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def default_cache_dir() -> pathlib.Path:
    """A per-process fallback cache (the conftest fixture gives a per-test-session one)."""
    path = pathlib.Path(tempfile.gettempdir()) / f"tilec-test-cache-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def compiled(model: onnx.ModelProto, cache_dir: pathlib.Path | None = None, **compile_options: Any) -> pathlib.Path:
    """The artifact of ``model``, compiled on the first request and reused for identical model bytes."""
    cache_dir = cache_dir or default_cache_dir()
    data = model.SerializeToString(deterministic=True)
    key = hashlib.sha256(data + repr(sorted(compile_options.items())).encode()).hexdigest()[:24]
    path = cache_dir / f"{key}.tilec"
    if not path.exists():
        # Write under a unique name and rename: xdist workers may share the cache directory.
        fd, tmp = tempfile.mkstemp(suffix=".tilec", dir=cache_dir)
        os.close(fd)
        try:
            compiler.compile(data, tmp, **compile_options)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def run_compiled(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], threads: int = 1,
                 cache_dir: pathlib.Path | None = None) -> list[np.ndarray]:
    with runtime_stub.InferenceSession(compiled(model, cache_dir), threads=threads) as session:
        return session.run(None, dict(feeds))


def reference(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(r) for r in ReferenceEvaluator(model).run(None, dict(feeds))]


def check_model(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], rtol: float = RTOL, atol: float = ATOL,
                threads: Iterable[int] = (1,), cache_dir: pathlib.Path | None = None,
                expected: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """Compile and run ``model`` with each thread count and compare against the reference; returns it.

    ``expected`` replaces the reference evaluator's results (for cases it gets wrong).
    """
    expected = reference(model, feeds) if expected is None else [np.asarray(e) for e in expected]
    for n in threads:
        compare_outputs(model, run_compiled(model, feeds, n, cache_dir), expected, rtol, atol, f"threads={n}")
    return expected


def compare_outputs(model: onnx.ModelProto, got: Sequence[np.ndarray], expected: Sequence[np.ndarray],
                    rtol: float, atol: float, how: str) -> None:
    """Same shapes and dtypes, integers exactly, floats within ``rtol``/``atol``; ``how`` names the run."""
    assert len(got) == len(expected)
    for k, (g, e) in enumerate(zip(got, expected)):
        what = f"output {k} ({model.graph.output[k].name}), {how}"
        assert g.shape == e.shape, f"{what}: shape {g.shape} != reference {e.shape}"
        assert g.dtype == e.dtype, f"{what}: dtype {g.dtype} != reference {e.dtype}"
        if e.dtype.kind in "biu":
            np.testing.assert_array_equal(g, e, err_msg=what)
        else:
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=what)


def assert_close_to_max(got: Sequence[np.ndarray], want: Sequence[np.ndarray], tolerance: float,
                        what: str = "") -> None:
    """Whole-model check: every ``max|got - want| <= tolerance * max|want|`` (finite, non-zero want)."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape, f"{what}: shape {g.shape} != {w.shape}"
        assert np.isfinite(w).all()
        scale = float(np.abs(w).max())
        assert scale > 0
        err = float(np.abs(g - w).max())
        assert err <= tolerance * scale, f"{what}: max error {err:.3g} vs max |ort| {scale:.3g}"


def ort_reference(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's results, for the few cases where onnx's ReferenceEvaluator is known to be wrong."""
    import pytest

    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return [np.asarray(r) for r in session.run(None, dict(feeds))]


def strings_and_maps_model() -> onnx.ModelProto:
    """LabelEncoder(x: string[n]) -> y: string[n] ('a' -> 'yes', 'bb' -> 'no', else '?') and ZipMap's maps of a
    constant [1, 2] of 0.5 with keys 3 and 4: a string input and output and a list-of-dicts output."""
    encode = helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", keys_strings=["a", "bb"],
                              values_strings=["yes", "no"], default_string="?")
    probs = helper.make_node("Constant", [], ["p"], value=numpy_helper.from_array(np.full((1, 2), 0.5, np.float32)))
    zipmap = helper.make_node("ZipMap", ["p"], ["maps"], domain="ai.onnx.ml", classlabels_int64s=[3, 4])
    maps = helper.make_value_info("maps", helper.make_sequence_type_proto(helper.make_map_type_proto(
        onnx.TensorProto.INT64, helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, None))))
    graph = helper.make_graph([encode, probs, zipmap], "text",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.STRING, ["n"])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.STRING, ["n"]), maps])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
