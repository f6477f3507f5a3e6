"""Float min/max in generated code (compiler/codegen/llvm/emitter.py): NaN in either operand propagates,
as numpy's minimum/maximum and onnxruntime's Max/Min/ReduceMax do, vectorized and lane by lane."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.dtypes import DType
from compiler.loopir.expr import Buffer, Var, binary
from compiler.loopir.stmt import For, ForKind, Store
from tests.schedule.test_schedule_transforms import run_nest


def _operands() -> tuple[np.ndarray, np.ndarray]:
    special = np.array([np.nan, 1.0, np.nan, -np.inf, np.inf, 2.0, -3.0, np.nan], np.float32)
    a = np.concatenate([special, np.roll(special, 3), np.random.default_rng(0).standard_normal(48)]).astype(np.float32)
    b = np.concatenate([np.roll(special, 1), special, np.random.default_rng(1).standard_normal(48)]).astype(np.float32)
    return a, b


@pytest.mark.parametrize("vectorized", [True, False])
@pytest.mark.parametrize("op", ["max", "min"])
def test_nan_propagates_from_either_operand(op: str, vectorized: bool) -> None:
    a, b = _operands()
    x, y, out = (Buffer(n, DType.F32, a.shape) for n in ("a", "b", "out"))
    outer, lane = Var("o"), Var("l")
    at = outer * 16 + lane
    nest = For(outer, a.size // 16, For(lane, 16, Store(out, (at,), binary(op, x[at], y[at])),
                                         ForKind.VECTORIZED if vectorized else ForKind.SERIAL))
    got = np.zeros_like(a)
    run_nest(nest, {"a": a, "b": b, "out": got})
    want = np.maximum(a, b) if op == "max" else np.minimum(a, b)
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got).sum() == (np.isnan(a) | np.isnan(b)).sum() > 0
