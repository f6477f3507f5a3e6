"""tilec's deployable runtime: loads a .tilec artifact and runs it (numpy + ctypes + stdlib)."""

from __future__ import annotations

from runtime_stub.device_arrays import CudaArray
from runtime_stub.errors import (
    ArtifactError,
    CorruptArtifactError,
    ExecutionError,
    IncompatibleArtifactError,
    InvalidInputError,
    InvalidOutputNameError,
    NotAnArtifactError,
    TilecError,
    TilecWarning,
)
from runtime_stub.session import InferenceSession, KernelTime, NodeArg

__all__ = [
    "ArtifactError",
    "CorruptArtifactError",
    "CudaArray",
    "ExecutionError",
    "IncompatibleArtifactError",
    "InferenceSession",
    "InvalidInputError",
    "InvalidOutputNameError",
    "KernelTime",
    "NodeArg",
    "NotAnArtifactError",
    "TilecError",
    "TilecWarning",
]
