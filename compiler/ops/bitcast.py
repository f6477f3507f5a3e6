"""BitCast (opset 26): the same bytes read as another element type of the same width.

It is a view: the driver gives the output the input's storage and emits no
kernel (refusing a view whose byte size differs, i.e. types of different
widths), and a graph output that is a view gets a copy kernel that reads the
shared storage through the output's own (new) type, so the bits move unchanged.
"""

from __future__ import annotations

from compiler.ops.api import LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def bitcast(ctx: LoweringContext) -> list[Tensor]:
    # The driver never lowers a view through its op; a kernel cannot reinterpret bits, so refuse.
    ctx.unsupported("BitCast lowers only as a view of its input's storage")
    return []


OPS: list[OpDef] = [defop("BitCast", bitcast, "view", since=26)]
