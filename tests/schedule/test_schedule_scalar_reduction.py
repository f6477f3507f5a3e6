"""A reduction to one value (every axis, keepdims or not) runs in vector lanes with a fold, not as a
scalar loop: DynamicQuantizeLinear's min and max of a whole activation tensor were 1.6 ms each in an
int8 BERT layer. Numbers against onnx's reference, NaN in the vector part and in the tail included."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from compiler.codegen.target import resolve_target
from compiler.loopir.printer import format_kernel
from compiler.pipeline import BuildLog, _lower
from helpers_onnx import graph_model, reference
from tests.lowering.test_lowering_driver import run_program


def _model(op: str, x: np.ndarray):
    return graph_model([helper.make_node(op, ["x"], ["y"], keepdims=0)], {"x": x}, ["y"])


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin", "ReduceSum"])
@pytest.mark.parametrize("nan_at", [None, 5, 37 * 41 - 3])
def test_whole_tensor_reduction_in_lanes(op: str, nan_at: int | None) -> None:
    x = np.random.default_rng(0).standard_normal((37, 41)).astype(np.float32)
    if nan_at is not None:
        x.reshape(-1)[nan_at] = np.nan
    model = _model(op, x)
    _, program = _lower(model, None, None, None, resolve_target("host"), BuildLog(), None)
    (call,) = program.calls
    text = format_kernel(call.kernel)
    assert "_lanes" in text and "vectorized for" in text, text
    got = run_program(program, [x])[0]
    want = reference(model, {"x": x})[0]
    assert np.isnan(got) == np.isnan(want) == (nan_at is not None)
    np.testing.assert_allclose(got, want, rtol=1e-5)
