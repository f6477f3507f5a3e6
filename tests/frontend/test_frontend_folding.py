"""Stage 1b: compile-time constant folding, Shape/Size folding, If inlining."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from compiler.errors import ShapeError, UnsupportedOpError
from compiler.frontend import load_graph
from compiler.frontend.folding import graph_to_model
from compiler.loopir.printer import format_expr


def _model(nodes, inputs, outputs, inits=(), opset=17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _torch_flatten_model(batch) -> onnx.ModelProto:
    """x.view(x.size(0), -1) as torch exports it."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="unsqueeze"),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], name="concat", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape"),
    ]
    inits = [_const("zero", np.array(0, np.int64)), _const("axes0", np.array([0], np.int64)),
             _const("minus1", np.array([-1], np.int64))]
    return _model(nodes, [_f32("x", [batch, 3, 4, 5])], [_f32("y", [batch, None])], inits)


@pytest.mark.parametrize("batch,bind", [(2, None), ("N", {"x": (2, 3, 4, 5)})])
def test_shape_subgraph_folds_to_constant_reshape(batch, bind):
    graph = load_graph(_torch_flatten_model(batch), input_shapes=bind)
    assert [n.op_type for n in graph.nodes] == ["Reshape"]
    reshape = graph.nodes[0]
    assert reshape.inputs[0] is graph.inputs[0]
    assert reshape.inputs[1].is_const and reshape.inputs[1].const.tolist() == [2, -1]
    assert graph.outputs[0].name == "y" and graph.outputs[0].shape == (2, 60)


def test_folding_iterates_with_shape_inference():
    # The second Shape only becomes static after the first Reshape's shape is folded.
    model = _torch_flatten_model("N")
    model.graph.node.extend([
        helper.make_node("Shape", ["y"], ["s2"], name="shape2"),
        helper.make_node("Reshape", ["y", "s2"], ["z"], name="reshape2"),
    ])
    model.graph.output.append(_f32("z", [None, None]))
    graph = load_graph(model, input_shapes={"x": (2, 3, 4, 5)})
    assert [n.op_type for n in graph.nodes] == ["Reshape", "Reshape"]
    assert graph.nodes[1].inputs[1].const.tolist() == [2, 60]


def test_shape_start_end_and_size():
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape", start=1, end=-1),
             helper.make_node("Size", ["x"], ["n"], name="size")]
    graph = load_graph(_model(nodes, [_f32("x", [2, 3, 4, 5])],
                              [helper.make_tensor_value_info("s", TensorProto.INT64, [None]),
                               helper.make_tensor_value_info("n", TensorProto.INT64, [])]))
    assert graph.nodes == []
    assert graph.outputs[0].const.tolist() == [3, 4] and graph.outputs[0].name == "s"
    assert int(graph.outputs[1].const) == 120 and graph.outputs[1].name == "n"


def test_constant_of_shape_weights_become_constants():
    nodes = [
        helper.make_node("ConstantOfShape", ["wshape"], ["w"], name="cos",
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Constant", [], ["b"], name="const", value_floats=[1.0, 2.0]),
        helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="gemm"),
    ]
    graph = load_graph(_model(nodes, [_f32("x", [4, 3])], [_f32("y", [4, 2])],
                              [_const("wshape", np.array([3, 2], np.int64))]))
    assert [n.op_type for n in graph.nodes] == ["Gemm"]
    _, w, b = graph.nodes[0].inputs
    assert w.is_const and w.const.dtype == np.float32 and w.shape == (3, 2) and np.all(w.const == 0.5)
    assert b.const.tolist() == [1.0, 2.0]


