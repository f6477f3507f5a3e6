"""If under a condition known only at run time: the native code runs the taken branch alone.

A condition over sizes (a bool graph input, a comparison of symbolic dims) guards each branch's kernels
(compiler/frontend/control_flow.py, the driver's guards); the If's outputs take select(cond, then, else)
dims, so the branches may give different shapes. Each case compiles once and runs both ways from the one
artifact against onnxruntime. Tolerance: rtol=1e-5, atol=1e-6 for a few elementwise ops; the decoder
(matmuls and a softmax) 1e-4 relative, as the task states for attention blocks.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import compiler
import runtime_stub
from helpers_onnx import compiled, rand


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _bool(name, shape=(1,)):
    return helper.make_tensor_value_info(name, TensorProto.BOOL, list(shape))


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _ort(model, feeds):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _compare(session, model, feeds, rtol=1e-5, atol=1e-6):
    got, want = session.run(None, feeds), _ort(model, feeds)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return got


def _concat_or_relu(cond="c"):
    """y = Concat(x, x) where the condition holds (6 x 4), else Relu(x) (3 x 4); then -y."""
    then_branch = helper.make_graph([helper.make_node("Concat", ["x", "x"], ["t"], axis=0)], "then", [],
                                    [_f32("t", [None, 4])])
    else_branch = helper.make_graph([helper.make_node("Relu", ["x"], ["e"])], "else", [], [_f32("e", [None, 4])])
    return [helper.make_node("If", [cond], ["y"], name="if", then_branch=then_branch, else_branch=else_branch),
            helper.make_node("Neg", ["y"], ["z"], name="neg")]


def test_bool_input_picks_branches_of_different_shapes(tmp_path):
    model = _model(_concat_or_relu(), [_f32("x", [3, 4]), _bool("c")], [_f32("z", [None, 4])])
    x = rand((3, 4))
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        assert _compare(session, model, {"x": x, "c": np.array([True])})[0].shape == (6, 4)
        assert _compare(session, model, {"x": x, "c": np.array([False])})[0].shape == (3, 4)


def test_branch_returning_an_outer_value_is_copied_into_the_output(tmp_path):
    """The then-branch returns x itself (its buffer is not the If's to write): a guarded copy of x's 3 x 4
    fills the output, the else-branch's Concat (6 x 4) writes it directly."""
    then_branch = helper.make_graph([helper.make_node("Identity", ["x"], ["same"])], "then", [],
                                    [_f32("same", [None, 4])])
    else_branch = helper.make_graph([helper.make_node("Concat", ["x", "x"], ["twice"], axis=0)], "else", [],
                                    [_f32("twice", [None, 4])])
    model = _model([helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)],
                   [_f32("x", [3, 4]), _bool("c")], [_f32("y", [None, 4])])
    x = rand((3, 4))
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        assert _compare(session, model, {"x": x, "c": np.array([True])})[0].shape == (3, 4)
        assert _compare(session, model, {"x": x, "c": np.array([False])})[0].shape == (6, 4)
        assert [k["ops"] for k in session.manifest["kernels"]] == ["Concat", "Copy"]


