"""The nine models of onnx's backend/test/data/light, with random weights, cut at their logits.

The files ship with onnx; their weights are ConstantOfShape nodes (all-constant
tensors), which would make a numerical comparison meaningless. ``light_model``
replaces each such weight with seeded random values scaled like a trained
network's (He-style for conv/linear weights, positive BatchNorm variance), and
makes the input of the final Softmax the model output, so logits are compared.

``light_model(name, seed)`` builds one (``name`` from ``LIGHT_MODELS``); ``random_input(model, seed)``
gives standard-normal feeds for its graph inputs.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_DIR = pathlib.Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
LIGHT_MODELS = ("bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                "squeezenet", "vgg19", "zfnet512")


def _random_weight(shape: tuple[int, ...], consumer: onnx.NodeProto | None, slot: int,
                   rng: np.random.Generator) -> np.ndarray:
    op = consumer.op_type if consumer is not None else ""
    std = 0.1
    if op in ("Conv", "Gemm", "MatMul") and slot == 1 and len(shape) >= 2:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else int(shape[0] if op == "MatMul" else shape[1])
        if op == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in consumer.attribute)
            fan_in = int(shape[1] if trans_b else shape[0])
        std = np.sqrt(2.0 / max(fan_in, 1))
    elif op == "BatchNormalization" and slot in (1, 4):  # scale and variance: positive, near 1
        return rng.random(shape, dtype=np.float32) + np.float32(0.5)
    # float32 straight from the generator: vgg19 has 143M weights.
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    model = onnx.load(str(LIGHT_DIR / f"light_{name}.onnx"))
    graph = model.graph
    rng = np.random.default_rng(seed)
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    consumers = {}
    for node in graph.node:
        for slot, name_in in enumerate(node.input):
            consumers.setdefault(name_in, (node, slot))
    weights = [node for node in graph.node if node.op_type == "ConstantOfShape" and node.input[0] in consts]
    kept = [node for node in graph.node if node not in weights]
    del graph.node[:]
    graph.node.extend(kept)
    # These old files list the weights as graph inputs too, so shapes can be inferred now, while
    # the model is small (inference copies the model).
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    for node in weights:
        shape = tuple(int(d) for d in consts[node.input[0]])
        consumer, slot = consumers.get(node.output[0], (None, 0))
        value = _random_weight(shape, consumer, slot, rng)
        # Filled in place: building a TensorProto and appending it would copy the bytes twice more.
        tensor = graph.initializer.add()
        tensor.name, tensor.data_type, tensor.raw_data = node.output[0], onnx.TensorProto.FLOAT, value.tobytes()
        tensor.dims.extend(shape)
    # The weights (and the old files' other initializers) are constants, not inputs.
    names = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in names]
    del graph.input[:]
    graph.input.extend(inputs)
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    if softmax:
        # Softmax keeps its input's shape: the logits have the probabilities' type.
        info = onnx.ValueInfoProto()
        info.CopyFrom(graph.output[0])
        info.name = softmax[-1].input[0]
        graph.node.remove(softmax[-1])
        del graph.output[:]
        graph.output.append(info)
    model.ir_version = 8  # initializers need not be listed as inputs (IR >= 4); onnxruntime reads 8
    return model


def random_input(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds
