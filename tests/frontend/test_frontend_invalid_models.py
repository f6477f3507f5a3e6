"""Invalid models are refused with one error naming the problem; odd but valid ones compile correctly.

Each case is a mutant that tests/frontend/test_fuzz_models.py found (issue 17) and what it did
before the fix: an exception from deep inside (KeyError, ValueError from numpy or onnx, IndexError,
ZeroDivisionError, "variable is not bound" from the LLVM emitter), a misleading error, or a
silent compile of a model whose nodes cannot have the shapes the declared types claimed.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from compiler.errors import ModelLoadError, ShapeError, UnsupportedOpError
from compiler.frontend import load_graph, load_model
from runtime_stub import InferenceSession

_vi = helper.make_tensor_value_info


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "m", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _add_relu() -> onnx.ModelProto:
    """y = relu(x + c): the seed most mutants below start from."""
    return _model([helper.make_node("Add", ["x", "c"], ["t"], name="add"), helper.make_node("Relu", ["t"], ["y"], name="relu")],
                  [_vi("x", TensorProto.FLOAT, [2, 3])], [_vi("y", TensorProto.FLOAT, [2, 3])],
                  [numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3) - 2, "c")])


def _one_node(op: str, shape_in, shape_out, inputs=("x",), initializers=(), **attrs) -> onnx.ModelProto:
    return _model([helper.make_node(op, list(inputs), ["y"], name=op.lower(), **attrs)],
                  [_vi("x", TensorProto.FLOAT, shape_in)], [_vi("y", TensorProto.FLOAT, shape_out)], initializers)


def _conv(**attrs) -> onnx.ModelProto:
    attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], **attrs}
    weights = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
    return _one_node("Conv", [1, 1, 4, 4], [1, 1, 4, 4], ("x", "w"), [weights], **attrs)


def _edited(edit) -> onnx.ModelProto:
    model = _add_relu()
    edit(model)
    return model


# --- tensor data (was: ValueError from numpy's reshape or KeyError from onnx's type table, in folding) ----------


def _set_dims(tensor: TensorProto, dims: list[int]) -> None:
    del tensor.dims[:]
    tensor.dims.extend(dims)


@pytest.mark.parametrize("edit, message", [
    (lambda m: setattr(m.graph.initializer[0], "raw_data", b"\0" * 100),
     r"initializer 'c' \(graph 'm'\): raw_data holds 100 bytes, but shape \[2, 3\] of FLOAT takes 24"),
    (lambda m: _set_dims(m.graph.initializer[0], []), r"raw_data holds 24 bytes, but shape \[\] of FLOAT takes 4"),
    (lambda m: setattr(m.graph.initializer[0], "data_type", 999), r"initializer 'c'.*data_type 999 is not an ONNX element type"),
    (lambda m: (m.graph.initializer[0].ClearField("raw_data"), m.graph.initializer[0].float_data.extend([1.0] * 7)),
     r"float_data holds 7 values, but shape \[2, 3\] of FLOAT takes 6"),
    (lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", 999),
     r"graph input 'x' has elem_type 999, which is not an ONNX element type"),
])
def test_tensor_data_that_does_not_fit_its_type(edit, message):
    with pytest.raises(ModelLoadError, match=message):
        load_graph(_edited(edit))


def test_constant_node_tensor_attribute_is_checked_too():
    value = numpy_helper.from_array(np.ones(3, np.float32), "v")
    value.raw_data += b"\0\0"
    model = _model([helper.make_node("Constant", [], ["k"], name="k", value=value),
                    helper.make_node("Add", ["x", "k"], ["y"], name="add")],
                   [_vi("x", TensorProto.FLOAT, [3])], [_vi("y", TensorProto.FLOAT, [3])])
    with pytest.raises(ModelLoadError, match=r"attribute 'value' of Constant 'k' \(graph 'm'\): raw_data holds 14 bytes, "
                                             r"but shape \[3\] of FLOAT takes 12"):
        load_graph(model)


@pytest.mark.parametrize("data_type", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                                       TensorProto.INT4, TensorProto.UINT4, TensorProto.INT2, TensorProto.FLOAT4E2M1,
                                       TensorProto.FLOAT8E4M3FN, TensorProto.BOOL, TensorProto.INT64,
                                       TensorProto.UINT64, TensorProto.COMPLEX64, TensorProto.DOUBLE])
@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("shape", [[], [0], [5], [3, 3]])
def test_valid_tensors_of_every_type_pass_the_data_check(data_type, raw, shape):
    """No false alarms: what onnx's own helper writes, packed types and odd element counts included."""
    from compiler.frontend.loader import tensor_data_problem

    numel = int(np.prod(shape))
    if data_type == TensorProto.COMPLEX64:
        values = (np.arange(numel) + 1j).astype(np.complex64).reshape(shape)
    elif data_type in (TensorProto.INT4, TensorProto.INT2):
        values = (np.arange(numel) % 2 - 1).reshape(shape)
    else:
        values = (np.arange(numel) % 2).reshape(shape)
    tensor = helper.make_tensor("t", data_type, shape, values.reshape(-1).tolist() if not raw else values, raw=False)
    if raw:
        tensor = numpy_helper.from_array(numpy_helper.to_array(tensor), "t")
    assert tensor_data_problem(tensor) is None
    numpy_helper.to_array(tensor)  # and onnx reads it


