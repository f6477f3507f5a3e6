"""RNN/GRU/LSTM test models and onnxruntime's results for them (tests/frontend and tests/ops share these)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}
T, B, I, H = 4, 3, 5, 6


def recurrent_model(op: str, attrs: dict[str, Any], *, bias: bool = True, initial: bool = True,
                    lens: list[int] | None = None, peepholes: bool = False, layout: int = 0,
                    opset: int = 17, steps: int = T, batch: int = B,
                    symbolic: bool = False) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """One ``op`` node with every output; the same random data whatever the layout. ``symbolic``: the
    sequence and batch dims are declared as ``T`` and ``N`` (the feeds have ``steps`` and ``batch``)."""
    dirs = 2 if attrs.get("direction") == "bidirectional" else 1
    rng = np.random.default_rng(0)
    T, B = steps, batch
    feeds = {"X": rng.standard_normal((T, B, I)).astype(np.float32)}
    inits = {"W": 0.5 * rng.standard_normal((dirs, GATES[op] * H, I)).astype(np.float32),
             "R": 0.5 * rng.standard_normal((dirs, GATES[op] * H, H)).astype(np.float32)}
    names = ["X", "W", "R", "B" if bias else "", "L" if lens else "", "H0" if initial else ""]
    if bias:
        inits["B"] = rng.standard_normal((dirs, 2 * GATES[op] * H)).astype(np.float32)
    if lens:
        feeds["L"] = np.array(lens, np.int32)
    if initial:
        feeds["H0"] = rng.standard_normal((dirs, B, H)).astype(np.float32)
    outputs = ["Y", "Y_h"]
    if op == "LSTM":
        outputs.append("Y_c")
        names += ["C0" if initial else "", "P" if peepholes else ""]
        if initial:
            feeds["C0"] = rng.standard_normal((dirs, B, H)).astype(np.float32)
        if peepholes:
            inits["P"] = rng.standard_normal((dirs, 3 * H)).astype(np.float32)
    while not names[-1]:
        names.pop()
    if layout:
        feeds = {k: v.transpose(1, 0, 2) if k in ("X", "H0", "C0") else v for k, v in feeds.items()}
        attrs = {**attrs, "layout": 1}
    if symbolic:
        T, B = "T", "N"
    shapes = {"Y": [B, T, dirs, H] if layout else [T, dirs, B, H]}
    node = helper.make_node(op, names, outputs, name="rec", hidden_size=H, **attrs)
    declared = {"X": [B, T, I] if layout else [T, B, I], "L": [B],
                **{k: [B, dirs, H] if layout else [dirs, B, H] for k in ("H0", "C0")}}
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), declared[k])
         for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, shapes.get(o, [B, dirs, H] if layout else [dirs, B, H]))
         for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model, feeds


def ort_results(op: str, attrs: dict[str, Any], layout: int, **kw: Any) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    model, feeds = recurrent_model(op, attrs, **kw)
    results = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    if layout:
        results = [r.transpose(2, 0, 1, 3) if r.ndim == 4 else r.transpose(1, 0, 2) for r in results]
    return results