def test_branches_of_constants_are_computed_from_the_condition(tmp_path):
    """Both branches return constants: the output still depends on the condition input (manifest
    ``computed_from``), whose value picks the constant per run."""
    ones, twos = (helper.make_tensor(n, TensorProto.FLOAT, [2], [v, v]) for n, v in (("ones", 1.0), ("twos", 2.0)))
    then_branch = helper.make_graph([helper.make_node("Identity", ["ones"], ["a"])], "then", [], [_f32("a", [2])])
    else_branch = helper.make_graph([helper.make_node("Identity", ["twos"], ["b"])], "else", [], [_f32("b", [2])])
    model = _model([helper.make_node("If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch)],
                   [_bool("c")], [_f32("y", [2])], [ones, twos])
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        assert session.manifest["outputs"][0]["computed_from"] == ["c"]
        for c in (True, False):
            _compare(session, model, {"c": np.array([c])})


_GUARDED_KERNELS = """\
kernel k_if_Concat_7 "Concat" (if_then_y_4: float32[6, 4], x_0: float32[3, 4]) when (c != 0) {
  for i0 in 0..3 {
    vectorized for i1 in 0..4 {
      if_then_y_4[i0, i1] = x_0[i0, i1]
    }
  }
  for i2 in 0..3 {
    vectorized for i3 in 0..4 {
      if_then_y_4[(i2 + 3), i3] = x_0[i2, i3]
    }
  }
}

kernel k_if_Relu_9 "Relu" (if_else_y_5: float32[3, 4], x_0: float32[3, 4]) when (c == 0) {
  for i0 in 0..3 {
    vectorized for i1 in 0..4 {
      if_else_y_5[i0, i1] = max(x_0[i0, i1], 0.0)
    }
  }
}

kernel k_neg_11 "Neg" (z_2: float32[select((c != 0), 6, 3), 4], y_3: float32[select((c != 0), 6, 3), 4]) {
  parallel for i0 in 0..select((c != 0), 6, 3) if select((c != 0), 6, 3) * 4 >= 32768 {
    vectorized for i1 in 0..4 {
      z_2[i0, i1] = neg(y_3[i0, i1])
    }
  }
}
"""


def test_dumped_ir_shows_the_guards(tmp_path):
    """--dump-ir: each branch's kernel carries the predicate or its negation; the branches write the If's
    output buffer themselves (no copy: only one runs), whose dims the kernel after the If reads as selects."""
    model = _model(_concat_or_relu(), [_f32("x", [3, 4]), _bool("c", ())], [_f32("z", [None, 4])])
    compiler.compile(model, tmp_path / "m.tilec", dump_ir=tmp_path / "ir")
    assert "\n".join(p.read_text() for p in sorted((tmp_path / "ir").glob("*.loop.txt"))) == _GUARDED_KERNELS
    assert (tmp_path / "ir" / "graph.txt").read_text() == """\
graph g(%x:float32[3x4], %c:bool[]):
  %if/then_y:float32[6x4] = Concat(%x, %x) when (c != 0)
  %if/else_y:float32[3x4] = Relu(%x) when (c == 0)
  %y:float32[select((c != 0), 6, 3)x4] = Phi(%if/then_y, %if/else_y)
  %z:float32[select((c != 0), 6, 3)x4] = Neg(%y)
  return %z
"""


def test_only_the_taken_branch_runs(tmp_path):
    """The then-branch gathers rows by a run-time index, whose range check fails the run where it runs:
    with a bad index it raises exactly when the then-branch is taken, and the else-branch's result comes
    back untouched when it is not (under the old both-branches select it had no check at all)."""
    x = rand([5, 4])
    then_branch = helper.make_graph([helper.make_node("Gather", ["x", "i"], ["picked"], axis=0)], "then", [],
                                    [_f32("picked", [2, 4])])
    starts, ends = (helper.make_tensor(n, TensorProto.INT64, [1], [v]) for n, v in (("starts", 0), ("ends", 2)))
    else_branch = helper.make_graph([helper.make_node("Slice", ["x", "starts", "ends"], ["head"])], "else", [],
                                    [_f32("head", [2, 4])])
    model = _model([helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch)],
                   [_f32("x", [5, 4]), helper.make_tensor_value_info("i", TensorProto.INT64, [2]), _bool("c", ())],
                   [_f32("y", [2, 4])], [starts, ends])
    bad = np.array([0, 99], np.int64)
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        (taken,) = session.run(None, {"x": x, "i": np.array([0, 3], np.int64), "c": np.array(True)})
        np.testing.assert_array_equal(taken, x[[0, 3]])
        with pytest.raises(runtime_stub.InvalidInputError, match=r"Gather .*an index in i is out of range"):
            session.run(None, {"x": x, "i": bad, "c": np.array(True)})
        (untaken,) = session.run(None, {"x": x, "i": bad, "c": np.array(False)})
        np.testing.assert_array_equal(untaken, x[:2])


def test_profile_counts_nothing_for_the_untaken_branch(tmp_path):
    """With profiling on, a kernel of a branch never taken is never called: its time counter stays 0."""
    model = _model(_concat_or_relu(), [_f32("x", [3, 4]), _bool("c", ())], [_f32("z", [None, 4])])
    with runtime_stub.InferenceSession(compiler.compile(model, tmp_path / "m.tilec", profile=True)) as session:
        for _ in range(3):
            _compare(session, model, {"x": rand((3, 4)), "c": np.array(False)})
        times = {k.ops: k.seconds for k in session.kernel_profile()}
    assert set(times) == {"Concat", "Relu", "Neg"} and times["Concat"] == 0.0


def test_condition_from_shape_arithmetic_over_a_symbolic_dim(tmp_path):
    """``Equal(Shape(past)[2], 0)``, as exporters test for an empty cache: a size predicate over ``past``'s
    length, so one artifact serves an empty past (else-branch: the new values) and a filled one (Concat)."""
    index = helper.make_tensor("two", TensorProto.INT64, [], [2])
    zero = helper.make_tensor("zero", TensorProto.INT64, [], [0])
    then_branch = helper.make_graph([helper.make_node("Relu", ["new"], ["fresh"])], "then", [],
                                    [_f32("fresh", [1, 2, None, 4])])
    else_branch = helper.make_graph([helper.make_node("Concat", ["past", "new"], ["joined"], axis=2)], "else", [],
                                    [_f32("joined", [1, 2, None, 4])])
    nodes = [helper.make_node("Shape", ["past"], ["shape"]), helper.make_node("Gather", ["shape", "two"], ["length"]),
             helper.make_node("Equal", ["length", "zero"], ["empty"]),
             helper.make_node("If", ["empty"], ["present"], name="if", then_branch=then_branch,
                              else_branch=else_branch)]
    model = _model(nodes, [_f32("past", [1, 2, "past_len", 4]), _f32("new", [1, 2, 3, 4])],
                   [_f32("present", [1, 2, None, 4])], [index, zero])
    path = compiled(model, tmp_path, dim_bounds={"past_len": (0, 16)})
    new = rand((1, 2, 3, 4), seed=1)
    with runtime_stub.InferenceSession(path) as session:
        (fresh,) = _compare(session, model, {"past": np.zeros((1, 2, 0, 4), np.float32), "new": new})
        assert fresh.shape == (1, 2, 3, 4)
        (joined,) = _compare(session, model, {"past": rand((1, 2, 5, 4)), "new": new})
        assert joined.shape == (1, 2, 8, 4)


def test_size_constraints_of_the_untaken_branch_are_not_checked(tmp_path):
    """The else-branch adds a and b, so there len(a) must equal len(b); the then-branch concatenates them,
    where any lengths do. The run checks the constraint only where the else-branch runs."""
    then_branch = helper.make_graph([helper.make_node("Concat", ["a", "b"], ["joined"], axis=0)], "then", [],
                                    [_f32("joined", [None])])
    else_branch = helper.make_graph([helper.make_node("Add", ["a", "b"], ["summed"])], "else", [],
                                    [_f32("summed", [None])])
    model = _model([helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch)],
                   [_f32("a", ["n"]), _f32("b", ["m"]), _bool("c")], [_f32("y", [None])])
    a, b = rand((3,)), rand((5,), seed=1)
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        assert _compare(session, model, {"a": a, "b": b, "c": np.array([True])})[0].shape == (8,)
        _compare(session, model, {"a": a, "b": b[:3], "c": np.array([False])})
        with pytest.raises(runtime_stub.InvalidInputError, match=r"Add"):
            session.run(None, {"a": a, "b": b, "c": np.array([False])})


