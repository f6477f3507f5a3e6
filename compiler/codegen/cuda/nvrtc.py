"""CUDA C source → PTX and CUBIN with NVRTC (the ``nvidia-cuda-nvrtc`` + ``cuda-bindings`` wheels).

Contract: ``compile_cuda(source, arch)`` returns ``(ptx, cubin)`` as bytes, or
raises ``ToolchainError`` carrying NVRTC's compile log. Without the wheels it
raises ``ToolchainError`` telling to ``pip install tilec[cuda]``.
``nvrtc_available()`` says whether compiling can work here (no GPU needed).
"""

from __future__ import annotations

from functools import lru_cache

from compiler.errors import ToolchainError

INSTALL_HINT = "install the CUDA extra: pip install 'tilec[cuda]' (nvidia-cuda-nvrtc and cuda-bindings)"


@lru_cache(maxsize=1)
def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise ToolchainError(f"compiling for CUDA needs NVRTC, which is not installed ({exc}); {INSTALL_HINT}") from None
    try:
        err, *_ = nvrtc.nvrtcVersion()
    except Exception as exc:  # the bindings load libnvrtc lazily: a missing library surfaces here
        raise ToolchainError(f"the NVRTC library could not be loaded ({type(exc).__name__}: {exc}); {INSTALL_HINT}") from None
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise ToolchainError(f"NVRTC does not work here ({err.name}); {INSTALL_HINT}")
    return nvrtc


def nvrtc_available() -> bool:
    try:
        _nvrtc()
    except ToolchainError:
        return False
    return True


def nvrtc_version() -> tuple[int, int]:
    _, major, minor = _nvrtc().nvrtcVersion()
    return int(major), int(minor)


def _check(nvrtc, result, what: str) -> None:
    if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        _, text = nvrtc.nvrtcGetErrorString(result)
        raise ToolchainError(f"NVRTC {what} failed: {text.decode(errors='replace') if isinstance(text, bytes) else text}")


def _get(nvrtc, prog, size_fn, get_fn, what: str) -> bytes:
    err, size = size_fn(prog)
    _check(nvrtc, err, what)
    buf = b" " * size
    (err,) = get_fn(prog, buf)
    _check(nvrtc, err, what)
    return buf


def compile_cuda(source: str, arch: str, name: str = "tilec_model.cu",
                 options: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """Compile ``source`` for ``arch`` (``sm_80``...): (PTX text without the final NUL, CUBIN)."""
    nvrtc = _nvrtc()
    err, prog = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    _check(nvrtc, err, "program creation")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17", b"--fmad=true", *(o.encode() for o in options)]
        (result,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            log = _get(nvrtc, prog, nvrtc.nvrtcGetProgramLogSize, nvrtc.nvrtcGetProgramLog, "log")
            text = log.rstrip(b"\0").decode(errors="replace").strip()
            raise ToolchainError(f"NVRTC could not compile the generated CUDA C for {arch} (a compiler bug):\n{text}")
        ptx = _get(nvrtc, prog, nvrtc.nvrtcGetPTXSize, nvrtc.nvrtcGetPTX, "PTX")
        cubin = _get(nvrtc, prog, nvrtc.nvrtcGetCUBINSize, nvrtc.nvrtcGetCUBIN, "CUBIN")
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return ptx.rstrip(b"\0"), cubin
