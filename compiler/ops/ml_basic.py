"""ai.onnx.ml element maps: Binarizer, ArrayFeatureExtractor, LabelEncoder and CategoryMapper (numbers and
strings), OneHotEncoder (integer categories), FeatureVectorizer.

* ``Binarizer``: 1 where ``x > threshold``, else 0 (NaN gives 0), in x's type.
* ``ArrayFeatureExtractor``: the last axis of X gathered at the (run-time)
  indices Y, flattened; a 1-D X gives a ``[1, n]`` result (as onnxruntime and
  the reference do); negative indices count from the end.
* ``LabelEncoder`` (opsets 2 and 4): each element replaced by the value of the
  matching key, else the default. Keys and values come from ``keys_floats`` /
  ``keys_int64s`` / ``keys_strings`` / ``keys_tensor`` and ``values_floats`` /
  ``values_int64s`` / ``values_strings`` / ``values_tensor``; a repeated key takes
  the last value (onnx's reference; onnxruntime takes the first). From opset 4 a
  NaN key matches every NaN input; in opset 2 it matches nothing (the spec
  speaks of bitwise matching, but onnxruntime and the reference compare with
  ``==``, and tilec follows them). Defaults follow the schema: -0.0 for
  floats, -1 for integers, '_Unused' for strings, or ``default_*``. Opset 1
  (``classes_strings``) is not supported.
* ``CategoryMapper``: ``cats_strings[k]`` <-> ``cats_int64s[k]``, strings to
  integers or back as the input's type says (defaults -1 and '_Unused').

The lookup is one reduction over the (deduplicated) keys giving the matching
key's position (string keys compared as code points, ``ops/text.py``), then a
gather of the values table (string values: their code points); both tables are
compile-time constants.

* ``OneHotEncoder``: a new last axis, 1.0 where the element equals the
  category (``cats_int64s``, float inputs truncated to integers first as
  onnxruntime does; or ``cats_strings`` for a string input). With ``zeros=0`` a
  value outside the categories fails the run (``InvalidInputError``), else it
  gives a row of zeros.
* ``FeatureVectorizer``: the inputs' columns side by side as float, input
  ``k`` giving ``inputdimensions[k]`` columns (cut, or zero-padded where it has
  fewer); a 1-D input is one row.
"""

from __future__ import annotations

import math

import numpy as np

from compiler.dtypes import DType, decoded_strings, string_codes
from compiler.loopir.expr import Const, Expr, call, cast, compare, const, logical_and, max_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.indexing import wrap_index
from compiler.ops.registry import OpDef, defop
from compiler.ops.shape import _unravel
from compiler.ops.text import mismatches, strings_at

_ML = "ai.onnx.ml"
UNUSED = "_Unused"  # the schemas' default string value


def binarizer(ctx: LoweringContext) -> list[Tensor]:
    x = ctx.input(0)
    threshold = const(float(ctx.attr("threshold", 0.0)), x.dtype)
    one, zero = const(1, x.dtype), const(0, x.dtype)
    return [ctx.compute(x.shape, lambda i: select(compare("gt", x[i], threshold), one, zero), dtype=x.dtype,
                        name="binarizer")]


def array_feature_extractor(ctx: LoweringContext) -> list[Tensor]:
    x, indices = ctx.input(0), ctx.input(1)
    out = ctx.output_type(0)
    count = math.prod(indices.shape)
    if out.shape[-1] != count:
        ctx.unsupported(f"the output's last dimension {out.shape[-1]} is not the number of indices {count}")

    def read(i: Index) -> Expr:
        k = wrap_index(indices[_unravel(i[-1], indices.shape)], x.shape[-1])
        return x[(*i[:-1], k) if x.rank > 1 else (k,)]

    return [ctx.compute(out.shape, read, dtype=x.dtype, name="feature_extractor")]


def label_encoder(ctx: LoweringContext) -> list[Tensor]:
    keys, values, default = _label_tables(ctx)
    return [_encode(ctx, keys, values, default)]


def category_mapper(ctx: LoweringContext) -> list[Tensor]:
    """CategoryMapper: cats_strings[k] <-> cats_int64s[k], either way, as the input's type says."""
    names = np.asarray(ctx.attr("cats_strings", []), dtype=str).reshape(-1)
    ints = np.asarray(ctx.attr("cats_int64s", []), dtype=np.int64).reshape(-1)
    if names.size != ints.size:
        ctx.invalid(f"{names.size} cats_strings but {ints.size} cats_int64s")
    if ctx.input_value(0).dtype is DType.STRING:
        return [_encode(ctx, names, ints, np.array(ctx.attr("default_int64", -1), np.int64))]
    return [_encode(ctx, ints, names, np.array(ctx.attr("default_string", UNUSED), dtype=str))]


