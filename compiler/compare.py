"""Node-by-node comparison of tilec with onnxruntime: where a model's numbers first go wrong.

``compare_model(model, inputs)`` compiles ``model`` with every intermediate value it can observe
made a graph output, runs the artifact and onnxruntime (with the same values exposed as outputs)
on the same inputs, and returns a :class:`Comparison`: one :class:`Row` per node output in the
model's topological order, and the first row whose values differ beyond tolerance
(``Comparison.first_divergence``). ``tilec compare`` prints it (compiler/cli.py). It is what
Polygraphy's ``--validate`` / ``polygraphy run --onnx-outputs mark all`` and onnx-mlir's
``RunONNXModel.py`` do for their compilers.

Contract:

* **What is compared.** Every non-empty output of every top-level node, under its ONNX name.
  Skipped, each with the reason in ``Row.note``: outputs nothing reads that are not model
  outputs (they cannot change the result, and exposing them could ask a lowering for an optional
  output it does not make, e.g. LayerNormalization's Mean), values that are not tensors
  (sequences, optionals, maps), outputs of random ops (RandomNormal, ...: two samples), values
  whose type neither ONNX shape inference nor onnxruntime knows, and, with a separate
  ``reference``, names the reference model does not have. Values inside subgraphs (If branches,
  Loop/Scan bodies) are not observable; the control-flow node's own outputs are compared. Nodes
  the frontend expands or rewrites (If, Loop, Scan, RNN/GRU/LSTM, com.microsoft contrib ops) are
  compared at the names that survive, which are their ONNX outputs: the expansion keeps graph
  outputs' names. Graph inputs and initializers are not rows (they are the same bytes on both
  sides).
* **It changes what is compiled.** Every exposed value is a graph output, so it must be
  materialized in an output buffer: tilec cannot fuse through it (an elementwise op into its
  producer, a BatchNormalization into its Conv), nodes that would be dead stay alive, and values
  folded at compile time are copied out of the weights. The kernels compared are those of this
  debugging build, not the ones ``tilec compile`` makes for the plain model; a bug that only the
  plain build's fusion causes shows only in the model outputs. ``Comparison.kernels`` counts the
  kernels of the debugging build.
* **Folded values.** A value tilec computed at compile time (a Constant node, a Shape chain, any
  node whose inputs were all constants) is still compared, against onnxruntime's run-time value,
  and marked ``Row.folded``.
* **Inputs.** ``inputs`` maps input names to arrays; names the model does not have, and arrays
  whose dtype, rank or static dimensions disagree with the model, raise ``InvalidInputError``
  naming the input and what the model takes, before anything is compiled. An array binds the
  input's symbolic dimensions (as ``input_shapes`` does). Inputs not given get the reproducible
  random arrays ``tilec run`` / ``tilec bench`` make (:func:`compiler.bench.random_inputs`,
  ``seed``); ``Comparison.random_inputs`` names them. ``constant_inputs`` are compiled in, as with
  ``tilec compile --constant-input``, and fed to onnxruntime.
* **Tolerance.** Floating-point values (bfloat16, float8, float4 as their float32 values) are
  within tolerance where ``|tilec - ref| <= atol + rtol * scale``, ``scale`` being the largest
  finite ``|ref|`` of the whole tensor (the rule tilec's model tests use: float rounding grows
  with a tensor's magnitude, so a small element of a large tensor carries the large elements'
  error), or, with ``per_element=True``, each element's own ``|ref|`` (numpy's ``isclose``,
  strict enough that deep networks diverge by rounding alone); NaN matches NaN and an infinity the same infinity, while NaN or an infinity against
  anything else is beyond any tolerance (its absolute error counts as infinite). Integer and bool
  values must be equal (no tolerance). ``max_abs`` is the largest ``|tilec - ref|``, ``max_rel``
  the largest ``|tilec - ref| / |ref|`` (0/0 counts as 0 and x/0 as infinite, so any error where
  the reference is exactly zero shows as ``inf``: the tolerance test, not ``max_rel``, decides),
  ``first_bad`` the row-major index of the first element beyond tolerance. A shape or dtype that
  differs is a divergence too, with both in ``Row.note``.
* **Memory.** All exposed values of one build are alive at once, in both runtimes and in this
  process. ``chunk=N`` compiles and runs the model once per N exposed values instead (each build
  keeps only what those N need), which bounds memory at the cost of a compile per chunk.
* **Errors.** Bad inputs raise ``InvalidInputError`` (above), an input left with a symbolic
  dimension ``ShapeError``; onnxruntime missing or unable to load or run the reference raises
  ``CompareError``; a model tilec cannot compile with its intermediates exposed raises the
  ``CompileError`` subclass it raised, its message saying so. All are ``TilecError``s.
"""

