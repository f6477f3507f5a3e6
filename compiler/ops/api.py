"""The interface op lowerings are written against.

A lowering is ``def lower(ctx: LoweringContext) -> list[Tensor]``: it reads its
inputs as ``Tensor`` s, describes its results with ``ctx.compute`` (pointwise:
output index → expression) and ``ctx.reduce`` (adds reduction axes and a
combiner), and returns one tensor per node output. It never builds loops: the
lowering driver inlines, fuses, schedules and emits them.

Example, all of Relu::

    def relu(ctx):
        x = ctx.input(0)
        return [ctx.compute(x.shape, lambda i: max_(x[i], 0.0))]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from compiler.codegen.target import Target
from compiler.dtypes import DType
from compiler.errors import DataDependentError, ModelLoadError, UnsupportedOpError
from compiler.graph.ir import Node, Value
from compiler.loopir.compute import Computation, ReduceAxis, acc_var
from compiler.loopir.expr import Buffer, Const, Expr, Load, Var, as_expr, cast, const, select, substitute, walk
from compiler.loopir.printer import format_size
from compiler.loopir.sizes import Size, SizeConstraint, as_size, has_values, is_one, named_axes, normalize, same_size

Index = tuple[Expr, ...]


@dataclass(frozen=True)
class Tensor:
    """A tensor a lowering reads: indexing it gives a load expression."""

    buffer: Buffer

    @property
    def shape(self) -> tuple[Size, ...]:
        return self.buffer.shape

    @property
    def dtype(self) -> DType:
        return self.buffer.dtype

    @property
    def rank(self) -> int:
        return len(self.buffer.shape)

    def __getitem__(self, index: "Expr | int | Sequence[Expr | int]") -> Expr:
        if not isinstance(index, (tuple, list)):
            index = (index,)
        if len(index) != self.rank:
            raise ValueError(f"{self.buffer.name}: {len(index)} indices for rank {self.rank}")
        return Load(self.buffer, tuple(as_expr(i) for i in index))

    def at_broadcast(self, index: Index) -> Expr:
        """Load with numpy broadcasting against an output index of rank >= this tensor's."""
        offset = len(index) - self.rank
        return self[[Const(0) if is_one(dim) else index[offset + k] for k, dim in enumerate(self.shape)]]


def size_value(n: Size, dtype: DType) -> Expr:
    """A size as a value of ``dtype`` in an expression: an immediate where static, the size variable
    arithmetic converted at run time where not (a mean over a symbolic sequence divides by it)."""
    return const(n, dtype) if isinstance(n, int) else cast(n, dtype)


