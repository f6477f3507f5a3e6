"""GPU tensors at the API: reading other libraries' (CUDA array interface, DLPack), handing ours out.

Contract (numpy + ctypes only; no CUDA library is touched here):

* ``device_view(value)`` is a ``DeviceView`` when ``value`` is a tensor in GPU
  memory, described by ``__cuda_array_interface__`` (versions 2 and 3: CuPy,
  PyTorch, Numba, JAX, tilec's own ``CudaArray``) or by DLPack
  (``__dlpack_device__`` naming a CUDA device, then ``__dlpack__``), and None for
  anything else (host arrays go the numpy way). A view is a pointer, shape,
  numpy dtype, strides, device ordinal and the stream its producer last wrote on.
  ``DeviceView.release()`` hands a DLPack tensor back to its producer; call it once
  the kernels that read it have finished.
* ``CudaArray`` is a model output left in device memory (``InferenceSession.run_on_device``):
  it has ``shape``, ``dtype``, ``nbytes``, ``device_ptr``, a version-3
  ``__cuda_array_interface__`` (so ``cupy.asarray(a)`` and ``torch.as_tensor(a,
  device="cuda")`` use it without copying, and a session takes it as an input),
  ``numpy()`` (a copy on the host) and ``__array__``. Its memory is freed when the
  last reference to it (or to a view another library made of it) goes, not when
  the session closes.
"""

from __future__ import annotations

import ctypes
import operator
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

from runtime_stub.errors import InvalidInputError

# DLPack's device types (dlpack.h): CUDA memory, and CUDA memory mapped from pinned host memory.
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
# DLPack stream value for the CUDA legacy default stream, on which tilec launches its kernels.
_DL_LEGACY_STREAM = 1
# DLPack type codes → numpy kind (bfloat16 has no numpy dtype: it travels as uint16 bit patterns).
_DL_INT, _DL_UINT, _DL_FLOAT, _DL_BFLOAT, _DL_BOOL = 0, 1, 2, 4, 6


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    pass


_DELETER = ctypes.CFUNCTYPE(None, ctypes.POINTER(_DLManagedTensor))
_DLManagedTensor._fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", _DELETER)]

_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_is_valid = ctypes.pythonapi.PyCapsule_IsValid
_capsule_is_valid.restype = ctypes.c_int
_capsule_is_valid.argtypes = [ctypes.py_object, ctypes.c_char_p]
_capsule_set_name = ctypes.pythonapi.PyCapsule_SetName
_capsule_set_name.restype = ctypes.c_int
_capsule_set_name.argtypes = [ctypes.py_object, ctypes.c_char_p]


@dataclass
class DeviceView:
    """A tensor another library holds in GPU memory, as tilec reads it (see ``device_view``)."""

    pointer: int
    shape: tuple[int, ...]
    dtype: np.dtype
    strides: tuple[int, ...] | None  # in bytes; None: C-contiguous
    device: int  # the CUDA device ordinal
    stream: int | None  # the producer's stream to wait for (CUDA array interface v3), None: nothing to wait for
    source: str  # "__cuda_array_interface__" or "DLPack", for messages
    _release: Callable[[], None] | None = None

    @property
    def contiguous(self) -> bool:
        if self.strides is None:
            return True
        expected = self.dtype.itemsize
        for size, stride in zip(reversed(self.shape), reversed(self.strides)):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


def device_view(value: Any) -> DeviceView | None:
    """``value`` as a ``DeviceView`` if it lives in GPU memory, else None."""
    if isinstance(value, (np.ndarray, np.generic)):
        return None
    interface = _cuda_array_interface(value)
    if interface is not None:
        return _from_cuda_array_interface(interface)
    device = _dlpack_device(value)
    if device is not None and device[0] in (_DL_CUDA, _DL_CUDA_MANAGED):
        return _from_dlpack(value)
    return None


def _cuda_array_interface(value: Any) -> dict[str, Any] | None:
    try:
        interface = getattr(value, "__cuda_array_interface__", None)
    except Exception as exc:  # noqa: BLE001 - e.g. torch raises for dtypes the interface cannot describe
        raise InvalidInputError(f"{type(value).__name__}.__cuda_array_interface__ failed: {exc}") from None
    return interface if isinstance(interface, dict) else None


def _dlpack_device(value: Any) -> tuple[int, int] | None:
    method = getattr(value, "__dlpack_device__", None)
    if method is None or not hasattr(value, "__dlpack__"):
        return None
    try:
        device_type, device_id = method()
        return int(device_type), int(device_id)
    except Exception:  # noqa: BLE001 - not a usable DLPack producer: treat it as not a device tensor
        return None