def test_data_condition_inside_a_branch_of_a_size_condition(tmp_path):
    """An If on ReduceSum(x) > 0 computed inside the then-branch of an If on a bool input: the inner guards
    are the conjunction of the outer predicate and the condition's byte."""
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    inner_then = helper.make_graph([helper.make_node("Exp", ["t"], ["p"])], "inner_then", [], [_f32("p", [2, 3])])
    inner_else = helper.make_graph([helper.make_node("Abs", ["t"], ["q"])], "inner_else", [], [_f32("q", [2, 3])])
    outer_then = helper.make_graph(
        [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("ReduceSum", ["t"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "zero"], ["positive"]),
         helper.make_node("If", ["positive"], ["r"], then_branch=inner_then, else_branch=inner_else)],
        "outer_then", [], [_f32("r", [2, 3])])
    outer_else = helper.make_graph([helper.make_node("Neg", ["x"], ["n"])], "outer_else", [], [_f32("n", [2, 3])])
    model = _model([helper.make_node("If", ["c"], ["y"], then_branch=outer_then, else_branch=outer_else)],
                   [_f32("x", [2, 3]), _bool("c")], [_f32("y", [2, 3])], [zero])
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        for x in (rand((2, 3), low=0.1, high=1.0), rand((2, 3), low=-1.0, high=-0.1)):
            for c in (True, False):
                _compare(session, model, {"x": x, "c": np.array([c])})


