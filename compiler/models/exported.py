"""Models with symbolic dimensions, built with onnx.helper the way exporters leave them (tests and
``tilec bench --dynamic``): the batch and sequence as ``dim_param`` s of the inputs, every shape the
graph needs computed in it (Shape -> Gather -> Concat -> Reshape, Range, Expand, ConstantOfShape).

* ``mlp_model``, ``cnn_model`` (symbolic N, output named ``unk__7`` as tf2onnx would),
  ``spatial_cnn_model`` (N, height, width), ``attention_model`` (one block over batch x sequence
  with constant weights but no shape computations), ``two_input_model`` (two inputs sharing batch);
* ``bert_encoder_model`` (``causal=True``: GPT-2-style) with ``bert_feeds``, and ``vit_model``:
  torch.onnx's patterns for heads, positions, masks and the class token.

Weights are seeded random; every model passes onnx.checker.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)


def dynamic_model(nodes, inputs, outputs, weights) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "dynamic", inputs, outputs, weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def mlp_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("Add", ["a", "b1"], ["b"]),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("MatMul", ["c", "w2"], ["d"]),
             helper.make_node("Softmax", ["d"], ["y"], axis=-1)]
    return dynamic_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
                  [weight(rng, "w1", 64, 128), weight(rng, "b1", 128), weight(rng, "w2", 128, 10)])


def cnn_model() -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    # The output's batch has a name of its own, as tf2onnx writes them: the compiler must see it is N.
    return dynamic_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["unk__7", 10])],
                  [weight(rng, "w1", 8, 3, 3, 3), weight(rng, "b1", 8), weight(rng, "w2", 16, 8, 3, 3),
                   weight(rng, "wf", 10, 16), weight(rng, "bf", 10)])


def attention_model() -> onnx.ModelProto:
    """One self-attention block over a symbolic batch and sequence: the scores are seq x seq, and
    softmax and the value product reduce over the symbolic sequence."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("MatMul", ["x", "wv"], ["v"]), helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Mul", ["s", "scale"], ["ss"]),
             helper.make_node("Softmax", ["ss"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["o"]),
             helper.make_node("Add", ["o", "x"], ["r"]),
             helper.make_node("LayerNormalization", ["r", "gamma", "beta"], ["y"], axis=-1)]
    return dynamic_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 32])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 32])],
                  [weight(rng, "wq", 32, 32), weight(rng, "wk", 32, 32), weight(rng, "wv", 32, 32),
                   numpy_helper.from_array(np.array(0.125, np.float32), "scale"),
                   weight(rng, "gamma", 32), weight(rng, "beta", 32)])


def two_input_model() -> onnx.ModelProto:
    """Two inputs that share the batch: an Add of them proves it, the runtime checks it."""
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("ReduceSum", ["s", "axes"], ["y"], keepdims=0)]
    return dynamic_model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 5]),
                          helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 5])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
                  [numpy_helper.from_array(np.array([1], np.int64), "axes")])


