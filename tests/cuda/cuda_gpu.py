"""Whether this machine can run CUDA artifacts (GPU + driver + cuda-bindings)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def gpu_reason() -> str | None:
    """None when a GPU is usable, else why not."""
    try:
        from cuda.bindings import driver
    except ImportError as exc:
        return f"cuda-bindings is not installed ({exc})"
    try:
        (err,) = driver.cuInit(0)
        if err != driver.CUresult.CUDA_SUCCESS:
            return f"cuInit failed: {err.name}"
        err, count = driver.cuDeviceGetCount()
        if err != driver.CUresult.CUDA_SUCCESS or count == 0:
            return "no CUDA device"
    except Exception as exc:  # noqa: BLE001 - no libcuda at all
        return f"no NVIDIA driver: {type(exc).__name__}: {exc}"
    return None


def gpu_available() -> bool:
    return gpu_reason() is None