def test_nested_ifs_reading_outer_scope_values(tmp_path):
    """An If inside a branch, on another input: guards compose; branches read x and w from the outer scope."""
    inner_then = helper.make_graph([helper.make_node("Concat", ["x", "w"], ["a"], axis=1)], "inner_then", [],
                                   [_f32("a", [2, None])])
    inner_else = helper.make_graph([helper.make_node("Mul", ["x", "x"], ["b"])], "inner_else", [],
                                   [_f32("b", [2, None])])
    outer_then = helper.make_graph([helper.make_node("If", ["d"], ["inner"], then_branch=inner_then,
                                                     else_branch=inner_else),
                                    helper.make_node("Sigmoid", ["inner"], ["s"])], "outer_then", [],
                                   [_f32("s", [2, None])])
    outer_else = helper.make_graph([helper.make_node("Sub", ["x", "w"], ["diff"])], "outer_else", [],
                                   [_f32("diff", [2, None])])
    model = _model([helper.make_node("If", ["c"], ["y"], name="outer", then_branch=outer_then,
                                     else_branch=outer_else)],
                   [_f32("x", [2, 3]), _f32("w", [2, 3]), _bool("c"), _bool("d", ())], [_f32("y", [2, None])])
    x, w = rand((2, 3)), rand((2, 3), seed=1)
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        shapes = {(c, d): _compare(session, model, {"x": x, "w": w, "c": np.array([c]), "d": np.array(d)})[0].shape
                  for c in (True, False) for d in (True, False)}
    assert shapes == {(True, True): (2, 6), (True, False): (2, 3), (False, True): (2, 3), (False, False): (2, 3)}


# --- an optimum-style merged decoder in miniature --------------------------------------------------------------

D, HEADS, HEAD, VOCAB = 8, 2, 4, 11


