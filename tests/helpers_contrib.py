"""com.microsoft contrib-op test models and onnxruntime's results (tests/frontend and tests/ops share these)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

from helpers_onnx import ort_reference

MS = "com.microsoft"


def contrib_model(nodes: Sequence[onnx.NodeProto], feeds: Mapping[str, np.ndarray], outputs: Sequence[str],
                  consts: Mapping[str, np.ndarray] | None = None, opset: int = 17,
                  expected: Sequence[np.ndarray] | None = None) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    """A model importing com.microsoft, and onnxruntime's results for ``feeds`` (the outputs' types come from
    them), or ``expected`` for an op onnxruntime runs on GPUs only."""
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (consts or {}).items()]
    inputs = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feeds.items()]

    def build(infos: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
        graph = helper.make_graph(list(nodes), "contrib", inputs, infos, inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(MS, 1)])
        model.ir_version = 8
        return model

    if expected is None:
        expected = ort_reference(build([helper.make_empty_tensor_value_info(o) for o in outputs]), feeds)
    infos = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(e.dtype), e.shape)
             for o, e in zip(outputs, expected)]
    return build(infos), list(expected)


def contrib_node(op: str, inputs: Sequence[str], outputs: Sequence[str] = ("y",), domain: str = MS,
                 **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, list(inputs), list(outputs), name=op.lower(), domain=domain, **attrs)


def single_node_model(op: str, feeds: Mapping[str, np.ndarray], consts: Mapping[str, np.ndarray] | None = None,
                      outputs: Sequence[str] = ("y",), inputs: Sequence[str] | None = None, opset: int = 17,
                      domain: str = MS, expected: Sequence[np.ndarray] | None = None,
                      **attrs: Any) -> tuple[onnx.ModelProto, list[np.ndarray]]:
    """One contrib node reading ``inputs`` (default: the feeds, then the constants; '' for an omitted one)
    into ``outputs`` ('' for an unwanted one), and onnxruntime's results (or ``expected``)."""
    names = list(inputs) if inputs is not None else [*feeds, *(consts or {})]
    node = contrib_node(op, names, outputs, domain, **attrs)
    return contrib_model([node], feeds, [o for o in outputs if o], consts, opset, expected)


def nbits_weights(n: int, k: int, bits: int, block: int, seed: int) -> dict[str, np.ndarray]:
    """MatMulNBits' constants: packed codes [N, blocks, block * bits / 8], scales [N * blocks], packed zero points."""
    rng = np.random.default_rng(seed)
    blocks = -(-k // block)
    zero_bytes = -(-blocks * bits // 8)
    return {"w": rng.integers(0, 256, (n, blocks, block * bits // 8)).astype(np.uint8),
            "s": (rng.random(n * blocks) * 0.1 + 0.01).astype(np.float32),
            "z": rng.integers(0, 256, (n * zero_bytes,)).astype(np.uint8)}
