"""``InferenceSession``: run a .tilec artifact like an onnxruntime session.

Contract:

* ``InferenceSession(path_or_bytes, sess_options=None, providers=None, provider_options=None,
  threads=None)`` reads and verifies the artifact, checks that this machine can run it, and
  loads it with an executor picked by ``target.kind`` (``"cpu"``, or ``"cuda"``:
  runtime_stub/cuda_executor.py): the artifact, not ``providers``, decides the device.
  ``threads=None`` (or 0) uses ``sess_options.intra_op_num_threads`` if set, else every CPU
  this process may run on. onnxruntime's ``sess_options``, ``providers`` and
  ``provider_options`` are accepted so code written for it runs unchanged; of them, tilec
  reads the intra-op thread count and the CUDA provider's ``device_id`` (default 0).
* ``get_inputs()`` / ``get_outputs()`` return ``NodeArg``s with ``.name``, ``.shape``
  and ``.type`` spelled as onnxruntime does (``tensor(float)``; a symbolic dimension as its
  name, ``['batch', 128]``), plus ``.dtype``.
* An artifact with symbolic dimensions runs at any input shape within the compiled ranges:
  ``run`` binds each size variable from the inputs (runtime_stub/shapes.py: every violation an
  ``InvalidInputError`` naming input, axis and variable), asks the native code for the output
  shapes and the workspace the run needs, and grows a slot's workspace when a larger run
  arrives (kept for the runs after it).
* ``run(output_names, input_feed)`` validates every input strictly — exact dtype and
  shape, no silent casts — and returns the requested outputs (all when
  ``output_names`` is None) as new numpy arrays. bfloat16 tensors are carried as
  uint16 bit patterns, the float8 / float4 / int4 / int2 types as uint8 codes, one
  element per byte (runtime_stub/dtypes.py); an ml_dtypes array of the exact type is
  accepted as an input too. Outputs of 64 KiB and more are placed in memory recycled from earlier
  outputs the caller has dropped (runtime_stub/output_memory.py: no page faults per run), so they are
  views (``base`` is set) rather than arrays owning their data.
* CUDA artifacts also take inputs that live in GPU memory (any object with
  ``__cuda_array_interface__`` or CUDA DLPack: CuPy, PyTorch, JAX, ``CudaArray``),
  read in place without a copy; they must have the exact dtype and shape and be
  C-contiguous. ``run_on_device(output_names, input_feed)`` returns the outputs as
  ``CudaArray``s left in device memory (runtime_stub/device_arrays.py).
* ``run`` may be called from several Python threads, and the calls run in parallel: each
  takes a native context and workspace of its own from a small pool grown on demand (the
  same results as serial calls, bit for bit; a CUDA session serialises its calls). A model whose
  native call takes microseconds keeps the GIL through it (runtime_stub/native.py): handing it over
  and back would cost more than the call.
* ``kernel_profile()``: for artifacts compiled with profiling (``tilec compile --profile``,
  ``tilec profile``), each kernel's mean wall time per run since loading (or the last reset).
* ``close()`` / ``with`` release the native code; so does garbage collection.
"""

from __future__ import annotations

import ctypes
import copy
import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, Union

import numpy as np

from runtime_stub.artifact import Artifact, read_artifact
from runtime_stub.device_arrays import CudaArray, DeviceView, device_view
from runtime_stub.dtypes import ElementType, element_type
from runtime_stub.errors import (
    CorruptArtifactError,
    ExecutionError,
    IncompatibleArtifactError,
    InvalidInputError,
    InvalidOutputNameError,
)
from runtime_stub.native import NativeModule
from runtime_stub.output_memory import MIN_BYTES as MIN_RECYCLED_BYTES, OutputMemory
from runtime_stub.platform_check import check_target
from runtime_stub.shapes import SizeVariables
from runtime_stub.signature import native_shape, native_signature

WORKSPACE_ALIGNMENT = 64

PathOrBytes = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