def _encode(ctx: LoweringContext, keys: np.ndarray, values: np.ndarray, default: np.ndarray) -> Tensor:
    """Each element of input 0 replaced by the value of its key (the last one listed), else ``default``.
    Keys and values are numbers or strings (numpy ``<U`` arrays); strings in and out are code points."""
    x = ctx.input(0)
    text_in, text_out = keys.dtype.kind == "U", values.dtype.kind == "U"
    if text_in != (ctx.input_value(0).dtype is DType.STRING) or (
            not text_in and DType.from_numpy(keys.dtype) is not x.dtype):
        ctx.unsupported(f"the keys are {keys.dtype}, the input {ctx.input_value(0).dtype.value}; they must match")
    shape = x.shape[:-1] if text_in else x.shape
    nan_keys = np.flatnonzero(np.isnan(keys)) if keys.dtype.kind == "f" and ctx.opset >= 4 else []
    # Last occurrence wins: keep each key's last position (one for all NaN keys, which match any NaN).
    last = {k: j for j, k in enumerate(keys.tolist()) if not (isinstance(k, float) and math.isnan(k))}
    order = sorted(last.values())
    found = _positions(ctx, x, shape, keys[order]) if order else None
    if text_out:
        return _string_values(ctx, shape, found, np.concatenate([values[order], default.reshape(1)]))
    targets = ctx.add_constant(values[order], "label_values")
    out_type = DType.from_numpy(values.dtype)
    default_value = const(default.item(), out_type)
    nan_value = const(values[nan_keys[-1]].item(), out_type) if len(nan_keys) else None

    def lookup(i: Index) -> Expr:
        value: Expr = default_value
        if found is not None:
            value = select(compare("ge", found[i], 0), targets[max_(found[i], 0)], value)
        if nan_value is not None:
            value = select(call("isnan", x[i], dtype=DType.BOOL), nan_value, value)
        return value

    return ctx.compute(shape, lookup, dtype=out_type, name="label_encoder")


def _positions(ctx: LoweringContext, x: Tensor, shape: tuple, keys: np.ndarray) -> Tensor:
    """``[shape]`` int64: the position in ``keys`` of each element of ``x`` (-1 where none matches)."""
    if keys.dtype.kind != "U":
        table = ctx.add_constant(keys, "label_keys")
        return ctx.reduce(shape, [len(keys)], lambda i, r: select(compare("eq", x[i], table[r[0]]), r[0], Const(-1)),
                          "max", name="label_position", materialize=True)
    table = ctx.add_constant(string_codes(keys), "label_keys")
    differ = mismatches(ctx, (*shape, len(keys)), x, lambda i: i[:-1], table, lambda i: (i[-1],),
                        name="label_key_mismatch")
    return ctx.reduce(shape, [len(keys)],
                      lambda i, r: select(compare("eq", differ[(*i, r[0])], const(0, DType.U8)), r[0], Const(-1)),
                      "max", name="label_position", materialize=True)


def _string_values(ctx: LoweringContext, shape: tuple, found: Tensor | None, values: np.ndarray) -> Tensor:
    """The strings ``values[found]`` (``values[-1]``, the default, where ``found`` is -1)."""
    fallback = Const(len(values) - 1)

    def row(i: Index) -> Expr:
        return fallback if found is None else select(compare("ge", found[i], 0), found[i], fallback)

    return strings_at(ctx, values, shape, row, "label_encoder_strings")


