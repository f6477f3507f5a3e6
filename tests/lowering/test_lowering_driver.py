"""The lowering driver: grouping into kernels, inlining, epilogue fusion, views, output copies, errors.

Graphs come from small ONNX models through the frontend and graph passes, as
in the pipeline. Where a test needs an opset the frontend would convert away
(Softmax-11, Clip-6), it patches the node's opset in the imported graph and
runs the lowered program directly with the LLVM codegen and NativeModule.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from onnx import helper

from compiler.codegen.link import link_shared_object
from compiler.codegen.llvm.module import build_module, compile_module
from compiler.codegen.target import resolve_target
from compiler.errors import UnsupportedOpError
from compiler.frontend import load_graph
from compiler.graph.ir import Graph
from compiler.graph.passes import run_passes
from compiler.loopir.printer import format_kernel
from compiler.loopir.stmt import Alloc, walk_stmts
from compiler.lowering.driver import Program, lower_graph
from helpers_contrib import contrib_model, contrib_node, nbits_weights
from helpers_onnx import graph_model, node_model, rand, reference
from runtime_stub.native import NativeModule

HOST = resolve_target("host")
AVX2 = resolve_target("x86_64-linux-gnu", cpu="x86-64-v3")


def _graph(model) -> Graph:
    return run_passes(load_graph(model))


def run_program(program: Program, feeds: list[np.ndarray], threads: int = 1) -> list[np.ndarray]:
    """Compile ``program`` for the host and run it once (what the artifact + runtime do, minus the file)."""
    native = link_shared_object([compile_module(build_module(program.calls, HOST), HOST)], HOST.triple, HOST.cpu)
    outputs = [np.zeros(v.shape, v.dtype.numpy) for v in program.outputs]
    weights = np.frombuffer(program.weights, np.uint8).copy() if program.weights else np.zeros(64, np.uint8)
    workspace = np.zeros(program.workspace_size + 64, np.uint8)
    module = NativeModule(native, threads)
    try:
        inputs = [np.ascontiguousarray(a) for a in feeds]
        status = module.run([a.ctypes.data for a in inputs], [o.ctypes.data for o in outputs],
                            weights.ctypes.data, workspace.ctypes.data + (-workspace.ctypes.data % 64))
        assert status == 0
    finally:
        module.close()
    return outputs


# --- grouping and fusion ------------------------------------------------------------------------


def test_conv_add_relu_is_one_kernel_without_temporaries():
    x = rand((1, 3, 8, 8))
    consts = {"w": rand((16, 3, 3, 3), seed=1), "b": rand((16, 1, 1), seed=2)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c", "b"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    program = lower_graph(_graph(graph_model(nodes, {"x": x}, ["y"], consts)), AVX2)
    # The padded input copy is the only arena buffer; the conv result never leaves registers.
    assert [c.kernel.label for c in program.calls] == ["Conv+Add+Relu"]
    kinds = sorted(ref.kind for ref in program.calls[0].args)
    assert kinds == ["input", "output", "weights", "weights", "workspace"]


def test_matmul_add_relu_is_one_kernel_with_epilogue():
    x = rand((4, 6))
    consts = {"w": rand((6, 5), seed=1), "b": rand((5,), seed=2)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"])]
    program = lower_graph(_graph(graph_model(nodes, {"x": x}, ["y"], consts)), AVX2)
    assert [c.kernel.label for c in program.calls] == ["MatMul+Add+Relu"]
    assert program.workspace_size == 0


def test_tanh_gelu_is_one_kernel_of_products():
    """Both branches of a tanh-Gelu, x * 0.5 and 1 + tanh(...), join one kernel, and x**3 is a product
    (no per-lane powf call)."""
    x = rand((4, 64), seed=3)
    consts = {"three": np.array(3.0, np.float32), "k": np.array(0.044715, np.float32),
              "r": np.array(0.7978846, np.float32), "one": np.array(1.0, np.float32),
              "half": np.array(0.5, np.float32)}
    nodes = [helper.make_node("Pow", ["x", "three"], ["p"]), helper.make_node("Mul", ["p", "k"], ["pk"]),
             helper.make_node("Add", ["x", "pk"], ["s1"]), helper.make_node("Mul", ["s1", "r"], ["s2"]),
             helper.make_node("Tanh", ["s2"], ["t"]), helper.make_node("Add", ["t", "one"], ["t1"]),
             helper.make_node("Mul", ["x", "half"], ["xh"]), helper.make_node("Mul", ["xh", "t1"], ["y"])]
    model = graph_model(nodes, {"x": x}, ["y"], consts)
    program = lower_graph(_graph(model), HOST)
    assert [c.kernel.label for c in program.calls] == ["Mul+Pow+Mul+Add+Mul+Tanh+Add+Mul"]
    assert "pow(" not in format_kernel(program.calls[0].kernel)
    np.testing.assert_allclose(run_program(program, [x])[0], reference(model, {"x": x})[0], rtol=2e-6, atol=1e-6)


def test_shared_intermediate_is_not_fused_away():
    x = rand((3, 5))
    nodes = [helper.make_node("Tanh", ["x"], ["a"]), helper.make_node("Exp", ["a"], ["e"]),
             helper.make_node("Mul", ["a", "e"], ["y"])]
    graph = _graph(graph_model(nodes, {"x": x}, ["y"]))
    program = lower_graph(graph, AVX2)
    assert len(program.calls) >= 2
    (got,) = run_program(program, [x])
    np.testing.assert_allclose(got, np.tanh(x) * np.exp(np.tanh(x)), rtol=1e-5, atol=1e-6)


def test_view_output_gets_a_copy_kernel():
    x = rand((2, 3, 4))
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Flatten", ["r"], ["y"])]
    program = lower_graph(_graph(graph_model(nodes, {"x": x}, ["y"])), AVX2)
    assert [c.kernel.label for c in program.calls] == ["Relu", "Copy"]
    (got,) = run_program(program, [x])
    np.testing.assert_array_equal(got, np.maximum(x, 0).reshape(2, 12))


def test_graph_input_as_output_and_repeated_output():
    x = rand((3, 4))
    nodes = [helper.make_node("Neg", ["x"], ["y"])]
    graph = _graph(graph_model(nodes, {"x": x}, ["y"]))
    graph.outputs = [graph.outputs[0], graph.inputs[0], graph.outputs[0]]
    program = lower_graph(graph, AVX2)
    got = run_program(program, [x])
    np.testing.assert_array_equal(got[0], -x)
    np.testing.assert_array_equal(got[1], x)
    np.testing.assert_array_equal(got[2], -x)


def test_output_sources_follow_data_through_kernels_views_and_the_arena():
    x, u = rand((2, 3, 4)), rand((2, 12), seed=1)
    nodes = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Exp", ["t"], ["e"]),
             helper.make_node("Mul", ["t", "e"], ["m"]), helper.make_node("Flatten", ["m"], ["y"]),
             helper.make_node("Add", ["y", "u"], ["s"]), helper.make_node("Neg", ["c"], ["k"]),
             helper.make_node("Identity", ["u"], ["i"])]
    graph = _graph(graph_model(nodes, {"x": x, "u": u}, ["y", "s", "k", "i"], {"c": rand((3,), seed=2)}))
    program = lower_graph(graph, AVX2)
    # y: x through an arena temporary (t is read twice) and a view; k: constants only (folded).
    assert program.output_sources == [(0,), (0, 1), (), (1,)]


def test_empty_tensors_carry_no_data():
    x = np.zeros((2, 0), np.float32)
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=1), helper.make_node("Relu", ["x"], ["r"])]
    program = lower_graph(_graph(graph_model(nodes, {"x": x}, ["s", "r"], opset=11)), AVX2)
    assert program.output_sources == [(), ()]


def _nbits_model(k: int, n: int, rows: int):
    """A 4-bit MatMulNBits (packed zero points, bias) and its weights, dequantized as onnxruntime reads them."""
    consts = nbits_weights(n, k, bits=4, block=32, seed=3)
    consts["bias"] = rand((n,), seed=4)
    node = contrib_node("MatMulNBits", ["a", "w", "s", "z", "", "bias"], K=k, N=n, bits=4, block_size=32)
    feeds = {"a": rand((rows, k), seed=1)}
    codes = ((consts["w"].reshape(n, -1)[:, :, None] >> np.array([0, 4], np.uint8)) & 15).reshape(n, -1)
    zeros = ((consts["z"].reshape(n, -1)[:, :, None] >> np.array([0, 4], np.uint8)) & 15).reshape(n, -1)
    blocks = k // 32
    weight = (codes.astype(np.float64) - np.repeat(zeros[:, :blocks], 32, 1)) * np.repeat(consts["s"].reshape(n, blocks), 32, 1)
    want = feeds["a"].astype(np.float64) @ weight.T + consts["bias"]
    model, _ = contrib_model([node], feeds, ["y"], consts, expected=[want.astype(np.float32)])
    return model, feeds, want


def test_block_quantized_weights_stay_codes_read_by_the_product():
    """MatMulNBits' weights decode inside the product's kernel: the weights section holds the 4-bit codes
    (with a scale and offset per block), not float weights, and no kernel writes decoded weights."""
    k, n = 256, 48
    model, feeds, want = _nbits_model(k, n, rows=3)
    program = lower_graph(_graph(model), HOST)
    assert [c.kernel.label for c in program.calls] == ["BlockDequantize+MatMul+Add"]
    assert program.workspace_size == 0
    codes, per_block = k * n // 2, 2 * 4 * n * (k // 32)
    assert len(program.weights) < codes + per_block + 4 * n + 4096  # float32 weights would be 4 * k * n
    (got,) = run_program(program, list(feeds.values()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def _qdq_4bit_model(codes_type, with_zero: bool, readers: int):
    """A weight-only 4-bit QDQ product as onnxruntime's 4-bit quantizer writes it in QDQ form (opset 21,
    blocked along K); with two readers the dequantized weight also feeds a second MatMul."""
    k, n, block = 64, 24, 16
    rng = np.random.default_rng(7)
    low = -8 if codes_type is ml_dtypes.int4 else 0
    consts = {"w": rng.integers(low, low + 16, (k, n)).astype(codes_type),
              "s": (rng.random((k // block, n)) * 0.1 + 0.01).astype(np.float32)}
    if with_zero:
        consts["z"] = rng.integers(low, low + 16, (k // block, n)).astype(codes_type)
    nodes = [helper.make_node("DequantizeLinear", ["w", "s", "z"] if with_zero else ["w", "s"], ["wf"], axis=0,
                              block_size=block), helper.make_node("MatMul", ["x", "wf"], ["y"])]
    outputs = ["y"]
    if readers == 2:
        nodes.append(helper.make_node("MatMul", ["x", "wf"], ["y2"]))
        outputs.append("y2")
    return graph_model(nodes, {"x": rand((3, k), seed=1)}, outputs, consts, opset=21), k * n


@pytest.mark.parametrize("codes_type, with_zero", [(ml_dtypes.int4, True), (ml_dtypes.uint4, False)])
def test_dequantized_4bit_weights_stay_codes_read_by_their_product(codes_type, with_zero):
    """A DequantizeLinear of 4-bit constant codes with one reader is not folded into float weights: it runs
    inside the product's kernel (zero point folded into per-block offsets), as MatMulNBits does."""
    model, elements = _qdq_4bit_model(codes_type, with_zero, readers=1)
    program = lower_graph(_graph(model), HOST)
    assert [c.kernel.label for c in program.calls] == ["BlockDequantize+MatMul"]
    # The codes at half a byte each, a float scale and offset per block of 16: float weights would take 4 * elements.
    assert len(program.weights) <= elements // 2 + 2 * 4 * elements // 16
    feeds = {"x": rand((3, 64), seed=1)}
    (got,) = run_program(program, list(feeds.values()))
    (want,) = reference(model, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_dequantized_weights_read_twice_fold_into_floats():
    """Read by two nodes the codes would be decoded by a kernel of their own in every run: they fold."""
    model, elements = _qdq_4bit_model(ml_dtypes.int4, True, readers=2)
    program = lower_graph(_graph(model), HOST)
    assert all("BlockDequantize" not in c.kernel.label for c in program.calls)
    assert len(program.weights) >= 4 * elements


def test_unsupported_ops_are_reported_together():
    # Op types no registry will ever have, patched in after import so the frontend accepts the model.
    x = rand((3, 4))
    nodes = [helper.make_node("Neg", ["x"], ["a"]), helper.make_node("Abs", ["a"], ["b"]),
             helper.make_node("Neg", ["b"], ["y"])]
    graph = _graph(graph_model(nodes, {"x": x}, ["y"]))
    for node, op in zip(graph.nodes, ["NoSuchOpA", "NoSuchOpB", "NoSuchOpA"]):
        node.op_type = op
    with pytest.raises(UnsupportedOpError) as info:
        lower_graph(graph, AVX2)
    message = str(info.value)
    assert "NoSuchOpA" in message and "NoSuchOpB" in message
    assert all(node.name in message for node in graph.nodes)  # each offending node is named


def test_accumulator_tiles_are_local():
    a = rand((9, 7))
    program = lower_graph(_graph(node_model("MatMul", ["a", "b"], {"a": a}, consts={"b": rand((7, 11), seed=1)})),
                          AVX2)
    allocs = [n for c in program.calls for n in walk_stmts(c.kernel.body) if isinstance(n, Alloc)]
    assert allocs and all(n.buffer.scope == "local" for n in allocs)
    assert all(b.scope == "global" for c in program.calls for b in c.kernel.params)


# --- opset paths the frontend's conversion hides -----------------------------------------------


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax_opset11_coerces_to_2d(op, axis):
    x = rand((2, 3, 4), seed=3) * 2
    graph = _graph(node_model(op, ["x"], {"x": x}, attrs={"axis": axis}))
    (node,) = graph.nodes
    node.opset = 11  # as if the version converter had kept the original opset
    (got,) = run_program(lower_graph(graph, HOST), [x])
    rows = x.reshape(int(np.prod(x.shape[:axis])), -1)
    e = np.exp(rows - rows.max(axis=1, keepdims=True))
    soft = e / e.sum(axis=1, keepdims=True)
    expected = (np.log(soft) if op == "LogSoftmax" else soft).reshape(x.shape)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attrs", [{"min": -0.5, "max": 0.25}, {"min": 0.0}, {"max": 0.1}, {}])
def test_clip_opset6_attributes(attrs):
    x = rand((3, 7), seed=4)
    graph = _graph(node_model("Clip", ["x"], {"x": x}))
    (node,) = graph.nodes
    node.opset = 6
    node.attrs = dict(attrs)
    (got,) = run_program(lower_graph(graph, HOST), [x])
    np.testing.assert_array_equal(got, np.clip(x, attrs.get("min", -np.inf), attrs.get("max", np.inf)))
