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


def compile(model, output, *, target: str = "host", cpu: str | None = None, input_shapes=None, constant_inputs=None,
            dim_bounds=None, **options):
    """Compile ``model`` (path, bytes or onnx.ModelProto) into the artifact ``output``; returns its path.

    ``target``: ``host`` (default), ``x86_64-linux-gnu`` or ``aarch64-linux-gnu``; ``cpu``: a CPU name,
    optionally with ``+feature`` suffixes; ``input_shapes``: ``{"input": (2, 64)}`` binds symbolic dims;
    ``constant_inputs``: ``{"axes": np.array([1])}`` fixes inputs that determine shapes (they leave the
    artifact's inputs); ``dim_bounds``: ``{"batch": (1, 64)}`` bounds the symbolic dims left symbolic (either
    end may be None); without a binding they stay symbolic and the artifact runs at any size in range.
    Options: ``dump_ir`` (a folder), ``progress`` (a callable taking a line), ``timings`` (a dict to fill),
    ``profile`` (True: time every kernel; see ``InferenceSession.kernel_profile``), ``precision`` (``"fp32"``,
    the default, or ``"bf16"``: float32 MatMul/Gemm/Conv read their operands rounded to bfloat16 and
    accumulate in float32, about twice the throughput on CPUs with AVX512-BF16).
    """
    from compiler.pipeline import compile_model

    return compile_model(model, output, target=target, cpu=cpu, input_shapes=input_shapes,
                         constant_inputs=constant_inputs, dim_bounds=dim_bounds, **options)