from __future__ import annotations

import enum
import math
import pathlib
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import ml_dtypes
import numpy as np
import onnx
from onnx import helper

from compiler import bench
from compiler.dtypes import DType
from compiler.errors import CompileError, InvalidInputError, ShapeError, TilecError

if TYPE_CHECKING:
    from compiler.frontend.loader import ModelSource

# compiler.frontend (imported where used) pulls in every expansion: not at the CLI's start-up.

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-4

#: The note every report carries: what exposing the intermediates does to the build.
FUSION_NOTE = ("every compared value is a graph output of this build, so each is materialized: tilec fuses "
               "less than for the plain model, and the kernels compared are this debugging build's")

#: onnxruntime's spelling (NodeArg.type, ``tensor(float)``) → ONNX element type.
_ORT_TYPES: dict[str, int] = {
    **{name.lower(): value for name, value in onnx.TensorProto.DataType.items()},
    "float": onnx.TensorProto.FLOAT, "double": onnx.TensorProto.DOUBLE,
}

#: Element types numpy lacks (ml_dtypes' types): runtime_stub carries them as uint16 / uint8, onnxruntime not at all.
_NARROW = frozenset(d.value for d in DType if d.is_narrow_float or (d.bits < 8 and d is not DType.BOOL))

#: Suffix of the float32 / int32 copies onnxruntime hands out for types numpy lacks (it cannot return them).
_WIDENED = "__tilec_compare_widened"


class CompareError(TilecError):
    """The reference side of a comparison cannot run (onnxruntime missing, or it rejects the model)."""


class Status(str, enum.Enum):
    OK = "ok"
    DIVERGED = "DIVERGED"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Row:
    """One node output: how tilec's value compares with the reference's."""

    position: int  # the node's index in the model's topological order
    node: str  # the node's name (``<op>_<position>`` for an unnamed node)
    op_type: str
    output: str  # the value's ONNX name
    status: Status
    folded: bool = False  # tilec computed it at compile time
    dtype: str = ""  # tilec's element type (manifest spelling)
    shape: tuple[int, ...] | None = None  # tilec's shape
    max_abs: float | None = None
    max_rel: float | None = None
    bad: int = 0  # elements beyond tolerance
    first_bad: tuple[int, ...] | None = None  # row-major index of the first of them
    got: Any = None  # tilec's value at first_bad (a Python float, int or bool)
    want: Any = None  # the reference's value there
    note: str = ""  # why skipped, or what differs besides values (shape, dtype)

    @property
    def numel(self) -> int:
        return math.prod(self.shape) if self.shape is not None else 0


@dataclass
class Comparison:
    rows: list[Row]
    rtol: float
    atol: float
    target: str
    random_inputs: list[str] = field(default_factory=list)  # inputs given random values (seed below)
    seed: int = 0
    builds: int = 0  # compiles (one per chunk)
    kernels: int = 0  # kernels of the debugging build(s), summed over chunks

    @property
    def compared(self) -> list[Row]:
        return [r for r in self.rows if r.status is not Status.SKIPPED]

    @property
    def diverged(self) -> list[Row]:
        return [r for r in self.rows if r.status is Status.DIVERGED]

    @property
    def first_divergence(self) -> Row | None:
        """The first row in topological order beyond tolerance, or None."""
        return next(iter(self.diverged), None)

    @property
    def ok(self) -> bool:
        return not self.diverged