@dataclass
class LoweringContext:
    node: Node
    target: Target
    inputs: list[Tensor | None]
    names: Callable[[str], str]
    computations: list[Computation] = field(default_factory=list)
    # Temporaries that must be stored rather than inlined into their readers.
    materialized: set[str] = field(default_factory=set)
    # Constants the lowering derived at compile time (e.g. weights repacked into a kernel's layout).
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    # Run-time checks: (flag buffer, message); a run that sets a flag fails with its message.
    checks: list[tuple[str, str]] = field(default_factory=list)
    # What the run's symbolic sizes must satisfy (checked before the run, from the dims alone).
    constraints: list[SizeConstraint] = field(default_factory=list)
    _vars: "itertools.count[int]" = field(default_factory=itertools.count)

    # --- reading the node -----------------------------------------------------------

    @property
    def opset(self) -> int:
        return self.node.opset

    def attr(self, name: str, default: Any = None) -> Any:
        return self.node.attrs.get(name, default)

    def has_input(self, i: int) -> bool:
        return i < len(self.inputs) and self.inputs[i] is not None

    def input(self, i: int) -> Tensor:
        if not self.has_input(i):
            self.unsupported(f"input {i} is required")
        return self.inputs[i]

    def input_value(self, i: int) -> Value | None:
        return self.node.input(i)

    def const_input(self, i: int, what: str = "") -> np.ndarray | None:
        """Input ``i`` as a compile-time constant (None when omitted); data-dependent values are refused."""
        value = self.node.input(i)
        if value is None:
            return None
        if value.const is None:
            raise DataDependentError(f"{self.node.describe()}: input {i} ({what or value.name}) must be a "
                                     f"compile-time constant, but it depends on the model's inputs at run time",
                                     values=(value.name,))
        return value.const

    def size_input(self, i: int, what: str = "") -> list[Size]:
        """A shape-setting input's elements, flattened: ints, or sizes (value sizes read at run time)."""
        return [int(v) if isinstance(v, (int, np.integer, float, np.floating)) else as_size(v)
                for v in np.asarray(self.const_input(i, what)).reshape(-1)]

    def output_type(self, i: int = 0):
        return self.node.outputs[i].type

    def unsupported(self, reason: str) -> None:
        raise UnsupportedOpError(f"{self.node.describe()}: {reason}")

    def invalid(self, reason: str) -> None:
        """The node is not valid ONNX (an attribute or constant input its spec does not allow)."""
        raise ModelLoadError(f"{self.node.describe()}: invalid ONNX node: {reason}")

    def axis(self, value: Any, rank: int, what: str = "axis") -> int:
        """``value`` as an axis of a rank-``rank`` tensor in ``[0, rank)``; ONNX allows ``[-rank, rank)``.

        Anything else is an invalid node: taking it modulo the rank silently computed another axis."""
        axis = int(value)
        if not -rank <= axis < rank:
            self.invalid(f"{what} {axis} is out of range [{-rank}, {rank - 1}] for rank {rank}")
        return axis + rank if axis < 0 else axis

    def axes(self, values: Any, rank: int, what: str = "axes") -> list[int]:
        """``values`` as axes in ``[0, rank)`` (see ``axis``), in their order; a repeated axis is invalid."""
        axes = [self.axis(v, rank, what) for v in np.asarray(values).reshape(-1).tolist()]
        if len(set(axes)) != len(axes):
            self.invalid(f"{what} {list(np.asarray(values).reshape(-1).tolist())} name an axis more than once")
        return axes

    def run_time_axes(self, values: Sequence[Size], rank: int, what: str = "axes") -> list[Expr]:
        """Axes given at run time (value sizes): for each axis of a rank-``rank`` tensor the condition that
        ``values`` name it; the run checks that each lies in ``[-rank, rank)``."""
        for k, a in enumerate(values):
            label = f"{what}[{k}]" if len(values) > 1 or what == "axes" else what
            self.require(-rank, "<=", a, f"{label} must be an axis of the rank-{rank} input")
            self.require(a, "<=", rank - 1, f"{label} must be an axis of the rank-{rank} input")
        return named_axes(values, rank)

    def require_dims(self, values: Sequence[Size], what: str) -> None:
        """Value sizes that become dims (a ConstantOfShape's shape, Tile's repeats) must not be negative."""
        for k, v in enumerate(values):
            if has_values(v):
                self.require(0, "<=", v, f"{what}[{k}] must not be negative")

    def require_that(self, condition: Expr, why: str) -> None:
        """Record that ``condition`` (over value sizes, e.g. ``steps[0] != 0``) must hold in the run; a constant
        one records nothing."""
        self.require(1, "<=", as_size(select(condition, Const(1), Const(0))), why, show=False)

    def require(self, lhs: Size, relation: str, rhs: Size, why: str, show: bool = True) -> None:
        """Record that the run's sizes must satisfy ``lhs relation rhs`` (``==`` or ``<=``); nothing to record
        where both are static (a static contradiction is the lowering's to refuse) or it holds for all sizes.
        ``show=False`` leaves the relation out of the message (a condition over value sizes says less than ``why``)."""
        if (isinstance(lhs, int) and isinstance(rhs, int)) or same_size(lhs, rhs):
            return
        shown = f": needs {format_size(lhs)} {relation} {format_size(rhs)}" if show else ""
        self.constraints.append(SizeConstraint(normalize(lhs), relation, normalize(rhs),
                                               f"{self.node.describe()}: {why}{shown}"))

    def _require_in_bounds(self, body: Expr, extents: dict[Var, Size]) -> None:
        """A load indexed by a loop variable alone reads as far as the loop goes: the dim must be that long."""
        for e in walk(body):
            if not isinstance(e, Load):
                continue
            for axis, (index, dim) in enumerate(zip(e.indices, e.buffer.shape)):
                if isinstance(index, Var) and index in extents and not (
                        isinstance(dim, int) and isinstance(extents[index], int)):
                    self.require(extents[index], "<=", dim, f"reads axis {axis} of an input over a longer range")

    # --- describing results ---------------------------------------------------------

    def fresh_vars(self, n: int, prefix: str = "i") -> tuple[Var, ...]:
        return tuple(Var(f"{prefix}{next(self._vars)}") for _ in range(n))

    def temp(self, shape: Sequence[Size], dtype: DType, hint: str = "t") -> Buffer:
        return Buffer(self.names(hint), dtype, tuple(as_size(d) if isinstance(d, Expr) else int(d) for d in shape))

    def compute(self, shape: Sequence[Size], fn: Callable[[Index], Expr | float | int | bool],
                dtype: DType | None = None, name: str = "t", materialize: bool = False) -> Tensor:
        """``out[i] = fn(i)`` for every index ``i`` of ``shape``."""
        index = self.fresh_vars(len(shape))
        body = fn(index)
        body = as_expr(body, dtype or DType.F32) if not isinstance(body, Expr) else body
        out = self.temp(shape, dtype or body.dtype, name)
        if dtype is not None and body.dtype is not dtype:
            raise TypeError(f"{self.node.describe()}: computed {body.dtype.value}, declared {dtype.value}")
        self._require_in_bounds(body, dict(zip(index, out.shape)))
        self.computations.append(Computation(out, index, body))
        if materialize:
            self.materialized.add(out.name)
        return Tensor(out)

    def reduce(self, shape: Sequence[Size], extents: Sequence[Size], fn: Callable[[Index, Index], Expr],
               combiner: str = "sum", epilogue: Callable[[Expr, Index], Expr] | None = None,
               name: str = "t", materialize: bool = False) -> Tensor:
        """``out[i] = epilogue(combine over r of fn(i, r), i)``; ``extents`` are the reduction ranges."""
        index = self.fresh_vars(len(shape))
        rvars = self.fresh_vars(len(extents), "r")
        body = fn(index, rvars)
        acc = acc_var(body.dtype)
        post = epilogue(acc, index) if epilogue is not None else None
        dtype = post.dtype if post is not None else body.dtype
        out = self.temp(shape, dtype, name)
        axes = tuple(ReduceAxis(v, as_size(e) if isinstance(e, Expr) else int(e)) for v, e in zip(rvars, extents))
        self._require_in_bounds(body, {**dict(zip(index, out.shape)), **{a.var: a.extent for a in axes}})
        if not axes:
            # A reduction over nothing is the epilogue of the single element.
            value = post if post is not None else body
            self.computations.append(Computation(out, index, substitute(value, {acc: body})))
        else:
            self.computations.append(Computation(out, index, body, axes, combiner, post))
        if materialize:
            self.materialized.add(out.name)
        return Tensor(out)

    def check(self, shape: Sequence[int], violated: Callable[[Index], Expr], message: str) -> None:
        """Fail the run when ``violated(i)`` holds for any index ``i`` of ``shape``: for values the op cannot
        take that are only known at run time (an index out of range). The runtime raises
        ``InvalidInputError`` naming this node and ``message``; the op must still stay in bounds.
        A speculative node (a branch of an If on a data condition where both branches run: CUDA) gets none:
        its values may be out of range exactly when its results are not used. A guarded branch runs only
        when taken and keeps its checks (the run clears their flags where it skips the branch)."""
        if self.node.speculative:
            return
        flag = self.reduce((), shape, lambda _, r: select(violated(r), const(1, DType.U8), const(0, DType.U8)),
                           combiner="max", name="check", materialize=True)
        self.checks.append((flag.buffer.name, f"{self.node.describe()}: {message}"))

    def add_constant(self, array: np.ndarray, hint: str = "c", dtype: DType | None = None) -> Tensor:
        """A compile-time array (weights in a packed layout, folded BatchNorm scales) as a tensor; ``dtype``
        where the array is another type's storage (bfloat16's uint16 bits, see ``dtypes.constant_storage``)."""
        array = np.ascontiguousarray(array)
        buffer = Buffer(self.names(hint), dtype or DType.from_numpy(array.dtype), tuple(array.shape))
        self.constants[buffer.name] = array
        return Tensor(buffer)

    def write_region(self, out: Buffer, offsets: Sequence[int], extents: Sequence[int],
                     fn: Callable[[Index], Expr]) -> None:
        """``out[offsets + i] = fn(i)`` for ``i`` in ``extents`` (e.g. one input of a Concat)."""
        index = self.fresh_vars(len(extents))
        self.computations.append(Computation(out, index, fn(index), extents=tuple(extents),
                                             offsets=tuple(offsets)))
        self.materialized.add(out.name)
