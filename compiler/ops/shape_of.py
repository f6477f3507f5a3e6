"""Shape (with start/end) and Size: the input's static shape, as a constant tensor.

Constant folding already replaces these wherever the input's shape is static,
so a lowering is reached only when folding was skipped. Their presence matters
most for the opposite case: a Shape of a value whose size is data-dependent
is then reported as that (the importer names the value whose shape stays
unknown) rather than as an unsupported operator.
"""

from __future__ import annotations

import numpy as np

from compiler.ops.api import LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def _constant(ctx: LoweringContext, values: list[int]) -> list[Tensor]:
    """``values`` as the node's output: a vector, or a scalar (Size) read from a one-element constant."""
    c = ctx.add_constant(np.array(values, dtype=np.int64), "shape")
    out = ctx.output_type(0).shape
    return [ctx.compute(out, lambda i: c[i] if out else c[(0,)], dtype=c.dtype, name="shape")]


def shape(ctx: LoweringContext) -> list[Tensor]:
    dims = ctx.input(0).shape
    # ONNX clamps start/end exactly like a Python slice.
    start, end = int(ctx.attr("start", 0)), ctx.attr("end")
    return _constant(ctx, list(dims[start:None if end is None else int(end)]))


def size(ctx: LoweringContext) -> list[Tensor]:
    return _constant(ctx, [ctx.input(0).buffer.numel])


OPS: list[OpDef] = [defop("Shape", shape), defop("Size", size)]
