"""Size expressions: symbolic dims of buffers, their strides, evaluation, bounds, and printing."""

from __future__ import annotations

import pytest

from compiler.dtypes import DType
from compiler.loopir.compute import Computation, build_loops
from compiler.loopir.expr import Buffer, Var, flat_index, linear_coefficient
from compiler.loopir.printer import format_kernel
from compiler.loopir.sizes import (SizeRange, SizeVar, evaluate_size, may_exceed_one, nominal, size_mul, size_nbytes,
                                   size_prod, static_value)
from compiler.loopir.stmt import ForKind, Kernel
from compiler.schedule.transforms import annotate, split

BATCH, SEQ = SizeVar("batch"), SizeVar("seq")


def test_a_size_variable_is_not_a_loop_variable_of_the_same_name() -> None:
    assert SizeVar("i0") != Var("i0") and SizeVar("batch") == BATCH


def test_strides_of_a_symbolic_buffer_and_affine_analysis() -> None:
    x = Buffer("x", DType.F32, (BATCH, SEQ, 768))
    assert x.strides[1:] == (768, 1) and evaluate_size(x.strides[0], {"seq": 5}) == 5 * 768
    i, j, k = Var("i"), Var("j"), Var("k")
    offset = flat_index(x, (i, j, k))
    # Along the static inner dims the analysis still sees constant strides: vectorization is decided there.
    assert linear_coefficient(offset, k) == 1 and linear_coefficient(offset, j) == 768
    assert linear_coefficient(offset, i) is None
    assert evaluate_size(x.numel, {"batch": 2, "seq": 5}) == 2 * 5 * 768


def test_arithmetic_keeps_static_sizes_ints() -> None:
    assert size_mul(3, 4) == 12 and size_prod([2, 3, 4]) == 24 and static_value(size_mul(BATCH, 1)) is None
    assert size_nbytes(DType.F32, 10) == 40 and evaluate_size(size_nbytes(DType.F32, BATCH), {"batch": 3}) == 12
    assert evaluate_size(size_nbytes(DType.I4, BATCH), {"batch": 3}) == 2  # two 4-bit elements per byte
    assert may_exceed_one(BATCH) and not may_exceed_one(1)


def test_nominal_values_and_ranges() -> None:
    assert nominal(size_mul(BATCH, 2), {"batch": SizeRange(1, 8)}) == 16
    with pytest.raises(ValueError, match="empty size range"):
        SizeRange(5, 2)


def test_a_symbolic_nest_prints_its_extents_and_splits_into_whole_vectors_and_halving_chunks() -> None:
    """The tail of a symbolic split (fewer than 16) runs as chunks of 8, 4, 2 and 1 lanes, each taken when
    its bit of the tail's length is set."""
    x = Buffer("x", DType.F32, (BATCH, SEQ))
    y = Buffer("y", DType.F32, (BATCH, SEQ))
    i, j = Var("i"), Var("j")
    nest = annotate(split(build_loops(Computation(y, (i, j), x[i, j] + 1.0)), "j", 16), "j_i", ForKind.VECTORIZED)
    text = format_kernel(Kernel("k", (x, y), nest))
    assert text == """kernel k (x: float32[batch, seq], y: float32[batch, seq]) {
  for i in 0..batch {
    for j_o in 0..seq / 16 {
      vectorized for j_i in 0..16 {
        y[i, ((j_o * 16) + j_i)] = (x[i, ((j_o * 16) + j_i)] + 1.0)
      }
    }
    for j_c8 in 0..(seq - ((seq / 16) * 16)) / 8 {
      vectorized for j_i in 0..8 {
        y[i, (j_i + ((seq / 16) * 16))] = (x[i, (j_i + ((seq / 16) * 16))] + 1.0)
      }
    }
    for j_c4 in 0..((seq - ((seq / 16) * 16)) / 4) - (((seq - ((seq / 16) * 16)) / 8) * 2) {
      vectorized for j_i in 0..4 {
        y[i, (j_i + (((seq / 16) * 16) + (((seq - ((seq / 16) * 16)) / 8) * 8)))] = (x[i, (j_i + (((seq / 16) * 16) + (((seq - ((seq / 16) * 16)) / 8) * 8)))] + 1.0)
      }
    }
    for j_c2 in 0..((seq - ((seq / 16) * 16)) / 2) - (((seq - ((seq / 16) * 16)) / 4) * 2) {
      vectorized for j_i in 0..2 {
        y[i, (j_i + (((seq / 16) * 16) + (((seq - ((seq / 16) * 16)) / 4) * 4)))] = (x[i, (j_i + (((seq / 16) * 16) + (((seq - ((seq / 16) * 16)) / 4) * 4)))] + 1.0)
      }
    }
    for j_c1 in 0..(seq - ((seq / 16) * 16)) - (((seq - ((seq / 16) * 16)) / 2) * 2) {
      vectorized for j_i in 0..1 {
        y[i, (j_i + (((seq / 16) * 16) + (((seq - ((seq / 16) * 16)) / 2) * 2)))] = (x[i, (j_i + (((seq / 16) * 16) + (((seq - ((seq / 16) * 16)) / 2) * 2)))] + 1.0)
      }
    }
  }
}"""
