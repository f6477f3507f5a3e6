"""String tensors in the graph IR: the length of their code-point axis, and which ops take them.

A STRING value has one axis more than ONNX gives it, its code points (``compiler/dtypes.py``). Contract:

* ``input_chars(name)`` is the size variable of a string graph input's code-point axis (``name:chars``): the
  runtime binds it from the longest string of the run's array, as any other symbolic dimension.
* ``output_chars(node, index)`` is that axis for a string output of ``node``: the longest string of the
  node's attribute tables (a classifier's class labels, LabelEncoder's values and default, CategoryMapper's
  categories), or its inputs' (Identity; StringConcat adds them up). It raises ``UnsupportedOpError`` for an op not in
  ``STRING_OPS``, which lists the ops whose lowerings read and write strings in this form.
* ``check_string_operands(node)`` refuses, by name, a node outside ``STRING_OPS`` that reads a string.
"""

from __future__ import annotations

from typing import Any

from compiler.dtypes import DType
from compiler.errors import UnsupportedOpError
from compiler.graph.ir import Node
from compiler.loopir.sizes import Size, SizeVar

_ML = "ai.onnx.ml"

#: Where the strings of a node's string output come from, by (domain, op type): the attributes listing them,
#: the attributes giving the default, and the schema's default where none of those is set.
_TABLES: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    (_ML, "TreeEnsembleClassifier"): (("classlabels_strings",), (), None),
    (_ML, "LinearClassifier"): (("classlabels_strings",), (), None),
    (_ML, "SVMClassifier"): (("classlabels_strings",), (), None),
    (_ML, "LabelEncoder"): (("values_strings", "values_tensor"), ("default_string", "default_tensor"), "_Unused"),
    (_ML, "CategoryMapper"): (("cats_strings",), ("default_string",), "_Unused"),
}

#: Ops whose lowerings take string operands or give string results (code points on the last axis).
STRING_OPS: frozenset[tuple[str, str]] = frozenset({*_TABLES, ("", "Identity"), ("", "Equal"), ("", "StringConcat")})


def input_chars(name: str) -> SizeVar:
    return SizeVar(f"{name}:chars")


def output_chars(node: Node, index: int) -> Size:
    key = (node.domain, node.op_type)
    if key not in STRING_OPS:
        raise UnsupportedOpError(f"{node.describe()}: output {index} is a string tensor, which tilec computes only "
                                 f"for {', '.join(sorted(op for _, op in STRING_OPS))}")
    if key in _TABLES:
        tables, defaults, schema_default = _TABLES[key]
        given = [s for name in defaults for s in _strings(node.attr(name))]
        texts = [s for name in tables for s in _strings(node.attr(name))] + (given or [schema_default or ""])
        return max(1, *(len(s) for s in texts))
    sources = [v for v in node.inputs if v is not None]
    if not sources or any(v.dtype is not DType.STRING for v in sources):
        raise UnsupportedOpError(f"{node.describe()}: a string output of a non-string input")
    if node.op_type == "StringConcat":
        return sources[0].shape[-1] + sources[1].shape[-1]
    return sources[0].shape[-1]


def check_string_operands(node: Node) -> None:
    if (node.domain, node.op_type) in STRING_OPS:
        return
    for k, v in enumerate(node.inputs):
        if v is not None and v.dtype is DType.STRING:
            raise UnsupportedOpError(f"{node.describe()}: input {k} ('{v.name}') is a string tensor, which tilec "
                                     f"reads only in {', '.join(sorted(op for _, op in STRING_OPS))}")


def _strings(value: Any) -> list[str]:
    """The strings of an attribute (a list of str, a str, or a string tensor); none for other types."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes):
        return [value.decode("utf-8")]
    try:
        items = list(value.reshape(-1)) if hasattr(value, "reshape") else list(value)
    except TypeError:
        return []
    return [s.decode("utf-8") if isinstance(s, bytes) else s for s in items if isinstance(s, (str, bytes))]
