"""Model builders for benchmarks, examples and tests (onnx.helper graphs, seeded random weights).

* ``light``: onnx's light model zoo (resnet50, vgg19, ...) with random weights, cut at the logits.
* ``transformer``: a BERT-style encoder, GPT-2-style decoder blocks and a ViT, in exporter op patterns.
* ``synthetic``: an MLP, one big MatMul, a long chain of tiny elementwise ops.
* ``mobilenet``: MobileNetV2 (depthwise separable convs, ReLU6 as Clip, residual Adds).
* ``exported``: models with symbolic batch / sequence / image sizes, shapes computed in the graph.
* ``quantized``: int8 models made from those by onnxruntime's own quantizers (static QDQ, dynamic).

``SUITE`` names the models of the benchmark suite (``tilec bench --suite``, docs/PERFORMANCE.md):
name -> (zero-argument builder, one-line description). ``build(name)`` builds one of them.
"""

from __future__ import annotations

from typing import Callable

import onnx

from compiler.models import light, mobilenet, quantized, synthetic, transformer, trees


def _light(name: str) -> Callable[[], onnx.ModelProto]:
    return lambda: light.light_model(name)


def _resnet50_int8() -> onnx.ModelProto:
    model = light.light_model("resnet50")
    return quantized.quantize_static_qdq(model, quantized.random_calibration(model))


def _bert_base() -> onnx.ModelProto:
    return transformer.encoder(layers=12, hidden=768, heads=12, seq=128)


SUITE: dict[str, tuple[Callable[[], onnx.ModelProto], str]] = {
    "resnet50": (_light("resnet50"), "ResNet-50 (light zoo), 1x3x224x224"),
    "inception_v1": (_light("inception_v1"), "Inception v1 / GoogLeNet (light zoo), 1x3x224x224"),
    "densenet121": (_light("densenet121"), "DenseNet-121 (light zoo), 1x3x224x224"),
    "squeezenet": (_light("squeezenet"), "SqueezeNet 1.0 (light zoo), 1x3x224x224"),
    "shufflenet": (_light("shufflenet"), "ShuffleNet v1 (light zoo), 1x3x224x224"),
    "vgg19": (_light("vgg19"), "VGG-19 (light zoo), 1x3x224x224"),
    "mobilenet_v2": (mobilenet.mobilenet_v2, "MobileNetV2 (depthwise separable convs), 1x3x224x224"),
    "mlp": (synthetic.mlp, "MLP 784-4096-4096-10, batch 64"),
    "matmul1024": (synthetic.matmul, "one 1024x1024x1024 MatMul"),
    "bert_base": (_bert_base, "BERT-base-shaped encoder: 12 layers, hidden 768, 12 heads, seq 128, batch 1"),
    "bert_small": (lambda: transformer.encoder(layers=4, hidden=256, heads=4, seq=128),
                   "small BERT encoder: 4 layers, hidden 256, 4 heads, seq 128, batch 1"),
    "resnet50_int8": (_resnet50_int8, "ResNet-50 by onnxruntime's quant_pre_process + quantize_static: QDQ, "
                                      "per-channel s8 weights, u8 activations, 4 random calibration batches"),
    "bert_base_int8": (lambda: quantized.quantize_dynamic_int8(_bert_base()),
                       "bert_base by onnxruntime's quantize_dynamic (s8 weights, MatMulInteger)"),
    "elementwise_chain": (synthetic.elementwise_chain, "200 small elementwise ops on 1x64 (per-op overhead)"),
    "random_forest_b1": (lambda: trees.random_forest(batch=1),
                         "RandomForest-shaped TreeEnsembleClassifier: 200 trees, depth 8, 20 features, 3 classes, batch 1"),
    "random_forest_b1024": (lambda: trees.random_forest(batch=1024), "the same forest, batch 1024"),
    "lightgbm_b1": (lambda: trees.gradient_boosting(batch=1),
                    "LightGBM-shaped TreeEnsembleRegressor: 500 trees of 31 leaves, 20 features, batch 1"),
    "lightgbm_b1024": (lambda: trees.gradient_boosting(batch=1024), "the same ensemble, batch 1024"),
}


def build(name: str) -> onnx.ModelProto:
    """The suite model ``name``; raises KeyError naming the known ones."""
    if name not in SUITE:
        raise KeyError(f"unknown suite model {name!r}; known: {', '.join(SUITE)}")
    return SUITE[name][0]()
