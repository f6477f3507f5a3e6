"""Ops defined by a function body in their ONNX schema, inlined where tilec has no lowering for them.

Contract of :func:`expand_function` (called by :mod:`.expand` during folding
for a node that :func:`wants_function` selects): it inlines the function body
the schema defines for the model's opset of the node's domain (the newest
function version not newer than it; a context-dependent function is built
from the node and its input types, so it waits until inference knows every
present input's type), with

* the body's values renamed fresh, its inputs bound to the node's inputs ('' for
  an omitted optional one) and its outputs produced under the node's output names;
* every attribute reference (``ref_attr_name``, nested subgraphs included)
  replaced by the node's attribute of that name, else the schema's default,
  else dropped (an attribute the caller did not set is absent in the body too);
* every body op read in the model's opset of its domain: each must fit that
  version's schema (the op exists, takes its attributes and its number of
  inputs), else the node stays; domains only the body uses are added to the
  model's opset imports at the body's version.

A node is expanded when tilec has no lowering for its op, or when it carries
graph-valued attributes (FlexAttention's ``score_mod``): lowerings never see
subgraphs, while the schema's function inlines them. Ops tilec lowers directly
are never expanded (the direct lowering is faster). The body may hold further
expandable nodes: later folding rounds expand them in turn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import onnx
import onnx.defs
from onnx import helper

from compiler.frontend.loader import normalize_domain
from compiler.frontend.rewrite import Builder, NotExpandable, graph_attrs, has_subgraph

if TYPE_CHECKING:
    from compiler.frontend.folding import FoldedGraph


def wants_function(node: onnx.NodeProto, state: "FoldedGraph") -> bool:
    """Whether ``node`` is one to replace by its schema's function body (see the module docstring)."""
    lowered = state.is_supported is None or state.is_supported(node.op_type, normalize_domain(node.domain))
    return (not lowered or has_subgraph(node)) and _schema(node, state) is not None


def expand_function(node: onnx.NodeProto, state: "FoldedGraph", b: Builder) -> None:
    schema = _schema(node, state)
    assert schema is not None  # wants_function said so
    function = _function(node, schema, state)
    opsets = _body_opsets(function, state)
    nodes = [_with_attributes(n, node, schema) for n in function.node]
    body = helper.make_graph(nodes, function.name or node.op_type,
                             [helper.make_value_info(n, onnx.TypeProto()) for n in function.input],
                             [helper.make_value_info(n, onnx.TypeProto()) for n in function.output])
    bindings = {name: node.input[i] if i < len(node.input) else "" for i, name in enumerate(function.input)}
    b.inline(body, bindings, [node.output[i] if i < len(node.output) else "" for i in range(len(function.output))])
    for domain, version in opsets.items():
        state.opsets.setdefault(domain, version)


def _schema(node: onnx.NodeProto, state: "FoldedGraph") -> onnx.defs.OpSchema | None:
    domain = normalize_domain(node.domain)
    version = state.opsets.get(domain)
    if version is None:
        return None
    try:
        schema = onnx.defs.get_schema(node.op_type, version, domain)
    except onnx.defs.SchemaError:
        return None
    return schema if schema.has_function or schema.has_context_dependent_function else None


def _function(node: onnx.NodeProto, schema: onnx.defs.OpSchema, state: "FoldedGraph") -> onnx.FunctionProto:
    """The body for the model's opset: the newest function version not newer than it."""
    version = state.opsets[normalize_domain(node.domain)]
    static = [v for v in schema.function_opset_versions if v <= version]
    dependent = [v for v in schema.context_dependent_function_opset_versions if v <= version]
    function = onnx.FunctionProto()
    if static and (not dependent or max(static) >= max(dependent)):
        function.ParseFromString(schema.get_function_with_opset_version(max(static)))
    elif dependent:
        types = [_input_type(name, state).SerializeToString() if name else onnx.TypeProto().SerializeToString()
                 for name in node.input]
        try:
            built = schema.get_context_dependent_function_with_opset_version(
                max(dependent), node.SerializeToString(), types)
        except Exception as exc:  # noqa: BLE001 - the schema's builder rejects this node: say why
            raise NotExpandable(f"its schema could not build a function body for this node ({exc})") from exc
        function.ParseFromString(built)
    else:
        raise NotExpandable(f"its schema defines no function body for opset {version}")
    if not function.node:
        raise NotExpandable("its schema built no function body for these inputs and attributes")
    return function