class GraphBuilder:
    """Nodes and initializers of a graph under construction, with fresh value names."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        self.count += 1
        out = f"{op_type.lower()}_{self.count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def weight(self, name: str, *shape: int, scale: float = 0.2) -> str:
        self.inits.append(numpy_helper.from_array((self.rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def dim(self, value: str, axis: int) -> str:
        """Shape(value)[axis] as a 1-element tensor, the way torch.onnx spells it."""
        shape = self.op("Shape", value)
        return self.op("Unsqueeze", self.op("Gather", shape, self.const(f"ax{self.count}", np.array(axis, np.int64))),
                       self.const(f"zero{self.count}", np.array([0], np.int64)))

    def layer_norm(self, x: str, hidden: int, tag: str) -> str:
        return self.op("LayerNormalization", x, self.weight(f"{tag}_g", hidden), self.weight(f"{tag}_b", hidden),
                       axis=-1, epsilon=1e-5)

    def linear(self, x: str, n_in: int, n_out: int, tag: str) -> str:
        return self.op("Add", self.op("MatMul", x, self.weight(f"{tag}_w", n_in, n_out)), self.weight(f"{tag}_bias", n_out))

    def heads(self, x: str, heads: int, head_dim: int, perm: list[int]) -> str:
        """[b, s, h*d] -> Reshape to [b, s, h, d] through Shape/Gather/Concat, then Transpose."""
        shape = self.op("Concat", self.dim(x, 0), self.dim(x, 1), self.const(f"hd{self.count}", np.array([heads, head_dim])),
                        axis=0)
        return self.op("Transpose", self.op("Reshape", x, shape), perm=perm)


def bert_encoder_model(hidden: int = 32, heads: int = 4, layers: int = 2, vocab: int = 50, max_pos: int = 128,
                       causal: bool = False) -> onnx.ModelProto:
    """A BERT-style encoder (or, with ``causal``, a GPT-2-style block stack) as torch.onnx exports it:
    input_ids and attention_mask [batch, sequence]; position ids from Range over Shape(input_ids)[1];
    heads split and merged by Reshapes to Concat'ed Shape dims; the padding mask extended by
    Unsqueeze/Cast/Sub/Mul; for ``causal`` a lower-triangular mask built with Trilu from
    ConstantOfShape([seq, seq]) and applied with Where."""
    b = GraphBuilder(3)
    head_dim = hidden // heads
    seq = b.op("Gather", b.op("Shape", "input_ids"), b.const("one", np.array(1, np.int64)))
    positions = b.op("Unsqueeze", b.op("Range", b.const("start", np.array(0, np.int64)), seq,
                                       b.const("delta", np.array(1, np.int64))), b.const("ax0", np.array([0], np.int64)))
    h = b.op("Add", b.op("Gather", b.weight("word_emb", vocab, hidden), "input_ids"),
             b.op("Gather", b.weight("pos_emb", max_pos, hidden), positions))
    h = b.layer_norm(h, hidden, "emb_ln")
    mask = b.op("Cast", b.op("Unsqueeze", "attention_mask", b.const("ax12", np.array([1, 2], np.int64))), to=1)
    mask = b.op("Mul", b.op("Sub", b.const("fone", np.array(1.0, np.float32)), mask),
                b.const("neg", np.array(-10000.0, np.float32)))
    if causal:
        square = b.op("Concat", b.op("Unsqueeze", seq, b.const("ax0b", np.array([0], np.int64))),
                      b.op("Unsqueeze", seq, b.const("ax0c", np.array([0], np.int64))), axis=0)
        ones = b.op("ConstantOfShape", square, value=numpy_helper.from_array(np.array([1], np.int64)))
        lower = b.op("Cast", b.op("Trilu", ones, upper=0), to=9)
    for layer in range(layers):
        tag = f"l{layer}"
        q = b.heads(b.linear(h, hidden, hidden, f"{tag}_q"), heads, head_dim, [0, 2, 1, 3])
        k = b.heads(b.linear(h, hidden, hidden, f"{tag}_k"), heads, head_dim, [0, 2, 3, 1])
        v = b.heads(b.linear(h, hidden, hidden, f"{tag}_v"), heads, head_dim, [0, 2, 1, 3])
        scores = b.op("Div", b.op("MatMul", q, k), b.const(f"{tag}_sqrt", np.array(np.sqrt(head_dim), np.float32)))
        if causal:
            scores = b.op("Where", lower, scores, b.const(f"{tag}_min", np.array(-1e9, np.float32)))
        probs = b.op("Softmax", b.op("Add", scores, mask), axis=-1)
        context = b.op("Transpose", b.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        merged = b.op("Reshape", context, b.op("Concat", b.dim(context, 0), b.dim(context, 1),
                                               b.const(f"{tag}_hid", np.array([hidden], np.int64)), axis=0))
        h = b.layer_norm(b.op("Add", b.linear(merged, hidden, hidden, f"{tag}_o"), h), hidden, f"{tag}_ln1")
        up = b.linear(h, hidden, 4 * hidden, f"{tag}_up")
        gelu = b.op("Mul", b.op("Mul", up, b.op("Add", b.op("Erf", b.op("Div", up, b.const(f"{tag}_s2", np.array(
            np.sqrt(2.0), np.float32)))), b.const(f"{tag}_1", np.array(1.0, np.float32)))),
            b.const(f"{tag}_half", np.array(0.5, np.float32)))
        h = b.layer_norm(b.op("Add", b.linear(gelu, 4 * hidden, hidden, f"{tag}_down"), h), hidden, f"{tag}_ln2")
    b.nodes.append(helper.make_node("Identity", [h], ["last_hidden_state"]))
    graph = helper.make_graph(b.nodes, "bert", [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", hidden])], b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def bert_feeds(batch: int, seq: int, vocab: int = 50, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq - seq // 3:] = 0  # padding in the first row
    return {"input_ids": rng.integers(0, vocab, (batch, seq)).astype(np.int64), "attention_mask": mask}


def vit_model(image: int = 16, patch: int = 4, hidden: int = 32, heads: int = 4, layers: int = 2,
              classes: int = 10) -> onnx.ModelProto:
    """A ViT over a symbolic batch as torch.onnx exports it: a strided Conv patch embedding flattened by
    a Reshape to Concat(Shape(x)[0], hidden, -1), a class token Expanded to the batch, learned
    positions, pre-norm encoder blocks (heads split by Reshape to Shape dims), the class token
    gathered out, LayerNorm and a linear head."""
    b = GraphBuilder(5)
    tokens = (image // patch) ** 2
    head_dim = hidden // heads
    emb = b.op("Conv", "pixel_values", b.weight("patch_w", hidden, 3, patch, patch), b.weight("patch_b", hidden),
               strides=[patch, patch])
    flat = b.op("Reshape", emb, b.op("Concat", b.dim(emb, 0), b.const("hid", np.array([hidden, -1], np.int64)), axis=0))
    seq = b.op("Transpose", flat, perm=[0, 2, 1])
    cls = b.op("Expand", b.weight("cls", 1, 1, hidden), b.op("Concat", b.dim(seq, 0), b.const("one_hid", np.array(
        [1, hidden], np.int64)), axis=0))
    h = b.op("Add", b.op("Concat", cls, seq, axis=1), b.weight("pos", 1, tokens + 1, hidden))
    for layer in range(layers):
        tag = f"v{layer}"
        x = b.layer_norm(h, hidden, f"{tag}_ln1")
        q = b.heads(b.linear(x, hidden, hidden, f"{tag}_q"), heads, head_dim, [0, 2, 1, 3])
        k = b.heads(b.linear(x, hidden, hidden, f"{tag}_k"), heads, head_dim, [0, 2, 3, 1])
        v = b.heads(b.linear(x, hidden, hidden, f"{tag}_v"), heads, head_dim, [0, 2, 1, 3])
        probs = b.op("Softmax", b.op("Mul", b.op("MatMul", q, k), b.const(f"{tag}_scale", np.array(
            1 / np.sqrt(head_dim), np.float32))), axis=-1)
        context = b.op("Transpose", b.op("MatMul", probs, v), perm=[0, 2, 1, 3])
        merged = b.op("Reshape", context, b.op("Concat", b.dim(context, 0), b.dim(context, 1),
                                               b.const(f"{tag}_hid", np.array([hidden], np.int64)), axis=0))
        h = b.op("Add", h, b.linear(merged, hidden, hidden, f"{tag}_o"))
        x = b.layer_norm(h, hidden, f"{tag}_ln2")
        up = b.linear(x, hidden, 2 * hidden, f"{tag}_up")
        h = b.op("Add", h, b.linear(b.op("Relu", up), 2 * hidden, hidden, f"{tag}_down"))
    first = b.op("Gather", b.layer_norm(h, hidden, "final_ln"), b.const("first", np.array(0, np.int64)), axis=1)
    b.nodes.append(helper.make_node("Gemm", [first, b.weight("head_w", classes, hidden), b.weight("head_b", classes)],
                                    ["logits"], transB=1))
    graph = helper.make_graph(b.nodes, "vit", [
        helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch_size", 3, image, image])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", classes])], b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def spatial_cnn_model() -> onnx.ModelProto:
    """cnn_model with the height and width symbolic too (a fully convolutional classifier)."""
    model = cnn_model()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    return model