# --- the plan: which values to expose -------------------------------------------------


@dataclass
class _Probe:
    position: int
    node: str
    op_type: str
    output: str
    skip: str | None = None  # the reason it is not compared


def _plan(model: onnx.ModelProto, types: Mapping[str, onnx.TypeProto]) -> list[_Probe]:
    """One probe per node output in topological order (``model`` is sorted), with skip reasons."""
    from compiler.frontend.folding import RANDOM_OPS
    from compiler.frontend.loader import node_reads

    graph = model.graph
    read: set[str] = {o.name for o in graph.output}
    for node in graph.node:
        read |= node_reads(node)
    probes: list[_Probe] = []
    for position, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{position}"
        for output in node.output:
            if not output:
                continue
            probe = _Probe(position, name, node.op_type, output)
            kind = types[output].WhichOneof("value") if output in types else None
            if output not in read:
                probe.skip = "unused (nothing reads it)"
            elif kind not in (None, "tensor_type"):
                probe.skip = f"not a tensor ({kind.removesuffix('_type')})"
            elif node.op_type in RANDOM_OPS and node.domain in ("", "ai.onnx"):
                probe.skip = "random values"
            probes.append(probe)
    return probes


def _node_outputs(model: onnx.ModelProto) -> set[str]:
    return {o for node in model.graph.node for o in node.output if o}


# --- inputs ---------------------------------------------------------------------------


def _dims_text(dims: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _declared_dims(vi: onnx.ValueInfoProto) -> list[int | str] | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim]


def _check_inputs(model: onnx.ModelProto, feed: Mapping[str, np.ndarray],
                  input_shapes: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]]:
    """Validate ``feed`` against the model's inputs; the shapes to bind (``input_shapes`` plus the arrays')."""
    from compiler.frontend.loader import graph_inputs

    declared = {vi.name: vi for vi in graph_inputs(model.graph)}

    def describe(vi: onnx.ValueInfoProto) -> str:
        elem = vi.type.tensor_type.elem_type
        dtype = _dtype_name(elem) or "?"
        dims = _declared_dims(vi)
        return f"{vi.name} ({dtype} {_dims_text(dims) if dims is not None else 'of any shape'})"

    unknown = [name for name in feed if name not in declared]
    if unknown:
        expected = "; ".join(describe(vi) for vi in declared.values()) or "none"
        raise InvalidInputError(f"unknown input(s) {', '.join(map(repr, unknown))}; the model's inputs are: {expected}")
    shapes = {name: tuple(int(d) for d in dims) for name, dims in (input_shapes or {}).items()}
    for name, array in feed.items():
        vi = declared[name]
        want = _dtype_name(vi.type.tensor_type.elem_type)
        have = array.dtype.name
        if want is not None and have != want and not _carries(want, array.dtype):
            raise InvalidInputError(f"input {name!r}: the array is {have}, the model takes {want} ({describe(vi)})")
        dims = _declared_dims(vi)
        if dims is not None:
            if len(dims) != array.ndim:
                raise InvalidInputError(f"input {name!r}: the array has shape {_dims_text(array.shape)} (rank "
                                        f"{array.ndim}), the model takes rank {len(dims)}: {describe(vi)}")
            wrong = [axis for axis, d in enumerate(dims) if isinstance(d, int) and d != array.shape[axis]]
            if wrong:
                raise InvalidInputError(f"input {name!r}: the array has shape {_dims_text(array.shape)}, the model "
                                        f"takes {_dims_text(dims)} (dimension {wrong[0]} differs): {describe(vi)}")
        if name in shapes and shapes[name] != tuple(array.shape):
            raise InvalidInputError(f"input {name!r}: the array has shape {_dims_text(array.shape)}, but the input "
                                    f"shapes bind it to {_dims_text(shapes[name])}")
        shapes[name] = tuple(int(d) for d in array.shape)
    return shapes


def _dtype_name(elem_type: int) -> str | None:
    try:
        return DType.from_onnx(elem_type).value
    except KeyError:
        return None


def _carries(dtype_name: str, dtype: np.dtype) -> bool:
    """Whether arrays of ``dtype`` are runtime_stub's carrier of ``dtype_name`` (bfloat16 as uint16 bits, the
    float8 / 4-bit / 2-bit types as uint8 codes)."""
    narrow = DType(dtype_name)
    if narrow is DType.BF16:
        return dtype == np.uint16
    return narrow.value in _NARROW and dtype == np.uint8


# --- the reference: onnxruntime with the values exposed -------------------------------------


@dataclass
class _Reference:
    session: Any
    fetch: dict[str, str]  # exposed name → the onnxruntime output that carries it
    dtypes: dict[str, str]  # exposed name → its element type (tilec's spelling)
    skipped: dict[str, str]  # exposed name → why onnxruntime cannot provide it


def _ort_dtype(type_string: str) -> tuple[str | None, str]:
    """(element type in tilec's spelling or None, kind) of an onnxruntime type string."""
    if not type_string.startswith("tensor("):
        return None, type_string.split("(", 1)[0]
    elem = _ORT_TYPES.get(type_string[len("tensor("):-1])
    return (_dtype_name(elem) if elem is not None else None), "tensor"


@contextmanager
def _exposing(model: onnx.ModelProto, outputs: Sequence[onnx.ValueInfoProto],
              extra_nodes: Sequence[onnx.NodeProto] = ()) -> Iterator[onnx.ModelProto]:
    """``model`` with ``outputs`` as its graph outputs (and ``extra_nodes`` appended) while the block runs.

    In place, not a copy: the weights of a large model are not duplicated (the compiler and
    serialization copy what they need).
    """
    graph = model.graph
    saved = list(graph.output)
    del graph.output[:]
    graph.output.extend(outputs)
    graph.node.extend(extra_nodes)
    try:
        yield model
    finally:
        for _ in extra_nodes:
            graph.node.pop()
        del graph.output[:]
        graph.output.extend(saved)


def _reference(model: onnx.ModelProto, names: Sequence[str], dtypes: Mapping[str, str], threads: int) -> _Reference:
    """An onnxruntime session of ``model`` whose outputs are ``names`` (types numpy lacks widened by a Cast).

    Outputs are declared without types: onnxruntime infers them (contrib ops included) and says
    which they are, so a type ONNX inference missed is learned here; one found to need widening
    costs a second session.
    """
    known = dict(dtypes)
    for _ in range(2):
        outputs: list[onnx.ValueInfoProto] = []
        casts: list[onnx.NodeProto] = []
        fetch: dict[str, str] = {}
        for name in names:
            dtype = known.get(name)
            if dtype in _NARROW:
                wide = onnx.TensorProto.FLOAT if DType(dtype).is_float else onnx.TensorProto.INT32
                fetch[name] = name + _WIDENED
                casts.append(helper.make_node("Cast", [name], [fetch[name]], to=wide, name=fetch[name]))
            else:
                fetch[name] = name
            outputs.append(helper.make_value_info(fetch[name], onnx.TypeProto()))
        try:
            with _exposing(model, outputs, casts) as exposed:
                session = bench.ort_session(exposed, threads)
        except bench.BenchError as exc:
            raise CompareError(f"the reference: {exc}") from None
        reported = {arg.name: arg.type for arg in session.get_outputs()}
        skipped: dict[str, str] = {}
        retry = False
        for name in names:
            if fetch[name] != name:
                continue  # widened: its type is known
            dtype, kind = _ort_dtype(reported.get(name, ""))
            if kind != "tensor":
                skipped[name] = f"not a tensor ({kind or 'unknown type'})"
            elif dtype is None:
                skipped[name] = f"element type {reported[name]} unknown to tilec"
            else:
                retry |= name not in known and dtype in _NARROW
                known[name] = dtype
        if not retry:
            break
    kept = [n for n in names if n not in skipped]
    return _Reference(session, {n: fetch[n] for n in kept}, {n: known[n] for n in kept}, skipped)


