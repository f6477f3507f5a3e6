"""The exception hierarchy of tilec, compiler and runtime alike.

It lives in runtime_stub because runtime_stub must not import the compiler; the
compiler re-exports it from ``compiler.errors``. Every failure a user can cause
maps to one of these types, and every message names the offending thing.
"""

from __future__ import annotations


class TilecError(Exception):
    """Base class of every error tilec raises on purpose."""


class TilecWarning(UserWarning):
    """Something tilec accepted by reading it one way where the model could be read otherwise; says which."""


# --- compile time -----------------------------------------------------------------


class CompileError(TilecError):
    """The compiler could not turn the model into an artifact."""


class ModelLoadError(CompileError):
    """The model file is unreadable or not a valid ONNX model."""


class UnsupportedOpError(CompileError):
    """One or more nodes use an operator (or a form of it) tilec cannot compile."""


class ShapeError(CompileError):
    """A shape is unknown at compile time (symbolic dimension, data-dependent shape)."""


class DataDependentError(ShapeError):
    """A value that fixes a shape (axes, sizes, pads, ...) is only known at run time.

    ``values`` names the model values whose contents the compiler needs; binding them with
    ``constant_inputs=`` (``--constant-input``) when they come from graph inputs resolves it.
    """

    def __init__(self, message: str, values: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.values = tuple(values)


class TargetError(CompileError):
    """The requested target, CPU or feature string is not known."""


class ToolchainError(CompileError):
    """The native toolchain (LLVM, linker, NVRTC) failed."""


# --- load time --------------------------------------------------------------------


class ArtifactError(TilecError):
    """The artifact file cannot be used."""


class NotAnArtifactError(ArtifactError):
    """The file is not a tilec artifact at all."""


class CorruptArtifactError(ArtifactError):
    """The artifact is truncated or its checksum does not match."""


class IncompatibleArtifactError(ArtifactError):
    """The artifact was built for another format version, architecture or CPU features."""


# --- run time ---------------------------------------------------------------------


class InvalidInputError(TilecError, ValueError):
    """An input to ``run`` has a wrong name, dtype or shape, or is missing, or holds a value the model
    cannot take (an index out of range, found by a run-time check)."""


class InvalidOutputNameError(TilecError, ValueError):
    """``run`` was asked for an output the model does not have."""


class ExecutionError(TilecError):
    """The native code reported a failure."""