def _if_model(cond: bool) -> onnx.ModelProto:
    then_branch = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["t_out"], name="add")], "then", [], [_f32("t_out", [2])],
        [_const("one", np.ones(2, np.float32))])
    # The else branch forwards an outer value and also names a value like the outer graph does.
    else_branch = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["e_tmp"], name="neg"),
         helper.make_node("Mul", ["e_tmp", "x"], ["e_out"], name="mul")], "else", [], [_f32("e_out", [2])])
    nodes = [
        helper.make_node("Constant", [], ["c"], name="cond",
                         value=numpy_helper.from_array(np.array(cond))),
        helper.make_node("If", ["c"], ["y"], name="if", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Relu", ["y"], ["z"], name="relu"),
    ]
    return _model(nodes, [_f32("x", [2])], [_f32("z", [2])])


@pytest.mark.parametrize("cond,ops", [(True, ["Add", "Relu"]), (False, ["Neg", "Mul", "Relu"])])
def test_if_with_constant_condition_is_inlined(cond, ops):
    model = _if_model(cond)
    graph = load_graph(model)
    assert [n.op_type for n in graph.nodes] == ops
    assert graph.nodes[-2].outputs[0].name == "y"  # the branch output took the If's output name
    assert graph.outputs[0].name == "z" and graph.outputs[0].shape == (2,)
    assert len({n.name for n in graph.nodes}) == len(graph.nodes)
    # The inlined graph computes what the If did.
    x = np.array([-1.5, 2.0], np.float32)
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    values = {"x": x}
    for node in graph.nodes:
        ins = {f"i{k}": (values[v.name] if not v.is_const else v.const) for k, v in enumerate(node.inputs)}
        single = _model([helper.make_node(node.op_type, list(ins), ["o"])],
                        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                         for k, a in ins.items()], [_f32("o", None)])
        values[node.outputs[0].name] = ReferenceEvaluator(single).run(None, ins)[0]
    np.testing.assert_allclose(values["z"], expected)


def test_if_on_a_bool_input_becomes_guarded_branches_and_a_phi():
    """A graph input condition is a value size: each branch's nodes are guarded by the predicate or its
    negation, the output a Phi of the two (run only the taken branch: tests/ops/test_ops_runtime_if.py)."""
    model = _if_model(True)
    del model.graph.node[0]  # the condition now comes from a graph input
    model.graph.input.append(helper.make_tensor_value_info("c", TensorProto.BOOL, []))
    graph = load_graph(model)
    guards = {n.op_type: None if n.guard is None else format_expr(n.guard) for n in graph.nodes}
    assert guards == {"Add": "(c != 0)", "Neg": "(c == 0)", "Mul": "(c == 0)", "Phi": None, "Relu": None}
    phi = next(n for n in graph.nodes if n.op_type == "Phi")
    assert format_expr(phi.attrs["predicate"]) == "(c != 0)" and phi.outputs[0].shape == (2,)
    assert graph.sizes["c"].source.input == "c"  # read from the input's data per run


def _data_if_model() -> onnx.ModelProto:
    model = _if_model(True)
    model.graph.node[0].CopyFrom(helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"))
    model.graph.node.insert(1, helper.make_node("Greater", ["s", "zero"], ["c"], name="cond"))
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    return model


def test_if_on_a_data_condition_guards_its_branches_by_the_condition_byte():
    graph = load_graph(_data_if_model())
    guards = {n.op_type: None if n.guard is None else format_expr(n.guard) for n in graph.nodes}
    assert guards == {"ReduceSum": None, "Greater": None, "Add": "(c != 0)", "Neg": "(c == 0)", "Mul": "(c == 0)",
                      "Phi": None, "Relu": None}
    assert list(graph.conditions) == ["c"] and graph.conditions["c"].producer.op_type == "Greater"
    assert "c" not in graph.sizes  # not a size: read by the run function once computed


@pytest.mark.parametrize("cond", [True, False])
def test_if_on_a_data_condition_becomes_a_select_where_values_do_not_steer_the_run(cond):
    """Without ``read_values`` (CUDA's fixed launch sequence) both branches run and a Where selects."""
    model = _data_if_model()
    graph = load_graph(model, read_values=False)
    assert sorted(n.op_type for n in graph.nodes) == ["Add", "Greater", "Mul", "Neg", "ReduceSum", "Relu", "Where"]
    feeds = {"x": np.array([-1.5, 2.0], np.float32) * (1 if cond else -1)}
    expected = ReferenceEvaluator(model).run(None, feeds)[0]
    np.testing.assert_allclose(ReferenceEvaluator(graph_to_model(graph)).run(None, feeds)[0], expected)


def test_if_with_data_condition_and_different_branch_shapes_is_refused():
    model = _if_model(True)
    model.graph.node[0].CopyFrom(helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"))
    model.graph.node.insert(1, helper.make_node("Greater", ["s", "zero"], ["c"], name="cond"))
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    then_branch = model.graph.node[2].attribute[0].g if model.graph.node[2].attribute[0].name == "then_branch" \
        else model.graph.node[2].attribute[1].g
    then_branch.node.append(helper.make_node("ReduceSum", ["t_out"], ["t_sum"], name="tsum", keepdims=1))
    then_branch.output[0].CopyFrom(_f32("t_sum", [1]))
    with pytest.raises(UnsupportedOpError, match=r"If 'if' \(opset 17\): the condition 'c' is computed from tensor "
                                                 r"data and the branches give output 0 \('y'\) different types"):
        load_graph(model, is_supported=lambda op, domain: op != "If")


def test_random_ops_are_not_folded():
    nodes = [helper.make_node("RandomNormal", [], ["r"], name="rand", shape=[2], dtype=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "r"], ["y"], name="add")]
    graph = load_graph(_model(nodes, [_f32("x", [2])], [_f32("y", [2])]))
    assert [n.op_type for n in graph.nodes] == ["RandomNormal", "Add"]


def test_data_dependent_shape_is_a_shape_error_naming_the_value():
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="nonzero")]
    with pytest.raises(ShapeError, match=r"'nz'.*NonZero 'nonzero' \(opset 17\)"):
        load_graph(_model(nodes, [_f32("x", [4])], [helper.make_tensor_value_info("nz", TensorProto.INT64, [1, None])]))