def _run_reference(model: onnx.ModelProto, names: Sequence[str], dtypes: Mapping[str, str],
                   feed: Mapping[str, np.ndarray], threads: int,
                   skipped: dict[str, str]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """onnxruntime's values of ``names`` and their element types; those it cannot give go into ``skipped``."""
    side = _reference(model, names, dtypes, threads)
    skipped.update(side.skipped)
    takes = {arg.name for arg in side.session.get_inputs()}
    try:
        values = side.session.run([side.fetch[n] for n in side.fetch], {n: v for n, v in feed.items() if n in takes})
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompareError(f"onnxruntime cannot run the reference: {first}") from None
    return dict(zip(side.fetch, values)), side.dtypes


# --- comparing two arrays ---------------------------------------------------------------


def _values(array: np.ndarray, dtype_name: str) -> np.ndarray:
    """``array`` as comparable numbers: floats of every width as float64, integers and bools as they are."""
    dtype = DType(dtype_name)
    array = np.asarray(array)
    if dtype_name in _NARROW and array.dtype.kind == "u":
        # runtime_stub's carrier (uint16 bits, uint8 codes, one element a byte) → the ml_dtypes type
        array = array.view(getattr(ml_dtypes, dtype_name))
    if dtype.is_float:
        return array.astype(np.float64)
    return array.astype(np.int64) if dtype_name in _NARROW else array


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def compare_arrays(got: np.ndarray, want: np.ndarray, dtype: str, rtol: float = DEFAULT_RTOL,
                   atol: float = DEFAULT_ATOL, per_element: bool = False) -> dict[str, Any]:
    """``Row`` fields (max_abs, max_rel, bad, first_bad, got, want, status) for two arrays of ``dtype``
    (tilec's spelling; narrow types as runtime_stub carries them or as ml_dtypes arrays), same shape."""
    a, b = _values(got, dtype), _values(want, dtype)
    if a.size == 0:
        return {"status": Status.OK, "max_abs": 0.0, "max_rel": 0.0}
    if DType(dtype).is_float:
        with np.errstate(invalid="ignore", over="ignore"):
            same = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))  # NaN ~ NaN, an infinity ~ itself
            diff = np.where(same, 0.0, np.abs(a - b))
        diff = np.where(np.isnan(diff), np.inf, diff)  # NaN against anything else: infinitely wrong
        magnitude = np.abs(b)
        finite = np.isfinite(magnitude)
        scale = np.where(finite, magnitude, 0.0)
        if not per_element:
            scale = np.full_like(scale, scale.max())
        bad = ~(same | (finite & (diff <= atol + rtol * scale)))
    elif dtype == DType.STRING.value:  # equal or not: a mismatch is infinitely far
        bad = np.asarray(a.tolist(), dtype=object) != np.asarray(b.tolist(), dtype=object)
        diff = np.where(bad, np.inf, 0.0)
        magnitude = np.zeros(b.shape)
        finite = np.ones(b.shape, bool)
    else:
        bad = a != b
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        magnitude = np.abs(b.astype(np.float64))
        finite = np.ones(b.shape, bool)
    # |a - b| / |b|: 0/0 is 0, x/0 infinite; against a non-finite reference 0 where matched, else infinite.
    usable = finite & (magnitude > 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = np.where(usable, diff / np.where(usable, magnitude, 1.0), np.where(diff > 0, np.inf, 0.0))
    rel = np.where(~finite & (diff > 0), np.inf, rel)
    fields: dict[str, Any] = {"max_abs": float(diff.max()), "max_rel": float(rel.max()), "bad": int(bad.sum())}
    if fields["bad"]:
        index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad.reshape(-1))), a.shape))
        fields.update(status=Status.DIVERGED, first_bad=index, got=_scalar(a[index]), want=_scalar(b[index]))
    else:
        fields["status"] = Status.OK
    return fields


