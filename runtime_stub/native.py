"""Loading an artifact's native shared object and owning its context (ctypes + stdlib).

Contract: ``NativeModule(so_bytes, num_threads)`` loads the ELF bytes without leaving a
file behind (``memfd_create`` + ``dlopen("/proc/self/fd/N")``; a temporary file where
memfd or /proc is unavailable), checks ``tilec_abi_version() == ABI_VERSION``, reads the
code's ``signature`` (``tilec_signature()``, runtime_stub/signature.py), and
creates one context with ``tilec_create(num_threads)`` (``<= 0``: all online CPUs).
``new_context()`` creates another one (its own thread pool of the same size), so calls
can run concurrently, each on its own context.
``run(..., context=None)`` calls ``tilec_run`` with raw pointers on that context (the
first by default) and returns its status code; the call releases the GIL unless this module's calls
typically (a running mean) take under ``HOLD_GIL_BELOW_NS``. ``sizes(dims, out)`` calls ``tilec_sizes`` on two
int64 arrays: the run's size-variable values in, the workspace bytes and every output dim out.
``enable_profile(counters)`` hands the first context an int64 array that artifacts
compiled with profiling add each kernel's wall time (ns) to.
``close()`` (or garbage collection) destroys every context, unloads the library and
releases the file. The caller serialises the calls on one context: a context serves
one call at a time.
"""

from __future__ import annotations

import _ctypes
import ctypes
import functools
import os
import tempfile
import time
import weakref
from typing import Callable, Sequence

from runtime_stub.errors import ExecutionError, IncompatibleArtifactError
from runtime_stub.signature import ABI_VERSION

_vp = ctypes.c_void_p
# Calls that typically take less than this keep the GIL (NativeModule.run).
HOLD_GIL_BELOW_NS = 20_000
_SIGNATURES: dict[str, tuple[list, object]] = {
    "tilec_abi_version": ([], ctypes.c_int32),
    "tilec_signature": ([], ctypes.c_char_p),
    "tilec_create": ([ctypes.c_int32], _vp),
    "tilec_destroy": ([_vp], None),
    "tilec_num_threads": ([_vp], ctypes.c_int32),
    "tilec_run": ([_vp, ctypes.POINTER(_vp), ctypes.POINTER(_vp), _vp, _vp, _vp], ctypes.c_int32),
    "tilec_sizes": ([_vp, _vp], None),
}
# Exported by artifacts built since profiling was added; older ones simply cannot be profiled.
_OPTIONAL_SIGNATURES: dict[str, tuple[list, object]] = {
    "tilec_set_profile": ([_vp, _vp, ctypes.c_int32], None),
}


