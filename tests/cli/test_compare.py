"""``tilec compare`` and compiler/compare.py: node-by-node comparison with onnxruntime.

Models: the BERT-style encoder of compiler/models/transformer.py (small) and a ResNet-style CNN
built here (Conv + BatchNormalization + Relu stem, MaxPool, a residual block, a strided block
with a 1x1 projection, GlobalAveragePool, a Constant-shaped Reshape, Gemm) at 1x3x16x16.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import cli
from compiler.compare import Status, compare_arrays, compare_model
from compiler.errors import InvalidInputError
from compiler.models.transformer import encoder, encoder_inputs
from runtime_stub.artifact import MAGIC_PREFIX

pytest.importorskip("onnxruntime")


def resnet_cnn(seed: int = 0, channels: int = 8, size: int = 16, classes: int = 10) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def conv_bn(x: str, name: str, c_in: int, c_out: int, kernel: int, stride: int, relu: bool) -> str:
        w = const(f"{name}.w", rng.normal(0, np.sqrt(2 / (c_in * kernel * kernel)), (c_out, c_in, kernel, kernel)))
        nodes.append(helper.make_node("Conv", [x, w], [f"{name}.conv"], name=name, kernel_shape=[kernel, kernel],
                                      strides=[stride, stride], pads=[kernel // 2] * 4))
        bn = [const(f"{name}.bn.{p}", v) for p, v in (("scale", rng.uniform(0.5, 1.5, c_out)),
                                                      ("bias", rng.normal(0, 0.1, c_out)),
                                                      ("mean", rng.normal(0, 0.1, c_out)),
                                                      ("var", rng.uniform(0.5, 1.5, c_out)))]
        nodes.append(helper.make_node("BatchNormalization", [f"{name}.conv", *bn], [f"{name}.bn"], name=f"{name}.bn"))
        if not relu:
            return f"{name}.bn"
        nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.relu"], name=f"{name}.relu"))
        return f"{name}.relu"

    def add_relu(a: str, b: str, name: str) -> str:
        nodes.append(helper.make_node("Add", [a, b], [f"{name}.sum"], name=f"{name}.add"))
        nodes.append(helper.make_node("Relu", [f"{name}.sum"], [f"{name}.out"], name=f"{name}.relu"))
        return f"{name}.out"

    x = conv_bn("input", "stem", 3, channels, 3, 1, True)
    nodes.append(helper.make_node("MaxPool", [x], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]))
    y = conv_bn(conv_bn("pool1", "layer1.conv1", channels, channels, 3, 1, True), "layer1.conv2", channels, channels,
                3, 1, False)
    x = add_relu("pool1", y, "layer1")
    y = conv_bn(conv_bn(x, "layer2.conv1", channels, 2 * channels, 3, 2, True), "layer2.conv2", 2 * channels,
                2 * channels, 3, 1, False)
    x = add_relu(conv_bn(x, "layer2.down", channels, 2 * channels, 1, 2, False), y, "layer2")
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"),
              helper.make_node("Constant", [], ["flat_shape"], name="flat_shape",
                               value=numpy_helper.from_array(np.array([1, -1], np.int64))),
              helper.make_node("Reshape", ["gap", "flat_shape"], ["features"], name="flatten"),
              helper.make_node("Gemm", ["features", const("fc.w", rng.normal(0, 0.3, (classes, 2 * channels))),
                                        const("fc.b", rng.normal(0, 0.1, classes))], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "resnet_cnn",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _save(model: onnx.ModelProto, path: pathlib.Path) -> str:
    onnx.save(model, path)
    return str(path)


def _with_weight(model: onnx.ModelProto, name: str, change) -> onnx.ModelProto:
    """A copy of ``model`` whose initializer ``name`` is ``change(array)``."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for k, init in enumerate(copy.graph.initializer):
        if init.name == name:
            copy.graph.initializer[k].CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(init)), name))
            return copy
    raise KeyError(name)