# --- nodes onnx's model-wide inference skipped silently (was: compiled to the declared shapes) ----------------


@pytest.mark.parametrize("model, message", [
    (_conv(pads=[-1, -1, -1, -1]), r"Conv 'conv' \(opset 17\): .*pads must not contain negative values"),
    (_one_node("Concat", [2, 3], [4, 3], ("x", "x"), axis=5), r"Concat 'concat' \(opset 17\): .*axis must be in"),
    (_one_node("Softmax", [2, 3], [2, 3], axis=5), r"Softmax 'softmax' \(opset 17\): .*'axis' must be in"),
    (_one_node("Transpose", [2, 3], [3, 2], perm=[0, 0]), r"Transpose 'transpose' .*perm for Transpose has repeated"),
    (_one_node("Reshape", [2, 3], [3, 2], ("x", "s"), [numpy_helper.from_array(np.array([-1, -1]), "s")]),
     r"Reshape 'reshape' .*multiple -1"),
    (_edited(lambda m: m.graph.input[0].type.tensor_type.shape.dim[0].__setattr__("dim_value", 0)),
     r"Add 'add' \(opset 17\): .*Incompatible dimensions"),
    # was: "cannot lower this node (TypeError: ... computed float32, declared int64)"
    (_edited(lambda m: setattr(m.graph.output[0].type.tensor_type, "elem_type", TensorProto.INT64)),
     r"Relu 'relu' \(opset 17\) computes 'y' as FLOAT, but the model declares it INT64"),
    # was: compiled, the declared map ignored
    (_edited(lambda m: m.graph.output[0].type.CopyFrom(
        helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [2])))),
     r"graph output 'y' is declared a map, but the graph computes a tensor of FLOAT"),
    # was: DataDependentError "the type of value 'y' could not be inferred"
    (_one_node("Concat", [2, 3], [2, 3], ("x", ""), axis=0), r"Concat 'concat' .*input 1 \('inputs'\) is required, "
                                                               r"but its name is empty"),
])
def test_nodes_onnx_inference_rejects(model, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(model)


@pytest.mark.parametrize("model, message", [
    # was: ToolchainError "generated LLVM IR is invalid (a compiler bug): llvm.exp.v4i64"
    (_model([helper.make_node("Softmax", ["x"], ["y"], name="softmax")], [_vi("x", TensorProto.INT64, [2, 3])],
            [_vi("y", TensorProto.INT64, [2, 3])]),
     r"Softmax 'softmax' \(opset 17\): input 'x' \('input'\) is a tensor of INT64, but the op takes float tensors"),
    # was: "cannot lower this node (TypeError: add: operand types differ (float8_e4m3fn vs float32))"
    (_edited(lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", TensorProto.FLOAT8E4M3FN)),
     r"Add 'add' \(opset 17\): inputs 'x' \(a tensor of FLOAT8E4M3FN\) and 'c' \(a tensor of FLOAT\) must have one "
     r"type \(both are its type parameter T\)"),
])
def test_input_types_the_schema_cannot_take(model, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(model)


def test_other_precisions_of_an_allowed_kind_stay_the_lowerings_call(tmp_path):
    """uint8 Gather indices: the schema lists int32 and int64 only (onnxruntime refuses), tilec gathers."""
    table = np.arange(12, dtype=np.float32).reshape(4, 3)
    model = _model([helper.make_node("Gather", ["t", "i"], ["y"], name="gather")], [_vi("i", TensorProto.UINT8, [2])],
                   [_vi("y", TensorProto.FLOAT, [2, 3])], [numpy_helper.from_array(table, "t")])
    with InferenceSession(compiler.compile(model, tmp_path / "m.tilec"), threads=1) as session:
        (y,) = session.run(None, {"i": np.array([3, 1], np.uint8)})
    np.testing.assert_array_equal(y, table[[3, 1]])


# --- graph structure (was: the checker's "must be topologically sorted", whatever the cause) ---------------------


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.graph.node[0].input.__setitem__(1, "t"), r"Add 'add' reads its own output"),
    (lambda m: m.graph.node[0].input.__setitem__(1, "y"),
     r"the nodes Relu 'relu' -> Add 'add' -> Relu 'relu' form a cycle"),
    (lambda m: m.graph.node[0].input.__setitem__(1, "nothing"),
     r"Add 'add' reads 'nothing', which no node, graph input or initializer defines"),
])
def test_cycles_and_dangling_names_are_named(edit, message):
    with pytest.raises(ModelLoadError, match=message):
        load_graph(_edited(edit))


