"""Scan, Loop and the recurrences kept as loops of the run, rather than unrolled.

Contract of :class:`LoopBuilder` (used by :mod:`.control_flow` and
:mod:`.recurrent`, which decide with :func:`keeps_loop`): it emits a body once,
into a :class:`~compiler.frontend.rewrite.Builder`, as the nodes of one
``RunLoop`` (``compiler.loopir.run_loops``), in this order:

* ``LoopState(init)`` per loop-carried value, before the body: the state's buffer, set to ``init``;
* the body, whose nodes :meth:`LoopBuilder.end` records in ``FoldedGraph.in_loops``: it reads the states,
  ``LoopIteration()`` (the step as an int64 scalar, counted from the end with ``reverse``),
  ``ScanSlice(x)`` (the step's slice of ``x`` along ``axis``) and any outer value;
* ``LoopEnd(states..., updates..., scan values...)``, the body's last node: per iteration it writes each
  state's update into the state's buffer and each scan value into its row of a stacked output; its
  outputs are the final states (the state buffers after the loop), then the stacked scan outputs
  (``trip`` rows along ``axis``, filled from the end with ``reverse``).

Every state keeps its shape from one iteration to the next (the importer checks it): the body's buffers
are sized once. Where a loop may stop early (``condition``: a state the run reads before each iteration),
it has no scan outputs, whose length would only be known after the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import onnx

from compiler.frontend import symbolic
from compiler.frontend.rewrite import Builder
from compiler.graph.ir import PHI_DOMAIN
from compiler.loopir.run_loops import RunLoop
from compiler.loopir.sizes import Size

if TYPE_CHECKING:
    from compiler.frontend.folding import FoldedGraph

#: The longest static trip count that is unrolled: a few steps unrolled cost no loop overhead and let
#: folding see each step; longer ones (and run-time trip counts) compile once as a loop of the run.
UNROLL_LIMIT = 8


def keeps_loop(trip: Size, state: "FoldedGraph") -> bool:
    """Whether a loop of ``trip`` steps stays a loop: where the run can steer the native code (not on CUDA,
    whose launch sequence is fixed) and the trip is not a short static one."""
    return state.read_values and not (isinstance(trip, int) and trip <= UNROLL_LIMIT)


class LoopBuilder:
    """Emits one loop of the run (see the module docstring): ``carry`` first, then ``begin``, the body with
    ``iteration``/``scan_slice``, then ``end``."""

    def __init__(self, b: Builder, state: "FoldedGraph", trip: Size) -> None:
        self.b, self.state, self.trip = b, state, trip
        self.name = b.fresh("loop").replace("/", "_")
        self.states: list[str] = []
        self.start: int | None = None
        state.opsets.setdefault(PHI_DOMAIN, 1)

    def carry(self, init: str) -> str:
        """A loop-carried state that starts as ``init``: its value in the body."""
        assert self.start is None, "states are set up before the body"
        self.states.append(self._node("LoopState", [init], hint="state"))
        return self.states[-1]

    def begin(self) -> None:
        self.start = len(self.b.nodes)

    def iteration(self, reverse: bool = False) -> str:
        return self._node("LoopIteration", [], hint="step", reverse=int(reverse))

    def scan_slice(self, x: str, axis: int, reverse: bool = False) -> str:
        return self._node("ScanSlice", [x], hint="slice", axis=axis, reverse=int(reverse))

    def end(self, updates: Sequence[str], scans: Sequence[tuple[str, int, bool]], outputs: Sequence[str],
            condition: int | None = None) -> None:
        """Close the body: ``updates`` are the states' next values, ``scans`` the (value, axis, reverse) of
        each scan output; ``outputs`` name the final states, then the stacked outputs ('' where unused);
        ``condition``: the index of the bool state that must hold for another iteration."""
        assert self.start is not None and len(updates) == len(self.states)
        assert condition is None or not scans, "a loop that may stop early has no scan outputs"
        named = [o or self.b.fresh("unused") for o in outputs]
        self.b.nodes.append(onnx.helper.make_node(
            "LoopEnd", [*self.states, *updates, *(v for v, _, _ in scans)], named, name=self.b.fresh("LoopEnd"),
            domain=PHI_DOMAIN, loop=self.name, states=len(self.states),
            **({"axes": [a for _, a, _ in scans], "reverse": [int(r) for _, _, r in scans]} if scans else {})))
        self.state.run_loops[self.name] = RunLoop(self.name, self.trip,
                                                  None if condition is None else self.states[condition])
        for node in self.b.nodes[self.start:]:
            self.state.in_loops[node.name] = (self.name,)

    def _node(self, op_type: str, inputs: list[str], hint: str, **attrs: object) -> str:
        out = self.b.fresh(hint)
        self.b.nodes.append(onnx.helper.make_node(op_type, inputs, [out], name=self.b.fresh(op_type),
                                                  domain=PHI_DOMAIN, loop=self.name, **attrs))
        return out


def loop_node_types(node: onnx.NodeProto, state: "FoldedGraph",
                    types: Mapping[str, onnx.TypeProto]) -> dict[str, onnx.TypeProto]:
    """The output types of a loop node (shape inference's hook for the tilec domain); {} until its inputs'
    types are known."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type == "LoopIteration":
        return {node.output[0]: onnx.helper.make_tensor_type_proto(onnx.TensorProto.INT64, [])}
    infos = [_tensor_info(name, state, types) for name in node.input]
    if any(i is None for i in infos):
        return {}
    if node.op_type == "LoopState":
        (elem, shape), = infos
        return {node.output[0]: state.dims.tensor_type(elem, shape)}
    if node.op_type == "ScanSlice":
        (elem, shape), = infos
        axis = scan_axis(attrs["axis"], len(shape))
        return {node.output[0]: state.dims.tensor_type(elem, shape[:axis] + shape[axis + 1:])}
    count = attrs["states"]
    trip = state.run_loops[attrs["loop"].decode()].trip
    out: dict[str, onnx.TypeProto] = {}
    for name, (elem, shape) in zip(node.output, infos[:count]):
        out[name] = state.dims.tensor_type(elem, shape)
    for name, (elem, shape), axis in zip(node.output[count:], infos[2 * count:], attrs.get("axes", [])):
        axis = scan_axis(axis, len(shape) + 1)
        out[name] = state.dims.tensor_type(elem, [*shape[:axis], trip, *shape[axis:]])
    return out


def scan_axis(axis: int, rank: int) -> int:
    """A scan input's or output's axis, counted from the end where negative (of the sliced or stacked rank)."""
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _tensor_info(name: str, state: "FoldedGraph",
                 types: Mapping[str, onnx.TypeProto]) -> tuple[int, list[Size]] | None:
    if name in state.constants:
        array = state.constants[name]
        return onnx.helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape)
    t = types.get(name)
    shape = symbolic.shape_of(t, state.dims)
    return None if shape is None or not t.tensor_type.elem_type else (t.tensor_type.elem_type, shape)
