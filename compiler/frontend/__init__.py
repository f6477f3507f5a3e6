"""Stage 1, the frontend: an ONNX model -> the graph IR, every shape known (static or symbolic).

``load_graph`` chains the steps: :mod:`.loader` (read, check, bind input
shapes, convert the opset, infer shapes), :mod:`.maps` (a dict input becomes its keys and values),
:mod:`.sequences` (tensor sequences
known at compile time become tensor ops), :mod:`.qdq` (QDQ models' contractions
over dequantized 8-bit values become integer contractions), :mod:`.folding` (compile-time
constant folding to a fixpoint with shape inference) and :mod:`.importer`
(ONNX -> :class:`compiler.graph.ir.Graph`).
"""

from __future__ import annotations

import operator
from typing import Callable, Mapping

from compiler.frontend.expand import refusal
from compiler.frontend.folding import fold_model
from compiler.frontend.importer import import_graph
from compiler.frontend.loader import ConstantInputs, InputShapes, ModelSource, load_model
from compiler.errors import DataDependentError, ShapeError, UnsupportedOpError, describe_node
from compiler.frontend.loader import normalize_domain
from compiler.frontend.maps import map_inputs
from compiler.frontend.qdq import integer_contractions
from compiler.frontend.rewrite import NameSource
from compiler.frontend.sequences import resolve_sequences
from compiler.graph.ir import PHI_DOMAIN, Graph
from compiler.loopir.sizes import SizeRange

DimBounds = Mapping[str, tuple[int | None, int | None]]

__all__ = ["load_graph", "load_model", "fold_model", "import_graph"]


def load_graph(model: ModelSource, input_shapes: InputShapes | None = None,
               is_supported: Callable[[str, str], bool] | None = None,
               constant_inputs: ConstantInputs | None = None,
               dim_bounds: DimBounds | None = None, read_values: bool = True) -> Graph:
    """Load ``model`` (path, bytes or ModelProto), bind ``input_shapes`` ({"x": (2, 64)}) and
    ``constant_inputs`` ({"axes": np.array([1])}), and import it. Input dimensions left symbolic
    become size variables, with the ranges ``dim_bounds`` ({"batch": (1, 64)}; either end None) gives.
    With ``read_values`` a small integer input that sets a shape is read at run time (value sizes,
    ``folding.fold_model``); without (CUDA targets) such a shape must be fixed otherwise.

    ``is_supported(op_type, domain)``, when given, is asked about every node left
    after folding (folding expands refused ones whose schema defines a function
    body), and all the refused ones are reported together (before shape
    checks, whose complaints about an unknown op's outputs would hide the cause),
    with the reason an expansion (control flow, recurrences) gave up, if any.
    Raises ModelLoadError for an unreadable or invalid model, UnsupportedOpError,
    ShapeError for a bad binding or a shape that stays unknown.
    """
    loaded = load_model(model, input_shapes, constant_inputs)
    input_maps = map_inputs(loaded)
    loaded = integer_contractions(resolve_sequences(loaded))
    folded = fold_model(loaded, is_supported, read_values)
    if is_supported is not None:
        # A Phi (a run-time If's output) is the frontend's own node, lowered by the driver.
        missing = [n for n in folded.nodes if n.domain != PHI_DOMAIN and not is_supported(n.op_type, normalize_domain(n.domain))]
        if missing:
            names = NameSource(set())
            reasons = [(describe_node(n.op_type, n.name or "<unnamed>", folded.opsets.get(normalize_domain(n.domain)),
                                      normalize_domain(n.domain)), refusal(n, folded, names)) for n in missing]
            waiting = [(where, why) for where, why in reasons if why is not None and why.values]
            if waiting:
                raise DataDependentError("; ".join(f"{where}: {why}" for where, why in waiting),
                                         values=tuple(v for _, why in waiting for v in why.values))
            lines = sorted({f"  {where}" + (f": {why}" if why else "") for where, why in reasons})
            raise UnsupportedOpError(f"{len(missing)} node(s) use unsupported operators:\n" + "\n".join(lines))
    graph = import_graph(folded, size_ranges(dim_bounds or {}))
    graph.input_maps = {v.name: input_maps[v.name] for v in graph.inputs if v.name in input_maps}
    return graph


def size_ranges(dim_bounds: DimBounds) -> dict[str, SizeRange]:
    """``dim_bounds`` as SizeRanges; an omitted end takes the default."""
    ranges = {}
    for name, bounds in dim_bounds.items():
        try:
            lo, hi = bounds
            default = SizeRange()
            lo = default.lo if lo is None else operator.index(lo)
            hi = default.hi if hi is None else operator.index(hi)
            ranges[str(name)] = SizeRange(lo, hi)
        except (TypeError, ValueError) as exc:
            raise ShapeError(f"dim_bounds[{name!r}] = {bounds!r} is not a range (min, max) of sizes "
                             f"with 0 <= min <= max: {exc}") from None
    return ranges
