"""tilec: an ahead-of-time compiler for ONNX models.

``compile(model, output)`` runs the whole pipeline (see docs/ARCHITECTURE.md)
and writes one artifact that ``runtime_stub.InferenceSession`` loads.
"""

from __future__ import annotations

__version__ = "0.1.0"
