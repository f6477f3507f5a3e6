"""CUDA targets: ``cuda`` (sm_80) or ``cuda:sm_XY``.

``CudaTarget`` also answers the two questions the default schedules ask a
target (``vector_lanes``, ``vector_registers``), so the CUDA path lowers with
the same driver and schedules as the CPU path. The answers (one lane, no
register file to tile for) keep the CPU schedules from giving each GPU thread
vector-sized tiles: the CUDA emitter maps the outer loops of every nest to
threads, and every output element the schedule keeps in one thread's inner
loops is parallelism lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.errors import TargetError

CUDA_ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90")
DEFAULT_ARCH = "sm_80"


@dataclass(frozen=True)
class CudaTarget:
    arch: str = DEFAULT_ARCH
    kind: str = "cuda"

    @property
    def triple(self) -> str:
        return "nvptx64-nvidia-cuda"

    @property
    def cpu(self) -> str:
        return self.arch

    @property
    def compute_capability(self) -> tuple[int, int]:
        digits = self.arch.removeprefix("sm_")
        return int(digits[:-1]), int(digits[-1])

    # --- what the default schedules read ----------------------------------------------

    @property
    def vector_bits(self) -> int:
        return 8

    @property
    def vector_registers(self) -> int:
        return 4  # (registers - 4) // vectors == 0: one row per register tile

    @property
    def has_fma(self) -> bool:
        return True

    @property
    def required_flags(self) -> tuple[str, ...]:
        return ()

    def vector_lanes(self, itemsize: int) -> int:
        return 1


def is_cuda_target(target: str) -> bool:
    return target == "cuda" or target.startswith("cuda:")


def resolve_cuda_target(target: str = "cuda", cpu: str | None = None) -> CudaTarget:
    """``cuda`` → sm_80; ``cuda:sm_90`` → sm_90. ``cpu`` (a CPU option) must not be given."""
    if cpu is not None:
        raise TargetError(f"cpu={cpu!r} does not apply to CUDA targets; pick the GPU with target='cuda:sm_XY'")
    if not is_cuda_target(target):
        raise TargetError(f"{target!r} is not a CUDA target; use 'cuda' or 'cuda:<arch>' ({', '.join(CUDA_ARCHS)})")
    arch = target.partition(":")[2].strip().lower() or DEFAULT_ARCH
    if arch not in CUDA_ARCHS:
        raise TargetError(f"unknown CUDA architecture {arch!r}; known: {', '.join(CUDA_ARCHS)}")
    return CudaTarget(arch)
