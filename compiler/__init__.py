"""tilec: an ahead-of-time compiler for ONNX models.

``compile(model, output)`` runs the whole pipeline (see docs/ARCHITECTURE.md)
and writes one artifact that ``runtime_stub.InferenceSession`` loads.
"""

from __future__ import annotations

import os

# The LLVM codegen builds opaque-pointer IR (LLVM >= 17 semantics). llvmlite reads
# this once, when first imported, so it must be set before anything imports it.
os.environ.setdefault("LLVMLITE_ENABLE_IR_LAYER_TYPED_POINTERS", "0")

__version__ = "0.1.0"
