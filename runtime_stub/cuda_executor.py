"""Runs CUDA artifacts (``target.kind == "cuda"``) through the CUDA driver API (cuda-bindings).

Contract: ``CudaExecutor(artifact, threads)`` needs an NVIDIA GPU, its driver and
the ``cuda-bindings`` package (imported here only, so CPU-only installs never
need it); without them it raises ``IncompatibleArtifactError`` with the reason.
At load it loads the module from the artifact's ``cuda`` section (the CUBIN,
falling back to JIT-compiling the PTX when the CUBIN does not fit this GPU),
uploads the weights once and allocates one device arena (``workspace_size``)
and one device buffer per input and output. ``run`` copies the inputs to the
device, launches the plan (``manifest["cuda"]["launches"]``) in order on the
default stream, and copies the outputs back. Calls are serialised by a lock.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import numpy as np

from runtime_stub.dtypes import element_type
from runtime_stub.errors import ExecutionError, IncompatibleArtifactError

SECTION = "cuda"


def _nbytes(entry: dict[str, Any]) -> int:
    return element_type(entry["dtype"]).nbytes(int(np.prod(entry["shape"], dtype=np.int64)))


class CudaExecutor:
    def __init__(self, artifact, threads: int = 0) -> None:
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
        try:
            self._check(driver.cuInit(0), "cuInit")
            self._device = self._check(driver.cuDeviceGet(0), "cuDeviceGet")
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
            # Every device address is fixed from here on: build each launch's parameter block once.
            self._launches = [self._prepare(launch) for launch in plan["launches"]]
        except BaseException:
            self.close()
            raise

    # --- driver helpers -----------------------------------------------------------

    def _check(self, result: Any, what: str) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self._cu.CUresult.CUDA_SUCCESS:
            _, name = self._cu.cuGetErrorName(err)
            _, text = self._cu.cuGetErrorString(err)
            decode = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else str(b)  # noqa: E731
            raise ExecutionError(f"{what} failed: {decode(name)} ({decode(text)})")
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)

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

    def _prepare(self, launch: dict[str, Any]) -> tuple:
        """(function, grid, block, shared bytes, parameter block, its keep-alive, name) of one launch."""
        fn = self._check(self._cu.cuModuleGetFunction(self._module, launch["name"].encode()),
                         f"cuModuleGetFunction({launch['name']})")
        # kernelParams: an array of pointers, each to one argument's value (here a device pointer).
        values = np.array([self._pointer(a) for a in launch["args"]], dtype=np.uint64)
        params = np.array([values.ctypes.data + 8 * k for k in range(len(values))], dtype=np.uint64)
        return (fn, tuple(launch["grid"]), tuple(launch["block"]), int(launch.get("shared_mem", 0)),
                params.ctypes.data if len(values) else 0, (values, params), launch["name"])

    def _pointer(self, arg: dict[str, Any]) -> int:
        kind = arg["kind"]
        if kind == "input":
            return self._inputs[int(arg["index"])]
        if kind == "output":
            return self._outputs[int(arg["index"])]
        base = self._weights if kind == "weights" else self._workspace
        return base + int(arg.get("offset", 0))

    # --- running --------------------------------------------------------------------

    def run(self, inputs: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> None:
        cu = self._cu
        with self._lock:
            self._activate()
            for array, ptr in zip(inputs, self._inputs):
                if array.nbytes:
                    self._check(cu.cuMemcpyHtoD(ptr, array.ctypes.data, array.nbytes), "cuMemcpyHtoD(input)")
            for fn, grid, block, shared, params, _, name in self._launches:
                self._check(cu.cuLaunchKernel(fn, *grid, *block, shared, 0, params, 0), f"launching {name}")
            self._check(cu.cuCtxSynchronize(), "running the kernels")
            for array, ptr in zip(outputs, self._outputs):
                if array.nbytes:
                    self._check(cu.cuMemcpyDtoH(array.ctypes.data, ptr, array.nbytes), "cuMemcpyDtoH(output)")

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