def _input_type(name: str, state: "FoldedGraph") -> onnx.TypeProto:
    if name in state.constants:
        array = state.constants[name]
        return helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(array.dtype), list(array.shape))
    t = state.types.get(name)
    if t is None:
        raise NotExpandable(f"the type of input '{name}' is not known (yet); its function body depends on it")
    return t


def _body_opsets(function: onnx.FunctionProto, state: "FoldedGraph") -> dict[str, int]:
    """The version of each domain the body's ops are read in: the model's, else the body's own.

    Raises NotExpandable where a body op does not fit that version's schema (unknown op, an
    attribute it lacks, an input count it does not take): ONNX versions function bodies with the
    ops they use, so a body is read in a newer opset only up to type additions, which this allows.
    """
    declared = {normalize_domain(o.domain): o.version for o in function.opset_import}
    opsets: dict[str, int] = {}
    for inner in _all_nodes(function.node):
        domain = normalize_domain(inner.domain)
        version = state.opsets.get(domain, declared.get(domain))
        if version is None:
            raise NotExpandable(f"its function body uses domain '{domain or 'ai.onnx'}' without a version, "
                                "and the model does not import it")
        opsets[domain] = version
        misfit = _misfit(inner, version, domain)
        if misfit:
            raise NotExpandable(f"its function body uses {inner.op_type} in a form opset {version} of "
                                f"'{domain or 'ai.onnx'}' does not have ({misfit})")
    return opsets


def _misfit(inner: onnx.NodeProto, version: int, domain: str) -> str:
    """Why ``inner`` does not fit its op's schema at ``version``; '' if it fits."""
    try:
        schema = onnx.defs.get_schema(inner.op_type, version, domain)
    except onnx.defs.SchemaError:
        return "no such op"
    unknown = sorted(a.name for a in inner.attribute if a.name not in schema.attributes)
    if unknown:
        return f"attribute(s) {', '.join(unknown)}"
    if not schema.min_input <= len(inner.input) <= schema.max_input:
        return f"{len(inner.input)} inputs"
    return ""


def _all_nodes(nodes: Iterable[onnx.NodeProto]) -> Iterable[onnx.NodeProto]:
    for node in nodes:
        yield node
        for attr in node.attribute:
            for sub in graph_attrs(attr):
                yield from _all_nodes(sub.node)


def _with_attributes(inner: onnx.NodeProto, node: onnx.NodeProto, schema: onnx.defs.OpSchema) -> onnx.NodeProto:
    """``inner`` with every attribute reference (here and in its subgraphs) resolved against ``node``."""
    given = {a.name: a for a in node.attribute}
    copy = onnx.NodeProto()
    copy.CopyFrom(inner)
    del copy.attribute[:]
    for attr in inner.attribute:
        if attr.ref_attr_name:
            value = given[attr.ref_attr_name] if attr.ref_attr_name in given else _default(schema, attr.ref_attr_name)
            if value is None:
                continue
            resolved = onnx.AttributeProto()
            resolved.CopyFrom(value)
            resolved.name = attr.name
            copy.attribute.append(resolved)
            continue
        resolved = onnx.AttributeProto()
        resolved.CopyFrom(attr)
        for sub in graph_attrs(resolved):
            nested = [_with_attributes(n, node, schema) for n in sub.node]
            del sub.node[:]
            sub.node.extend(nested)
        copy.attribute.append(resolved)
    return copy


def _default(schema: onnx.defs.OpSchema, name: str) -> onnx.AttributeProto | None:
    attr = schema.attributes.get(name)
    if attr is None or attr.default_value.type == onnx.AttributeProto.UNDEFINED:
        return None
    return attr.default_value
