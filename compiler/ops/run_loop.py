"""The body-side nodes of a loop of the run (``compiler.loopir.run_loops``; made by frontend/run_loops.py).

``LoopState`` sets a loop-carried value's buffer to its initial value, before
the loop; ``LoopIteration`` is the step an iteration works on (the loop's
counter, or counted from the end) as an int64 scalar; ``ScanSlice`` reads the
step's slice of a scan input along ``axis``. The iteration's last node,
``LoopEnd``, writes into buffers other nodes own (the states, the rows of the
stacked outputs): the lowering driver emits it.
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import cast
from compiler.ops.api import LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop

DOMAIN = "tilec"


def loop_state(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    return [ctx.compute(ctx.output_type(0).shape, lambda i: x[i], dtype=x.dtype, name="state")]


def loop_iteration(ctx: LoweringContext) -> list[Tensor]:
    step = ctx.node.attrs["run_loop"].position(bool(ctx.node.attr("reverse", 0)))
    return [ctx.compute((), lambda _: cast(step, DType.I64), dtype=DType.I64, name="step")]


def scan_slice(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    axis = ctx.node.attrs["axis"] % x.rank
    step = ctx.node.attrs["run_loop"].position(bool(ctx.node.attr("reverse", 0)))
    return [ctx.compute(ctx.output_type(0).shape, lambda i: x[(*i[:axis], step, *i[axis:])], dtype=x.dtype,
                        name="slice")]


OPS: list[OpDef] = [
    defop("LoopState", loop_state, kind="elementwise", domain=DOMAIN),
    defop("LoopIteration", loop_iteration, domain=DOMAIN),
    defop("ScanSlice", scan_slice, kind="elementwise", domain=DOMAIN),
]
