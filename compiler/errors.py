"""Errors raised by the compiler: the shared hierarchy from runtime_stub, plus node context.

Diagnostics about a graph node always name the node, its op type and opset, via
``node_context``.
"""

from __future__ import annotations

from runtime_stub.errors import (
    ArtifactError,
    CompileError,
    CorruptArtifactError,
    DataDependentError,
    ExecutionError,
    IncompatibleArtifactError,
    InvalidInputError,
    InvalidOutputNameError,
    ModelLoadError,
    NotAnArtifactError,
    ShapeError,
    TargetError,
    TilecError,
    TilecWarning,
    ToolchainError,
    UnsupportedOpError,
)

__all__ = [
    "ArtifactError",
    "CompileError",
    "CorruptArtifactError",
    "DataDependentError",
    "ExecutionError",
    "IncompatibleArtifactError",
    "InvalidInputError",
    "InvalidOutputNameError",
    "ModelLoadError",
    "NotAnArtifactError",
    "ShapeError",
    "TargetError",
    "TilecError",
    "TilecWarning",
    "ToolchainError",
    "UnsupportedOpError",
    "describe_node",
]


def describe_node(op_type: str, name: str, opset: int | None = None, domain: str = "") -> str:
    """``Conv 'conv1' (opset 11)``: the way every diagnostic names a node."""
    qualified = f"{domain}.{op_type}" if domain not in ("", "ai.onnx") else op_type
    version = f" (opset {opset})" if opset is not None else ""
    return f"{qualified} '{name}'{version}"
