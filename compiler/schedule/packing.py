"""Operand packing: relayout one operand of a computation into the panels its register tile reads.

Contract: ``pack_operand(c, load, blocked, block, name)`` returns ``(c', pack)``: ``c'`` reads
``packed[deps..., v // block, reduction..., v % block]`` wherever ``c`` read ``load`` (``v`` the
index var ``blocked``), and ``pack`` is the pointwise computation that fills ``packed`` from the
original buffer. So a ``kc × nr`` micro-panel of B (or ``mr × kc`` of A) is one contiguous
stream, whatever the operand's strides were. The packed buffer is padded to whole blocks; pad
elements repeat the last valid one (the index is clamped), are never read by the scheduled nest
(split tails use their own smaller tiles), and keep constant packs deterministic.

A pack whose loads all read constants is evaluated here at compile time (``evaluate``): the
weights section then holds the packed layout and the run pays nothing. Otherwise the driver runs
``pack`` in the kernel before the computation, into the workspace.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.loopir.compute import Computation
from compiler.loopir.expr import (Binary, Buffer, Cast, Const, Expr, Load, PackWord, Select, Var, free_vars, map_loads,
                                  min_, substitute, walk)
from compiler.dtypes import DType
from compiler.loopir.sizes import is_one, may_exceed_one


def pack_operand(c: Computation, load: Load, blocked: Var, block: int, name: str) -> tuple[Computation, Computation] | None:
    """Pack ``load`` (a read in ``c``'s body) into panels of ``block`` along ``blocked``; None if it does not pay."""
    extents = dict(zip(c.index, c.space)) | {a.var: a.extent for a in c.axes}
    reduction = [a.var for a in c.axes]
    used = set().union(*(free_vars(i) for i in load.indices))
    if blocked not in used:
        return None
    spatial = [v for v in c.index if v in used and v != blocked and may_exceed_one(extents[v])]
    inner = [v for v in reduction if v in used and may_exceed_one(extents[v])]
    if not all(isinstance(extents[v], int) for v in [*spatial, *inner, blocked]):
        return None  # a panel of symbolic length: packed per call it would need a symbolic workspace slot
    blocks = -(-extents[blocked] // block)
    shape = tuple(extents[v] for v in spatial) + (blocks,) + tuple(extents[v] for v in inner) + (block,)
    # A pack that duplicates data (an im2col-like gather) costs more memory traffic than it saves.
    if math.prod(shape) > 2 * load.buffer.numel:
        return None
    packed = Buffer(name, load.buffer.dtype, shape)
    outer, lane = Var(f"{name}_o"), Var(f"{name}_i")
    pack_index = tuple(Var(f"{name}_{v.name}") for v in spatial) + (outer,) + tuple(Var(f"{name}_{v.name}") for v in inner) + (lane,)
    mapping: dict[Var, Expr] = dict(zip(spatial + inner, pack_index[: len(spatial)] + pack_index[len(spatial) + 1: -1]))
    mapping[blocked] = min_(outer * block + lane, extents[blocked] - 1)
    unit = {v: Const(0) for v in used if is_one(extents.get(v, 1))}
    source = Load(load.buffer, tuple(substitute(substitute(i, unit), mapping) for i in load.indices))
    pack = Computation(packed, pack_index, source)
    read = Load(packed, tuple(spatial) + (blocked // block,) + tuple(inner) + (blocked % block,))
    return c.map_exprs(lambda e: map_loads(e, lambda ld: read if ld == load else None)), pack


# --- compile-time evaluation ---------------------------------------------------------------------


def evaluate(c: Computation, arrays: dict[str, np.ndarray]) -> np.ndarray | None:
    """The output of pointwise ``c`` computed with numpy from ``arrays``; None if it reads other buffers."""
    if c.is_reduction or not c.writes_whole_output:
        return None
    expr = c.value_expr()
    # A pack of a run-time operand (an activation) is decided here, before any array of its size exists.
    if any(isinstance(e, Load) and e.buffer.name not in arrays for e in walk(expr)):
        return None
    # Open grids (one axis each) broadcast in the arithmetic: index memory grows with the extents, not their product.
    env = dict(zip(c.index, np.indices(c.space, dtype=np.int64, sparse=True)))
    try:
        value = _eval(expr, env, arrays)
    except _NotConstant:
        return None
    return np.broadcast_to(np.asarray(value), c.space).astype(c.output.dtype.numpy, copy=True)


class _NotConstant(Exception):
    pass


_NUMPY_OPS = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "min": np.minimum, "max": np.maximum,
              "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal, "eq": np.equal,
              "ne": np.not_equal}


def _eval(e: Expr, env: dict[Var, np.ndarray], arrays: dict[str, np.ndarray]):
    if isinstance(e, Const):
        return np.asarray(e.value, dtype=e.dtype.numpy)
    if isinstance(e, Var):
        return env[e]
    if isinstance(e, Load):
        if e.buffer.name not in arrays:
            raise _NotConstant(e.buffer.name)
        source = np.asarray(arrays[e.buffer.name]).reshape(e.buffer.shape)
        return source[tuple(_eval(i, env, arrays) for i in e.indices)]
    if isinstance(e, Binary) and e.op in _NUMPY_OPS:
        return _NUMPY_OPS[e.op](_eval(e.a, env, arrays), _eval(e.b, env, arrays))
    if isinstance(e, Binary) and e.op in ("div", "rem") and e.dtype is DType.I64:
        a, b = _eval(e.a, env, arrays), _eval(e.b, env, arrays)
        return a // b if e.op == "div" else a % b
    if isinstance(e, Select):
        return np.where(_eval(e.cond, env, arrays), _eval(e.true_value, env, arrays), _eval(e.false_value, env, arrays))
    if isinstance(e, Cast) and not e.dtype.is_float and e.dtype.bits >= 8 and not e.value.dtype.is_float:
        # Integer conversions wrap, in numpy as in the generated code.
        return np.asarray(_eval(e.value, env, arrays)).astype(e.dtype.numpy)
    if isinstance(e, PackWord):
        # Word packs of dot products (``contraction.dot_product_form``): part k at bits ``w k`` (bfloat16
        # parts are their uint16 bits already).
        bits = e.part_bits
        word = np.zeros((), np.uint32)
        for k, part in enumerate(e.parts):
            value = np.asarray(_eval(part, env, arrays)).astype(np.dtype(f"uint{bits}")).astype(np.uint32)
            word = word | (value << np.uint32(bits * k))
        return word.astype(np.int32)  # wraps: bit 31 is the sign of the last part
    raise _NotConstant(type(e).__name__)