def _from_cuda_array_interface(interface: dict[str, Any]) -> DeviceView:
    try:
        shape = tuple(int(d) for d in interface["shape"])
        dtype = np.dtype(interface["typestr"])
        pointer, _readonly = interface["data"]
        # A zero-size array may carry pointer 0 (the interface allows it); nothing is read from it.
        # Pointers and streams are integers: index() refuses floats and strings rather than truncating them.
        pointer = 0 if pointer is None else operator.index(pointer)
        strides = interface.get("strides")
        strides = None if strides is None else tuple(int(s) for s in strides)
        stream = interface.get("stream")
        stream = None if stream is None else operator.index(stream)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"a malformed __cuda_array_interface__ ({exc}): {interface!r}") from None
    if interface.get("mask") is not None:
        raise InvalidInputError("masked __cuda_array_interface__ arrays are not supported")
    return DeviceView(pointer, shape, dtype, strides, device=-1, stream=stream, source="__cuda_array_interface__")


def _numpy_dtype(code: int, bits: int, lanes: int) -> np.dtype | None:
    if lanes != 1:
        return None
    if code == _DL_BOOL and bits == 8:
        return np.dtype(np.bool_)
    if code == _DL_BFLOAT and bits == 16:
        return np.dtype(np.uint16)
    kind = {_DL_INT: "i", _DL_UINT: "u", _DL_FLOAT: "f"}.get(code)
    if kind is None or bits not in (8, 16, 32, 64) or (kind == "f" and bits == 8):
        return None
    return np.dtype(f"{kind}{bits // 8}")


def _from_dlpack(value: Any) -> DeviceView:
    try:
        capsule = value.__dlpack__(stream=_DL_LEGACY_STREAM)
    except Exception as exc:  # noqa: BLE001 - the producer's own failure, named
        raise InvalidInputError(f"{type(value).__name__}.__dlpack__ failed: {exc}") from None
    if not _capsule_is_valid(capsule, b"dltensor"):
        raise InvalidInputError(f"{type(value).__name__}.__dlpack__ did not return an unused 'dltensor' capsule")
    managed = _DLManagedTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
    # Consume it: from here on the capsule's destructor leaves the tensor to us, and we call its deleter.
    _capsule_set_name(capsule, b"used_dltensor")
    release = _deleter_call(managed)
    tensor = managed.dl_tensor
    try:
        shape = tuple(int(tensor.shape[k]) for k in range(tensor.ndim))
        dtype = _numpy_dtype(tensor.dtype.code, tensor.dtype.bits, tensor.dtype.lanes)
        if dtype is None:
            raise InvalidInputError(f"a DLPack tensor of an element type tilec does not know (code {tensor.dtype.code}, "
                                    f"{tensor.dtype.bits} bits, {tensor.dtype.lanes} lanes)")
        strides = (tuple(int(tensor.strides[k]) * dtype.itemsize for k in range(tensor.ndim))
                   if tensor.strides else None)
        return DeviceView(int(tensor.data or 0) + int(tensor.byte_offset), shape, dtype, strides,
                          device=int(tensor.device.device_id), stream=None, source="DLPack", _release=release)
    except BaseException:
        release()
        raise


def _deleter_call(managed: _DLManagedTensor) -> Callable[[], None]:
    deleter = managed.deleter
    address = ctypes.pointer(managed)

    def release() -> None:
        if deleter:
            deleter(address)

    return release


# --- outputs left on the device ---------------------------------------------------------


class DeviceMemory(Protocol):
    """One device allocation, owned by the executor that made it; freed when it is garbage collected."""

    pointer: int
    device: int

    def copy_to_host(self, destination: np.ndarray) -> None: ...


class CudaArray:
    """A model output in CUDA device memory (``InferenceSession.run_on_device``)."""

    def __init__(self, memory: DeviceMemory, shape: list[int], dtype: np.dtype, name: str = "") -> None:
        self._memory = memory
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.name = name

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def device_ptr(self) -> int:
        return self._memory.pointer

    @property
    def device(self) -> int:
        """The CUDA device ordinal that holds it."""
        return self._memory.device

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        # The kernels that wrote it have finished when run_on_device returns: no stream to wait for.
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.device_ptr, False),
                "strides": None, "version": 3, "stream": None}

    def numpy(self) -> np.ndarray:
        """A copy in host memory."""
        host = np.empty(self.shape, dtype=self.dtype)
        if host.nbytes:
            self._memory.copy_to_host(host)
        return host

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        host = self.numpy()
        return host if dtype is None else host.astype(dtype, copy=False)

    def __repr__(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        return f"<CudaArray{name} {self.dtype} {list(self.shape)} on cuda:{self.device} at {self.device_ptr:#x}>"