def _compare(probe: _Probe, got: np.ndarray, got_dtype: str, want: np.ndarray, want_dtype: str, folded: bool,
             rtol: float, atol: float, per_element: bool) -> Row:
    base = {"position": probe.position, "node": probe.node, "op_type": probe.op_type, "output": probe.output,
            "folded": folded, "dtype": got_dtype, "shape": tuple(got.shape)}
    if got_dtype != want_dtype:
        return Row(status=Status.DIVERGED, note=f"dtype {got_dtype}, the reference's {want_dtype}", **base)
    if tuple(got.shape) != tuple(want.shape):
        return Row(status=Status.DIVERGED, note=f"shape {_dims_text(got.shape)}, the reference's "
                                                 f"{_dims_text(want.shape)}", **base)
    return Row(**base, **compare_arrays(got, want, got_dtype, rtol, atol, per_element))


# --- the whole comparison -------------------------------------------------------------------


def _tensor_output(name: str, types: Mapping[str, onnx.TypeProto], dtype: str, shape: Sequence[int]) -> onnx.ValueInfoProto:
    """A graph output declaration for tilec's build: the inferred type where it is static, else ``dtype`` and
    ``shape`` (what onnxruntime computed; the checker wants a shape, tilec's own inference still wins)."""
    t = types.get(name)
    if t is not None and t.WhichOneof("value") == "tensor_type" and t.tensor_type.elem_type and \
            t.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in t.tensor_type.shape.dim):
        return helper.make_value_info(name, t)
    return helper.make_tensor_value_info(name, DType(dtype).onnx, list(shape))


def _random_feed(model: onnx.ModelProto, feed: Mapping[str, np.ndarray], constant: Mapping[str, Any],
                 seed: int) -> dict[str, np.ndarray]:
    """Random arrays for the inputs not in ``feed`` or ``constant``, as ``tilec run`` makes them for the
    compiled model (same order, same generator, so the same values)."""
    from compiler.frontend.loader import graph_inputs

    specs = []
    for vi in graph_inputs(model.graph):
        if vi.name in feed or vi.name in constant:
            continue
        dims = _declared_dims(vi)
        if dims is None or not all(isinstance(d, int) and d >= 0 for d in dims):
            shown = _dims_text(dims) if dims is not None else "no declared shape"
            raise ShapeError(f"input {vi.name!r} has {shown}: give its array, or bind its shape with "
                             f"input_shapes / --input-shape {vi.name}=AxB")
        dtype = _dtype_name(vi.type.tensor_type.elem_type)
        if dtype is None:
            raise InvalidInputError(f"input {vi.name!r} has an element type tilec does not support")
        specs.append((vi.name, dtype, tuple(dims)))
    try:
        return bench.random_inputs(specs, seed=seed)
    except bench.BenchError as exc:
        raise InvalidInputError(f"{exc}; give the input's array") from None