class NativeModule:
    """One loaded artifact library plus the thread-pool context it runs on."""

    def __init__(self, so_bytes: bytes, num_threads: int = 0) -> None:
        path, release_file = _materialize(so_bytes)
        try:
            lib = ctypes.CDLL(path)
        except OSError as exc:
            release_file()
            raise IncompatibleArtifactError(f"cannot load the artifact's native code on this machine: {exc}") from None
        try:
            functions = _bind(lib)
            version = functions["tilec_abi_version"]()
            if version != ABI_VERSION:
                raise IncompatibleArtifactError(
                    f"the artifact's native code uses ABI version {version}; this runtime speaks version {ABI_VERSION}"
                )
            self.signature: bytes = functions["tilec_signature"]()
            ctx = functions["tilec_create"](int(num_threads))
            if not ctx:
                raise ExecutionError(f"tilec_create({num_threads}) failed: could not start the thread pool")
        except BaseException:
            _unload(lib._handle, release_file)
            raise
        self._run = functions["tilec_run"]
        # The same function called without releasing the GIL, for calls too short to pay for the handoff.
        run_type = ctypes.PYFUNCTYPE(self._run.restype, *self._run.argtypes)
        self._run_holding_gil = run_type(ctypes.cast(self._run, _vp).value)
        self._typical_ns = HOLD_GIL_BELOW_NS  # a running mean of the calls' durations; released at first
        self._sizes = functions["tilec_sizes"]
        self._create = functions["tilec_create"]
        self._set_profile = functions.get("tilec_set_profile")
        self._ctx = ctx
        self._threads = int(num_threads)
        self._contexts = [ctx]  # every context, destroyed by the finalizer
        self.num_threads: int = functions["tilec_num_threads"](ctx)
        # The finalizer holds what it needs, not self, so the module can be collected.
        self._finalizer = weakref.finalize(self, _release, functions["tilec_destroy"], self._contexts, lib._handle,
                                           release_file)

    @property
    def primary_context(self) -> int:
        """The context made at load time (the one ``run`` uses by default)."""
        return self._ctx

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def new_context(self) -> int:
        """Another context for concurrent calls (destroyed with the module)."""
        if self.closed:
            raise ExecutionError("the native module is closed")
        ctx = self._create(self._threads)
        if not ctx:
            raise ExecutionError(f"tilec_create({self._threads}) failed: could not start the thread pool")
        self._contexts.append(ctx)
        return ctx

    def run(self, inputs: Sequence[int], outputs: Sequence[int], weights: int, workspace: int,
            context: int | None = None, dims: int = 0) -> int:
        """Call ``tilec_run`` with buffer addresses (``dims``: of the int64 size values, 0 for none);
        returns its status (0 = success)."""
        if self.closed:
            raise ExecutionError("the native module is closed")
        in_array = _pointers(len(inputs))(*inputs)
        out_array = _pointers(len(outputs))(*outputs)
        # ctypes drops the GIL for the call (the pool's threads run without Python), except where the
        # model's calls are short: then handing the GIL to another request thread and back costs more
        # than the call (two threads on a 10 us model: 0.7x the runs/s of one).
        call = self._run_holding_gil if self._typical_ns < HOLD_GIL_BELOW_NS else self._run
        start = time.perf_counter_ns()
        status = call(self._ctx if context is None else context, in_array, out_array, weights, workspace, dims or None)
        self._typical_ns += (time.perf_counter_ns() - start - self._typical_ns) // 8
        return int(status)

    def sizes(self, dims: int, out: int) -> None:
        """``tilec_sizes`` on the int64 arrays at these addresses: the run's dims in, the workspace bytes
        and then the outputs' dims out."""
        if self.closed:
            raise ExecutionError("the native module is closed")
        self._sizes(dims, out)

    def enable_profile(self, counters_address: int, count: int) -> None:
        """Let profiled kernels add their times (int64 ns) to ``count`` counters at that address."""
        if self._set_profile is None:
            raise IncompatibleArtifactError("the artifact's native code has no profiling support")
        self._set_profile(self._ctx, counters_address, count)

    def close(self) -> None:
        self._finalizer()


@functools.lru_cache(maxsize=None)
def _pointers(count: int) -> type:
    """The ctypes array type of ``count`` pointers (made once: building the type costs more than filling it)."""
    return _vp * count


def _bind(lib: ctypes.CDLL) -> dict[str, Callable]:
    functions = {}
    for name, (argtypes, restype) in _SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise IncompatibleArtifactError(f"the artifact's native code does not export {name}") from None
        fn.argtypes = argtypes
        fn.restype = restype
        functions[name] = fn
    for name, (argtypes, restype) in _OPTIONAL_SIGNATURES.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.argtypes = argtypes
            fn.restype = restype
            functions[name] = fn
    return functions


def _release(destroy: Callable, contexts: list[int], handle: int, release_file: Callable[[], None]) -> None:
    for ctx in contexts:
        destroy(ctx)  # joins the worker threads, so no thread is left inside the library
    _unload(handle, release_file)


def _unload(handle: int, release_file: Callable[[], None]) -> None:
    # dlclose before freeing the name: glibc matches dlopen requests by path, and a
    # reused /proc/self/fd/N or temp path must never resolve to this stale library.
    _ctypes.dlclose(handle)
    release_file()


def _materialize(data: bytes) -> tuple[str, Callable[[], None]]:
    """A path dlopen can read ``data`` from, and a function that frees it."""
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        try:
            fd = os.memfd_create("tilec-native", os.MFD_CLOEXEC)
        except OSError:
            pass
        else:
            try:
                _write_all(fd, data)
            except BaseException:
                os.close(fd)
                raise
            return f"/proc/self/fd/{fd}", lambda: os.close(fd)
    fd, path = tempfile.mkstemp(prefix="tilec-native-", suffix=".so")
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)
    return path, lambda: os.unlink(path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
