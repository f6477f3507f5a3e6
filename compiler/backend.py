"""tilec as an ``onnx.backend`` backend, so ONNX's conformance suite can drive it.

``onnx.backend.test.BackendTest(compiler.backend, __name__)`` uses the module-level
``prepare`` / ``run_model`` / ``run_node`` / ``supports_device``. ``prepare`` compiles
the model into an artifact (in a compile cache) and loads it with
``runtime_stub.InferenceSession``; ``BackendRep.run`` feeds positional inputs in graph
order and returns the outputs in graph output order.

A model whose inputs have symbolic dimensions is compiled lazily, on the first
``run``, with ``input_shapes`` taken from the arrays given (one artifact per shape
signature). Likewise, when the compiler reports that a shape depends on a run-time
value (``DataDependentError``: Reduce* axes, Pad pads, OneHot depth given as graph
inputs), the graph inputs that value derives from (integer or scalar ones only: shape
operands, never data tensors) are specialized: compiled in as ``constant_inputs`` with
the values of each ``run``, one artifact per distinct value.

With ``TILEC_BACKEND_MODE=as_given`` the model is compiled once, the way a user's model arrives:
no graph input compiled in as a constant and no symbolic dim bound, and that one artifact runs
every data set (the count issue 13 asks for; the default mode specializes, as above).

Every ``run`` is described by a ``BackendRun`` (``TilecRep.last_run``; ``record_runs()``
collects those of a block of code): which graph inputs stayed run-time inputs and which
outputs the artifact computed from their data, as the manifest's ``computed_from`` says.
An output none of them reaches was folded into a constant at compile time. The conformance
runner (tests/conformance) counts a case as computed by the artifact only when every run
of it computed at least one output (``computed_by_artifact``).

The cache lives in ``$TILEC_BACKEND_CACHE`` (or a per-process temporary folder) and
is keyed by the sha256 of the serialized model, the bound shapes and the compiler's
source files (so editing the compiler invalidates it). Artifacts are
written to a private temporary name and renamed into place, so several processes
(pytest-xdist workers) may share one cache folder.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from codegen_templates import TEMPLATES
import compiler
from compiler.errors import DataDependentError
from compiler.frontend.loader import graph_inputs, node_reads
from runtime_stub import InferenceSession

_CACHE_ENV = "TILEC_BACKEND_CACHE"
_MODE_ENV = "TILEC_BACKEND_MODE"


def cache_dir() -> str:
    """The compile-cache folder: ``$TILEC_BACKEND_CACHE`` or a temporary folder removed at exit."""
    folder = os.environ.get(_CACHE_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
        return folder
    return _private_cache()


@functools.lru_cache(maxsize=1)
def _private_cache() -> str:
    folder = tempfile.mkdtemp(prefix="tilec-backend-")
    atexit.register(shutil.rmtree, folder, True)
    return folder


@functools.lru_cache(maxsize=1)
def compiler_stamp() -> str:
    """Identifies this compiler's code (version, and the sizes and mtimes of its source files and code
    templates): part of the cache key."""
    h = hashlib.sha256(compiler.__version__.encode())
    for root in (os.path.dirname(os.path.abspath(compiler.__file__)), str(TEMPLATES)):
        for folder, dirs, files in sorted(os.walk(root)):
            dirs.sort()
            for name in sorted(files):
                if name.endswith((".py", ".c", ".h", ".j2")):
                    path = os.path.join(folder, name)
                    st = os.stat(path)
                    h.update(f"{os.path.relpath(path, os.path.dirname(root))}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def compile_cached(model_bytes: bytes, input_shapes: dict[str, tuple[int, ...]] | None = None,
                   constant_inputs: dict[str, np.ndarray] | None = None) -> str:
    """Compile (or reuse) the artifact for ``model_bytes`` with ``input_shapes`` and ``constant_inputs``
    bound; returns its path."""
    key = hashlib.sha256(model_bytes)
    key.update(json.dumps(sorted((input_shapes or {}).items())).encode())
    for name, value in sorted((constant_inputs or {}).items()):
        key.update(f"{name}:{value.dtype.str}:{value.shape}".encode() + np.ascontiguousarray(value).tobytes())
    key.update(compiler_stamp().encode())
    path = os.path.join(cache_dir(), key.hexdigest() + ".tilec")
    if not os.path.exists(path):
        fd, tmp = tempfile.mkstemp(suffix=".tilec.tmp", dir=os.path.dirname(path))
        os.close(fd)
        try:
            compiler.compile(model_bytes, tmp, input_shapes=input_shapes or None,
                             constant_inputs=constant_inputs or None)
            os.replace(tmp, path)  # atomic: a concurrent writer produces the same bytes
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path


def _is_static(vi: onnx.ValueInfoProto) -> bool:
    t = vi.type
    if t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return False
    return all(d.HasField("dim_value") for d in t.tensor_type.shape.dim)


def _to_onnx_dtype(array: np.ndarray, vi: onnx.ValueInfoProto) -> np.ndarray:
    """runtime_stub's carrier arrays (uint16 bfloat16 bits; uint8 float8 / float4 / int4 / int2 codes, one
    element per byte) viewed as the ml_dtypes type ONNX's reference data uses; other arrays as they are."""
    expected = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
    carrier = array.dtype in (np.uint8, np.uint16) and array.dtype != expected
    return array.view(expected) if carrier and array.dtype.itemsize == expected.itemsize else array


