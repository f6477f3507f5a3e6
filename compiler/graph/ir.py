"""The graph IR: ONNX semantics with every dtype static and every shape known.

Contract: ``Graph.nodes`` is in topological order; every ``Value`` has a
``TensorType`` whose dims are ints or size expressions over the graph's size
variables (``Graph.sizes``: each symbolic dimension with the range of values a
run may give it; see ``compiler.loopir.sizes``); constants (initializers and folded values)
are Values with ``const`` set and no producer. A node's ``attrs`` hold plain
Python values (int, float, str, bytes, lists of them, numpy arrays for tensor
attributes, ``onnx.GraphProto`` for subgraphs). ``opset`` is the version of the
node's domain that the model imports, which lowerings consult where an op
changed between versions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from compiler.dtypes import DType
from compiler.errors import describe_node
from compiler.loopir.expr import Expr
from compiler.loopir.printer import format_expr, format_size
from compiler.loopir.run_loops import RunLoop
from compiler.loopir.sizes import Size, SizeRange, size_nbytes, size_prod


#: The domain of the nodes the frontend makes for tilec's own use: ``Phi(then, else)`` is the output of an If
#: whose condition is known at run time (attribute ``predicate``): ``then`` where it holds, else ``else``,
#: whose dims may differ (the Phi's are ``select(predicate, then_dim, else_dim)``). The nodes of a loop of
#: the run (``compiler.ops.run_loop``: LoopState, LoopIteration, ScanSlice, LoopEnd) are in it too.
PHI_DOMAIN = "tilec"


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple[Size, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> Size:
        if self.is_static:
            return int(np.prod(self.shape, dtype=np.int64))
        return size_prod(self.shape)

    @property
    def nbytes(self) -> Size:
        return size_nbytes(self.dtype, self.numel)

    def __str__(self) -> str:
        return f"{self.dtype.value}[{'x'.join(map(format_size, self.shape))}]"


@dataclass(eq=False)
class Value:
    """An SSA tensor: a graph input, a constant, or one output of one node."""

    name: str
    type: TensorType
    producer: "Node | None" = None
    const: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def shape(self) -> tuple[Size, ...]:
        return self.type.shape

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    def __repr__(self) -> str:
        return f"%{self.name}:{self.type}"


@dataclass(eq=False)
class Node:
    op_type: str
    name: str
    inputs: list[Value | None]
    outputs: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    opset: int = 0
    # Computed whether or not its results are used (an If branch under a data condition): no run-time checks.
    speculative: bool = False
    # Runs only where this predicate holds (an If branch under a run-time condition: an expression over size
    # variables and data conditions, ``sizes.ConditionVar``); None: always.
    guard: Expr | None = None
    # The loops of the run around it (``Graph.loops`` names, outermost first): a body node of a Loop, Scan
    # or recurrence kept as a loop runs once per iteration.
    loops: tuple[str, ...] = ()

    def describe(self) -> str:
        return describe_node(self.op_type, self.name, self.opset, self.domain)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def input(self, i: int) -> Value | None:
        """Input ``i``, or None where it is omitted (ONNX's empty name or a short list)."""
        return self.inputs[i] if i < len(self.inputs) else None

    def __repr__(self) -> str:
        return f"{self.describe()}({', '.join(map(repr, self.inputs))}) -> {self.outputs}"


@dataclass(eq=False)
class Graph:
    name: str
    nodes: list[Node]
    inputs: list[Value]
    outputs: list[Value]
    opsets: dict[str, int] = field(default_factory=dict)
    # The size variables its shapes use, by name, with the values a run may give them.
    sizes: dict[str, SizeRange] = field(default_factory=dict)
    # The data conditions of run-time Ifs (``ConditionVar`` in guards) by name: read by the run, so live.
    conditions: dict[str, Value] = field(default_factory=dict)
    # Outputs the run returns as a list of dicts (ZipMap): output position -> the keys of its [N, C] columns.
    output_maps: dict[int, tuple[int | str, ...]] = field(default_factory=dict)
    # Inputs the run makes of a dict (DictVectorizer's): input name -> (the dict's name, "keys" or "values").
    input_maps: dict[str, tuple[str, str]] = field(default_factory=dict)
    # The loops of the run (``Node.loops``) by name.
    loops: dict[str, RunLoop] = field(default_factory=dict)
    _names: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def fresh_name(self, hint: str) -> str:
        taken = {v.name for v in self.values()}
        while True:
            name = f"{hint}__{next(self._names)}"
            if name not in taken:
                return name

    def values(self) -> Iterator[Value]:
        seen: set[int] = set()
        for v in itertools.chain(self.inputs, (i for n in self.nodes for i in n.inputs if i is not None),
                                 (o for n in self.nodes for o in n.outputs), self.outputs):
            if id(v) not in seen:
                seen.add(id(v))
                yield v

    def constants(self) -> list[Value]:
        return [v for v in self.values() if v.is_const]

    def consumers(self) -> dict[int, list[Node]]:
        """Map ``id(value)`` to the nodes reading it, in graph order."""
        users: dict[int, list[Node]] = {}
        for node in self.nodes:
            for v in node.inputs:
                if v is not None:
                    users.setdefault(id(v), []).append(node)
        return users

    def replace_uses(self, old: Value, new: Value) -> None:
        """Point every reader of ``old`` (nodes and graph outputs) at ``new``."""
        for node in self.nodes:
            node.inputs = [new if v is old else v for v in node.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]
        self.conditions = {name: new if v is old else v for name, v in self.conditions.items()}

    def add_const(self, name_hint: str, array: np.ndarray) -> Value:
        array = np.asarray(array)
        return Value(self.fresh_name(name_hint), TensorType(DType.from_numpy(array.dtype), tuple(array.shape)),
                     const=array)

    def __str__(self) -> str:
        lines = [f"graph {self.name}({', '.join(map(repr, self.inputs))}):"]
        for node in self.nodes:
            args = ", ".join("_" if v is None else f"%{v.name}" for v in node.inputs)
            outs = ", ".join(repr(o) for o in node.outputs)
            when = f" when {format_expr(node.guard)}" if node.guard is not None else ""
            when += f" in {'/'.join(node.loops)}" if node.loops else ""
            lines.append(f"  {outs} = {node.op_type}({args}){when}")
        lines.append(f"  return {', '.join('%' + v.name for v in self.outputs)}")
        return "\n".join(lines)