def compare_model(model: ModelSource, inputs: Mapping[str, np.ndarray] | None = None, *,
                  reference: ModelSource | None = None, target: str = "host", cpu: str | None = None,
                  input_shapes: Mapping[str, Sequence[int]] | None = None,
                  constant_inputs: Mapping[str, np.ndarray] | None = None, rtol: float = DEFAULT_RTOL,
                  atol: float = DEFAULT_ATOL, per_element: bool = False, seed: int = 0, threads: int | None = None,
                  chunk: int | None = None) -> Comparison:
    """Compare tilec's build of ``model`` with onnxruntime node by node (see the module docstring).

    ``reference``: the model onnxruntime runs instead of ``model`` (same value names; by default
    ``model`` itself), e.g. the original of a rewritten model. ``threads``: for both runtimes
    (default: every usable CPU). ``chunk``: at most this many values per build.
    """
    from compiler.frontend.loader import bind_input_shapes, graph_inputs, infer_types, opsets_of, read_model, sort_graph
    from compiler.pipeline import compile_model
    from runtime_stub import InferenceSession

    if rtol < 0 or atol < 0 or not (math.isfinite(rtol) and math.isfinite(atol)):
        raise InvalidInputError(f"tolerances must be finite and non-negative, got rtol={rtol}, atol={atol}")
    if chunk is not None and chunk < 1:
        raise InvalidInputError(f"chunk must be at least 1, got {chunk}")
    threads = threads or bench.default_threads()
    proto, _ = read_model(model)
    ref = read_model(reference)[0] if reference is not None else proto
    feed = {name: np.asarray(array) for name, array in (inputs or {}).items()}
    shapes = _check_inputs(proto, feed, input_shapes)
    bind_input_shapes(proto.graph, shapes)
    if ref is not proto:
        bind_input_shapes(ref.graph, {k: v for k, v in shapes.items() if k in {i.name for i in graph_inputs(ref.graph)}})
    sort_graph(proto.graph)
    types = infer_types(proto.graph, opsets_of(proto), None)
    probes = _plan(proto, types)
    if ref is not proto:
        have = _node_outputs(ref)
        for probe in probes:
            if probe.skip is None and probe.output not in have:
                probe.skip = "not in the reference model"
    live = [p for p in probes if p.skip is None]
    chunks = [live[i:i + chunk] for i in range(0, len(live), chunk)] if chunk else [live]
    result = Comparison([], rtol, atol, target, seed=seed)
    rows: dict[str, Row] = {}
    known_dtypes = {name: d for name, t in types.items()
                    if t.WhichOneof("value") == "tensor_type" and (d := _dtype_name(t.tensor_type.elem_type))}
    constants = dict(constant_inputs or {})
    randoms = _random_feed(proto, feed, constants, seed)
    result.random_inputs = list(randoms)
    feed.update(randoms)
    with tempfile.TemporaryDirectory(prefix="tilec-compare-") as tmp:
        for k, part in enumerate(p for p in chunks if p):
            skipped: dict[str, str] = {}
            want, want_dtypes = _run_reference(ref, [p.output for p in part], known_dtypes, {**feed, **constants},
                                               threads, skipped)
            for probe in part:
                probe.skip = skipped.get(probe.output, probe.skip)
            names = [p.output for p in part if p.skip is None]
            if not names:
                continue
            outputs = [_tensor_output(n, types, want_dtypes[n], want[n].shape) for n in names]
            try:
                with _exposing(proto, outputs) as exposed:
                    artifact = compile_model(exposed, pathlib.Path(tmp) / f"part{k}.tilec", target=target, cpu=cpu,
                                             constant_inputs=constant_inputs)
            except CompileError as exc:
                raise type(exc)(f"compiling the model with its {len(names)} intermediate value(s) exposed as "
                                f"outputs failed: {exc}") from exc
            result.builds += 1
            with InferenceSession(artifact, threads=threads) as session:
                result.kernels += len(session.manifest.get("kernels") or [])
                takes = {arg.name for arg in session.get_inputs()}
                got = dict(zip([arg.name for arg in session.get_outputs()],
                               session.run(None, {n: v for n, v in feed.items() if n in takes})))
                got_dtypes = {e["name"]: e["dtype"] for e in session.manifest["outputs"]}
                # computed_from == []: no run-time input reaches the value, a constant of the compile.
                folded = {e["name"] for e in session.manifest["outputs"] if e.get("computed_from") == []}
            for probe in part:
                if probe.skip is None:
                    rows[probe.output] = _compare(probe, got[probe.output], got_dtypes[probe.output],
                                                  want[probe.output], want_dtypes[probe.output],
                                                  probe.output in folded, rtol, atol, per_element)
            del got, want
    for probe in probes:
        if probe.skip is not None:
            rows[probe.output] = Row(probe.position, probe.node, probe.op_type, probe.output, Status.SKIPPED,
                                     note=probe.skip)
    result.rows = [rows[p.output] for p in probes]
    return result
