"""Runs CUDA artifacts (``target.kind == "cuda"``) through the CUDA driver API (cuda-bindings).

Contract: ``CudaExecutor(artifact, device_id)`` needs an NVIDIA GPU, its driver and
the ``cuda-bindings`` package (imported here only, so CPU-only installs never
need it); without them it raises ``IncompatibleArtifactError`` with the reason.
At load it loads the module from the artifact's ``cuda`` section (the CUBIN,
falling back to JIT-compiling the PTX when the CUBIN does not fit this GPU),
uploads the weights once and allocates one device arena (``workspace_size``)
and one device buffer per input and output.

``run(inputs, outputs)`` launches the plan (``manifest["cuda"]["launches"]``) in
order on the legacy default stream. Each input is a numpy array (copied into the
input's own device buffer) or a ``DeviceView`` of GPU memory (runtime_stub/device_arrays.py),
which the kernels read in place: its pointer is checked to be device memory of
this GPU, and its producer's stream is waited for. Each output is a numpy array
(copied back), a ``DeviceMemory`` from ``allocate`` (written in place, left on
the device) or None (written to the output's own buffer and not copied). A run
whose run-time checks (``Artifact.checks``) fail raises ``InvalidInputError``. Calls
are serialised by a lock.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any, Sequence, Union

import numpy as np

from runtime_stub.device_arrays import DeviceView
from runtime_stub.dtypes import element_type
from runtime_stub.errors import ExecutionError, IncompatibleArtifactError, InvalidInputError

SECTION = "cuda"
# CUDA array interface stream values that need no wait: none given, the legacy and the per-thread
# default streams (both synchronise with the legacy default stream tilec launches on).
_IMPLICITLY_ORDERED_STREAMS = (None, 1, 2)


def _nbytes(entry: dict[str, Any]) -> int:
    return element_type(entry["dtype"]).shape_nbytes(entry["shape"])


@dataclass
class _Launch:
    function: Any
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    values: np.ndarray  # one uint64 per kernel argument: its device pointer
    params: np.ndarray  # kernelParams: the address of each value
    bound: list[tuple[int, str, int]]  # (argument, "input" / "output", index): pointers set per run
    name: str


class _Allocation:
    """Device memory handed to the caller (a ``CudaArray``'s): it keeps the GPU's primary context
    retained, so it outlives the session, and frees itself when garbage collected."""

    def __init__(self, cu: Any, device: Any, ordinal: int, nbytes: int) -> None:
        self._cu = cu
        self.device = ordinal
        context = _check(cu, cu.cuDevicePrimaryCtxRetain(device), "cuDevicePrimaryCtxRetain")
        _check(cu, cu.cuCtxSetCurrent(context), "cuCtxSetCurrent")
        try:
            self.pointer = int(_check(cu, cu.cuMemAlloc(max(int(nbytes), 1)), f"cuMemAlloc({nbytes})"))
        except BaseException:
            cu.cuDevicePrimaryCtxRelease(device)
            raise
        self._finalizer = weakref.finalize(self, _free, cu, device, context, self.pointer)

    def copy_to_host(self, destination: np.ndarray) -> None:
        _check(self._cu, self._cu.cuMemcpyDtoH(destination.ctypes.data, self.pointer, destination.nbytes),
               "cuMemcpyDtoH(device output)")


def _free(cu: Any, device: Any, context: Any, pointer: int) -> None:
    cu.cuCtxSetCurrent(context)
    cu.cuMemFree(pointer)
    cu.cuDevicePrimaryCtxRelease(device)


def _check(cu: Any, result: Any, what: str) -> Any:
    """The values of a cuda-bindings call's (CUresult, values...) tuple; ExecutionError on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cu.CUresult.CUDA_SUCCESS:
        _, name = cu.cuGetErrorName(err)
        _, text = cu.cuGetErrorString(err)
        decode = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else str(b)  # noqa: E731
        raise ExecutionError(f"{what} failed: {decode(name)} ({decode(text)})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


Input = Union[np.ndarray, DeviceView]
Output = Union[np.ndarray, _Allocation, None]


class CudaExecutor:
    device_io = True  # takes inputs in GPU memory and leaves outputs there

    def __init__(self, artifact, device_id: int = 0) -> None:
        manifest = artifact.manifest
        plan = manifest.get("cuda")
        if not isinstance(plan, dict) or "launches" not in plan or SECTION not in artifact.sections:
            raise IncompatibleArtifactError(
                "the artifact says target kind 'cuda' but has no launch plan ('cuda' in the manifest) or no 'cuda' "
                "section, which the CUDA executor needs; rebuild it with tilec compile --target cuda")
        try:
            from cuda.bindings import driver
        except ImportError as exc:
            raise IncompatibleArtifactError(
                f"this CUDA artifact needs an NVIDIA GPU and driver, and the cuda-bindings package to reach them: {exc} "
                "(pip install 'tilec[cuda]')") from None
        self._cu = driver
        self._lock = threading.Lock()
        self._allocations: list[Any] = []
        self._module = None
        self._context = None
        self._device = None
        self.device_ordinal = device_id
        self._input_names = [str(e["name"]) for e in manifest.get("inputs", [])]
        try:
            self._check(driver.cuInit(0), "cuInit")
            self._device = self._check(driver.cuDeviceGet(self.device_ordinal), f"cuDeviceGet({device_id})")
            self._context = self._check(driver.cuDevicePrimaryCtxRetain(self._device), "cuDevicePrimaryCtxRetain")
        except ExecutionError as exc:
            raise IncompatibleArtifactError(f"this CUDA artifact needs an NVIDIA GPU and driver: {exc}") from None
        except Exception as exc:  # no libcuda.so at all: the bindings fail to load it
            raise IncompatibleArtifactError(
                f"this CUDA artifact needs an NVIDIA GPU and driver: {type(exc).__name__}: {exc}") from None
        try:
            self._activate()
            self._load_module(artifact, plan)
            self._weights = self._upload(np.asarray(artifact.weights))
            self._workspace = self._alloc(int(manifest.get("workspace_size", 0)))
            self._inputs = [self._alloc(_nbytes(e)) for e in manifest.get("inputs", [])]
            self._outputs = [self._alloc(_nbytes(e)) for e in manifest.get("outputs", [])]
            self._launches = [self._prepare(launch) for launch in plan["launches"]]
            self._checks = artifact.checks
        except BaseException:
            self.close()
            raise

    # --- driver helpers -----------------------------------------------------------

    def _check(self, result: Any, what: str) -> Any:
        return _check(self._cu, result, what)

    def _activate(self) -> None:
        self._check(self._cu.cuCtxSetCurrent(self._context), "cuCtxSetCurrent")

    def _alloc(self, nbytes: int) -> int:
        ptr = self._check(self._cu.cuMemAlloc(max(int(nbytes), 1)), f"cuMemAlloc({nbytes})")
        self._allocations.append(ptr)
        return int(ptr)

    def _upload(self, host: np.ndarray) -> int:
        ptr = self._alloc(host.nbytes)
        if host.nbytes:
            host = np.ascontiguousarray(host)
            self._check(self._cu.cuMemcpyHtoD(ptr, host.ctypes.data, host.nbytes), "cuMemcpyHtoD(weights)")
        return ptr

    def _load_module(self, artifact, plan: dict[str, Any]) -> None:
        section = np.asarray(artifact.sections[SECTION])
        images = plan.get("images", {})
        errors = []
        for kind in ("cubin", "ptx"):
            entry = images.get(kind)
            if not entry or not entry.get("size"):
                continue
            data = section[int(entry["offset"]):int(entry["offset"]) + int(entry["size"])].tobytes()
            if kind == "ptx":
                data += b"\0"
            buffer = np.frombuffer(data, dtype=np.uint8)
            try:
                self._module = self._check(self._cu.cuModuleLoadData(buffer.ctypes.data), f"loading the {kind}")
                return
            except ExecutionError as exc:
                errors.append(str(exc))
        arch = plan.get("arch", "?")
        raise IncompatibleArtifactError(
            f"this CUDA artifact (built for {arch}) cannot be loaded on this GPU ({self._gpu_name()}): "
            + "; ".join(errors or ["it has no CUBIN or PTX image"]))

    def _gpu_name(self) -> str:
        try:
            name = self._check(self._cu.cuDeviceGetName(256, self._device), "cuDeviceGetName")
            return name.split(b"\0")[0].decode(errors="replace")
        except Exception:  # noqa: BLE001 - only for a message
            return "unknown GPU"

    def _prepare(self, launch: dict[str, Any]) -> _Launch:
        """A launch's parameter block, with the arena and weight pointers fixed and the input and output
        pointers filled in by each run."""
        fn = self._check(self._cu.cuModuleGetFunction(self._module, launch["name"].encode()),
                         f"cuModuleGetFunction({launch['name']})")
        args = launch["args"]
        values = np.array([self._pointer(a) for a in args], dtype=np.uint64)
        params = np.array([values.ctypes.data + 8 * k for k in range(len(values))], dtype=np.uint64)
        bound = [(k, a["kind"], int(a["index"])) for k, a in enumerate(args) if a["kind"] in ("input", "output")]
        return _Launch(fn, tuple(launch["grid"]), tuple(launch["block"]), int(launch.get("shared_mem", 0)),
                       values, params, bound, launch["name"])

    def _pointer(self, arg: dict[str, Any]) -> int:
        kind = arg["kind"]
        if kind == "input":
            return self._inputs[int(arg["index"])]
        if kind == "output":
            return self._outputs[int(arg["index"])]
        base = self._weights if kind == "weights" else self._workspace
        return base + int(arg.get("offset", 0))

    # --- running --------------------------------------------------------------------

    def allocate(self, nbytes: int) -> _Allocation:
        """Device memory for an output that stays on the device (``run``'s outputs)."""
        return _Allocation(self._cu, self._device, self.device_ordinal, nbytes)

    def run(self, inputs: Sequence[Input], outputs: Sequence[Output]) -> None:
        cu = self._cu
        with self._lock:
            self._activate()
            input_ptrs = [self._stage_input(k, value) for k, value in enumerate(inputs)]
            output_ptrs = [out.pointer if isinstance(out, _Allocation) else own
                           for out, own in zip(outputs, self._outputs)]
            for launch in self._launches:
                for k, kind, index in launch.bound:
                    launch.values[k] = (input_ptrs if kind == "input" else output_ptrs)[index]
                # The driver copies the argument values at launch: the next run may rewrite them.
                self._check(cu.cuLaunchKernel(launch.function, *launch.grid, *launch.block, launch.shared_mem, 0,
                                              launch.params.ctypes.data if len(launch.values) else 0, 0),
                            f"launching {launch.name}")
            self._check(cu.cuCtxSynchronize(), "running the kernels")
            for array, ptr in zip(outputs, self._outputs):
                if isinstance(array, np.ndarray) and array.nbytes:
                    self._check(cu.cuMemcpyDtoH(array.ctypes.data, ptr, array.nbytes), "cuMemcpyDtoH(output)")
            flag = np.zeros(1, dtype=np.uint8)
            failed = []
            for check in self._checks:
                self._check(cu.cuMemcpyDtoH(flag.ctypes.data, self._workspace + check.offset, 1), "reading a check")
                if flag[0]:
                    failed.append(check.message)
        if failed:
            raise InvalidInputError("; ".join(failed))

    def _stage_input(self, k: int, value: Input) -> int:
        """The device pointer the kernels read input ``k`` from."""
        own = self._inputs[k]
        if isinstance(value, np.ndarray):
            if value.nbytes:
                self._check(self._cu.cuMemcpyHtoD(own, value.ctypes.data, value.nbytes), "cuMemcpyHtoD(input)")
            return own
        if not value.pointer:  # an empty tensor: nothing is read
            return own
        name = self._input_names[k]
        try:
            ordinal = int(self._check(self._cu.cuPointerGetAttribute(
                self._cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, value.pointer),
                "cuPointerGetAttribute"))
        except ExecutionError as exc:
            raise InvalidInputError(f"input {name!r}: its {value.source} pointer {value.pointer:#x} is not CUDA "
                                    f"memory ({exc})") from None
        if ordinal != self.device_ordinal:
            raise InvalidInputError(f"input {name!r} is on cuda:{ordinal}; this session runs on "
                                    f"cuda:{self.device_ordinal}")
        if value.stream not in _IMPLICITLY_ORDERED_STREAMS:
            self._check(self._cu.cuStreamSynchronize(value.stream), f"waiting for input {name!r}'s stream")
        return value.pointer

    def close(self) -> None:
        cu = getattr(self, "_cu", None)
        if cu is None or self._context is None:
            return
        with self._lock:
            try:
                self._activate()
                for ptr in self._allocations:
                    cu.cuMemFree(ptr)
                self._allocations = []
                if self._module is not None:
                    cu.cuModuleUnload(self._module)
                    self._module = None
            finally:
                cu.cuDevicePrimaryCtxRelease(self._device)
                self._context = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
