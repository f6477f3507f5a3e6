"""Expansions: ONNX nodes the frontend rewrites into plain nodes, so that no lowering ever sees them.

Contract: :func:`expand_node` returns the nodes replacing a default-domain
``If``/``Loop``/``Scan`` (:mod:`.control_flow`) or ``RNN``/``GRU``/``LSTM``
(:mod:`.recurrent`), an onnxruntime ``com.microsoft`` contrib op
(:mod:`.contrib`), or a node of any domain that tilec does not lower but
whose schema defines a function body (:mod:`.functions`), having added the
constants they read to the folded graph's constants; or None, leaving everything untouched, for any other node
and for one that cannot be expanded with what is known so far (folding
rounds may still make a trip count or a shape static). For a node that stays,
:func:`refusal` says why in words fit for an ``UnsupportedOpError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import onnx

from compiler.frontend import contrib, control_flow, functions, maps, recurrent
from compiler.frontend.loader import normalize_domain
from compiler.frontend.rewrite import Builder, NameSource, NotExpandable
from compiler.loopir.expr import logical_and

if TYPE_CHECKING:
    from compiler.frontend.folding import FoldedGraph

Expander = Callable[[onnx.NodeProto, "FoldedGraph", Builder], None]

def _refuse(node: onnx.NodeProto, state: "FoldedGraph", builder: Builder) -> None:
    """No expansion: the reason a converter's default op is refused (``REFUSED``)."""
    raise NotExpandable(REFUSED[(normalize_domain(node.domain), node.op_type)])


#: Ops converters emit by default that tilec refuses, with what to do instead.
REFUSED = {
    ("ai.onnx.ml", "DictVectorizer"): "tilec takes a dict (map) graph input that only DictVectorizers read; this "
                                      "one reads another value",
}

#: (domain, op type) -> its expander.
EXPANDERS: dict[tuple[str, str], Expander] = {
    **{("", op): f for op, f in {**control_flow.EXPANDERS, **recurrent.EXPANDERS}.items()},
    **{(contrib.DOMAIN, op): f for op, f in contrib.EXPANDERS.items()},
    **{key: _refuse for key in REFUSED},
    ("ai.onnx.ml", "ZipMap"): maps.expand_zipmap,
}


def expand_node(node: onnx.NodeProto, state: "FoldedGraph", names: NameSource) -> list[onnx.NodeProto] | None:
    """The nodes replacing ``node``, or None to keep it (see the module docstring)."""
    try:
        builder = _expand(node, state, names)
    except NotExpandable:
        return None
    if builder is None:
        return None
    state.constants.update(builder.constants)
    if node.name in state.speculative:  # what a speculative node expands into is speculative too
        state.speculative.update(n.name for n in builder.nodes)
    outer = state.guards.get(node.name)
    if outer is not None:  # what a guarded node expands into runs under its guard (and its own, if nested)
        for n in builder.nodes:
            state.guards[n.name] = logical_and(outer, state.guards[n.name]) if n.name in state.guards else outer
    around = state.in_loops.get(node.name)
    if around is not None:  # what a body node expands into is in its loops too (and in its own, if a loop)
        for n in builder.nodes:
            state.in_loops[n.name] = around + state.in_loops.get(n.name, ())
    return builder.nodes


def refusal(node: onnx.NodeProto, state: "FoldedGraph", names: NameSource) -> NotExpandable | None:
    """Why ``node`` cannot be expanded; None if it is no expansion's business (or could be expanded)."""
    try:
        _expand(node, state, names)
    except NotExpandable as exc:
        return exc
    return None


def _expand(node: onnx.NodeProto, state: "FoldedGraph", names: NameSource) -> Builder | None:
    expander = EXPANDERS.get((normalize_domain(node.domain), node.op_type))
    if expander is None and functions.wants_function(node, state):
        expander = functions.expand_function
    if expander is None:
        return None
    builder = Builder(names, f"{node.name or node.op_type}/", state.opsets.get("", 0))
    expander(node, state, builder)
    return builder
