"""Stage 1a: reading, checking, binding input shapes, opset conversion."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import DataDependentError, ModelLoadError, ShapeError, TilecWarning
from compiler.frontend import fold_model, load_graph, load_model
from compiler.frontend import loader
from compiler.loopir.sizes import SizeRange, SizeVar, ValueSource, size_sum
from compiler.frontend.loader import CANONICAL_OPSET


def _relu_model(shape: list[int | str | None] = [2, 3], opset: int = 17) -> onnx.ModelProto:  # noqa: B006
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize("form", ["path", "str", "bytes", "proto"])
def test_load_from_every_source(tmp_path, form):
    model = _relu_model()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    source = {"path": path, "str": str(path), "bytes": model.SerializeToString(), "proto": model}[form]
    graph = load_graph(source)
    assert [n.op_type for n in graph.nodes] == ["Relu"]
    assert graph.inputs[0].name == "x" and graph.inputs[0].shape == (2, 3)
    assert graph.outputs[0].name == "y" and graph.outputs[0].producer is graph.nodes[0]


def test_loading_a_proto_leaves_it_untouched():
    model = _relu_model(["N", 3])
    before = model.SerializeToString()
    load_graph(model, input_shapes={"x": (4, 3)})
    assert model.SerializeToString() == before


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match=r"nope\.onnx.*no such file"):
        load_graph(tmp_path / "nope.onnx")


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError, match="not a regular file"):
        load_graph(tmp_path)


@pytest.mark.parametrize("garbage", [b"\xff\xfe this is not protobuf \x00\x01", b"\x08" * 7])
def test_garbage_bytes(garbage):
    with pytest.raises(ModelLoadError) as info:
        load_graph(garbage)
    assert "\n" not in str(info.value)


def test_garbage_file_names_the_file(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\xff\xfe this is not protobuf \x00\x01")
    with pytest.raises(ModelLoadError, match="garbage.onnx"):
        load_graph(path)


def test_checker_failure_is_one_line_naming_file_and_complaint(tmp_path):
    model = _relu_model()
    model.graph.node[0].input[0] = "undefined_value"  # reads a value nothing defines
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelLoadError) as info:
        load_graph(path)
    message = str(info.value)
    assert "\n" not in message
    assert "bad.onnx" in message and "invalid ONNX model" in message and "undefined_value" in message


def test_nodes_out_of_order_are_sorted():
    graph = helper.make_graph(
        [helper.make_node("Neg", ["t"], ["y"], name="second"), helper.make_node("Relu", ["x"], ["t"], name="first")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert [n.name for n in load_graph(model).nodes] == ["first", "second"]


def test_unknown_input_shapes_name():
    with pytest.raises(ShapeError, match=r"'z'.*not a graph input.*'x'"):
        load_graph(_relu_model(["N", 3]), input_shapes={"z": (1, 3)})


def test_input_shapes_rank_mismatch():
    with pytest.raises(ShapeError, match="rank 3.*rank 2"):
        load_graph(_relu_model(["N", 3]), input_shapes={"x": (1, 3, 5)})


def test_input_shapes_contradicting_a_static_dim():
    with pytest.raises(ShapeError, match="dimension 1 = 4"):
        load_graph(_relu_model(["N", 3]), input_shapes={"x": (1, 4)})


def test_symbolic_batch_stays_a_size_variable_and_binding_specializes_it():
    model = _relu_model(["batch", 3])
    graph = load_graph(model)
    assert graph.inputs[0].shape == (SizeVar("batch"), 3) and graph.outputs[0].shape == (SizeVar("batch"), 3)
    assert graph.sizes == {"batch": SizeRange()}
    assert load_graph(model, dim_bounds={"batch": (2, None)}).sizes == {"batch": SizeRange(2, SizeRange().hi)}
    graph = load_graph(model, input_shapes={"x": (5, 3)})
    assert graph.inputs[0].shape == (5, 3) and graph.outputs[0].shape == (5, 3) and not graph.sizes


def test_dim_bounds_must_name_a_symbolic_dimension_and_be_a_range():
    with pytest.raises(ShapeError, match=r"dim_bounds names 'seq'.*symbolic dimensions: 'batch'"):
        load_graph(_relu_model(["batch", 3]), dim_bounds={"seq": (1, 8)})
    with pytest.raises(ShapeError, match=r"dim_bounds\['batch'\] = \(8, 2\) is not a range"):
        load_graph(_relu_model(["batch", 3]), dim_bounds={"batch": (8, 2)})


def test_binding_a_scalar_input_keeps_its_shape():
    graph = load_graph(_relu_model([]), input_shapes={"x": ()})
    assert graph.inputs[0].shape == () and graph.outputs[0].shape == ()
    assert load_graph(_relu_model(["N"]), input_shapes={"x": (4,)}).inputs[0].shape == (4,)


def test_unnamed_unknown_dim_gets_a_generated_name():
    graph = load_graph(_relu_model([2, None]))
    assert graph.inputs[0].shape == (2, SizeVar("x_dim1")) and list(graph.sizes) == ["x_dim1"]


def test_old_opset_is_converted_to_canonical():
    # Opset 9 BatchNormalization (with running-stat outputs era semantics) and Dropout.
    c = 3
    inits = [numpy_helper.from_array(np.full(c, v, np.float32), n)
             for n, v in [("s", 2.0), ("b", 0.5), ("m", 0.1), ("v", 4.0)]]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["t"], name="bn", epsilon=1e-5),
             helper.make_node("Dropout", ["t"], ["y"], name="drop", ratio=0.5)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 4
    loaded = load_model(model)
    assert {o.domain: o.version for o in loaded.opset_import}[""] == CANONICAL_OPSET
    graph_ir = load_graph(model)
    assert graph_ir.opsets[""] == CANONICAL_OPSET
    assert all(n.opset == CANONICAL_OPSET for n in graph_ir.nodes)
    assert [n.op_type for n in graph_ir.nodes] == ["BatchNormalization", "Dropout"]


def test_a_model_importing_no_opset_for_its_nodes_is_refused_by_name():
    model = _relu_model()
    del model.opset_import[:]
    model.ir_version = 1  # the checker asks IR < 3 models for no opset import
    with pytest.raises(ModelLoadError, match=r"imports no opset for domain 'ai\.onnx', which its node Relu is from"):
        load_model(model)


def test_failed_conversion_keeps_original_opset(monkeypatch):
    def refuse(model, target):
        raise RuntimeError("no adapter")

    monkeypatch.setattr(loader.version_converter, "convert_version", refuse)
    graph_ir = load_graph(_relu_model(opset=9))
    assert graph_ir.opsets[""] == 9 and graph_ir.nodes[0].opset == 9
    assert graph_ir.outputs[0].shape == (2, 3)


def _reduce_with_axes_input() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="sum", keepdims=0)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
         helper.make_tensor_value_info("axes", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_run_time_axes_input_becomes_value_sizes_read_at_run_time():
    graph = load_graph(_reduce_with_axes_input())
    assert [v.name for v in graph.inputs] == ["x", "axes"]
    assert graph.sizes["axes[0]"].source == ValueSource("axes", 0)
    assert graph.sizes["axes[0]"].lo < 0  # a value size may be negative (an axis from the end)
    assert len(graph.outputs[0].shape) == 2 and not graph.outputs[0].type.is_static


def test_run_time_axes_computed_from_data_are_refused_naming_the_node_and_the_value():
    model = _reduce_with_axes_input()
    model.graph.node.insert(0, helper.make_node("Abs", ["axes"], ["axes_abs"], name="abs"))
    model.graph.node[1].input[1] = "axes_abs"
    with pytest.raises(DataDependentError) as info:
        load_graph(model)
    assert info.value.values == ("axes_abs",)  # the data operand 'x' is not a shape operand
    assert "ReduceSum 'sum'" in str(info.value)


def test_constant_inputs_fix_a_shape_operand():
    graph = load_graph(_reduce_with_axes_input(), constant_inputs={"axes": np.array([1], np.int64)})
    assert [v.name for v in graph.inputs] == ["x"]
    assert graph.outputs[0].shape == (2, 4)


@pytest.mark.parametrize("values, message", [
    ({"z": np.array([1], np.int64)}, r"'z'.*not a graph input"),
    ({"axes": np.array([1], np.int32)}, "dtype int32.*int64"),
    ({"axes": np.array([1, 2], np.int64)}, r"shape 2.*\[1\]"),
])
def test_constant_inputs_are_checked(values, message):
    with pytest.raises(ShapeError, match=message):
        load_graph(_reduce_with_axes_input(), constant_inputs=values)


def _pool_model(op: str, n: int, attrs: dict, opset: int = 19) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b", "c"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_ceil_mode_pool_sizes_match_onnxruntime(op):
    """onnx's inference keeps a ceil_mode window that would start in the end padding (or past the input);
    the frontend's sizes are onnxruntime's, which drops it, for explicit pads, VALID and SAME alike."""
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    cases, corrected = 0, 0
    for n, k, s, d, pb, pe, auto_pad in itertools.product([7, 8], [1, 2, 3], [1, 2, 3], [1, 2], [0, 1, 2],
                                                          [0, 1, 2], ["NOTSET", "VALID", "SAME_UPPER"]):
        if pb >= k or pe >= k or (auto_pad != "NOTSET" and (pb or pe)):
            continue  # onnxruntime refuses pads as large as the kernel
        if auto_pad == "SAME_UPPER" and (d > 1 or k < s):
            continue  # onnxruntime's own SAME sizes with dilations (any ceil_mode), or negative pads, are off
        attrs = {"kernel_shape": [k], "strides": [s], "dilations": [d], "ceil_mode": 1,
                 **({"pads": [pb, pe]} if auto_pad == "NOTSET" else {"auto_pad": auto_pad})}
        model = _pool_model(op, n, attrs)
        x = np.zeros((1, 1, n), np.float32)
        want = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]
                                    ).run(None, {"x": x})[0].shape
        types = loader.infer_types(model.graph, {"": 19}, None)
        got = tuple(dim.dim_value for dim in types["y"].tensor_type.shape.dim)
        onnx_says = tuple(dim.dim_value for dim in onnx.shape_inference.infer_shapes(model).graph.output[0]
                          .type.tensor_type.shape.dim)
        assert got == want, f"{op} n={n} {attrs}: {got} != onnxruntime's {want}"
        cases += 1
        corrected += onnx_says != want
    assert cases > 100 and corrected > 20  # the grid does meet onnx's mistake


def test_corrected_pool_sizes_reach_every_value_downstream():
    attrs = {"kernel_shape": [2, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}
    nodes = [helper.make_node("MaxPool", ["x"], ["p1", "indices"], name="max", **attrs),
             helper.make_node("AveragePool", ["p1"], ["p2"], name="avg", **attrs),
             helper.make_node("Shape", ["p2"], ["s"], name="shape"),
             helper.make_node("Relu", ["p2"], ["r"], name="relu"),
             helper.make_node("Reshape", ["r", "s"], ["y"], name="reshape")]
    dims = ["a", "b", "c", "d"]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 17, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims),
                               helper.make_tensor_value_info("p1", TensorProto.FLOAT, dims),
                               helper.make_tensor_value_info("indices", TensorProto.INT64, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    types = loader.infer_types(model.graph, {"": 19}, None)
    assert not any("\x00" in name for name in types)  # the pins' private names stay private
    graph_ir = load_graph(model)
    assert [(v.name, v.shape) for v in graph_ir.outputs] == [
        ("y", (1, 2, 5, 5)), ("p1", (1, 2, 9, 9)), ("indices", (1, 2, 9, 9))]
    assert [v.shape for n in graph_ir.nodes for v in n.outputs if n.op_type == "AveragePool"] == [(1, 2, 5, 5)]


def test_concat_along_symbolic_axes_adds_the_sizes_for_its_readers_and_the_output():
    """A KV cache's present = Concat(past, new) along the past axis: a graph output that a Transpose
    also reads (onnx infers neither the sum nor, once it is pinned, the reader)."""
    f32 = TensorProto.FLOAT
    nodes = [helper.make_node("Concat", ["past", "new"], ["present"], axis=2),
             helper.make_node("Transpose", ["present"], ["t"], perm=[0, 1, 3, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("past", f32, ["b", 2, "P", 8]),
                                           helper.make_tensor_value_info("new", f32, ["b", 2, "S", 8])],
                              [helper.make_tensor_value_info("present", f32, ["b", 2, "P + S", 8]),
                               helper.make_tensor_value_info("t", f32, ["b", 2, 8, "T"])])
    g = load_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    total = size_sum([SizeVar("P"), SizeVar("S")])
    assert g.outputs[0].shape == (SizeVar("b"), 2, total, 8) and g.outputs[1].shape == (SizeVar("b"), 2, 8, total)


def test_scalar_shape_arithmetic_and_a_range_from_a_symbolic_start():
    """Range(past + 1, past + seq + 1) over 0-d sizes (Squeeze of Shape dims) is seq long."""
    i64 = TensorProto.INT64
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    idx = [numpy_helper.from_array(np.array(k, np.int64), f"k{k}") for k in (1, 2)]
    nodes = [helper.make_node("Shape", ["ids"], ["s1"]), helper.make_node("Gather", ["s1", "k1"], ["seq"]),
             helper.make_node("Shape", ["past"], ["s2"]), helper.make_node("Gather", ["s2", "k2"], ["p"]),
             helper.make_node("Add", ["p", "one"], ["start"]), helper.make_node("Add", ["p", "seq"], ["total"]),
             helper.make_node("Add", ["total", "one"], ["limit"]),
             helper.make_node("Range", ["start", "limit", "one"], ["rows"]),
             helper.make_node("Unsqueeze", ["rows", "zero"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", i64, ["b", "S"]),
                                           helper.make_tensor_value_info("past", TensorProto.FLOAT, ["b", 2, "P", 8])],
                              [helper.make_tensor_value_info("y", i64, [1, "n"])], [one, zero, *idx])
    g = load_graph(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert g.outputs[0].shape == (1, SizeVar("S"))


def _per_channel_dequantize_model(opset: int) -> onnx.ModelProto:
    """What onnxruntime's quantize_static writes for per-channel weights, whatever the model's opset."""
    w = numpy_helper.from_array(np.array([[1, -2], [3, 4], [-5, 6]], np.int8), "w")
    scale = numpy_helper.from_array(np.array([0.5, 0.25, 2.0], np.float32), "s")
    zero = numpy_helper.from_array(np.zeros(3, np.int8), "z")
    nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"], axis=0),
             helper.make_node("Add", ["x", "wf"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])], [w, scale, zero])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_per_axis_dequantize_below_opset_13_is_read_as_opset_13s_with_a_warning():
    with pytest.warns(TilecWarning, match=r"'axis' attribute of 1 QuantizeLinear/DequantizeLinear"):
        model = load_model(_per_channel_dequantize_model(11))
    node = next(n for n in model.graph.node if n.op_type == "DequantizeLinear")
    assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "axis")) == 0
    # The folded weights show the per-row scales.
    np.testing.assert_array_equal(fold_model(model).constants["wf"], [[0.5, -1], [0.75, 1], [-10, 12]])


def test_per_axis_dequantize_from_opset_13_loads_without_a_warning(recwarn):
    load_model(_per_channel_dequantize_model(13))
    assert not [w for w in recwarn if "axis" in str(w.message)]
