"""Ops on element types other than float32: float64, float16 and integers.

Tolerances: float64 rtol=1e-9 atol=1e-10 (the same math, in double); float16
rtol=atol=1e-2, since float16 has a 2^-11 (~5e-4) unit roundoff and the
compiled code and numpy may round intermediate results differently (numpy
upcasts some float16 ops to float32 internally, the compiled code may not);
MatMul sums 13 products, so its error is a few of those roundings.
Integer results must match exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, rand

TOL = {"float64": {"rtol": 1e-9, "atol": 1e-10}, "float16": {"rtol": 1e-2, "atol": 1e-2}}

CASES = {
    "Add": lambda dt: ({"a": rand((3, 37), dtype=dt), "b": rand((37,), seed=1, dtype=dt)}, {}, {}),
    "MatMul": lambda dt: ({"a": rand((7, 13), dtype=dt), "b": rand((13, 19), seed=1, dtype=dt)}, {}, {}),
    "Softmax": lambda dt: ({"a": rand((4, 21), dtype=dt)}, {}, {}),
    "ReduceSum": lambda dt: ({"a": rand((6, 21), dtype=dt)}, {}, {"keepdims": 0}),
    "Conv": lambda dt: ({"a": rand((1, 3, 7, 7), dtype=dt)}, {"w": rand((9, 3, 3, 3), seed=2, dtype=dt)},
                        {"pads": [1, 1, 1, 1]}),
    "MaxPool": lambda dt: ({"a": rand((1, 3, 7, 7), dtype=dt)}, {}, {"kernel_shape": [3, 3]}),
    "Sigmoid": lambda dt: ({"a": rand((5, 33), dtype=dt)}, {}, {}),
}


@pytest.mark.parametrize("dtype", ["float64", "float16"])
@pytest.mark.parametrize("op", sorted(CASES))
def test_float_dtypes(check, op, dtype):
    feeds, consts, attrs = CASES[op](dtype)
    model = node_model(op, list(feeds) + list(consts), feeds, consts=consts, attrs=attrs)
    check(model, feeds, **TOL[dtype])


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceSum", "ReduceMin"])
def test_integer_reductions(check, op):
    x = (rand((6, 21), seed=3) * 9).astype(np.int64)
    check(node_model(op, ["x"], {"x": x}, attrs={"keepdims": 0}), {"x": x})


def test_where_int64(check):
    feeds = {"c": rand((6, 21), seed=4) > 0, "a": (rand((6, 21), seed=5) * 9).astype(np.int64),
             "b": (rand((21,), seed=6) * 9).astype(np.int64)}
    check(node_model("Where", ["c", "a", "b"], feeds), feeds)


def test_transpose_uint8_and_concat_bool(check):
    x = (rand((3, 5, 7), seed=7) * 100).astype(np.uint8)
    check(node_model("Transpose", ["x"], {"x": x}, attrs={"perm": [2, 0, 1]}), {"x": x})
    a, b = rand((2, 3), seed=8) > 0, rand((2, 5), seed=9) > 0
    check(node_model("Concat", ["a", "b"], {"a": a, "b": b}, attrs={"axis": 1}), {"a": a, "b": b})
