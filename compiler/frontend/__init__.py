"""Stage 1, the frontend: an ONNX model -> the graph IR, every shape static.

``load_graph`` chains the three steps: :mod:`.loader` (read, check, bind input
shapes, convert the opset, infer shapes), :mod:`.folding` (compile-time
constant folding to a fixpoint with shape inference) and :mod:`.importer`
(ONNX -> :class:`compiler.graph.ir.Graph`).
"""

from __future__ import annotations

from compiler.frontend.folding import fold_model
from compiler.frontend.importer import import_graph
from compiler.frontend.loader import InputShapes, ModelSource, load_model
from compiler.graph.ir import Graph

__all__ = ["load_graph", "load_model", "fold_model", "import_graph"]


def load_graph(model: ModelSource, input_shapes: InputShapes | None = None) -> Graph:
    """Load ``model`` (path, bytes or ModelProto), bind ``input_shapes`` ({"x": (2, 64)}) and import it.

    Raises ModelLoadError for an unreadable or invalid model, ShapeError for a
    bad binding or a shape that stays unknown.
    """
    return import_graph(fold_model(load_model(model, input_shapes)))
