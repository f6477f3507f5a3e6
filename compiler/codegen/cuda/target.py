"""CUDA targets: ``cuda`` (sm_80) or ``cuda:sm_XY``.

``CudaTarget`` brings its own schedules (``schedule_computation``, see
``compiler/codegen/cuda/schedule.py``): the lowering driver uses them instead
of the CPU defaults, whose vector and register tiles would only take
parallelism away from GPU threads.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.codegen.cuda.schedule import schedule_computation
from compiler.errors import TargetError
from compiler.loopir.compute import Computation
from compiler.loopir.stmt import Stmt

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

    @property
    def required_flags(self) -> tuple[str, ...]:
        return ()

    def schedule_computation(self, c: Computation) -> Stmt:
        return schedule_computation(c, self.compute_capability)


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
