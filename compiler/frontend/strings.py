"""String tensors in the graph IR: the length of their code-point axis, and which ops take them.

A STRING value has one axis more than ONNX gives it, its code points (``compiler/dtypes.py``). Contract:

* ``input_chars(name)`` is the size variable of a string graph input's code-point axis (``name:chars``): the
  runtime binds it from the longest string of the run's array, as any other symbolic dimension.
* ``output_chars(node, index)`` is that axis for a string output of ``node``: the longest string of the
  node's attribute tables (a classifier's class labels, LabelEncoder's values and default, CategoryMapper's
  categories), or its inputs' (Identity; StringConcat adds them up). It raises ``UnsupportedOpError`` for an op not in
  ``STRING_OPS``, which lists the ops whose lowerings read and write strings in this form.
* ``check_string_operands(node)`` refuses, by name, a node outside ``STRING_OPS`` that reads a string.
* ``move_code_points(node)`` makes a data-movement op over strings (``MOVES``: Gather, Concat, Slice,
  Transpose, and the reshapes Reshape / Flatten / Squeeze / Unsqueeze) move whole strings: the code-point
  axis stays last, untouched. Axes are counted in ONNX's rank (a negative one from its end, not from the
  code points), a transpose keeps the last axis in place, and every reshape becomes a Reshape to its
  inferred shape with the code points appended; concatenated strings must have one length.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from compiler.dtypes import DType, decoded_strings
from compiler.errors import ModelLoadError, UnsupportedOpError
from compiler.graph.ir import Node, TensorType, Value
from compiler.loopir.printer import format_size
from compiler.loopir.sizes import Size, SizeVar, same_size

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

#: Data-movement ops that move whole strings once ``move_code_points`` has adapted them.
MOVES = frozenset({"Gather", "Concat", "Slice", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})
_RESHAPES = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})

#: Ops whose lowerings take string operands or give string results (code points on the last axis).
STRING_OPS: frozenset[tuple[str, str]] = frozenset({*_TABLES, (_ML, "OneHotEncoder"), ("", "Identity"), ("", "Equal"),
                                                   ("", "StringConcat"), *(("", op) for op in MOVES)})


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
    if node.op_type in MOVES and node.op_type != "Concat":
        sources = sources[:1]  # the others are indices, shapes or axes
    if not sources or any(v.dtype is not DType.STRING for v in sources):
        raise UnsupportedOpError(f"{node.describe()}: a string output of a non-string input")
    if node.op_type == "StringConcat":
        return sources[0].shape[-1] + sources[1].shape[-1]
    if node.op_type == "Concat" and any(not same_size(v.shape[-1], sources[0].shape[-1]) for v in sources):
        raise UnsupportedOpError(f"{node.describe()}: its strings have different lengths (code points "
                                 f"{', '.join(format_size(v.shape[-1]) for v in sources)}); tilec concatenates "
                                 "strings of one input or one length only")
    return sources[0].shape[-1]


def move_code_points(node: Node) -> None:
    """Adapt a data-movement ``node`` over strings, its inputs and outputs typed (see the module docstring)."""
    if node.domain or node.op_type not in MOVES or not node.outputs or node.outputs[0].dtype is not DType.STRING:
        return
    x, out = node.inputs[0], node.outputs[0]
    rank = len(x.shape) - 1
    if node.op_type in _RESHAPES:
        dims = np.empty(len(out.shape), dtype=object)
        dims[:] = list(out.shape)  # the inferred shape, code points last; symbolic sizes as size values
        shape = dims.astype(np.int64) if all(isinstance(d, int) for d in out.shape) else dims
        node.op_type, node.attrs = "Reshape", {}
        node.inputs = [x, Value(f"{node.name}__string_shape", TensorType(DType.I64, (len(out.shape),)), const=shape)]
    elif node.op_type == "Transpose":
        perm = node.attr("perm", list(reversed(range(rank))))
        node.attrs["perm"] = [*(_axis(node, p, rank) for p in perm), rank]
    elif node.op_type in ("Gather", "Concat"):
        node.attrs["axis"] = _axis(node, node.attr("axis", 0), rank)
    elif node.op_type == "Slice" and len(node.inputs) > 3 and node.inputs[3] is not None:
        axes = node.inputs[3]
        if axes.const is None:
            raise UnsupportedOpError(f"{node.describe()}: slicing strings along axes known only at run time")
        counted = np.array([_axis(node, a, rank) for a in np.asarray(axes.const).reshape(-1)], dtype=axes.const.dtype)
        node.inputs = [*node.inputs[:3], Value(f"{node.name}__string_axes", axes.type, const=counted),
                       *node.inputs[4:]]


def _axis(node: Node, value: Any, rank: int) -> int:
    """An axis of the strings' ONNX rank in [0, rank); one out of [-rank, rank) is an invalid node (taken modulo
    the rank it would move another axis, or the code points)."""
    axis = int(value)
    if not -rank <= axis < rank:
        raise ModelLoadError(f"{node.describe()}: invalid ONNX node: axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


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
    array = np.asarray(value, dtype=object).reshape(-1)
    if not all(isinstance(v, (str, bytes)) for v in array):
        return []  # a number tensor (values_tensor of ints)
    return decoded_strings(array).tolist()
