"""split_grouped_index: an output index read through ``m // k`` becomes (group, member) indices."""

from __future__ import annotations

import numpy as np

import compiler  # noqa: F401  (sets up llvmlite's IR layer)
from compiler.codegen.target import resolve_target
from compiler.dtypes import DType
from compiler.loopir.compute import Computation, ReduceAxis
from compiler.loopir.expr import Binary, Buffer, Var, walk
from compiler.schedule.defaults import schedule
from compiler.schedule.groups import split_grouped_index
from tests.schedule.test_schedule_transforms import run_nest

m, j, r = Var("m"), Var("j"), Var("r")
GROUPS, PER_GROUP, IN_PER_GROUP, COLS = 3, 20, 7, 40


def _grouped_matmul() -> tuple[Computation, Buffer, Buffer]:
    # out[m, j] = sum_c x[(m // 20) * 7 + c, j] * w[c, m]: a grouped 1x1 conv over 40 pixels.
    x = Buffer("x", DType.F32, (GROUPS * IN_PER_GROUP, COLS))
    w = Buffer("w", DType.F32, (IN_PER_GROUP, GROUPS * PER_GROUP))
    out = Buffer("out", DType.F32, (GROUPS * PER_GROUP, COLS))
    body = x[(m // PER_GROUP) * IN_PER_GROUP + r, j] * w[r, m]
    return Computation(out, (m, j), body, (ReduceAxis(r, IN_PER_GROUP),), "sum"), x, w


def test_split_removes_the_division():
    c, _, _ = _grouped_matmul()
    split = split_grouped_index(c)
    assert [v.name for v in split.index] == ["m_g", "m_w", "j"]
    assert split.output.shape == (GROUPS, PER_GROUP, COLS) and split.output.name == "out"
    assert not any(isinstance(e, Binary) and e.op in ("div", "rem") for e in walk(split.body))


def test_index_without_division_is_kept():
    c, _, _ = _grouped_matmul()
    plain = Computation(c.output, c.index, c.body.b * c.body.b, c.axes, "sum")
    assert split_grouped_index(plain) is plain


def test_scheduled_grouped_contraction_values():
    c, x, w = _grouped_matmul()
    rng = np.random.default_rng(0)
    xv, wv = rng.standard_normal(x.shape).astype(np.float32), rng.standard_normal(w.shape).astype(np.float32)
    got = np.full(c.output.shape, np.nan, np.float32)
    run_nest(schedule(c, resolve_target("host")).body, {"x": xv, "w": wv, "out": got})
    want = np.concatenate([wv[:, g * PER_GROUP:(g + 1) * PER_GROUP].T @ xv[g * IN_PER_GROUP:(g + 1) * IN_PER_GROUP]
                           for g in range(GROUPS)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
