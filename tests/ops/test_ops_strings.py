"""String tensors: inputs and outputs as numpy arrays of str, compared in native code as code points.

Each model is compiled once (the strings' length is a size variable) and run with strings of several
lengths, empty, non-ASCII and beyond the basic plane; the oracle is onnxruntime (labels and strings
exactly). Bad string inputs are ``InvalidInputError`` s, string operands of ops that do not take them an
``UnsupportedOpError`` naming the op.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from fuzz_support import bounded, fuzz_settings
from hypothesis import given
from hypothesis import strategies as st
from onnx import helper, numpy_helper

import runtime_stub
from compiler.errors import UnsupportedOpError
from helpers_onnx import compiled, ort_reference

T = onnx.TensorProto
WORDS = ["a", "bb", "héllo", "", "🐈 cat", "a ", "bbb", "中文"]


def _model(nodes, inputs, outputs, ml: int = 4, opset: int = 20) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "strings", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", ml)])
    model.ir_version = 10
    return model


def _check(model: onnx.ModelProto, feeds_list: list[dict[str, np.ndarray]], cache, **options) -> None:
    """One artifact for every feed; each result equal to onnxruntime's (dtype too)."""
    with runtime_stub.InferenceSession(compiled(model, cache, **options)) as session:
        for feeds in feeds_list:
            got, want = session.run(None, feeds), ort_reference(model, feeds)
            for g, w in zip(got, want):
                assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
                np.testing.assert_array_equal(g, w)


def _strings(*rows: list[str], dtype=object) -> np.ndarray:
    return np.array(rows[0] if len(rows) == 1 else list(rows), dtype=dtype)


def _encoder(**attrs) -> onnx.NodeProto:
    return helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", **attrs)


FEEDS_1D = [{"x": _strings(WORDS)}, {"x": _strings(["bb"])}, {"x": _strings(["a" * 40, "bb", "x"], dtype=str)},
            {"x": np.array([], dtype=object)}]


def test_label_encoder_strings_to_ints(compile_cache) -> None:
    model = _model([_encoder(keys_strings=["a", "bb", "héllo", "🐈 cat", ""], values_int64s=[1, 2, 3, 4, 5],
                             default_int64=-7)],
                   [helper.make_tensor_value_info("x", T.STRING, ["N"])], [helper.make_tensor_value_info("y", T.INT64, ["N"])])
    _check(model, FEEDS_1D, compile_cache, dim_bounds={"N": (0, None)})


def test_label_encoder_strings_to_strings_2d(compile_cache) -> None:
    """The default is the schema's '_Unused', longer than every value."""
    model = _model([_encoder(keys_strings=["a", "bb"], values_strings=["Z", "YY"])],
                   [helper.make_tensor_value_info("x", T.STRING, [2, "N"])],
                   [helper.make_tensor_value_info("y", T.STRING, [2, "N"])])
    _check(model, [{"x": _strings(["a", "bb", "c"], ["bb", "", "a"])}, {"x": _strings(["héllo"], ["a"])}],
           compile_cache)


def test_label_encoder_tensor_attributes_ints_to_strings(compile_cache) -> None:
    keys = numpy_helper.from_array(np.array([3, 1, 4], np.int64), "keys_tensor")
    values = helper.make_tensor("values_tensor", T.STRING, [3], [b"three", "\u00fcn".encode(), b"four"])
    default = helper.make_tensor("default_tensor", T.STRING, [1], [b""])
    model = _model([_encoder(keys_tensor=keys, values_tensor=values, default_tensor=default)],
                   [helper.make_tensor_value_info("x", T.INT64, ["N"])], [helper.make_tensor_value_info("y", T.STRING, ["N"])])
    _check(model, [{"x": np.array([1, 3, 4, 2, 1], np.int64)}, {"x": np.array([9], np.int64)}], compile_cache)


