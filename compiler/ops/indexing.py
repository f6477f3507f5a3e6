"""Data movement by index: Expand, Slice, Split, Pad, Tile, Gather*, Trilu, OneHot, Depth/SpaceToDepth, ...

Each lowering maps an output index to the input index it reads (possibly through a
loaded index tensor). Shapes come from the node's inferred output types; sizes
given as inputs (starts, pads, repeats, ...) must be compile-time constants.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from compiler.dtypes import DType
from compiler.errors import CompileError
from compiler.loopir.expr import Const, Expr, binary, cast, compare, const, logical_and, max_, min_, select
from compiler.loopir.printer import format_size
from compiler.loopir.sizes import (Size, choose, differs, equals, has_values, pads_per_axis, size_add, size_expr,
                                   size_sum, slice_geometry)
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop


def _i64(e: Expr) -> Expr:
    return cast(e, DType.I64)


def wrap_index(e: Expr, n: "int | Expr") -> Expr:
    """A possibly negative index into a dimension of size ``n``, made non-negative."""
    e = _i64(e)
    return select(compare("lt", e, 0), e + n, e)


def safe_index(e: Expr, n: int) -> Expr:
    """``wrap_index``, clamped into ``[0, n)``: a read at a run-time index never leaves the tensor, even
    for an index that ``require_indices_in_range`` reports after the run."""
    return min_(max_(wrap_index(e, n), 0), n - 1)


def require_indices_in_range(ctx: LoweringContext, input_index: int, sizes: Sequence[int],
                             along_last_axis: bool = False) -> None:
    """Indices (input ``input_index``) must lie in ``[-n, n)``: ``n = sizes[0]`` for every element, or
    ``n = sizes[j]`` for position ``j`` of the last axis (``along_last_axis``: GatherND's coordinates)."""
    require_values_in(ctx, input_index, [(-n, n) for n in sizes], along_last_axis, "an index")


def require_values_in(ctx: LoweringContext, input_index: int, ranges: Sequence[tuple[int, int]],
                      along_last_axis: bool = False, noun: str = "a value") -> None:
    """Integer input ``input_index`` must lie in ``[low, high)``: ``ranges[0]`` for every element, or
    ``ranges[j]`` for position ``j`` of the last axis. Constant values are checked now (``CompileError``);
    others by a run-time check of the node (``LoweringContext.check``)."""
    idx, value = ctx.input(input_index), ctx.input_value(input_index)
    name = value.name if value is not None else f"input {input_index}"
    parts = list(enumerate(ranges)) if along_last_axis else [(None, ranges[0])]
    for j, (low, high) in parts:
        where = f"{name}[..., {j}]" if j is not None else name
        message = f"{noun} in {where} is out of range [{low}, {high})"
        if value is not None and value.const is not None:
            values = np.asarray(value.const)
            values = values[..., j] if j is not None else values
            if values.size and (values.min() < low or values.max() >= high):
                raise CompileError(f"{ctx.node.describe()}: {message}")
            continue
        shape = idx.shape[:-1] if j is not None else idx.shape

        def violated(r: Index, j: int | None = j, low: int = low, high: int = high) -> Expr:
            v = _i64(idx[[*r, Const(j)]] if j is not None else idx[r])
            return select(compare("lt", v, low), const(True, DType.BOOL), compare("ge", v, high))

        ctx.check(shape, violated, message)


def expand(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    shape = ctx.size_input(1, "shape")
    if any(has_values(s) for s in shape):
        ctx.require_dims(shape, "shape")
        rank = max(x.rank, len(shape))
        dims, entries = [1] * (rank - x.rank) + list(x.shape), [1] * (rank - len(shape)) + shape
        for k, (d, s) in enumerate(zip(dims, entries)):
            if d != 1:
                fits = binary("or", equals(s, 1), compare("eq", size_expr(s), size_expr(d)))
                ctx.require_that(fits, f"shape[{k}] must be 1 or {format_size(d)} to broadcast axis {k} of the input")
    return [ctx.compute(out.shape, x.at_broadcast, dtype=x.dtype, name="expand")]


def slice_op(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    if ctx.opset < 10:
        starts, ends, axes, steps = ctx.attr("starts"), ctx.attr("ends"), ctx.attr("axes"), None
    else:
        operands = [ctx.size_input(k, what) if ctx.has_input(k) else None
                    for k, what in enumerate(["", "starts", "ends", "axes", "steps"]) if k]
        if any(not isinstance(v, int) for values in operands for v in values or []):
            return [_run_time_slice(ctx, x, *operands)]
        starts, ends, axes, steps = operands
    axes = list(range(len(starts))) if axes is None else ctx.axes(axes, x.rank)
    steps = [1] * len(starts) if steps is None else steps
    first, stride = [0] * x.rank, [1] * x.rank
    for a, s, e, st in zip(axes, starts, ends, steps):
        first[a] = slice(int(s), int(e), int(st)).indices(x.shape[a])[0]
        stride[a] = int(st)
    return [ctx.compute(out.shape, lambda i: x[[first[d] + i[d] * stride[d] for d in range(x.rank)]],
                        dtype=x.dtype, name="slice")]


def _run_time_slice(ctx: LoweringContext, x: Tensor, starts: list[Size], ends: list[Size], axes: list[Size] | None,
                    steps: list[Size] | None) -> Tensor:
    """A Slice whose starts, ends, axes or steps are sizes (computed from symbolic dims, or value sizes):
    first index and step per axis chosen per run."""
    if axes is not None and all(isinstance(a, int) for a in axes):
        axes = ctx.axes(axes, x.rank)
    elif axes is not None:
        flags = [ctx.run_time_axes([a], x.rank, f"axes[{k}]") for k, a in enumerate(axes)]
        for d in range(x.rank):
            ctx.require(size_sum(choose(f[d], 1, 0) for f in flags), "<=", 1, f"the axes name axis {d} twice",
                        show=False)
    for k, st in enumerate(steps or []):
        if isinstance(st, int) and st == 0:
            ctx.invalid(f"steps[{k}] is 0")
        ctx.require_that(differs(st, 0), f"steps[{k}] must not be 0")
    first, stride, _ = slice_geometry(list(x.shape), starts, ends, axes, steps)
    return ctx.compute(ctx.output_type(0).shape,
                       lambda i: x[[size_expr(first[d]) + i[d] * size_expr(stride[d]) for d in range(x.rank)]],
                       dtype=x.dtype, name="slice")


def split(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    axis = ctx.axis(ctx.attr("axis", 0), x.rank)
    results: list[Tensor] = []
    offset: Size = 0
    for value in ctx.node.outputs:
        def read(i: Index, offset: Size = offset) -> Expr:
            return x[[i[d] + size_expr(offset) if d == axis else i[d] for d in range(x.rank)]]

        results.append(ctx.compute(value.shape, read, dtype=x.dtype, name="split"))
        offset = size_add(offset, value.shape[axis]) if len(value.shape) == x.rank else offset
    if has_values(offset):  # split sizes read at run time
        ctx.require_dims([value.shape[axis] for value in ctx.node.outputs], "split")
        ctx.require(offset, "==", x.shape[axis], f"the split sizes must add up to axis {axis}'s "
                    f"{format_size(x.shape[axis])} elements", show=False)
    return results


def pad(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        pads, value = list(ctx.attr("pads")), const(float(ctx.attr("value", 0.0)), x.dtype)
        before, after = pads[:x.rank], pads[x.rank:]
    else:
        pads = ctx.size_input(1, "pads")
        value = ctx.input(2)[()] if ctx.has_input(2) and ctx.input(2).rank == 0 else \
            ctx.input(2)[(0,)] if ctx.has_input(2) else const(0, x.dtype)
        axes = ctx.size_input(3, "axes") if ctx.has_input(3) else None
        if axes is not None and all(isinstance(a, int) for a in axes):
            axes = ctx.axes(axes, x.rank)
        elif axes is not None:
            ctx.run_time_axes(axes, x.rank)
        before, after = pads_per_axis(pads, axes, x.rank)
        for d, n in enumerate(out.shape):
            ctx.require(0, "<=", n, f"the pads must leave axis {d} with a size >= 0")
            if mode == "reflect":  # a reflection reads at most n - 1 elements beyond each end
                for p in (before[d], after[d]):
                    ctx.require(p, "<=", size_add(x.shape[d], -1),
                                f"reflect pads of axis {d} must be smaller than its size {format_size(x.shape[d])}")

    def read(i: Index) -> Expr:
        src, inside = [], const(True, DType.BOOL)
        for d in range(x.rank):
            j, n = i[d] - size_expr(before[d]), size_expr(x.shape[d])
            if mode == "constant":
                inside = logical_and(inside, logical_and(compare("ge", j, 0), compare("lt", j, n)))
                src.append(min_(max_(j, Const(0)), n - 1))
            elif mode == "edge":
                src.append(min_(max_(j, Const(0)), n - 1))
            elif mode == "reflect":
                j = select(compare("lt", j, 0), -j, j)
                src.append(select(compare("ge", j, n), (n - 1) * 2 - j, j))
            elif mode == "wrap":  # around what a negative pad leaves of the axis (as onnxruntime and the reference)
                cut_before = max_(-size_expr(before[d]), Const(0))
                kept = n - cut_before - max_(-size_expr(after[d]), Const(0))
                src.append(cut_before + (((j - cut_before) % kept) + kept) % kept)
            else:
                ctx.unsupported(f"mode={mode!r}")
        return select(inside, x[src], value) if mode == "constant" else x[src]

    return [ctx.compute(out.shape, read, dtype=x.dtype, name="pad")]


def tile(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    ctx.require_dims(ctx.size_input(1, "repeats"), "repeats")
    return [ctx.compute(out.shape, lambda i: x[[i[d] % x.shape[d] if x.shape[d] > 1 else Const(0)
                                                for d in range(x.rank)]], dtype=x.dtype, name="tile")]


def gather(ctx: LoweringContext) -> list[Tensor]:
    x, idx, out = ctx.input(0), ctx.input(1), ctx.output_type(0)
    axis = ctx.axis(ctx.attr("axis", 0), x.rank)
    q = idx.rank
    require_indices_in_range(ctx, 1, [x.shape[axis]])

    def read(i: Index) -> Expr:
        picked = safe_index(idx[list(i[axis:axis + q])], x.shape[axis])
        return x[[*i[:axis], picked, *i[axis + q:]]]

    return [ctx.compute(out.shape, read, dtype=x.dtype, name="gather")]


def gather_elements(ctx: LoweringContext) -> list[Tensor]:
    x, idx, out = ctx.input(0), ctx.input(1), ctx.output_type(0)
    axis = ctx.axis(ctx.attr("axis", 0), x.rank)
    require_indices_in_range(ctx, 1, [x.shape[axis]])
    return [ctx.compute(out.shape, lambda i: x[[safe_index(idx[i], x.shape[axis]) if d == axis else i[d]
                                                for d in range(x.rank)]], dtype=x.dtype, name="gather_elements")]


def gather_nd(ctx: LoweringContext) -> list[Tensor]:
    x, idx, out = ctx.input(0), ctx.input(1), ctx.output_type(0)
    b = int(ctx.attr("batch_dims", 0))
    q, k = idx.rank, idx.shape[-1]
    require_indices_in_range(ctx, 1, x.shape[b:b + k], along_last_axis=True)

    def read(i: Index) -> Expr:
        lead = list(i[:q - 1])
        picked = [safe_index(idx[[*lead, Const(j)]], x.shape[b + j]) for j in range(k)]
        return x[[*i[:b], *picked, *i[q - 1:]]]

    return [ctx.compute(out.shape, read, dtype=x.dtype, name="gather_nd")]


def trilu(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    k: Expr | int = 0
    if ctx.has_input(1):  # k may be known only at run time: it does not change the shape
        kt = ctx.input(1)
        k = _i64(kt[[0] * kt.rank])
    upper = bool(ctx.attr("upper", 1))

    def read(i: Index) -> Expr:
        diff = i[-1] - i[-2]
        keep = compare("ge", diff, k) if upper else compare("le", diff, k)
        return select(keep, x[i], const(0, x.dtype))

    return [ctx.compute(x.shape, read, dtype=x.dtype, name="trilu")]


def one_hot(ctx: LoweringContext) -> list[Tensor]:
    idx, values, out = ctx.input(0), ctx.input(2), ctx.output_type(0)
    depth = ctx.size_input(1, "depth")[0]  # an int, or a value size read (truncated to an integer) at run time
    axis = ctx.axis(ctx.attr("axis", -1), len(out.shape))
    ctx.require(1, "<=", depth, "depth must be positive")

    def read(i: Index) -> Expr:
        raw = idx[list(i[:axis]) + list(i[axis + 1:])]
        hot = raw if raw.dtype.is_int else cast(raw, DType.I64)  # float indices truncate
        hot = wrap_index(hot, depth)
        return select(compare("eq", hot, i[axis]), values[(1,)], values[(0,)])

    return [ctx.compute(out.shape, read, dtype=values.dtype, name="onehot")]


def depth_to_space(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    b = int(ctx.attr("blocksize"))
    c_out = out.shape[1]
    crd = ctx.attr("mode", "DCR") == "CRD"

    def read(i: Index) -> Expr:
        n, c, h, w = i
        block = (h % b) * b + w % b
        channel = c * (b * b) + block if crd else block * c_out + c
        return x[[n, channel, h // b, w // b]]

    return [ctx.compute(out.shape, read, dtype=x.dtype, name="depth_to_space")]


def space_to_depth(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    b, c_in = int(ctx.attr("blocksize")), x.shape[1]

    crd = ctx.attr("mode", "DCR") == "CRD"

    def read(i: Index) -> Expr:
        n, c, h, w = i
        block, channel = (c % (b * b), c // (b * b)) if crd else (c // c_in, c % c_in)
        return x[[n, channel, h * b + block // b, w * b + block % b]]

    return [ctx.compute(out.shape, read, dtype=x.dtype, name="space_to_depth")]


def reverse_sequence(ctx: LoweringContext) -> list[Tensor]:
    x, lens = ctx.input(0), ctx.input(1)
    batch, time = int(ctx.attr("batch_axis", 1)), int(ctx.attr("time_axis", 0))

    require_values_in(ctx, 1, [(0, x.shape[time] + 1)], noun="a sequence length")

    def read(i: Index) -> Expr:
        n = min_(max_(_i64(lens[(i[batch],)]), 0), x.shape[time])
        t = select(compare("lt", i[time], n), n - 1 - i[time], i[time])
        return x[[t if d == time else i[d] for d in range(x.rank)]]

    return [ctx.compute(x.shape, read, dtype=x.dtype, name="reverse_sequence")]


def compress(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    cond = np.asarray(ctx.const_input(1, "condition")).astype(bool).reshape(-1)
    axis = ctx.attr("axis")
    flat = axis is None
    size = x.buffer.numel if flat else x.shape[ctx.axis(axis, x.rank)]
    positions = ctx.add_constant(np.nonzero(cond[:size])[0].astype(np.int64), "compress_pos")
    if flat:
        strides = x.buffer.strides

        def read(i: Index) -> Expr:
            p = positions[(i[0],)]
            return x[[(p // strides[d]) % x.shape[d] for d in range(x.rank)]]
    else:
        a = ctx.axis(axis, x.rank)

        def read(i: Index) -> Expr:
            return x[[positions[(i[a],)] if d == a else i[d] for d in range(x.rank)]]

    return [ctx.compute(out.shape, read, dtype=x.dtype, name="compress")]


OPS: list[OpDef] = [
    defop("Expand", expand),
    defop("Slice", slice_op),
    defop("Split", split),
    defop("Pad", pad),
    defop("Tile", tile),
    defop("Gather", gather),
    defop("GatherElements", gather_elements),
    defop("GatherND", gather_nd),
    defop("Trilu", trilu),
    defop("OneHot", one_hot),
    defop("DepthToSpace", depth_to_space),
    defop("SpaceToDepth", space_to_depth),
    defop("ReverseSequence", reverse_sequence),
    defop("Compress", compress),
]