def _upstream(graph: onnx.GraphProto, names: Sequence[str]) -> set[str]:
    """The graph inputs the values ``names`` are computed from."""
    producers = {out: node for node in graph.node for out in node.output if out}
    inputs = {vi.name for vi in graph_inputs(graph)}
    found: set[str] = set()
    stack, seen = list(names), set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in inputs:
            found.add(name)
        elif name in producers:
            stack.extend(node_reads(producers[name]))
    return found


def _is_shape_operand(array: np.ndarray) -> bool:
    return array.dtype.kind in "iub" or array.size <= 1


@dataclass(frozen=True)
class BackendRun:
    """What one ``TilecRep.run`` ran: the artifact, the graph inputs it took at run time (the others were
    compiled in as constants) and, from its manifest, the outputs it computed from their data and those
    folded into constants at compile time (no run-time input reaches them through the kernels)."""

    artifact: str
    runtime_inputs: tuple[str, ...]
    computed_outputs: tuple[str, ...]
    folded_outputs: tuple[str, ...]
    kernels: int

    @property
    def computed(self) -> bool:
        """True when the artifact computed at least one output from run-time input data."""
        return bool(self.computed_outputs)


def describe_artifact(path: str, manifest: Mapping[str, Any]) -> BackendRun:
    """A ``BackendRun`` for the artifact at ``path``: an output is computed when its manifest entry's
    ``computed_from`` (the inputs whose data reaches it through the kernels) is not empty."""
    computed, folded = [], []
    for entry in manifest.get("outputs", []):
        if "computed_from" in entry:
            reached = bool(entry["computed_from"])
        else:  # an artifact from before computed_from: computed when anything runs on some input
            reached = bool(manifest.get("inputs")) and bool(manifest.get("kernels"))
        (computed if reached else folded).append(entry["name"])
    return BackendRun(path, tuple(e["name"] for e in manifest.get("inputs", [])), tuple(computed), tuple(folded),
                      len(manifest.get("kernels", [])))


def computed_by_artifact(runs: Sequence[BackendRun]) -> bool:
    """Whether a conformance case's outputs were computed by the compiled artifact: it ran at least once and
    every run computed at least one output from run-time input data. False: what it checked was folded
    at compile time (or it never ran an artifact)."""
    return bool(runs) and all(run.computed for run in runs)


_recorders: list[list[BackendRun]] = []


@contextlib.contextmanager
def record_runs() -> Iterator[list[BackendRun]]:
    """Collects a ``BackendRun`` for every ``TilecRep.run`` (of any rep) inside the block."""
    runs: list[BackendRun] = []
    _recorders.append(runs)
    try:
        yield runs
    finally:
        _recorders.remove(runs)