# --- models within tolerance ------------------------------------------------------------


def test_encoder_every_node_within_tolerance(tmp_path, capsys):
    model = encoder(layers=2, hidden=64, heads=4, seq=16)
    path = _save(model, tmp_path / "encoder.onnx")
    args = ["compare", path, "--threads", "1"]
    for name, array in encoder_inputs(model).items():
        np.save(tmp_path / f"{name}.npy", array)
        args += ["--input", f"{name}={tmp_path / f'{name}.npy'}"]
    assert cli.main(args) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "every compared value is within tolerance" in out
    assert "random inputs" not in out  # both came from files
    assert "fuses less" in out  # the note that exposing the values changes the build
    nodes = [n for n in model.graph.node]
    # One table line per node output, in topological order (the builder's order is topological).
    lines = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert [line[3] for line in lines] == [o for n in nodes for o in n.output]
    assert all(line[-1] == "ok" for line in lines)
    assert "l0_split_qkv" in {line[1] for line in lines}  # Split's three outputs are three rows


def test_resnet_cnn_every_node_within_tolerance():
    model = resnet_cnn()
    result = compare_model(model, threads=1)
    assert result.ok and result.first_divergence is None
    assert result.random_inputs == ["input"]
    assert [r.output for r in result.rows] == [o for n in model.graph.node for o in n.output]
    assert all(r.status is Status.OK for r in result.rows)
    rows = {r.output: r for r in result.rows}
    assert rows["flat_shape"].folded and rows["flat_shape"].dtype == "int64"  # a Constant node: compared anyway
    assert not rows["stem.conv"].folded
    # Exposed, the Conv keeps its own output (BatchNormalization is not folded into it), and matches.
    assert rows["stem.conv"].max_abs is not None and rows["stem.conv"].max_abs < 1e-4
    assert result.builds == 1


@pytest.mark.slow
def test_light_resnet50_every_node_within_tolerance():
    """The test suite's ResNet-50 (random weights, 1x3x224x224): all 175 node outputs."""
    from compiler.models.light import light_model

    result = compare_model(light_model("resnet50"), threads=2)
    assert len(result.rows) == 175 and result.first_divergence is None
    assert all(r.status is Status.OK for r in result.rows)


