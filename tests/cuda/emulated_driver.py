"""A stand-in for ``cuda.bindings.driver`` that runs tilec's CUDA artifacts on the CPU (no GPU needed).

Device memory is host memory, so a device pointer is an address the emulated
kernels can dereference; ``cuLaunchKernel`` calls the kernel compiled from the
same generated CUDA C by cuda_emulation.py (g++ + emulation.h), unpacking
``kernelParams`` as the driver does. Like the real driver it refuses what a GPU
would refuse: a copy or a kernel argument outside the device allocations (so a
host pointer reaching a kernel fails the test instead of silently working), a
double free, an unknown kernel name. It records the module image, copies,
launches, stream waits and primary-context retains, for tests to inspect.

``install(monkeypatch, *models)`` builds the emulated kernels of the models (as
``compiler.compile(model, target="cuda")`` generates them) and puts the driver in
``sys.modules`` as ``cuda.bindings.driver``; runtime_stub then runs CUDA artifacts
of those models through it. Kernel names must not clash between the models.
"""

from __future__ import annotations

import bisect
import ctypes
import enum
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import onnx

from cuda_emulation import build_shared_object, lower_for_cuda

ALIGNMENT = 256  # cuMemAlloc's


class CUresult(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_INVALID_VALUE = 1
    CUDA_ERROR_NOT_FOUND = 500


class CUpointer_attribute(enum.IntEnum):  # noqa: N801 - the driver's spelling
    CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9


@dataclass
class EmulatedDriver:
    libraries: list[ctypes.CDLL]  # the emulated kernels of each model
    arity: dict[str, int]  # kernel name -> its number of (pointer) arguments
    # start address -> (buffer, device ordinal); the buffers keep the memory alive
    memory: dict[int, tuple[np.ndarray, int]] = field(default_factory=dict)
    image: bytes = b""
    copies_in: list[tuple[int, int]] = field(default_factory=list)
    copies_out: list[tuple[int, int]] = field(default_factory=list)
    launches: list[tuple[str, list[int]]] = field(default_factory=list)
    stream_waits: list[int] = field(default_factory=list)
    context_retains: int = 0
    current_device: int = 0  # the device of the current context (a context handle here is its device)

    CUresult = CUresult
    CUpointer_attribute = CUpointer_attribute

    # --- for tests ------------------------------------------------------------------

    def device_array(self, host: np.ndarray, device: int = 0) -> np.ndarray:
        """A copy of ``host`` in fake GPU ``device``'s memory (a numpy view of it)."""
        _, ptr = self.cuMemAlloc(max(host.nbytes, 1))
        buffer, _ = self.memory[ptr]
        self.memory[ptr] = (buffer, device)
        view = buffer[:host.nbytes].view(host.dtype).reshape(host.shape)
        view[...] = host
        return view

    def owner(self, ptr: int, nbytes: int = 1) -> int | None:
        """The device ordinal of the allocation holding ``[ptr, ptr + nbytes)``, None outside every one."""
        starts = sorted(self.memory)
        k = bisect.bisect_right(starts, ptr) - 1
        if k < 0:
            return None
        buffer, device = self.memory[starts[k]]
        return device if ptr + nbytes <= starts[k] + buffer.nbytes else None

    @property
    def allocated(self) -> int:
        return len(self.memory)

    # --- the driver calls runtime_stub makes --------------------------------------------

    def cuGetErrorName(self, err):
        return CUresult.CUDA_SUCCESS, CUresult(err).name.encode()

    def cuGetErrorString(self, err):
        return CUresult.CUDA_SUCCESS, b"emulated driver error"

    def cuInit(self, flags):
        return (CUresult.CUDA_SUCCESS,)

    def cuDeviceGet(self, ordinal):
        return CUresult.CUDA_SUCCESS, ordinal

    def cuDeviceGetName(self, length, device):
        return CUresult.CUDA_SUCCESS, b"Emulated GPU\0"

    def cuDevicePrimaryCtxRetain(self, device):
        self.context_retains += 1
        return CUresult.CUDA_SUCCESS, device

    def cuDevicePrimaryCtxRelease(self, device):
        self.context_retains -= 1
        return (CUresult.CUDA_SUCCESS,)

    def cuCtxSetCurrent(self, context):
        self.current_device = context
        return (CUresult.CUDA_SUCCESS,)

    def cuCtxSynchronize(self):
        return (CUresult.CUDA_SUCCESS,)

    def cuStreamSynchronize(self, stream):
        self.stream_waits.append(int(stream))
        return (CUresult.CUDA_SUCCESS,)

    def cuModuleLoadData(self, address):
        self.image = ctypes.string_at(address, 4)
        return CUresult.CUDA_SUCCESS, "module0"

    def cuModuleUnload(self, module):
        return (CUresult.CUDA_SUCCESS,)

    def cuModuleGetFunction(self, module, name):
        symbol = f"tl_emu_call_{name.decode()}"
        fn = next((getattr(lib, symbol) for lib in self.libraries if hasattr(lib, symbol)), None)
        if fn is None:
            return CUresult.CUDA_ERROR_NOT_FOUND, None
        fn.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p]
        return CUresult.CUDA_SUCCESS, (name.decode(), fn)

    def cuMemAlloc(self, nbytes):
        raw = np.zeros(int(nbytes) + ALIGNMENT, dtype=np.uint8)
        start = -raw.ctypes.data % ALIGNMENT
        buffer = raw[start:start + int(nbytes)]
        self.memory[buffer.ctypes.data] = (buffer, self.current_device)
        return CUresult.CUDA_SUCCESS, buffer.ctypes.data

    def cuMemFree(self, ptr):
        if self.memory.pop(int(ptr), None) is None:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        return (CUresult.CUDA_SUCCESS,)

    def cuMemcpyHtoD(self, dst, src, nbytes):
        if self.owner(int(dst), nbytes) is None:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        self.copies_in.append((int(dst), nbytes))
        ctypes.memmove(int(dst), int(src), nbytes)
        return (CUresult.CUDA_SUCCESS,)

    def cuMemcpyDtoH(self, dst, src, nbytes):
        if self.owner(int(src), nbytes) is None:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        self.copies_out.append((int(src), nbytes))
        ctypes.memmove(int(dst), int(src), nbytes)
        return (CUresult.CUDA_SUCCESS,)

    def cuPointerGetAttribute(self, attribute, ptr):
        device = self.owner(int(ptr))
        if attribute != CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL or device is None:
            return CUresult.CUDA_ERROR_INVALID_VALUE, None
        return CUresult.CUDA_SUCCESS, device

    def cuLaunchKernel(self, function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        name, fn = function
        if (gy, gz, by, bz) != (1, 1, 1, 1) or shared or stream or extra:
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        nargs = self.arity[name]
        slots = (ctypes.c_void_p * nargs).from_address(params) if nargs else []
        pointers = [ctypes.c_uint64.from_address(slot).value for slot in slots]
        if any(self.owner(p) is None for p in pointers):
            return (CUresult.CUDA_ERROR_INVALID_VALUE,)
        self.launches.append((name, pointers))
        fn(gx, bx, params)
        return (CUresult.CUDA_SUCCESS,)


def install(monkeypatch, *models: onnx.ModelProto) -> EmulatedDriver:
    """The emulated driver for the ``models``' CUDA kernels, importable as ``cuda.bindings.driver``."""
    modules = [lower_for_cuda(model)[1] for model in models]
    driver = EmulatedDriver([ctypes.CDLL(str(build_shared_object(m))) for m in modules],
                            {launch.name: len(launch.args) for m in modules for launch in m.launches})
    bindings = types.ModuleType("cuda.bindings")
    bindings.driver = driver
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    return driver
