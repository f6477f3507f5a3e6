"""Symbolic shape computations in the frontend: size expressions inside ONNX types and values.

Exporters compute every dynamic shape in the graph: ``Shape -> Gather -> Unsqueeze -> Concat ->
Reshape``, ``Range`` over a length, ``Expand`` to a computed shape, ``ConstantOfShape`` of a mask.
With symbolic input dims those values are not constants, but they are *sizes*: expressions over
the size variables (``compiler.loopir.sizes``). This module lets the folder evaluate them as such.

Contract:

* ``SymbolicDims`` names size expressions for onnx's shape inference: an input's ``dim_param`` is
  its size variable; any other size gets a reserved name (``tilec_size_<k>``), one per canonical
  form (``sizes.normalize``), so onnx's inference carries it through elementwise ops, MatMul,
  Transpose... and sees two equal sizes as equal. ``size_of(dim_param)`` reads one back (None:
  a name onnx made up for a size it could not infer).
* ``shape_of(type, dims)``: a tensor type's dims as sizes, or None where one is unknown.
* ``evaluate(node, inputs)``: the outputs of a shape-computation node (Shape's successors: Gather,
  Unsqueeze, Squeeze, Concat, Slice, Reshape, Cast to an integer type, Add, Sub, Mul, Div, Mod,
  Min, Max, Neg, Abs, Identity, Equal/Where/Less/Greater where the answer is the same for every
  value of the variables) on integer arrays whose elements are ints or size expressions
  (dtype=object); None where it cannot be decided at compile time.
* ``output_types(node, dims, types, values)``: the output types of a node whose shape operand
  (Reshape's shape, Expand's shape, ConstantOfShape's input, Range's bounds, Slice's starts/ends,
  Tile's repeats) is such a value, which onnx's inference cannot know; and of Flatten, pools and
  convolutions over symbolic dims, whose products and windows onnx leaves unknown.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper

from compiler.loopir.expr import Const, binary
from compiler.loopir.sizes import (Size, SizeVar, ValueSource, ValueVar, expanded_dims, has_values, range_length,
                                   reshaped_dims, slice_geometry, choose, exact_quotient, kept_dims, named_axes,
                                   normalize, pads_per_axis, same_size, size_expr, size_mul, size_prod, size_sum)

#: The prefix of the dim_params tilec gives sizes that are not a graph input's own.
RESERVED_PREFIX = "tilec_size_"


class SymbolicDims:
    def __init__(self, input_names: Sequence[str]) -> None:
        self._sizes: dict[str, Size] = {name: SizeVar(name) for name in input_names}
        self._names: dict[Size, str] = {normalize(SizeVar(name)): name for name in input_names}
        self._fresh = itertools.count()

    def size_of(self, dim_param: str) -> Size | None:
        return self._sizes.get(dim_param)

    def name_of(self, size: Size) -> str:
        canonical = normalize(size)
        if canonical not in self._names:
            name = f"{RESERVED_PREFIX}{next(self._fresh)}"
            self._names[canonical] = name
            self._sizes[name] = canonical
        return self._names[canonical]

    def tensor_type(self, elem_type: int, shape: Sequence[Size]) -> onnx.TypeProto:
        t = helper.make_tensor_type_proto(elem_type, None)
        t.tensor_type.shape.SetInParent()
        for d in shape:
            dim = t.tensor_type.shape.dim.add()
            value = normalize(d)
            if isinstance(value, int):
                dim.dim_value = value
            else:
                dim.dim_param = self.name_of(value)
        return t


def shape_of(t: onnx.TypeProto | None, dims: SymbolicDims) -> list[Size] | None:
    if t is None or t.WhichOneof("value") != "tensor_type" or not t.tensor_type.HasField("shape"):
        return None
    out: list[Size] = []
    for d in t.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            out.append(int(d.dim_value))
        elif d.dim_param and dims.size_of(d.dim_param) is not None:
            out.append(dims.size_of(d.dim_param))
        else:
            return None
    return out


def is_symbolic(array: np.ndarray) -> bool:
    return array.dtype == object


def sizes_array(values: Sequence[Size], shape: tuple[int, ...] | None = None) -> np.ndarray:
    """An int64 array of ``values`` if they are all ints, else an object array of sizes."""
    canonical = [normalize(v) for v in values]
    if all(isinstance(v, int) for v in canonical):
        array = np.array(canonical, dtype=np.int64)
    else:
        array = np.empty(len(canonical), dtype=object)
        array[:] = canonical
    return array.reshape(shape if shape is not None else (len(canonical),))


class Undecidable(Exception):
    """The result depends on the values of the size variables."""


def _arith(op: str) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if isinstance(a, (int, np.integer)) and isinstance(b, (int, np.integer)):
            a, b = int(a), int(b)
            return {"add": a + b, "sub": a - b, "mul": a * b, "min": min(a, b), "max": max(a, b),
                    "div": a // b if b else _undecidable(), "rem": a % b if b else _undecidable()}[op]
        if op in ("div", "rem") and (has_values(_int(a)) or has_values(_int(b))):
            _undecidable()  # ONNX truncates, the expressions floor: they agree for non-negative sizes only
        if op in ("div", "rem"):
            # ONNX's integer Div truncates; sizes are non-negative, where it is floor division. A negative
            # operand (a -1 placeholder divided by a size) is beyond what the expressions express.
            if (isinstance(b, (int, np.integer)) and b <= 0) or (isinstance(a, (int, np.integer)) and a < 0):
                _undecidable()
            quotient = exact_quotient(a, b) if op == "div" else None
            if quotient is not None:
                return quotient
        return normalize(binary(op, size_expr(_int(a)), size_expr(_int(b))))

    return apply


def _int(v: Any) -> Size:
    return int(v) if isinstance(v, (int, np.integer)) else v


def _undecidable() -> Any:
    raise Undecidable()


def _compare(op: str) -> Callable[[Any, Any], bool]:
    def apply(a: Any, b: Any) -> bool:
        a, b = _int(a), _int(b)
        if isinstance(a, int) and isinstance(b, int):
            return {"eq": a == b, "lt": a < b, "gt": a > b}[op]
        if same_size(a, b):
            return op == "eq"
        if has_values(a) or has_values(b):
            raise Undecidable()  # a value size may be negative
        # Sizes are >= 0: a size compared with a negative constant is decided (Where(Equal(s, -1), ...)).
        for x, y, flip in ((a, b, False), (b, a, True)):
            if isinstance(y, int) and y < 0 and not isinstance(x, int):
                return {"eq": False, "lt": flip, "gt": not flip}[op]
        raise Undecidable()

    return apply


_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Mod": "rem", "Min": "min", "Max": "max"}
_COMPARE = {"Equal": "eq", "Less": "lt", "Greater": "gt"}
_INT_TYPES = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16,
                        onnx.TensorProto.INT8, onnx.TensorProto.UINT64, onnx.TensorProto.UINT32})


def _objects(array: np.ndarray) -> np.ndarray:
    """``array`` as an object array of Python ints, bools and size expressions."""
    flat = [bool(v) if isinstance(v, (bool, np.bool_)) else int(v) if isinstance(v, (int, np.integer)) else v
            for v in np.asarray(array).reshape(-1)]
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(np.shape(array))


def _result(array: np.ndarray, like_int: bool = True) -> np.ndarray:
    flat = [normalize(_int(v)) if not isinstance(v, (bool, np.bool_)) else bool(v) for v in array.reshape(-1)]
    if all(isinstance(v, bool) for v in flat):
        return np.array(flat, dtype=bool).reshape(array.shape)
    if all(isinstance(v, int) for v in flat):
        return np.array(flat, dtype=np.int64).reshape(array.shape)
    out = np.empty(len(flat), dtype=object)
    out[:] = flat
    return out.reshape(array.shape)


def _elementwise(fn: Callable[..., Any], *arrays: np.ndarray) -> np.ndarray:
    """``fn`` applied per element (with broadcasting) as an object array, 0-d arrays included (numpy's
    ufuncs return those as bare scalars)."""
    out = np.empty(np.broadcast_shapes(*(a.shape for a in arrays)), dtype=object)
    out[...] = np.frompyfunc(fn, len(arrays), 1)(*arrays)
    return out


def evaluate(node: onnx.NodeProto, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray] | None:
    """See the module docstring; ``inputs`` are numpy arrays (object dtype where symbolic)."""
    results = _evaluate(node, inputs)
    return None if results is None else [_result(_objects(np.asarray(r, dtype=object))) for r in results]


def _evaluate(node: onnx.NodeProto, inputs: Sequence[np.ndarray | None]) -> list[Any] | None:
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    try:
        if op in _BINARY or op in _COMPARE:
            a, b = (_objects(x) for x in inputs[:2])
            fn = _arith(_BINARY[op]) if op in _BINARY else _compare(_COMPARE[op])
            return [_result(_elementwise(fn, a, b))]
        x = inputs[0]
        if op == "Identity":
            return [x]
        if op == "Neg":
            return [_result(_elementwise(lambda v: _arith("sub")(0, v), _objects(x)))]
        if op == "Cast":
            if attrs.get("to") not in _INT_TYPES:
                return None  # a size as a float is computed at run time
            return [x]
        if op == "Gather":
            axis = int(attrs.get("axis", 0))
            indices = np.asarray(inputs[1]).astype(np.int64)
            return [np.take(x, indices, axis=axis)]
        if op == "Unsqueeze":
            axes = attrs.get("axes") if inputs[1:2] == [] or len(inputs) < 2 or inputs[1] is None else inputs[1]
            axes = sorted(int(a) % (x.ndim + len(axes)) for a in np.asarray(axes).reshape(-1))
            out = x
            for a in axes:
                out = np.expand_dims(out, a)
            return [out]
        if op == "Squeeze":
            axes = attrs.get("axes") if len(inputs) < 2 or inputs[1] is None else inputs[1]
            return [np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(int(a) for a in np.asarray(axes).reshape(-1)))]
        if op == "Concat":
            parts = [p if is_symbolic(p) else _objects(p) for p in inputs if p is not None]
            return [_result(np.concatenate(parts, axis=int(attrs.get("axis", 0))))]
        if op == "Reshape":
            shape = [int(d) for d in np.asarray(inputs[1]).reshape(-1)]
            return [x.reshape([x.shape[k] if d == 0 else d for k, d in enumerate(shape)])]
        if op == "Slice" and x.ndim == 1 and all(not is_symbolic(np.asarray(v)) for v in inputs[1:] if v is not None):
            starts, ends = (int(np.asarray(v).reshape(-1)[0]) for v in inputs[1:3])
            steps = int(np.asarray(inputs[4]).reshape(-1)[0]) if len(inputs) > 4 and inputs[4] is not None else 1
            return [x[slice(starts, ends, steps)]]
        if op == "Where":
            cond = np.asarray(inputs[0])
            if cond.dtype != bool:
                return None
            a, b = (_objects(v) for v in inputs[1:3])
            return [_result(np.where(cond, a, b))]
        if op == "Abs":
            return [x] if not any(has_values(_int(v)) for v in _objects(x).reshape(-1)) else None  # sizes are >= 0
    except (Undecidable, ValueError, IndexError, TypeError):
        return None
    return None


SHAPE_OPS = frozenset({*_BINARY, *_COMPARE, "Identity", "Neg", "Cast", "Gather", "Unsqueeze", "Squeeze", "Concat",
                       "Reshape", "Slice", "Where", "Abs"})


# --- shape-setting values given at run time ----------------------------------------------------------

REDUCE_OPS = frozenset({"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                        "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"})

#: The operands that set a shape or name axes, by op: where a graph input feeds one directly, its elements
#: become *value sizes*, size variables the runtime reads from the input's data (``ValueSource``).
SHAPE_OPERANDS: dict[str, tuple[int, ...]] = {**{op: (1,) for op in REDUCE_OPS}, "CumSum": (1,), "CumProd": (1,),
                                              "Pad": (1, 3), "Slice": (1, 2, 3, 4), "OneHot": (1,), "Reshape": (1,),
                                              "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,),
                                              "Range": (0, 1, 2), "Split": (1,), "TopK": (1,)}

#: The shape operands that may be floats (OneHot's depth, truncated to an integer as onnxruntime does); a float
#: Range stays a computation over data.
FLOAT_SHAPE_OPERANDS = frozenset({("OneHot", 1)})

#: Most elements a shape-setting input may have to be read as value sizes (one per axis, or two for pads).
MAX_VALUE_ELEMENTS = 64


def value_sizes(name: str, shape: Sequence[int], taken: set[str]) -> tuple[np.ndarray, dict[str, ValueSource]]:
    """The size value of graph input ``name`` (of static ``shape``): one size variable per element, named
    ``name`` (a scalar) or ``name[k]``, and where the runtime reads each."""
    count = int(np.prod(shape, dtype=np.int64))
    sources: dict[str, ValueSource] = {}
    array = np.empty(count, dtype=object)
    for k in range(count):
        var = name if not shape else f"{name}[{k}]"
        while var in taken:
            var += "'"
        taken.add(var)
        sources[var] = ValueSource(name, k)
        array[k] = ValueVar(var)
    return array.reshape(tuple(shape)), sources


def _reduce_shape(data: list[Size], axes: list[Size], keepdims: bool) -> list[Size]:
    flags = named_axes(axes, len(data))
    if keepdims:
        return [choose(f, 1, d) for f, d in zip(flags, data)]
    return kept_dims(data, flags, len(axes))


# --- types of nodes whose shape operand is symbolic --------------------------------------------------


def _values(v: np.ndarray | None) -> list[Size] | None:
    if v is None:
        return None
    return [_int(x) for x in np.asarray(v).reshape(-1)]


def _reshape(data: list[Size], shape: list[Size], allowzero: bool) -> list[Size] | None:
    out = [data[k] if (d == 0 and not allowzero and k < len(data)) else d for k, d in enumerate(shape)]
    holes = [k for k, d in enumerate(out) if isinstance(d, int) and d == -1]
    if len(holes) > 1 or any(isinstance(d, int) and d < -1 for d in out):
        return None
    if holes:
        known = size_prod(d for k, d in enumerate(out) if k != holes[0])
        quotient = exact_quotient(size_prod(data), known)
        if quotient is None:
            return None
        out[holes[0]] = quotient
    return out if same_size(size_prod(out), size_prod(data)) else None


def _broadcast(a: list[Size], b: list[Size], unify: bool = False) -> list[Size] | None:
    """numpy's broadcast of two shapes; with ``unify``, two different symbolic dims are taken to be one
    (the first: the lowering records that they must be equal, which the run checks)."""
    rank = max(len(a), len(b))
    a, b = [1] * (rank - len(a)) + a, [1] * (rank - len(b)) + b
    out: list[Size] = []
    for x, y in zip(a, b):
        if x == 1 or same_size(x, y):
            out.append(y)
        elif y == 1:
            out.append(x)
        elif unify and not (isinstance(x, int) and isinstance(y, int)):
            out.append(y if isinstance(y, int) else x)
        else:
            return None
    return out


#: Ops whose output is the numpy broadcast of their inputs.
_BROADCASTING = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Mod", "Max", "Min", "Sum", "Mean", "Where", "And", "Or",
                           "Xor", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "PRelu", "BitShift"})


def _unified_broadcast(node: onnx.NodeProto, dims: SymbolicDims, types: Mapping[str, onnx.TypeProto],
                       values: Mapping[str, np.ndarray]) -> dict[str, onnx.TypeProto]:
    """The output type of a broadcasting node whose inputs carry differently named symbolic dims for one
    axis (``batch`` and ``batch_size``; tf2onnx's ``unk__655`` and ``unk__656``), which onnx leaves unknown."""
    out = node.output[0] if node.output else ""
    have = types.get(out)
    if not out or have is None or shape_of(have, dims) is not None or not have.HasField("tensor_type"):
        return {}
    shapes = []
    for name in node.input:
        if not name:
            continue
        shape = list(values[name].shape) if name in values and not is_symbolic(values[name]) else shape_of(
            types.get(name), dims)
        if shape is None:
            return {}
        shapes.append(shape)
    result = shapes[0]
    for shape in shapes[1:]:
        result = _broadcast(result, shape, unify=True)
        if result is None:
            return {}
    return {out: dims.tensor_type(have.tensor_type.elem_type, result)}


def _clamped(v: Size, dim: Size, negative_from_end: bool = True) -> Size:
    """A Slice bound ``v`` for an axis of ``dim`` elements, clamped to [0, dim] as the spec says (step > 0)."""
    if isinstance(v, int):
        if v < 0:
            v = size_add_int(dim, v) if negative_from_end else 0
            return normalize(binary("max", size_expr(v), Const(0))) if not isinstance(v, int) else max(v, 0)
        if isinstance(dim, int):
            return min(v, dim)
        return v if v == 0 else normalize(binary("min", Const(v), size_expr(dim)))
    return dim if same_size(v, dim) else normalize(binary("min", size_expr(v), size_expr(dim)))


def size_add_int(a: Size, k: int) -> Size:
    return a + k if isinstance(a, int) else normalize(binary("add", a, Const(k)))


def _slice(data: list[Size], starts: list[Size], ends: list[Size], axes: list[int] | None,
           steps: list[Size] | None) -> list[Size] | None:
    out = list(data)
    axes = list(range(len(starts))) if axes is None else [a % len(data) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st != 1:
            return None
        begin, end = _clamped(s, data[a]), _clamped(e, data[a])
        extent = normalize(binary("sub", size_expr(end), size_expr(begin)))
        out[a] = extent if not isinstance(extent, int) else max(extent, 0)
    return out


_WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})