def test_an_opset_newer_than_onnx_knows_is_refused():
    # The checker takes any opset above its newest (each op's latest schema standing in); onnxruntime refuses it.
    model = _edited(lambda m: setattr(m.opset_import[0], "version", 10000))
    with pytest.raises(ModelLoadError, match=r"imports opset 10000 of domain 'ai.onnx', newer than the newest"):
        load_graph(model)


@pytest.mark.parametrize("passed_through", ["x", "c"])
def test_a_graph_output_that_is_an_input_or_initializer(tmp_path, passed_through):
    """Was: DataDependentError for the other values, whose types the shapeless output entry erased."""
    model = _add_relu()
    model.graph.output.append(_vi(passed_through, TensorProto.FLOAT, [2, 3]))
    x = np.linspace(-3, 3, 6, dtype=np.float32).reshape(2, 3)
    c = numpy_helper.to_array(model.graph.initializer[0])
    with InferenceSession(compiler.compile(model, tmp_path / "m.tilec"), threads=1) as session:
        y, passed = session.run(None, {"x": x})
    np.testing.assert_array_equal(y, np.maximum(x + c, 0))
    np.testing.assert_array_equal(passed, x if passed_through == "x" else c)


# --- shapes (was: ValueError "variable i22 is not bound" from the LLVM emitter, or an artifact too big to run) -----


def _big_kernel_conv() -> onnx.ModelProto:
    weights = numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")
    return _one_node("Conv", [1, 1, 4, 4], [1, 1, 4, 4], ("x", "w"), [weights], kernel_shape=[3, 3],
                     dilations=[2**40, 2**40])


@pytest.mark.parametrize("model, message", [
    (_big_kernel_conv(), r"value 'y' \(output 0 of Conv 'conv' \(opset 17\)\) has shape \[1, 1, -\d+, -\d+\] with "
                         r"negative dimension\(s\) 2, 3"),
    (_one_node("MaxPool", [1, 1, 4, 4], [1, 1, 2, 2], kernel_shape=[2**40, 2**40]),
     r"output 0 of MaxPool 'maxpool'.*negative dimension"),
    (_conv(pads=[10**9] * 4), r"output 0 of Conv 'conv'.*16000000032000000016 bytes, more than any process can address"),
    (_one_node("Relu", [2**40, 2**20], [2**40, 2**20]), r"graph input 'x' has shape \[1099511627776, 1048576\] of "
                                                         r"float32: \d+ bytes, more than any process"),
])
def test_impossible_shapes(model, message):
    with pytest.raises(ShapeError, match=message):
        load_graph(model)