@pytest.mark.parametrize("direction", ["to_int", "to_string"])
def test_category_mapper(compile_cache, direction) -> None:
    cats = {"cats_strings": ["red", "green", "blü"], "cats_int64s": [10, 20, 30]}
    if direction == "to_int":
        node = helper.make_node("CategoryMapper", ["x"], ["y"], domain="ai.onnx.ml", default_int64=-5, **cats)
        io = (T.STRING, T.INT64)
        feeds = [{"x": _strings(["green", "blü", "blue", "", "red"])}, {"x": _strings(["red"])}]
    else:
        node = helper.make_node("CategoryMapper", ["x"], ["y"], domain="ai.onnx.ml", **cats)
        io = (T.INT64, T.STRING)
        feeds = [{"x": np.array([30, 10, 0, 20], np.int64)}]
    model = _model([node], [helper.make_tensor_value_info("x", io[0], ["N"])],
                   [helper.make_tensor_value_info("y", io[1], ["N"])], ml=1)
    _check(model, feeds, compile_cache)


def test_equal_and_concat_broadcast_over_strings_of_any_length(compile_cache) -> None:
    """Equal and StringConcat of a [N] and a [1] input: rows of different lengths, trailing spaces, empties."""
    model = _model([helper.make_node("Equal", ["x", "z"], ["same"]), helper.make_node("StringConcat", ["x", "z"], ["both"]),
                    helper.make_node("Identity", ["z"], ["z_again"])],
                   [helper.make_tensor_value_info("x", T.STRING, ["N"]), helper.make_tensor_value_info("z", T.STRING, [1])],
                   [helper.make_tensor_value_info("same", T.BOOL, ["N"]), helper.make_tensor_value_info("both", T.STRING, ["N"]),
                    helper.make_tensor_value_info("z_again", T.STRING, [1])])
    x = _strings(WORDS)
    _check(model, [{"x": x, "z": _strings(["bb"])}, {"x": x, "z": _strings([""])},
                   {"x": x, "z": _strings(["héllo, a longer one"])}], compile_cache)


def test_string_input_checks(compile_cache) -> None:
    from runtime_stub.errors import InvalidInputError

    model = _model([_encoder(keys_strings=["a"], values_int64s=[1])],
                   [helper.make_tensor_value_info("x", T.STRING, ["N"])], [helper.make_tensor_value_info("y", T.INT64, ["N"])])
    with runtime_stub.InferenceSession(compiled(model, compile_cache)) as session:
        assert session.get_inputs()[0].type == "tensor(string)" and session.get_inputs()[0].shape == ["N"]
        for bad in (np.array([1, 2]), np.array([b"a", b"b"]), np.array(["a", 3], dtype=object)):
            with pytest.raises(InvalidInputError, match="input 'x'"):
                session.run(None, {"x": bad})
        with pytest.raises(InvalidInputError, match="rank"):
            session.run(None, {"x": _strings(["a"], ["b"])})


def test_string_operand_of_an_op_that_takes_none_is_refused(tmp_path) -> None:
    model = _model([helper.make_node("Tile", ["x", "repeats"], ["y"])],
                   [helper.make_tensor_value_info("x", T.STRING, [2]), helper.make_tensor_value_info("repeats", T.INT64, [1])],
                   [helper.make_tensor_value_info("y", T.STRING, [4])])
    with pytest.raises(UnsupportedOpError, match=r"Tile.*string tensor"):
        compiled(model, tmp_path)