@dataclass(frozen=True)
class NodeArg:
    """An input or output of the model, as onnxruntime describes it."""

    name: str
    shape: list[int | str]
    type: str
    dtype: np.dtype  # the numpy dtype of the arrays run() takes or returns (a ZipMap output's values)
    element_type: ElementType = field(repr=False, compare=False)  # how the elements are marshaled (dtypes.py)
    native_shape: list[int | str] = field(repr=False, compare=False)  # with a string's code-point axis
    # A ZipMap output: each row of the native [N, C] buffer is returned as a dict of these keys to its values.
    map_keys: tuple[int | str, ...] | None = field(default=None, repr=False, compare=False)
    symbolic: bool = field(default=False, repr=False, compare=False)  # a dim of ``shape`` is a size variable
    # An input the run makes of a dict (DictVectorizer's): (the dict's name, "keys" or "values").
    map_part: tuple[str, str] | None = field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        return f"{self.name} ({self.type}, shape {self.shape})"

    def result(self, buffer: np.ndarray, shape: list[int]) -> Any:
        """What run() returns for the output buffer of native shape ``shape``: an array, or a list of dicts."""
        array = self.element_type.from_native(buffer, shape)
        if self.map_keys is None:
            return array
        keys = self.map_keys
        return [dict(zip(keys, row)) for row in array.tolist()]


def _node_arg(entry: Any, role: str) -> NodeArg:
    try:
        name, dtype_name = str(entry["name"]), str(entry["dtype"])
        shape = [d if isinstance(d, str) else int(d) for d in entry["shape"]]
        native = [d if isinstance(d, str) else int(d) for d in native_shape(entry)]
        keys = entry.get("map_keys")
        keys = None if keys is None else tuple(k if isinstance(k, str) else int(k) for k in keys)
        part = entry.get("map")
        part = None if part is None else (str(part[0]), str(part[1]))
        if part is not None and (role != "input" or part[1] not in ("keys", "values")):
            raise ValueError
    except (TypeError, KeyError, ValueError):
        raise CorruptArtifactError(f"the manifest has a malformed {role} entry: {entry!r}") from None
    etype = element_type(dtype_name)
    if etype is None:
        raise IncompatibleArtifactError(f"{role} {name!r} has element type {dtype_name!r}, unknown to this runtime")
    if keys is not None:
        if etype.code_axis or len(shape) != 2 or shape[1] != len(keys):
            raise CorruptArtifactError(f"the manifest's {role} {name!r} has {len(keys)} map keys for its "
                                       f"{dtype_name} shape {shape}")
        key_type = "string" if keys and isinstance(keys[0], str) else "int64"
        return NodeArg(name, [], f"seq(map({key_type},tensor({etype.ort_name})))", etype.api_dtype, etype, native,
                       keys)
    return NodeArg(name, shape, f"tensor({etype.ort_name})", etype.api_dtype, etype, native,
                   symbolic=any(isinstance(d, str) for d in shape), map_part=part)


def _api_inputs(inputs: list[NodeArg]) -> list[NodeArg]:
    """The inputs as run() takes them: a dict input once, for the keys and values inputs made of it."""
    parts: dict[str, dict[str, NodeArg]] = {}
    for arg in inputs:
        if arg.map_part is not None:
            parts.setdefault(arg.map_part[0], {})[arg.map_part[1]] = arg
    api, seen = [], set()
    for arg in inputs:
        if arg.map_part is None:
            api.append(arg)
            continue
        name = arg.map_part[0]
        if name in seen:
            continue
        seen.add(name)
        pair = parts[name]
        if set(pair) != {"keys", "values"}:
            raise CorruptArtifactError(f"the manifest's dict input {name!r} lacks its keys or values")
        keys, values = pair["keys"].element_type, pair["values"].element_type
        api.append(NodeArg(name, [], f"map({keys.ort_name},tensor({values.ort_name}))", values.api_dtype, values, []))
    return api


def _map_part(arg: NodeArg, value: Any) -> np.ndarray:
    """The keys or the values of the dict ``value`` given for ``arg``'s map input, as an array (in the dict's
    order, so the two agree)."""
    name, part = arg.map_part
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"input {name!r} must be a dict of key -> value, got {type(value).__name__}")
    items = list(value.keys() if part == "keys" else value.values())
    if arg.element_type.code_axis:
        wrong = [k for k in items if not isinstance(k, str)]
        expected = "str"
    else:
        integral = arg.dtype.kind in "iu"
        wrong = [v for v in items if isinstance(v, (bool, np.bool_)) or not isinstance(
            v, (int, np.integer) if integral else (int, float, np.integer, np.floating))]
        expected = "int" if integral else "a real number"
    if wrong:
        raise InvalidInputError(f"input {name!r}: its {part} must each be {expected}; got {wrong[0]!r}")
    return np.array(items, dtype=object if arg.element_type.code_axis else arg.dtype)