def test_a_sequence_input_is_named_as_such():
    """Was: "graph input 'x' has no declared shape; bind it with input_shapes=...", which no binding fixes."""
    model = _add_relu()
    model.graph.input[0].type.CopyFrom(helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [2, 3])))
    with pytest.raises(UnsupportedOpError, match=r"graph input 'x' is a sequence; tilec compiles models whose inputs are tensors"):
        load_graph(model)


def test_an_input_without_element_type_is_named():
    model = _add_relu()
    model.graph.input[0].type.tensor_type.elem_type = 0
    with pytest.raises(ShapeError, match=r"graph input 'x' declares no element type"):
        load_graph(model)


def test_a_negative_input_dimension_is_named():
    model = _one_node("Relu", [2, 3], [2, 3])
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -2
    with pytest.raises(ShapeError, match=r"graph input 'x' has shape \[-2, 3\] with negative dimension\(s\) 0: as the "
                                         r"model declares it"):
        load_graph(model)


# --- attributes only the lowering sees (was: ZeroDivisionError, IndexError, or compiled as another model) --------


@pytest.mark.parametrize("model, message", [
    (_conv(group=0), r"Conv 'conv' \(opset 17\): invalid ONNX node: group 0 is not a positive number of groups"),
    (_conv(group=-3), r"group -3 is not a positive"),  # was compiled
    (_conv(auto_pad="WHATEVER"), r"auto_pad 'WHATEVER' is none of NOTSET, SAME_UPPER, SAME_LOWER, VALID"),  # as NOTSET
    (_conv(kernel_shape=[2, 2], pads=[0, 0, 0, 0]), r"kernel_shape \[2, 2\] does not match the weights' taps \[3, 3\]"),
    # with kernel_shape given, onnx's inference does not look at the weights' rank; was an IndexError
    (_one_node("Conv", [1, 1, 4, 4], [1, 1, 4, 4], ("x", "w"), [numpy_helper.from_array(np.ones(1, np.float32), "w")],
               kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
     r"weights of shape \[1\]: a conv needs \[N, C, spatial...\] and weights of the same rank"),
    (_one_node("Conv", [1, 2, 4, 4], [1, 1, 2, 2], ("x", "w"), [numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")]),
     r"2 input channels and weights for 1 input and 1 output channels per group do not make 1 group"),
    (_one_node("Transpose", [2, 3], [2], perm=[0]), r"perm \[0\] is not a permutation of the 2 axes"),  # was compiled
    # onnx's inference overflows on it; the lowering took the axis modulo the rank
    (_one_node("Concat", [2, 3], [4, 3], ("x", "x"), axis=2**62),
     r"Concat 'concat' \(opset 17\): invalid ONNX node: axis 4611686018427387904 is out of range \[-2, 1\]"),
])
def test_invalid_attributes_the_lowering_checks(tmp_path, model, message):
    with pytest.raises(ModelLoadError, match=message):
        compiler.compile(model, tmp_path / "m.tilec")


def test_repeated_reduce_axes_reduce_once(tmp_path):
    """onnxruntime takes ReduceSum axes [1, 1]; the axis check must not refuse it."""
    model = _one_node("ReduceSum", [2, 3], [2, 1], ("x", "axes"), [numpy_helper.from_array(np.array([1, 1]), "axes")])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    with InferenceSession(compiler.compile(model, tmp_path / "m.tilec"), threads=1) as session:
        (y,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(y, x.sum(axis=1, keepdims=True))


def test_a_mutant_proto_given_as_bytes_or_proto_is_left_untouched():
    model = _conv(group=0)
    before = copy.deepcopy(model)
    with pytest.raises(ModelLoadError):
        compiler.compile(model, "/nonexistent/never-written.tilec")
    assert model == before