def test_data_movement_moves_whole_strings(compile_cache) -> None:
    """Gather, Slice, Concat along negative axes (counted in ONNX's rank, not the code points'), Transpose, and the
    reshapes (Reshape, Flatten, Squeeze, Unsqueeze) keep each string whole."""
    const = lambda name, values: numpy_helper.from_array(np.asarray(values, np.int64), name)  # noqa: E731
    nodes = [helper.make_node("Gather", ["x", "cols"], ["picked"], axis=-1),
             helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["sliced"]),
             helper.make_node("Concat", ["picked", "sliced"], ["joined"], axis=-1),
             helper.make_node("Transpose", ["joined"], ["flipped"], perm=[2, 0, 1]),
             helper.make_node("Flatten", ["flipped"], ["flat"], axis=1),
             helper.make_node("Unsqueeze", ["flat", "one"], ["tall"]),
             helper.make_node("Squeeze", ["tall", "one"], ["back"]),
             helper.make_node("Reshape", ["back", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "moves", [helper.make_tensor_value_info("x", T.STRING, [2, "N", 3])],
                              [helper.make_tensor_value_info("y", T.STRING, [-1]),
                               helper.make_tensor_value_info("flipped", T.STRING, [None, 2, None])],
                              [const("cols", [2, 0]), const("starts", [-1]), const("ends", [3]), const("axes", [-1]),
                               const("one", [1]), const("shape", [-1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    words = np.array(WORDS * 3, dtype=object)
    _check(model, [{"x": words[:12].reshape(2, 2, 3)}, {"x": words[5:23].reshape(2, 3, 3)}], compile_cache)


def test_string_inputs_on_cuda_are_refused_by_name(tmp_path) -> None:
    from compiler.errors import CompileError

    model = _model([_encoder(keys_strings=["a"], values_int64s=[1])],
                   [helper.make_tensor_value_info("x", T.STRING, [4])], [helper.make_tensor_value_info("y", T.INT64, [4])])
    with pytest.raises(CompileError, match="string input.*'x'.*CPU"):
        compiled(model, tmp_path, target="cuda")


# --- fuzzed: any Unicode, any lengths, one artifact --------------------------------------------------

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)  # numpy <U drops trailing NULs
_KEYS = ["a", "ab", "ü", "🐈", "", "a\u0301", "long key of twenty ch"]
_WORDS = st.one_of(st.sampled_from(_KEYS), st.sampled_from([k + "x" for k in _KEYS]), _TEXT)


@pytest.fixture(scope="module")
def fuzz_session(tmp_path_factory):
    """Two string inputs (their widths differ per run): LabelEncoder of the first, Equal, StringConcat."""
    nodes = [helper.make_node("LabelEncoder", ["x"], ["codes"], domain="ai.onnx.ml", keys_strings=_KEYS,
                              values_int64s=list(range(len(_KEYS)))),
             helper.make_node("Equal", ["x", "z"], ["same"]),
             helper.make_node("StringConcat", ["x", "z"], ["both"])]
    graph = helper.make_graph(nodes, "fuzz", [helper.make_tensor_value_info("x", T.STRING, ["N"]),
                                              helper.make_tensor_value_info("z", T.STRING, ["N"])],
                              [helper.make_tensor_value_info("codes", T.INT64, ["N"]),
                               helper.make_tensor_value_info("same", T.BOOL, ["N"]),
                               helper.make_tensor_value_info("both", T.STRING, ["N"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("ai.onnx.ml", 4)])
    with runtime_stub.InferenceSession(compiled(model, tmp_path_factory.mktemp("fuzz"))) as session:
        yield session


@fuzz_settings(300)
@given(rows=st.lists(st.tuples(_WORDS, _WORDS), min_size=1, max_size=9), as_object=st.booleans())
@bounded(60)
def test_fuzz_strings_against_python(fuzz_session, rows, as_object, *, stats) -> None:
    """Python's own ``==``, ``+`` and dict lookup are the oracle, for every row."""
    dtype = object if as_object else str
    x, z = (np.array([row[k] for row in rows], dtype=dtype) for k in (0, 1))
    codes, same, both = fuzz_session.run(None, {"x": x, "z": z})
    assert codes.tolist() == [_KEYS.index(a) if a in _KEYS else -1 for a, _ in rows]
    assert same.tolist() == [a == b for a, b in rows]
    assert both.tolist() == [a + b for a, b in rows]
    stats.count("ran")