@dataclass(frozen=True)
class KernelTime:
    """One kernel of a profiled artifact: what it computes and its mean time per run."""

    name: str
    ops: str
    flops: int
    seconds: float  # mean wall time per run

    @property
    def gflops_per_second(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0


class Executor(Protocol):
    """Runs one artifact on one kind of device. ``run`` fills ``outputs`` in place.

    An executor with ``device_io`` also takes ``DeviceView`` inputs and, as outputs, device memory from
    its ``allocate(nbytes)`` or None (runtime_stub/cuda_executor.py)."""

    device_io: bool

    def run(self, inputs: Sequence[Any], outputs: Sequence[Any]) -> None: ...

    def close(self) -> None: ...


def _aligned_empty(nbytes: int, alignment: int = WORKSPACE_ALIGNMENT, what: str = "a buffer") -> np.ndarray:
    """A uint8 buffer of ``nbytes`` whose address is a multiple of ``alignment``."""
    raw = _allocate(what, lambda: nbytes + alignment, lambda: np.empty(nbytes + alignment, dtype=np.uint8))
    start = -raw.ctypes.data % alignment
    return raw[start:start + nbytes]


def _allocate(what: str, nbytes: Callable[[], int], allocate: Callable[[], Any]) -> Any:
    """``allocate()``, or an ExecutionError naming ``what`` and its ``nbytes()`` (computed only then) where this
    machine has not the memory for it."""
    try:
        return allocate()
    except (MemoryError, ValueError) as exc:  # ValueError: numpy's "array is too big" beyond the address space
        size = nbytes()
        raise ExecutionError(f"cannot allocate {what} of {size} bytes ({_gib(size)}): {exc}") from None


def _output_buffer(arg: "NodeArg", shape: list[int], memory: OutputMemory, index: int,
                   nbytes: int | None = None) -> np.ndarray:
    """The native buffer for output ``index`` of a run (``nbytes``: its size, where known already)."""
    try:
        if nbytes is None:
            nbytes = arg.element_type.shape_nbytes(shape)
        if nbytes >= MIN_RECYCLED_BYTES:
            return arg.element_type.native_view(memory.take(index, nbytes), shape)
        return arg.element_type.native_empty(shape)
    except (MemoryError, ValueError):  # again, to say which output and how large
        return _allocate(f"output {arg.name!r}", lambda: arg.element_type.shape_nbytes(shape),
                         lambda: arg.element_type.native_empty(shape))


def _address(array: np.ndarray) -> int:
    """The address of a C-contiguous array's first byte. ``ctypes.c_char.from_buffer`` costs a third of
    ``ndarray.ctypes.data``, which a run pays for every buffer; it needs a writable, non-empty buffer."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError, BufferError):  # read-only or empty
        return array.ctypes.data


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def _aligned_weights(weights: np.ndarray) -> np.ndarray:
    # Sections of a mapped file are page-aligned; artifact bytes handed over in memory may not be.
    if weights.ctypes.data % WORKSPACE_ALIGNMENT == 0:
        return weights
    copy_ = _aligned_empty(weights.nbytes, what="an aligned copy of the weights")
    copy_[:] = weights
    return copy_


@dataclass
class _Slot:
    """What one call needs for itself: a native context (its thread pool) and a workspace."""

    context: int
    workspace: np.ndarray
    address: int = 0  # the workspace's

    def __post_init__(self) -> None:
        self.address = self.workspace.ctypes.data


class CpuExecutor:
    """Runs the artifact's native shared object on this CPU through the tilec ABI.

    Concurrent calls each take a free slot (context + workspace), made on demand and kept for
    reuse, so runs from several Python threads proceed in parallel without a per-run allocation
    in the steady state; each slot's context has ``threads`` threads. Profiled artifacts keep one
    slot: their per-kernel counters are plain additions shared by the context."""

    device_io = False

    def __init__(self, artifact: Artifact, threads: int) -> None:
        check_target(artifact.manifest["target"])
        if not artifact.native:
            raise CorruptArtifactError("the artifact has no 'native' section")
        self._weights = _aligned_weights(artifact.weights)
        self._weights_address = self._weights.ctypes.data
        self._workspace_size = max(int(artifact.manifest.get("workspace_size", 0)), 1)
        self._native = NativeModule(artifact.native, threads)
        try:
            _check_signature(self._native.signature, native_signature(artifact.manifest, artifact.weights.size))
        except BaseException:
            self._native.close()
            raise
        self._checks = artifact.checks
        self._output_ranks = [len(native_shape(e)) for e in artifact.manifest["outputs"]]
        self._constraints = [str(m) for m in artifact.manifest.get("size_constraints", [])]
        self._dim_names = [str(d.get("name")) for d in artifact.manifest.get("dims", [])]
        self._free = [_Slot(self._native.primary_context, _aligned_empty(self._workspace_size, what="the workspace"))]
        self._slots = 1  # made so far: a run holds a slot exactly while len(self._free) < self._slots
        self._changed = threading.Condition()  # guards making slots, waiting for one and closing
        self._closed = False
        self.profile_ns: np.ndarray | None = None
        self.profiled_runs = 0
        if artifact.manifest.get("profile"):
            self.profile_ns = np.zeros(len(artifact.manifest.get("kernels", [])), dtype=np.int64)
            self._native.enable_profile(self.profile_ns.ctypes.data, len(self.profile_ns))

    @property
    def num_threads(self) -> int:
        return self._native.num_threads

    def _take_slot(self) -> _Slot:
        # The common case takes a free slot without the lock: list.pop is atomic. Taken first and checked
        # after, a slot cannot be in use once close() has seen every slot free with the session closed.
        try:
            slot = self._free.pop()
        except IndexError:
            return self._new_or_waited_slot()
        if self._closed:
            self._return_slot(slot)
            raise ExecutionError("the session is closed")
        return slot

    def _new_or_waited_slot(self) -> _Slot:
        with self._changed:
            while True:
                if self._closed:
                    raise ExecutionError("the session is closed")
                if self._free:
                    return self._free.pop()
                if self.profile_ns is None:
                    slot = _Slot(self._native.new_context(), _aligned_empty(self._workspace_size, what="the workspace"))
                    self._slots += 1  # counted once made: a failed allocation leaves nothing for close() to wait on
                    return slot
                self._changed.wait()

    def _return_slot(self, slot: _Slot) -> None:
        self._free.append(slot)
        if self._closed or self.profile_ns is not None:  # someone may be waiting: close(), or a profiled run
            with self._changed:
                self._changed.notify_all()

    def plan(self, dims: np.ndarray) -> tuple[int, list[list[int]]]:
        """For a run with these size-variable values (int64): the workspace bytes and every output's shape,
        as the native code computes them."""
        out = np.empty(1 + sum(self._output_ranks), dtype=np.int64)
        self._native.sizes(_address(dims), _address(out))
        values = out.tolist()
        if values[0] == -1:  # tilec_sizes: a size overflowed int64
            raise InvalidInputError(f"the input shapes (dims {list(dims)}) make tensors too large to address")
        if values[0] <= -2 and -2 - values[0] < len(self._constraints):  # tilec_sizes: constraint k violated
            raise InvalidInputError(f"the inputs do not fit together: {self._constraints[-2 - values[0]]} "
                                    f"({self._dims_text(dims)})")
        if any(v < 0 for v in values):
            raise CorruptArtifactError(f"the native code computed negative sizes for dims {list(dims)}")
        shapes, k = [], 1
        for rank in self._output_ranks:
            shapes.append(values[k:k + rank])
            k += rank
        return values[0], shapes

    def _dims_text(self, dims: Sequence[int]) -> str:
        return ", ".join(f"{name}={value}" for name, value in zip(self._dim_names, dims))

    def run(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray], dims: np.ndarray | None = None,
            workspace_size: int = 0) -> None:
        in_ptrs = [_address(a) for a in inputs]
        out_ptrs = [_address(a) for a in outputs]
        slot = self._take_slot()
        try:
            if workspace_size > slot.workspace.size:
                # A larger run than this slot has seen: grow it once, for this run and the smaller ones after.
                slot.workspace = _aligned_empty(workspace_size, what="the workspace")
                slot.address = slot.workspace.ctypes.data
            status = self._native.run(in_ptrs, out_ptrs, self._weights_address, slot.address,
                                      context=slot.context, dims=0 if dims is None else _address(dims))
            failed = [c.message for c in self._checks if slot.workspace[c.offset]] if self._checks else []
            self.profiled_runs += 1  # only counted for profiled artifacts, whose one slot makes runs serial
        finally:
            self._return_slot(slot)
        if status != 0:
            raise ExecutionError(f"the native code failed with status {status}")
        if failed:
            raise InvalidInputError("; ".join(failed))

    def close(self) -> None:
        with self._changed:  # never unload the library under a running call
            self._closed = True
            while len(self._free) < self._slots:
                self._changed.wait()
            self._native.close()


def _check_signature(declared: bytes, expected: bytes) -> None:
    """The native code's own account of its buffers must be the manifest's (runtime_stub/signature.py)."""
    if declared == expected:
        return
    try:
        theirs, ours = json.loads(declared), json.loads(expected)
        differing = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    except (ValueError, AttributeError):
        differing = ["(the native signature is unreadable)"]
    raise CorruptArtifactError(
        f"the artifact's manifest does not match its native code ({', '.join(differing)} differ): the manifest "
        f"was edited or the file assembled from parts of different builds; rebuild it")


@dataclass(frozen=True)
class ExecutorOptions:
    threads: int  # CPU threads (0: every CPU)
    device_id: int = 0  # the GPU, for executors that run on one


def _cpu_executor(artifact: Artifact, options: ExecutorOptions) -> Executor:
    return CpuExecutor(artifact, options.threads)


def _cuda_executor(artifact: Artifact, options: ExecutorOptions) -> Executor:
    # Imported lazily: only CUDA artifacts need cuda-bindings (and a GPU).
    from runtime_stub.cuda_executor import CudaExecutor

    return CudaExecutor(artifact, options.device_id)


# Dispatch point: one executor factory per target kind.
_EXECUTORS: Mapping[str, Callable[[Artifact, ExecutorOptions], Executor]] = {"cpu": _cpu_executor,
                                                                             "cuda": _cuda_executor}
CUDA_PROVIDER = "CUDAExecutionProvider"


def _provider_options(providers: Any, provider_options: Any) -> dict[str, dict[str, Any]]:
    """onnxruntime's ``providers`` (names, or (name, options) pairs) and ``provider_options`` as {name: options}."""
    if providers is None:
        return {}
    if isinstance(providers, str) or not isinstance(providers, Sequence):
        raise ValueError(f"providers must be a list of provider names or (name, options) pairs, got {providers!r}")
    extra = list(provider_options) if provider_options is not None else [{}] * len(providers)
    if len(extra) != len(providers):
        raise ValueError(f"provider_options has {len(extra)} entries for {len(providers)} providers")
    result: dict[str, dict[str, Any]] = {}
    for provider, more in zip(providers, extra):
        name, options = (provider, {}) if isinstance(provider, str) else tuple(provider)
        if not isinstance(name, str) or not isinstance(options, Mapping) or not isinstance(more, Mapping):
            raise ValueError(f"a provider is a name or a (name, options dict) pair, got {provider!r}")
        result[name] = {**options, **more}
    return result


def _device_id(options: Mapping[str, Any]) -> int:
    value = options.get("device_id", 0)
    try:
        device_id = int(value)
    except (TypeError, ValueError):
        device_id = -1
    if device_id < 0:
        raise ValueError(f"{CUDA_PROVIDER}'s device_id must be a non-negative integer, got {value!r}")
    return device_id


def _default_threads() -> int:
    # Affinity, not the machine's CPU count: containers and taskset limit the usable CPUs.
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return 0  # tilec_create(0) asks sysconf for the online CPUs


class InferenceSession:
    """Loads a .tilec artifact and runs it; mirrors onnxruntime.InferenceSession."""

    def __init__(self, path_or_bytes: PathOrBytes, sess_options: Any = None, providers: Any = None,
                 provider_options: Any = None, *, threads: int | None = None) -> None:
        if threads is None:
            threads = getattr(sess_options, "intra_op_num_threads", None) or None
        if threads is not None and (not isinstance(threads, int) or threads < 0):
            raise ValueError(f"threads must be a non-negative int or None, got {threads!r}")
        device_id = _device_id(_provider_options(providers, provider_options).get(CUDA_PROVIDER, {}))
        artifact = read_artifact(path_or_bytes)
        self._manifest = artifact.manifest
        self._inputs = [_node_arg(e, "input") for e in self._manifest.get("inputs", [])]  # as the native code has them
        self._api_inputs = _api_inputs(self._inputs)
        self._outputs = [_node_arg(e, "output") for e in self._manifest.get("outputs", [])]
        self._output_positions = {arg.name: i for i, arg in enumerate(self._outputs)}
        self._sizes = SizeVariables(self._manifest)
        for arg in self._inputs:
            self._sizes.check_declared(arg.name, arg.native_shape)
        self._input_names = [arg.name for arg in self._inputs]
        self._known_inputs = frozenset(arg.name for arg in self._api_inputs)
        self._input_shapes = [arg.native_shape for arg in self._inputs]
        self._bind = self._sizes.binder(self._input_names, self._input_shapes)
        target = self._manifest.get("target")
        kind = target.get("kind") if isinstance(target, dict) else None
        factory = _EXECUTORS.get(kind)  # type: ignore[arg-type]
        if factory is None:
            raise IncompatibleArtifactError(
                f"artifacts for target kind {kind!r} cannot run here; this runtime has executors for: "
                f"{', '.join(sorted(_EXECUTORS))}"
            )
        self._executor: Executor | None = factory(artifact, ExecutorOptions(threads or _default_threads(), device_id))
        self._output_memory = OutputMemory(len(self._outputs))
        if not self._sizes:
            self._static_output_shapes = [arg.native_shape for arg in self._outputs]
            self._static_output_bytes = [arg.element_type.shape_nbytes(shape) for arg, shape in
                                         zip(self._outputs, self._static_output_shapes)]

    # --- introspection ------------------------------------------------------------

    def get_inputs(self) -> list[NodeArg]:
        return list(self._api_inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the artifact's manifest (target, kernels, build info, ...)."""
        return copy.deepcopy(self._manifest)

    @property
    def num_threads(self) -> int:
        return int(getattr(self._open_executor(), "num_threads", 1))

    # --- running ------------------------------------------------------------------

    def run(self, output_names: Iterable[str] | None, input_feed: Mapping[str, Any],
            run_options: Any = None) -> list[np.ndarray]:
        """Run the model; ``run_options`` is accepted for onnxruntime compatibility and ignored."""
        executor = self._open_executor()
        selected = self._output_indices(output_names)
        views: list[DeviceView] = []  # DLPack tensors, given back to their producers after the run
        try:
            inputs, dims = self._marshaled_inputs(input_feed, executor, views)
            if self._sizes:
                workspace_size, shapes = executor.plan(dims)
                sizes: list[int | None] = [None] * len(shapes)
            else:
                shapes, sizes = self._static_output_shapes, self._static_output_bytes
            outputs = [_output_buffer(arg, shape, self._output_memory, i, nbytes)
                       for i, (arg, shape, nbytes) in enumerate(zip(self._outputs, shapes, sizes))]
            if self._sizes:
                executor.run(inputs, outputs, dims, workspace_size)
            else:
                executor.run(inputs, outputs)
        finally:
            for view in views:
                view.release()
        results, seen = [], set()
        for i in selected:
            result = self._outputs[i].result(outputs[i], shapes[i])
            # A name asked for twice gets two results: each is the caller's own to modify.
            results.append(copy.deepcopy(result) if i in seen else result)
            seen.add(i)
        return results

    def run_on_device(self, output_names: Iterable[str] | None, input_feed: Mapping[str, Any]) -> list[CudaArray]:
        """``run``, leaving the outputs in GPU memory (CUDA artifacts only); see ``CudaArray``."""
        executor = self._open_executor()
        if not executor.device_io:
            raise ExecutionError("run_on_device needs a CUDA artifact; this one runs on the CPU, use run()")
        selected = self._output_indices(output_names)
        for i in selected:
            if self._outputs[i].element_type.elements_per_byte > 1:
                raise InvalidOutputNameError(f"output {self._outputs[i].name!r} ({self._outputs[i].type}) is packed "
                                             "below one byte per element on the device; fetch it with run()")
        memory = {i: executor.allocate(self._outputs[i].element_type.shape_nbytes(self._outputs[i].shape))
                  for i in selected}
        views: list[DeviceView] = []
        try:
            inputs, _ = self._marshaled_inputs(input_feed, executor, views)
            executor.run(inputs, [memory.get(i) for i in range(len(self._outputs))])
        finally:
            for view in views:
                view.release()
        return [CudaArray(memory[i], self._outputs[i].shape, self._outputs[i].dtype, self._outputs[i].name)
                for i in selected]

    def kernel_profile(self, reset: bool = False) -> list[KernelTime]:
        """Per-kernel mean wall time per run, in plan order (artifacts compiled with profiling only)."""
        executor = self._open_executor()
        counters = getattr(executor, "profile_ns", None)
        if counters is None:
            raise ExecutionError("this artifact was compiled without profiling; "
                                 "recompile it with `tilec compile --profile` (or use `tilec profile`)")
        runs = max(executor.profiled_runs, 1)
        result = [KernelTime(str(k.get("name", "")), str(k.get("ops", "")), int(k.get("flops", 0)), int(ns) / runs / 1e9)
                  for k, ns in zip(self._manifest["kernels"], counters)]
        if reset:
            counters[:] = 0
            executor.profiled_runs = 0
        return result

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def __enter__(self) -> "InferenceSession":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- helpers ------------------------------------------------------------------

    def _open_executor(self) -> Executor:
        if self._executor is None:
            raise ExecutionError("the session is closed")
        return self._executor

    def _output_indices(self, output_names: Iterable[str] | None) -> list[int]:
        if output_names is None:
            return list(range(len(self._outputs)))
        if isinstance(output_names, (str, bytes)):
            raise InvalidOutputNameError(f"output_names must be a list of names, not the string {output_names!r}")
        try:
            names = iter(output_names)
        except TypeError:
            raise InvalidOutputNameError(f"output_names must be a list of output names or None, "
                                         f"got {type(output_names).__name__}") from None
        index = self._output_positions
        selected = []
        for name in names:
            # Checked before the lookup: an unhashable entry (a nested list) must not escape as TypeError.
            if not isinstance(name, str):
                raise InvalidOutputNameError(f"output_names holds {name!r} ({type(name).__name__}), not an output "
                                             f"name; the model's outputs are: {self._output_list()}")
            if name not in index:
                raise InvalidOutputNameError(f"the model has no output {name!r}; its outputs are: "
                                             f"{self._output_list()}")
            selected.append(index[name])
        return selected

    def _output_list(self) -> str:
        return ", ".join(repr(arg.name) for arg in self._outputs)

    def _expected_inputs(self) -> str:
        return "; ".join(arg.describe() for arg in self._api_inputs) or "none"

    def _marshaled_inputs(self, input_feed: Mapping[str, Any], executor: Executor,
                          views: list[DeviceView]) -> tuple[list[Any], np.ndarray | None]:
        """The inputs as the executor takes them and the size variables' values they set; the GPU tensors'
        views are added to ``views`` (the caller releases them, whatever happens)."""
        if type(input_feed) is not dict and not isinstance(input_feed, Mapping):  # dict first: the ABC check costs
            raise InvalidInputError(f"input_feed must be a dict of name -> numpy array, got {type(input_feed).__name__}")
        known = self._known_inputs
        # Names are strings; a key of another type (a Mapping may even yield unhashable ones) is unknown.
        unknown = [name for name in input_feed if not isinstance(name, str) or name not in known]
        if unknown:
            raise InvalidInputError(f"unknown input(s) {', '.join(map(repr, unknown))}; the model's inputs are: "
                                    f"{self._expected_inputs()}")
        missing = [arg.name for arg in self._api_inputs if arg.name not in input_feed]
        if missing:
            raise InvalidInputError(f"missing input(s) {', '.join(map(repr, missing))}; the model's inputs are: "
                                    f"{self._expected_inputs()}")
        inputs, shapes = [], []
        for arg in self._inputs:
            value = input_feed[arg.name] if arg.map_part is None else _map_part(arg, input_feed[arg.map_part[0]])
            try:
                view = None if type(value) is np.ndarray else device_view(value)
            except InvalidInputError as exc:  # a malformed GPU tensor: say which input it is
                raise InvalidInputError(f"input {arg.name!r}: {exc}") from None
            if view is None:
                native, shape = _checked_array(arg, value)
                inputs.append(native)
                shapes.append(shape)
            else:
                views.append(view)
                inputs.append(_checked_view(arg, view, executor.device_io))
        dims = np.array(self._bind(shapes, inputs), dtype=np.int64) if self._sizes else None
        return inputs, dims


def _checked_view(arg: NodeArg, view: DeviceView, device_io: bool) -> DeviceView:
    """A GPU tensor that the kernels can read in place as ``arg``."""
    if not device_io:
        raise InvalidInputError(f"input {arg.name!r} is in GPU memory ({view.source}); this artifact runs on the "
                                "CPU and takes numpy arrays")
    etype = arg.element_type
    if etype.elements_per_byte > 1:
        raise InvalidInputError(f"input {arg.name!r} ({arg.type}) is packed below one byte per element on the "
                                "device; pass it as a numpy array of codes")
    if view.dtype != arg.dtype:
        raise InvalidInputError(f"input {arg.name!r} has dtype {view.dtype} ({view.source}), expected {arg.dtype} "
                                f"({arg.type}); tilec does not convert silently")
    if list(view.shape) != arg.shape:
        raise InvalidInputError(f"input {arg.name!r} has shape {list(view.shape)} ({view.source}), expected {arg.shape}")
    if not view.contiguous:
        raise InvalidInputError(f"input {arg.name!r} is not C-contiguous (strides {list(view.strides or ())} bytes); "
                                "tilec reads device inputs in place: pass a contiguous copy")
    if view.pointer % arg.dtype.itemsize:
        raise InvalidInputError(f"input {arg.name!r}: device pointer {view.pointer:#x} is not aligned to its "
                                f"{arg.dtype.itemsize}-byte elements")
    return view


def _checked_array(arg: NodeArg, value: Any) -> tuple[np.ndarray, list[int]]:
    """The value as the native buffer of exactly ``arg``'s dtype and shape (C-contiguous, aligned, packed),
    and its shape; symbolic dims are checked by the caller, which binds them across the inputs."""
    etype = arg.element_type
    if (type(value) is np.ndarray and value.dtype == etype.api_dtype and etype.elements_per_byte == 1
            and not etype.code_axis and value.flags.c_contiguous and value.flags.aligned):
        # The common case, already the native buffer: what the checks below would conclude, without their cost.
        if not arg.symbolic and list(value.shape) != arg.shape:
            raise InvalidInputError(f"input {arg.name!r} has shape {list(value.shape)}, expected {arg.shape}")
        return value, list(value.shape)
    if not isinstance(value, (np.ndarray, np.generic)):
        raise InvalidInputError(
            f"input {arg.name!r} must be a numpy array, got {type(value).__name__}; "
            f"wrap it with np.asarray(value, dtype=np.{arg.dtype.name})"
        )
    if isinstance(value, np.ma.MaskedArray) and np.ma.getmask(value) is not np.ma.nomask and value.mask.any():
        # The native code reads every element: the data under the mask would be used silently.
        raise InvalidInputError(f"input {arg.name!r} is a masked array with {int(np.count_nonzero(value.mask))} "
                                "masked element(s); tilec reads every element: pass value.filled(...)")
    array = np.asarray(value)
    converted = etype.as_api_array(array)
    if converted is None:
        alternative = f" codes or an ml_dtypes {etype.name} array" if etype.name != arg.dtype.name else ""
        raise InvalidInputError(
            f"input {arg.name!r} has dtype {array.dtype}, expected {arg.dtype}{alternative} ({arg.type}); "
            f"tilec does not convert silently, use .astype(np.{arg.dtype.name})"
        )
    if not arg.symbolic and list(array.shape) != arg.shape:
        raise InvalidInputError(f"input {arg.name!r} has shape {list(array.shape)}, expected {arg.shape}")
    native = etype.to_native(converted)
    return native, list(native.shape if etype.code_axis else array.shape)