def _windowed_shape(node: onnx.NodeProto, data: list[Size], types: Mapping[str, onnx.TypeProto],
                    dims: SymbolicDims, values: Mapping[str, np.ndarray]) -> list[Size] | None:
    """Conv / pool output dims over symbolic spatial dims (explicit pads or SAME padding)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    rank = len(data) - 2
    if node.op_type == "Conv":
        name = node.input[1] if len(node.input) > 1 else ""
        weight = list(values[name].shape) if name in values else shape_of(types.get(name), dims)
        if weight is None or len(weight) != rank + 2 or not all(isinstance(k, int) for k in weight[2:]):
            return None
        kernel, channels = list(weight[2:]), weight[0]
    else:
        kernel, channels = list(attrs.get("kernel_shape", [])), data[1]
    if len(kernel) != rank:
        return None
    strides = list(attrs.get("strides", [1] * rank))
    dilations = list(attrs.get("dilations", [1] * rank))
    pads = list(attrs.get("pads", [0] * (2 * rank)))
    auto_pad = attrs.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    out: list[Size] = [data[0], channels]
    for k in range(rank):
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(normalize(binary("div", size_expr(size_add_int(data[2 + k], strides[k] - 1)), Const(strides[k]))))
            continue
        if auto_pad not in ("NOTSET", "VALID"):
            return None
        padded = size_add_int(data[2 + k], 0 if auto_pad == "VALID" else pads[k] + pads[k + rank])
        span = size_add_int(padded, -dilations[k] * (kernel[k] - 1) - 1 + (strides[k] - 1 if ceil_mode else 0))
        out.append(size_add_int(normalize(binary("div", size_expr(span), Const(strides[k]))), 1))
    return out


def _concat_type(node: onnx.NodeProto, dims: SymbolicDims, types: Mapping[str, onnx.TypeProto],
                 values: Mapping[str, np.ndarray]) -> dict[str, onnx.TypeProto]:
    """A Concat of tensors whose lengths along the axis are symbolic (a KV cache: past + new): onnx leaves
    the sum unknown, though it is a size."""
    shapes: list[list[Size]] = []
    for name in node.input:
        shape = list(values[name].shape) if name in values else shape_of(types.get(name), dims)
        if shape is None:
            return {}
        shapes.append(shape)
    first = types.get(node.input[0]) if node.input and node.input[0] not in values else None
    if not shapes or not node.output or not node.output[0] or first is None or not first.tensor_type.elem_type:
        return {}
    axis = int(next((a.i for a in node.attribute if a.name == "axis"), 0)) % len(shapes[0])
    if all(isinstance(s[axis], int) for s in shapes):
        return {}  # onnx sums static lengths itself
    shape = list(shapes[0])
    shape[axis] = size_sum(s[axis] for s in shapes)
    return {node.output[0]: dims.tensor_type(first.tensor_type.elem_type, shape)}


def _reshapes_symbolic_data(node: onnx.NodeProto, dims: SymbolicDims, types: Mapping[str, onnx.TypeProto],
                            values: Mapping[str, np.ndarray]) -> bool:
    """A Reshape of data with a symbolic dim by a constant shape (skl2onnx's ``[-1, C]``): onnx leaves the
    -1 (or 0) unknown, though it is the symbolic size."""
    if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in values:
        return False
    data = shape_of(types.get(node.input[0]), dims)
    return data is not None and not all(isinstance(d, int) for d in data)


def output_types(node: onnx.NodeProto, dims: SymbolicDims, types: Mapping[str, onnx.TypeProto],
                 values: Mapping[str, np.ndarray]) -> dict[str, onnx.TypeProto]:
    """See the module docstring; ``values`` holds the symbolic (object-dtype) and constant arrays."""
    if node.domain not in ("", "ai.onnx"):
        return {}
    if node.op_type in _WINDOWED and node.input and node.output and node.output[0]:
        data_type = types.get(node.input[0])
        data = shape_of(data_type, dims)
        if data is None or len(data) < 3 or all(isinstance(d, int) for d in data[2:]):
            return {}
        shape = _windowed_shape(node, data, types, dims, values)
        return {} if shape is None else {o: dims.tensor_type(data_type.tensor_type.elem_type, shape)
                                         for o in node.output[:1]}
    if node.op_type == "Flatten" and node.input and node.output and node.output[0]:
        data_type = types.get(node.input[0])
        data = shape_of(data_type, dims)
        if data is None or all(isinstance(d, int) for d in data):
            return {}
        axis = next((int(a.i) for a in node.attribute if a.name == "axis"), 1)
        axis = axis + len(data) if axis < 0 else axis
        return {node.output[0]: dims.tensor_type(data_type.tensor_type.elem_type,
                                                 [size_prod(data[:axis]), size_prod(data[axis:])])}
    if node.op_type in _BROADCASTING and not any(n in values and is_symbolic(values[n]) for n in node.input):
        return _unified_broadcast(node, dims, types, values)
    if node.op_type == "Concat" and not any(n in values and is_symbolic(values[n]) for n in node.input):
        return _concat_type(node, dims, types, values)
    if not any(n in values and is_symbolic(values[n]) for n in node.input) and \
            not _reshapes_symbolic_data(node, dims, types, values):
        return {}
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def operand(k: int) -> list[Size] | None:
        return _values(values.get(node.input[k])) if k < len(node.input) and node.input[k] else None

    first = node.input[0] if node.input else ""
    if first in values and not is_symbolic(values[first]):  # a constant (an initializer) has no inferred type
        data: list[Size] | None = list(values[first].shape)
        elem = helper.np_dtype_to_tensor_dtype(values[first].dtype)
    else:
        data_type = types.get(first)
        data = shape_of(data_type, dims)
        elem = data_type.tensor_type.elem_type if data_type is not None and data_type.HasField("tensor_type") else 0
    op = node.op_type
    shape: list[Size] | None = None
    # Only symbolic operands can hold value sizes: a constant (a weight matrix) is not walked element by element.
    valued = any(has_values(v) for n in node.input if n in values and is_symbolic(values[n])
                 for v in values[n].reshape(-1))
    if op == "Reshape" and data is not None and operand(1) is not None:
        shape = (reshaped_dims if valued else _reshape)(data, operand(1), bool(attrs.get("allowzero", 0)))
    elif op == "Expand" and data is not None and operand(1) is not None:
        shape = expanded_dims(data, operand(1)) if valued else _broadcast(data, operand(1))
    elif op == "Tile" and data is not None and operand(1) is not None:
        shape = [size_mul(d, r) for d, r in zip(data, operand(1))]
    elif op == "ConstantOfShape" and operand(0) is not None:
        shape = operand(0)
        value = attrs.get("value")
        elem = value.data_type if value is not None else onnx.TensorProto.FLOAT
    elif op == "Range" and all(operand(k) is not None for k in range(3)):
        (start,), (limit,), (delta,) = operand(0), operand(1), operand(2)
        if valued:
            shape, elem = [range_length(start, limit, delta)], elem or onnx.TensorProto.INT64
        elif isinstance(delta, int) and delta > 0:
            span = size_add_int(size_sum([limit, size_mul(start, -1)]), delta - 1)
            length = normalize(binary("div", size_expr(span), Const(delta)))
            shape = [length if not isinstance(length, int) else max(length, 0)]
            elem = elem or onnx.TensorProto.INT64
    elif op == "OneHot" and data is not None and operand(1) is not None and len(node.input) > 2:
        axis = int(attrs.get("axis", -1)) % (len(data) + 1)
        shape = [*data[:axis], operand(1)[0], *data[axis:]]
        on_off = node.input[2]  # the result takes the type of OneHot's values
        elem = (helper.np_dtype_to_tensor_dtype(values[on_off].dtype) if on_off in values
                else types[on_off].tensor_type.elem_type if on_off in types else 0)
    elif op == "Pad" and data is not None and operand(1) is not None:
        before, after = pads_per_axis(operand(1), operand(3), len(data))
        shape = [size_sum([d, b, a]) for d, b, a in zip(data, before, after)]
    elif op in REDUCE_OPS and data is not None and operand(1) is not None:
        shape = _reduce_shape(data, operand(1), bool(attrs.get("keepdims", 1)))
    elif op == "Slice" and data is not None and operand(1) is not None and operand(2) is not None:
        axes = operand(3)
        if valued:
            shape = slice_geometry(data, operand(1), operand(2), axes, operand(4))[2]
        elif axes is None or all(isinstance(a, int) for a in axes):
            shape = _slice(data, operand(1), operand(2), axes, operand(4))
    elif op in ("Split", "TopK") and data is not None and operand(1) is not None and valued:
        axis = int(attrs.get("axis", 0 if op == "Split" else -1)) % len(data)
        parts = operand(1) if op == "Split" else operand(1) * 2  # TopK: values and indices, k long
        types_of = [elem] * len(parts) if op == "Split" else [elem, onnx.TensorProto.INT64]
        return {name: dims.tensor_type(t, [*data[:axis], part, *data[axis + 1:]])
                for name, part, t in zip(node.output, parts, types_of) if name and t}
    if shape is None or not elem or not node.output or not node.output[0]:
        return {}
    return {node.output[0]: dims.tensor_type(elem, shape)}


__all__ = ["FLOAT_SHAPE_OPERANDS", "MAX_VALUE_ELEMENTS", "REDUCE_OPS", "RESERVED_PREFIX", "SHAPE_OPERANDS", "SHAPE_OPS",
           "SymbolicDims", "Undecidable", "evaluate", "is_symbolic", "output_types", "shape_of", "sizes_array",
           "value_sizes"]