class TilecRep(BackendRep):
    """A prepared model: compiled artifacts per input-shape (and specialized-value) signature."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self._bytes = model.SerializeToString()
        self._graph = model.graph
        self._inputs = graph_inputs(model.graph)
        self._outputs = list(model.graph.output)
        self._static = all(_is_static(vi) for vi in self._inputs)
        self._needed: set[str] = set()  # values the compiler asked to know at compile time
        self._sessions: dict[tuple, tuple[InferenceSession, BackendRun]] = {}
        self.last_run: BackendRun | None = None  # what the latest ``run`` ran
        self._as_given = os.environ.get(_MODE_ENV, "") == "as_given"
        if self._as_given:
            path = compile_cached(self._bytes)
            session = InferenceSession(path, threads=1)
            self._sessions[()] = session, describe_artifact(path, session.manifest)
        elif self._static:
            try:
                self._session({})
            except DataDependentError as exc:
                self._needed.update(exc.values)  # compiled per value, on the first run

    def _session(self, feed: dict[str, np.ndarray]) -> tuple[tuple[InferenceSession, BackendRun], set[str]]:
        if self._as_given:
            return self._sessions[()], set()
        while True:
            fixed = sorted(n for n in _upstream(self._graph, sorted(self._needed))
                           if n in feed and _is_shape_operand(feed[n]))
            if self._needed and not fixed:
                raise DataDependentError(f"the model needs the run-time value(s) of {sorted(self._needed)} "
                                         "at compile time", values=tuple(self._needed))
            shapes = {} if self._static else {vi.name: tuple(int(d) for d in feed[vi.name].shape)
                                              for vi in self._inputs if vi.name not in fixed}
            constants = {n: feed[n] for n in fixed}
            signature = (tuple(sorted(shapes.items())),
                         tuple((n, feed[n].dtype.str, feed[n].shape, feed[n].tobytes()) for n in fixed))
            if signature in self._sessions:
                return self._sessions[signature], set(fixed)
            try:
                path = compile_cached(self._bytes, shapes, constants)
            except DataDependentError as exc:
                if not feed or set(exc.values) <= self._needed:
                    raise
                self._needed.update(exc.values)
                continue
            session = InferenceSession(path, threads=1)
            self._sessions[signature] = session, describe_artifact(path, session.manifest)
            return self._sessions[signature], set(fixed)

    def run(self, inputs: Any, **kwargs: Any) -> list[np.ndarray]:
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            inputs = list(inputs)
            if len(inputs) != len(self._inputs):
                raise ValueError(f"the model takes {len(self._inputs)} input(s), got {len(inputs)}")
            feed = {vi.name: value for vi, value in zip(self._inputs, inputs)}
        feed = {k: v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in feed.items()}
        (session, described), fixed = self._session(feed)
        results = session.run(None, {k: v for k, v in feed.items() if k not in fixed})
        self.last_run = described
        for runs in _recorders:
            runs.append(described)
        return [_to_onnx_dtype(r, vi) for r, vi in zip(results, self._outputs)]


class TilecBackend(Backend):
    """``onnx.backend.base.Backend`` over tilec: compile ahead of time, run with runtime_stub."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> TilecRep:
        if not cls.supports_device(device):
            raise ValueError(f"tilec's backend runs on CPU only, not {device!r}")
        return TilecRep(model)

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any) -> list[np.ndarray]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
                 **kwargs: Any) -> list[np.ndarray]:
        """Run one node by wrapping it in a one-node model (needs ``outputs_info`` for the output types)."""
        if outputs_info is None:
            raise NotImplementedError("run_node needs outputs_info (dtype, shape) for each output")
        arrays = [np.asarray(x) for x in inputs]
        graph_in = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                    for name, a in zip(node.input, arrays)]
        graph_out = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt)),
                                                        shape)
                     for name, (dt, shape) in zip(node.output, outputs_info)]
        graph = onnx.helper.make_graph([node], "run_node", graph_in, graph_out)
        opset = kwargs.get("opset_version", onnx.defs.onnx_opset_version())
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
        return cls.run_model(model, arrays, device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


prepare = TilecBackend.prepare
run_model = TilecBackend.run_model
run_node = TilecBackend.run_node
supports_device = TilecBackend.supports_device
is_compatible = TilecBackend.is_compatible
