"""String tensors in the graph IR: the length of their code-point axis, and which ops take them.

A STRING value has one axis more than ONNX gives it, its code points (``compiler/dtypes.py``). Contract:

* ``input_chars(name)`` is the size variable of a string graph input's code-point axis (``name:chars``): the
  runtime binds it from the longest string of the run's array, as any other symbolic dimension.
* ``output_chars(node, index)`` is that axis for a string output of ``node``: the longest string of the
  node's attribute tables (a classifier's class labels, LabelEncoder's values and default, CategoryMapper's
  categories), or an input's (Identity). It raises ``UnsupportedOpError`` for an op not in
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

#: The attributes holding the strings a node's string output is made of, by (domain, op type).
_TABLES: dict[tuple[str, str], tuple[str, ...]] = {
    (_ML, "TreeEnsembleClassifier"): ("classlabels_strings",),
    (_ML, "LinearClassifier"): ("classlabels_strings",),
    (_ML, "SVMClassifier"): ("classlabels_strings",),
    (_ML, "LabelEncoder"): ("values_strings", "default_string", "values_tensor", "default_tensor"),
    (_ML, "CategoryMapper"): ("cats_strings", "default_string"),
}

#: Ops whose lowerings take string operands or give string results (code points on the last axis).
STRING_OPS: frozenset[tuple[str, str]] = frozenset({*_TABLES, ("", "Identity"), ("", "Equal")})


def input_chars(name: str) -> SizeVar:
    return SizeVar(f"{name}:chars")


def output_chars(node: Node, index: int) -> Size:
    key = (node.domain, node.op_type)
    if key not in STRING_OPS:
        raise UnsupportedOpError(f"{node.describe()}: output {index} is a string tensor, which tilec computes only "
                                 f"for {', '.join(sorted(op for _, op in STRING_OPS))}")
    if key in _TABLES:
        return max([1, *(len(s) for name in _TABLES[key] for s in _strings(node.attr(name)))])
    source = node.inputs[0]
    if source is None or source.dtype is not DType.STRING:
        raise UnsupportedOpError(f"{node.describe()}: a string output of a non-string input")
    return source.shape[-1]


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
