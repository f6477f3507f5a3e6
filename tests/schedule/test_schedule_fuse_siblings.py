"""fuse_siblings: adjacent nests over the same rows run as one loop when no iteration sees another's work.

Golden text for the fused form, the nests that must stay apart (a shared scalar, a neighbour row),
and the numbers of a fused kernel against numpy; a softmax lowered from ONNX comes out as one
parallel nest.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from compiler.codegen.target import resolve_target
from compiler.dtypes import DType
from compiler.loopir.expr import Buffer, Const, Var, binary
from compiler.loopir.printer import format_kernel, format_stmt
from compiler.loopir.stmt import For, ForKind, Seq, Store
from compiler.pipeline import BuildLog, _lower
from compiler.schedule.fuse_siblings import fuse_siblings
from helpers_onnx import graph_model, rand
from tests.schedule.test_schedule_transforms import run_nest

ROWS, COLS = 6, 8
x = Buffer("x", DType.F32, (ROWS, COLS))
peak = Buffer("peak", DType.F32, (ROWS,))
y = Buffer("y", DType.F32, (ROWS, COLS))
i, j, c, r = Var("i"), Var("j"), Var("c"), Var("r")


def _row_max(kind: ForKind = ForKind.PARALLEL) -> For:
    init = Store(peak, (i,), Const(float("-inf"), DType.F32))
    fold = For(r, COLS, Store(peak, (i,), binary("max", peak[i], x[i, r])))
    return For(i, ROWS, Seq((init, fold)), kind)


def _minus(peak_row, kind: ForKind = ForKind.PARALLEL) -> For:
    return For(j, ROWS, For(c, COLS, Store(y, (j, c), x[j, c] - peak[peak_row])), kind)


def test_passes_over_the_same_rows_become_one_loop() -> None:
    fused = fuse_siblings(Seq((_row_max(), _minus(j))))
    assert format_stmt(fused) == """\
parallel for i in 0..6 {
  peak[i] = -inf
  for r in 0..8 {
    peak[i] = max(peak[i], x[i, r])
  }
  for c in 0..8 {
    y[i, c] = (x[i, c] - peak[i])
  }
}"""
    data = np.random.default_rng(0).standard_normal((ROWS, COLS)).astype(np.float32)
    out, peaks = np.zeros_like(data), np.zeros(ROWS, np.float32)
    run_nest(fused, {"x": data, "peak": peaks, "y": out}, threads=2)
    np.testing.assert_array_equal(out, data - data.max(axis=1, keepdims=True))


def test_a_neighbour_row_or_a_shared_scalar_keeps_the_nests_apart() -> None:
    # Row j reads row j + 1's max: fused, that max would not be computed yet.
    apart = Seq((_row_max(), _minus(binary("min", j + 1, Const(ROWS - 1, DType.I64)))))
    assert fuse_siblings(apart) == apart
    # One total over every row, then each row scaled by it.
    total = Buffer("total", DType.F32, (1,))
    zero = Const(0, DType.I64)
    summed = For(i, ROWS, Store(total, (zero,), total[zero] + x[i, zero]))
    scaled = For(j, ROWS, Store(y, (j, zero), x[j, zero] / total[zero]))
    assert fuse_siblings(Seq((summed, scaled))) == Seq((summed, scaled))
    # Different kinds (a parallel and a serial loop) or extents stay apart too.
    mixed = Seq((_row_max(), _minus(j, ForKind.SERIAL)))
    assert fuse_siblings(mixed) == mixed


def test_a_row_named_by_quotient_and_remainder_fuses() -> None:
    heads = Buffer("peak2", DType.F32, (2, 3))
    k = Var("k")
    store = For(i, ROWS, Store(heads, (i / 3, i % 3), x[i, Const(0, DType.I64)]), ForKind.PARALLEL)
    read = For(k, ROWS, Store(y, (k, Const(0, DType.I64)), heads[k / 3, k % 3] * 2.0), ForKind.PARALLEL)
    fused = fuse_siblings(Seq((store, read)))
    assert isinstance(fused, For) and format_stmt(fused).count("parallel for") == 1


def test_a_softmax_is_one_parallel_nest() -> None:
    model = graph_model([helper.make_node("Softmax", ["s"], ["p"], axis=-1)], {"s": rand([2, 4, 64, 128])}, ["p"])
    _, program = _lower(model, None, None, None, resolve_target("host"), BuildLog(), None)
    (call,) = program.calls
    text = format_kernel(call.kernel)
    top_level = [line for line in text.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    loops = [line for line in top_level if "for" in line]
    assert len(loops) == 1 and loops[0].startswith("  parallel for"), text