def test_chunks_give_the_same_rows():
    model = resnet_cnn(channels=4, size=8)
    whole = compare_model(model, threads=1)
    parts = compare_model(model, threads=1, chunk=7)
    assert parts.builds == -(-len(whole.rows) // 7)
    assert [(r.output, r.status, r.folded) for r in parts.rows] == [(r.output, r.status, r.folded) for r in whole.rows]


# --- divergences -------------------------------------------------------------------------


def test_altered_weight_names_its_conv_first(tmp_path, capsys):
    reference = resnet_cnn()
    altered = _with_weight(reference, "layer1.conv2.w", lambda w: w * np.float32(1.5))
    args = ["compare", _save(altered, tmp_path / "altered.onnx"), "--reference",
            _save(reference, tmp_path / "reference.onnx"), "--threads", "1"]
    assert cli.main(args) == cli.EXIT_DIVERGED
    out = capsys.readouterr().out
    assert "first divergence: Conv 'layer1.conv2' (node " in out
    assert "output 'layer1.conv2.conv'" in out

    result = compare_model(altered, reference=reference, threads=1)
    first = result.first_divergence
    assert (first.node, first.op_type, first.output) == ("layer1.conv2", "Conv", "layer1.conv2.conv")
    rows = {r.output: r for r in result.rows}
    assert all(r.status is Status.OK for r in result.rows[:first.position])  # everything before it agrees
    assert first.bad > 0 and first.first_bad is not None and first.got != first.want
    assert rows["logits"].status is Status.DIVERGED  # and it propagates


def _pair(shape: list[int], cast_to: int) -> onnx.ModelProto:
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
             helper.make_node("Relu", ["x"], ["y"], name="relu"),
             helper.make_node("Cast", ["y"], ["c"], name="cast", to=cast_to)]
    graph = helper.make_graph(nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
                              [helper.make_tensor_value_info("r", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("c", cast_to, [2, 6])],
                              [numpy_helper.from_array(np.array(shape, np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_shape_and_dtype_differences_are_divergences():
    result = compare_model(_pair([3, 4], TensorProto.INT32), reference=_pair([4, 3], TensorProto.INT64), threads=1)
    rows = {r.output: r for r in result.rows}
    assert rows["r"].status is Status.DIVERGED and rows["r"].note == "shape [3, 4], the reference's [4, 3]"
    assert rows["y"].status is Status.OK
    assert rows["c"].status is Status.DIVERGED and rows["c"].note == "dtype int32, the reference's int64"
    assert result.first_divergence.output == "r"


def _features_model() -> onnx.ModelProto:
    """A folded Constant and Shape, an unused Dropout mask, integer and bool values, NaN and -inf (Log)."""
    offset = numpy_helper.from_array(np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6), "offset")
    nodes = [helper.make_node("Constant", [], ["c"], name="const", value=offset),
             helper.make_node("Add", ["x", "c"], ["a"], name="add"),
             helper.make_node("Dropout", ["a"], ["d", "mask"], name="dropout"),
             helper.make_node("Shape", ["d"], ["s"], name="shape"),
             helper.make_node("Reshape", ["d", "s"], ["r"], name="reshape"),
             helper.make_node("Log", ["r"], ["log"], name="log"),
             helper.make_node("ArgMax", ["r"], ["am"], name="argmax", axis=1),
             helper.make_node("Less", ["am", "three"], ["lt"], name="less")]
    graph = helper.make_graph(nodes, "features", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
                              [helper.make_tensor_value_info("log", TensorProto.FLOAT, [2, 6]),
                               helper.make_tensor_value_info("lt", TensorProto.BOOL, [2, 1])],
                              [numpy_helper.from_array(np.array(3, np.int64), "three")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_folded_unused_integer_and_non_finite_values():
    x = np.array([[-2, -1, 0, 0.5, 1, 2], [3, -3, 0.25, -0.25, 4, 0]], np.float32)
    x[1, 5] = -np.linspace(-1, 1, 12, dtype=np.float32)[11]  # x + c == 0 there: log → -inf
    result = compare_model(_features_model(), {"x": x}, threads=1)
    rows = {r.output: r for r in result.rows}
    assert [r.output for r in result.rows] == ["c", "a", "d", "mask", "s", "r", "log", "am", "lt"]
    assert rows["c"].folded and rows["s"].folded and not rows["a"].folded
    assert rows["mask"].status is Status.SKIPPED and "unused" in rows["mask"].note
    assert (rows["am"].dtype, rows["lt"].dtype) == ("int64", "bool")
    assert result.ok, [r for r in result.rows if r.status is Status.DIVERGED]
    assert result.random_inputs == []


# --- the element comparison ----------------------------------------------------------------


def test_compare_arrays_tolerance_nan_inf_and_integers():
    ok = compare_arrays(np.array([1.0, np.nan, np.inf, -np.inf, 0.0], np.float32),
                        np.array([1.0005, np.nan, np.inf, -np.inf, 5e-5], np.float32), "float32")
    assert ok["status"] is Status.OK and ok["bad"] == 0 and ok["max_abs"] == pytest.approx(5e-4, rel=1e-3)
    assert ok["max_rel"] == pytest.approx(1.0)  # 5e-5 against 0: relatively all wrong, absolutely fine

    bad = compare_arrays(np.array([[1.0, 2.0], [np.nan, np.inf]], np.float32),
                         np.array([[1.0, 2.0], [3.0, -np.inf]], np.float32), "float32")
    assert bad["status"] is Status.DIVERGED and bad["bad"] == 2 and bad["first_bad"] == (1, 0)
    assert bad["max_abs"] == np.inf and np.isnan(bad["got"]) and bad["want"] == 3.0

    zero_ref = compare_arrays(np.array([0.5], np.float32), np.array([0.0], np.float32), "float32")
    assert zero_ref["status"] is Status.DIVERGED and zero_ref["max_rel"] == np.inf

    ints = compare_arrays(np.array([1, 2, 3], np.int64), np.array([1, 2, 4], np.int64), "int64", rtol=1.0, atol=10)
    assert ints["status"] is Status.DIVERGED and ints["first_bad"] == (2,) and (ints["got"], ints["want"]) == (3, 4)
    assert compare_arrays(np.array([True, False]), np.array([True, False]), "bool")["status"] is Status.OK

    # Scaled by the tensor's largest |ref| (the default) a small element carries the large ones'
    # rounding; per element, the same error is beyond tolerance.
    got, want = np.array([100.0, 1e-3 + 2e-3], np.float32), np.array([100.0, 1e-3], np.float32)
    assert compare_arrays(got, want, "float32")["status"] is Status.OK
    strict = compare_arrays(got, want, "float32", per_element=True)
    assert strict["status"] is Status.DIVERGED and strict["first_bad"] == (1,)

    # bfloat16 as runtime_stub carries it (uint16 bits) against onnxruntime's float32 widening.
    bits = (np.array([1.5, -2.0], np.float32).view(np.uint32) >> 16).astype(np.uint16)
    assert compare_arrays(bits, np.array([1.5, -2.0], np.float32), "bfloat16")["max_abs"] == 0.0


# --- bad inputs ----------------------------------------------------------------------------


def test_bad_inputs_are_clear_errors(tmp_path, capsys):
    model = resnet_cnn(channels=4, size=8)
    path = _save(model, tmp_path / "cnn.onnx")
    with pytest.raises(InvalidInputError, match=r"unknown input\(s\) 'image'; the model's inputs are: "
                                                r"input \(float32 \[1, 3, 8, 8\]\)"):
        compare_model(model, {"image": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(InvalidInputError, match=r"input 'input': the array has shape \[1, 3, 9, 8\], the model "
                                                r"takes \[1, 3, 8, 8\] \(dimension 2 differs\)"):
        compare_model(model, {"input": np.zeros((1, 3, 9, 8), np.float32)})
    with pytest.raises(InvalidInputError, match=r"input 'input': the array has shape \[3, 8, 8\] \(rank 3\), "
                                                r"the model takes rank 4"):
        compare_model(model, {"input": np.zeros((3, 8, 8), np.float32)})
    with pytest.raises(InvalidInputError, match=r"input 'input': the array is float64, the model takes float32"):
        compare_model(model, {"input": np.zeros((1, 3, 8, 8))})

    np.save(tmp_path / "wrong.npy", np.zeros((1, 3, 4, 4), np.float32))
    assert cli.main(["compare", path, "--input", f"input={tmp_path / 'wrong.npy'}"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "tilec: error: input 'input': the array has shape [1, 3, 4, 4], the model takes [1, 3, 8, 8]" in err
    assert cli.main(["compare", path, "--input", f"nope={tmp_path / 'wrong.npy'}"]) == cli.EXIT_ERROR
    assert "tilec: error: unknown input(s) 'nope'" in capsys.readouterr().err
    assert cli.main(["compare", path, "--input", f"input={tmp_path / 'missing.npy'}"]) == cli.EXIT_ERROR
    assert "no such file" in capsys.readouterr().err
    assert cli.main(["compare", path, "--rtol", "-1"]) == cli.EXIT_USAGE
    capsys.readouterr()
    (tmp_path / "m.tilec").write_bytes(MAGIC_PREFIX + bytes(64))
    assert cli.main(["compare", str(tmp_path / "m.tilec")]) == cli.EXIT_ERROR
    assert "is a tilec artifact; compare needs the ONNX model" in capsys.readouterr().err


def test_symbolic_dimensions_bind_from_the_input_array():
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    result = compare_model(model, {"x": np.ones((3, 4), np.float32)}, threads=1)
    assert result.ok and result.rows[0].shape == (3, 4)
    with pytest.raises(InvalidInputError, match=r"input shapes bind it to \[2, 4\]"):
        compare_model(model, {"x": np.ones((3, 4), np.float32)}, input_shapes={"x": (2, 4)})


def _control_flow_model() -> onnx.ModelProto:
    """A Loop (unrolled by the frontend) reading an outer value, an If on a run-time condition, a com.microsoft
    Gelu (expanded), and a scalar ReduceSum: the frontend rewrites all but Relu, their output names survive."""
    def f32(name: str, shape: list[int]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    body = helper.make_graph([helper.make_node("Add", ["v_in", "r"], ["v_out"]),
                              helper.make_node("Identity", ["cond_in"], ["cond_out"]),
                              helper.make_node("Mul", ["v_out", "v_out"], ["sq"])], "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), f32("v_in", [2, 3])],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), f32("v_out", [2, 3]),
                              f32("sq", [2, 3])])
    then_branch = helper.make_graph([helper.make_node("Neg", ["v"], ["t"])], "then", [], [f32("t", [2, 3])])
    else_branch = helper.make_graph([helper.make_node("Abs", ["v"], ["e"])], "else", [], [f32("e", [2, 3])])
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Loop", ["trips", "", "x"], ["v", "squares"], name="loop", body=body),
             helper.make_node("If", ["cond"], ["w"], name="branch", then_branch=then_branch, else_branch=else_branch),
             helper.make_node("Gelu", ["w"], ["g"], name="gelu", domain="com.microsoft"),
             helper.make_node("ReduceSum", ["squares"], ["total"], name="sum", keepdims=0)]
    graph = helper.make_graph(nodes, "control_flow",
                              [f32("x", [2, 3]), helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [f32("g", [2, 3]), f32("total", [])], [numpy_helper.from_array(np.array(3, np.int64), "trips")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("cond", [True, False])
def test_expanded_nodes_are_compared_at_their_output_names(cond):
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    result = compare_model(_control_flow_model(), {"x": x, "cond": np.array(cond)}, threads=1)
    assert [(r.op_type, r.output) for r in result.rows] == [
        ("Relu", "r"), ("Loop", "v"), ("Loop", "squares"), ("If", "w"), ("Gelu", "g"), ("ReduceSum", "total")]
    assert result.ok and all(r.status is Status.OK for r in result.rows)
    assert {r.output: r.shape for r in result.rows}["total"] == ()


def test_narrow_float_intermediates_are_compared_as_their_values():
    """bfloat16 and float8 values: onnxruntime cannot return them to numpy, so it hands out float32 copies."""
    nodes = [helper.make_node("Cast", ["x"], ["b"], name="to_bf16", to=TensorProto.BFLOAT16),
             helper.make_node("Cast", ["b"], ["f8"], name="to_f8", to=TensorProto.FLOAT8E4M3FN),
             helper.make_node("Cast", ["f8"], ["y"], name="back", to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "narrow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    x = np.array([[1.5, -2.0, 3.25], [0.1, 7.0, -0.3]], np.float32)
    result = compare_model(model, {"x": x}, threads=1)
    assert [(r.output, r.dtype, r.status) for r in result.rows] == [
        ("b", "bfloat16", Status.OK), ("f8", "float8_e4m3fn", Status.OK), ("y", "float32", Status.OK)]
    assert all(r.max_abs == 0 for r in result.rows)


def test_string_values_compare_exactly():
    got, want = np.array(["a", "bb"], dtype=object), np.array(["a", "b"], dtype=object)
    assert compare_arrays(got, got.copy(), "string")["status"] is Status.OK
    row = compare_arrays(got, want, "string")
    assert row["status"] is Status.DIVERGED and row["first_bad"] == (1,) and row["got"] == "bb"