def _merged_decoder() -> onnx.ModelProto:
    """One attention layer as optimum's ``decoder_model_merged.onnx`` has it: ``use_cache_branch`` picks a
    with-past graph (K/V concatenated after ``past_key``/``past_value``) or a without-past graph; both give
    ``logits`` (batch x seq x vocab) and ``present.0.key``/``.value`` (past+seq vs seq long)."""
    rng = np.random.default_rng(7)
    weights = {name: (rng.standard_normal(shape) * 0.3).astype(np.float32)
               for name, shape in (("wq", (D, D)), ("wk", (D, D)), ("wv", (D, D)), ("wo", (D, D)), ("lm", (D, VOCAB)))}
    inits = [onnx.numpy_helper.from_array(v, k) for k, v in weights.items()]
    inits += [helper.make_tensor("heads_shape", TensorProto.INT64, [4], [1, -1, HEADS, HEAD]),
              helper.make_tensor("merged_shape", TensorProto.INT64, [3], [1, -1, D]),
              helper.make_tensor("scale", TensorProto.FLOAT, [], [HEAD ** -0.5])]

    def heads(name: str, weight: str) -> list[onnx.NodeProto]:  # x @ w as batch x heads x seq x head
        return [helper.make_node("MatMul", ["x", weight], [f"{name}_flat"]),
                helper.make_node("Reshape", [f"{name}_flat", "heads_shape"], [f"{name}_split"]),
                helper.make_node("Transpose", [f"{name}_split"], [name], perm=[0, 2, 1, 3])]

    def branch(tag: str, key: str, value: str, prep: list[onnx.NodeProto]) -> onnx.GraphProto:
        nodes = prep + [
            helper.make_node("Transpose", [key], [f"{tag}_kt"], perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", ["q", f"{tag}_kt"], [f"{tag}_raw"]),
            helper.make_node("Mul", [f"{tag}_raw", "scale"], [f"{tag}_scores"]),
            helper.make_node("Softmax", [f"{tag}_scores"], [f"{tag}_probs"], axis=-1),
            helper.make_node("MatMul", [f"{tag}_probs", value], [f"{tag}_ctx"]),
            helper.make_node("Transpose", [f"{tag}_ctx"], [f"{tag}_ctx_t"], perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"{tag}_ctx_t", "merged_shape"], [f"{tag}_merged"]),
            helper.make_node("MatMul", [f"{tag}_merged", "wo"], [f"{tag}_attn"]),
            helper.make_node("Add", [f"{tag}_attn", "x"], [f"{tag}_hidden"]),
            helper.make_node("MatMul", [f"{tag}_hidden", "lm"], [f"{tag}_logits"]),
            helper.make_node("Identity", [key], [f"{tag}_present_key"]),
            helper.make_node("Identity", [value], [f"{tag}_present_value"])]
        outs = [_f32(f"{tag}_logits", [1, None, VOCAB]), _f32(f"{tag}_present_key", [1, HEADS, None, HEAD]),
                _f32(f"{tag}_present_value", [1, HEADS, None, HEAD])]
        return helper.make_graph(nodes, tag, [], outs)

    with_past = branch("with_past", "cat_k", "cat_v", [
        helper.make_node("Concat", ["past_key_values.0.key", "k"], ["cat_k"], axis=2),
        helper.make_node("Concat", ["past_key_values.0.value", "v"], ["cat_v"], axis=2)])
    without_past = branch("without_past", "k", "v", [])
    nodes = heads("q", "wq") + heads("k", "wk") + heads("v", "wv") + [
        helper.make_node("If", ["use_cache_branch"], ["logits", "present.0.key", "present.0.value"],
                         name="optimum::if", then_branch=with_past, else_branch=without_past)]
    inputs = [_f32("x", [1, "sequence_length", D]),
              _f32("past_key_values.0.key", [1, HEADS, "past_sequence_length", HEAD]),
              _f32("past_key_values.0.value", [1, HEADS, "past_sequence_length", HEAD]), _bool("use_cache_branch")]
    outputs = [_f32("logits", [1, "sequence_length", VOCAB]),
               _f32("present.0.key", [1, HEADS, "total", HEAD]), _f32("present.0.value", [1, HEADS, "total", HEAD])]
    return _model(nodes, inputs, outputs, inits)


def test_cache_concat_along_symbolic_lengths(tmp_path):
    """Concat(past, new) along an axis both give symbolic lengths: the result is past_len + new_len long
    (onnx's inference leaves it unknown), an empty past included."""
    model = _model([helper.make_node("Concat", ["past", "new"], ["present"], axis=2)],
                   [_f32("past", [1, 2, "past_len", 4]), _f32("new", [1, 2, "new_len", 4])],
                   [_f32("present", [1, 2, None, 4])])
    with runtime_stub.InferenceSession(compiled(model, tmp_path, dim_bounds={"past_len": (0, 32)})) as session:
        assert session.get_outputs()[0].shape == [1, 2, "new_len + past_len", 4]
        for past, new in ((0, 3), (5, 1), (2, 7)):
            _compare(session, model, {"past": rand((1, 2, past, 4)), "new": rand((1, 2, new, 4), seed=1)})