def _label_tables(ctx: LoweringContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keys, values (1-D arrays, strings as ``<U``) and the default (a 0-d array of the values' type)."""
    if ctx.opset < 2:
        ctx.unsupported("opset 1's classes_strings table is not supported; convert with ai.onnx.ml opset 2 or later "
                        "(keys_* / values_* attributes)")
    keys = _table(ctx, {"keys_floats": np.float32, "keys_int64s": np.int64, "keys_strings": str,
                        "keys_tensor": None}, "keys")
    values = _table(ctx, {"values_floats": np.float32, "values_int64s": np.int64, "values_strings": str,
                          "values_tensor": None}, "values")
    if keys.dtype.kind not in "fiuU" or values.dtype.kind not in "fiuU":
        ctx.unsupported(f"keys of type {keys.dtype} and values of type {values.dtype} are not supported")
    if keys.shape != values.shape:
        ctx.unsupported(f"{keys.size} keys but {values.size} values")
    fallback = UNUSED if values.dtype.kind == "U" else (-0.0 if values.dtype.kind == "f" else -1)
    if ctx.attr("values_tensor") is not None:
        given = ctx.attr("default_tensor")
        default = _texts(np.asarray(given)).reshape(-1)[0] if given is not None else np.array(fallback)
    else:
        name = {"U": "default_string", "f": "default_float"}.get(values.dtype.kind, "default_int64")
        default = np.array(ctx.attr(name, fallback))
    # A string default keeps its own length (casting to the values' <U width would cut it).
    return keys, values, np.asarray(default, dtype=str) if values.dtype.kind == "U" else \
        np.asarray(default).astype(values.dtype)


def _table(ctx: LoweringContext, attrs: dict[str, type | None], what: str) -> np.ndarray:
    given = [(name, dtype) for name, dtype in attrs.items() if ctx.attr(name) is not None]
    if len(given) != 1:
        ctx.unsupported(f"exactly one {what}_* attribute must be set (got {', '.join(n for n, _ in given) or 'none'})")
    name, dtype = given[0]
    array = _texts(np.asarray(ctx.attr(name)))
    return (array if dtype is None else array.astype(dtype)).reshape(-1)


def _texts(array: np.ndarray) -> np.ndarray:
    """A string tensor attribute (ONNX's UTF-8 bytes, as objects) as ``<U``; any other array as it is."""
    return decoded_strings(array) if array.dtype.kind in "OS" else array


def one_hot_encoder(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    names, ints = ctx.attr("cats_strings"), ctx.attr("cats_int64s")
    if (names is None) == (ints is None) or len(names if ints is None else ints) == 0:
        ctx.unsupported("exactly one of cats_int64s and cats_strings is required, and not empty")
    text = names is not None
    if text != (ctx.input_value(0).dtype is DType.STRING):
        ctx.unsupported(f"{'string' if text else 'integer'} categories for a {ctx.input_value(0).dtype.value} input")
    shape = x.shape[:-1] if text else x.shape
    count = len(names) if text else len(ints)
    if tuple(out.shape) != (*shape, count):
        ctx.unsupported(f"the output shape {list(out.shape)} is not the input's plus {count} categories")
    if text:
        differ = mismatches(ctx, (*shape, count), x, lambda i: i[:-1],
                            ctx.add_constant(string_codes(names), "one_hot_categories"), lambda i: (i[-1],),
                            name="one_hot_mismatch")

        def matches(i: Index) -> Expr:
            return compare("eq", differ[i], const(0, DType.U8))
    else:
        table = ctx.add_constant(np.asarray(ints, np.int64), "one_hot_categories")

        def matches(i: Index) -> Expr:  # a float category is truncated (onnxruntime's static_cast)
            return compare("eq", cast(x[i[:-1]], DType.I64), table[i[-1]])

    if not int(ctx.attr("zeros", 1)):
        hits = ctx.reduce(shape, [count], lambda i, r: select(matches((*i, r[0])), const(1, DType.U8),
                                                              const(0, DType.U8)),
                          "max", name="one_hot_known", materialize=True)
        ctx.check(shape, lambda i: compare("eq", hits[i], 0),
                  "an input value is not one of the categories, and zeros=0 forbids that")
    one, zero = const(1.0, out.dtype), const(0.0, out.dtype)
    return [ctx.compute(out.shape, lambda i: select(matches(i), one, zero), dtype=out.dtype, name="one_hot_encoder")]


def feature_vectorizer(ctx: LoweringContext) -> list[Tensor]:
    out = ctx.output_type(0)
    widths = [int(w) for w in ctx.attr("inputdimensions", [])]
    inputs = [ctx.input(k) for k in range(len(ctx.inputs))]
    if len(widths) != len(inputs):
        ctx.unsupported(f"{len(widths)} inputdimensions for {len(inputs)} inputs")
    if any(t.rank not in (1, 2) for t in inputs):
        ctx.unsupported("every input must be 1-D (one row) or 2-D [N, C]")
    offsets = np.concatenate([[0], np.cumsum(widths)]).tolist()
    if out.shape[-1] != offsets[-1]:
        ctx.unsupported(f"the output has {out.shape[-1]} columns, the inputdimensions add up to {offsets[-1]}")

    def column(i: Index) -> Expr:
        value: Expr = const(0.0, out.dtype)
        for k in reversed(range(len(inputs))):
            t = inputs[k]
            have = t.shape[-1]
            if not isinstance(have, int):
                ctx.unsupported(f"input {k}'s columns must have a static size")
            own = i[1] - offsets[k]
            inside = logical_and(compare("ge", i[1], offsets[k]), compare("lt", i[1], offsets[k] + min(widths[k], have)))
            safe = select(inside, own, Const(0))
            read = cast(t[(i[0], safe) if t.rank == 2 else (safe,)], out.dtype)
            value = select(inside, read, value) if min(widths[k], have) else value
        return value

    return [ctx.compute(out.shape, column, dtype=out.dtype, name="feature_vectorizer")]


OPS: list[OpDef] = [
    defop("Binarizer", binarizer, kind="elementwise", domain=_ML),
    defop("ArrayFeatureExtractor", array_feature_extractor, domain=_ML),
    defop("LabelEncoder", label_encoder, domain=_ML, since=2),
    defop("CategoryMapper", category_mapper, domain=_ML),
    defop("OneHotEncoder", one_hot_encoder, domain=_ML),
    defop("FeatureVectorizer", feature_vectorizer, domain=_ML),
]