def test_non_zero_of_constant_is_folded():
    nodes = [helper.make_node("NonZero", ["c"], ["nz"], name="nonzero"),
             helper.make_node("Cast", ["nz"], ["nzf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Add", ["x", "nzf"], ["y"], name="add")]
    graph = load_graph(_model(nodes, [_f32("x", [1, 2])], [_f32("y", [None, None])],
                              [_const("c", np.array([0, 3, 0, 1], np.float32))]))
    assert [n.op_type for n in graph.nodes] == ["Add"]
    assert graph.nodes[0].inputs[1].const.tolist() == [[1.0, 3.0]]


def _fill_add_model(shape) -> onnx.ModelProto:
    """x + ConstantOfShape(shape) + Expand(c, Shape(x)): two fills the size of the input x."""
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["fill"], name="cos",
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Shape", ["x"], ["xs"], name="shape"),
        helper.make_node("Expand", ["c", "xs"], ["wide"], name="expand"),
        helper.make_node("Add", ["x", "fill"], ["s"], name="add"),
        helper.make_node("Add", ["s", "wide"], ["y"], name="add2"),
    ]
    inits = [_const("shape", np.array(shape, np.int64)), _const("c", np.arange(shape[-1], dtype=np.float32))]
    return _model(nodes, [_f32("x", list(shape))], [_f32("y", list(shape))], inits)


def test_fold_that_would_outgrow_its_inputs_past_the_limit_stays_a_runtime_op(monkeypatch):
    from compiler.graph.passes import run_passes
    from helpers_onnx import check_model, rand

    model = _fill_add_model([4, 8, 16])
    assert [n.op_type for n in run_passes(load_graph(model)).nodes] == ["Add", "Add"]
    monkeypatch.setattr("compiler.frontend.folding.FOLD_LIMIT_BYTES", 1024)  # the fills take 2 KiB
    graph = run_passes(load_graph(model))
    assert sorted(n.op_type for n in graph.nodes) == ["Add", "Add", "ConstantOfShape", "Expand"]
    check_model(model, {"x": rand((4, 8, 16))})


def test_fold_that_keeps_the_element_count_folds_past_the_limit(monkeypatch):
    monkeypatch.setattr("compiler.frontend.folding.FOLD_LIMIT_BYTES", 16)
    w = np.arange(24, dtype=np.float32).reshape(4, 6)
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], name="t"),
             helper.make_node("Cast", ["wt"], ["w64"], name="cast", to=TensorProto.DOUBLE),
             helper.make_node("Cast", ["w64"], ["w32"], name="cast2", to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "w32"], ["y"], name="mm")]
    graph = load_graph(_model(nodes, [_f32("x", [2, 6])], [_f32("y", [2, 4])], [_const("w", w)]))
    assert [n.op_type for n in graph.nodes] == ["MatMul"]
    assert np.array_equal(graph.nodes[0].inputs[1].const, w.T)


def test_an_input_compared_with_data_is_no_value_size():
    """``Equal(k, ReduceMax(ids))``: a data condition; the one-element input k stays a tensor, not a size."""
    model = _data_if_model()
    model.graph.node[1].CopyFrom(helper.make_node("Equal", ["k", "top"], ["c"], name="cond"))
    model.graph.node.insert(1, helper.make_node("ReduceMax", ["ids"], ["top"], keepdims=0, name="top"))
    model.graph.input.extend([helper.make_tensor_value_info("k", TensorProto.INT64, []),
                              helper.make_tensor_value_info("ids", TensorProto.INT64, [3])])
    graph = load_graph(model)
    assert graph.sizes == {} and list(graph.conditions) == ["c"]