@pytest.mark.parametrize("dummy_past", [0, 1], ids=["empty_past", "dummy_past"])
def test_merged_decoder_prefill_then_decode_steps(tmp_path, dummy_past):
    """Prefill (use_cache_branch=False, a past of length 0 or a dummy one) then three decode steps (True),
    each feeding the previous present, all from one artifact, against onnxruntime at 1e-4 relative."""
    model = _merged_decoder()
    path = compiled(model, tmp_path, dim_bounds={"past_sequence_length": (0, 64), "sequence_length": (1, 64)})
    empty = np.zeros((1, HEADS, dummy_past, HEAD), np.float32)
    feeds = {"x": rand((1, 5, D)), "past_key_values.0.key": empty, "past_key_values.0.value": empty,
             "use_cache_branch": np.array([False])}
    with runtime_stub.InferenceSession(path) as session:
        logits, key, value = _compare(session, model, feeds, rtol=1e-4, atol=1e-5)
        assert logits.shape == (1, 5, VOCAB) and key.shape == (1, HEADS, 5, HEAD)
        for step in range(3):
            feeds = {"x": rand((1, 1, D), seed=10 + step), "past_key_values.0.key": key,
                     "past_key_values.0.value": value, "use_cache_branch": np.array([True])}
            logits, key, value = _compare(session, model, feeds, rtol=1e-4, atol=1e-5)
            assert logits.shape == (1, 1, VOCAB) and key.shape == (1, HEADS, 6 + step, HEAD)


# --- conditions computed from tensor data --------------------------------------------------------------------


def _data_condition_model(then_shape=(2, 4)):
    """y = Gather(x, i) (then) or Relu(x[:2]) (else), picked by ReduceSum(x) > 0, computed in the run."""
    then_branch = helper.make_graph([helper.make_node("Gather", ["x", "i"], ["picked"], axis=0)], "then", [],
                                    [_f32("picked", list(then_shape))])
    else_branch = helper.make_graph([helper.make_node("Relu", ["head"], ["e"])], "else", [], [_f32("e", [2, 4])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
             helper.make_node("Greater", ["s", "zero"], ["c"], name="positive"),
             helper.make_node("Slice", ["x", "starts", "ends"], ["head"], name="head"),
             helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch),
             helper.make_node("Neg", ["y"], ["z"], name="neg")]
    inits = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
             helper.make_tensor("starts", TensorProto.INT64, [1], [0]), helper.make_tensor("ends", TensorProto.INT64, [1], [2])]
    return _model(nodes, [_f32("x", [3, 4]), helper.make_tensor_value_info("i", TensorProto.INT64, [then_shape[0]])],
                  [_f32("z", [None, 4])], inits)


def test_data_condition_runs_only_the_taken_branch(tmp_path):
    """A kernel computes the condition into the workspace and the run branches on that byte: the then-branch's
    index check fails the run only where its sum is positive; the else-branch result is right either way."""
    model = _data_condition_model()
    positive, negative = rand((3, 4), low=0.1, high=1.0), rand((3, 4), seed=1, low=-1.0, high=-0.1)
    bad = np.array([0, 99], np.int64)
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        _compare(session, model, {"x": positive, "i": np.array([2, 0], np.int64)})
        _compare(session, model, {"x": negative, "i": np.array([2, 0], np.int64)})
        _compare(session, model, {"x": negative, "i": bad})  # the Gather does not run
        with pytest.raises(runtime_stub.InvalidInputError, match=r"Gather .*an index in i is out of range"):
            session.run(None, {"x": positive, "i": bad})


def test_data_condition_with_branches_of_different_shapes_is_refused(tmp_path):
    with pytest.raises(compiler.errors.UnsupportedOpError,
                       match=r"If 'if' \(opset 17\): the condition 'c' is computed from tensor data and the branches "
                             r"give output 0 \('y'\) different types \(float32\[3x4\] vs float32\[2x4\]\); output "
                             r"shapes must be known before the run"):
        compiler.compile(_data_condition_model((3, 4)), tmp_path / "m.tilec")
