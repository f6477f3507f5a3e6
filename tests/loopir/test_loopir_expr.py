"""Loop IR expressions: folding constructors, substitute, linear_coefficient, flat_index, build_loops."""

from __future__ import annotations

import math

import pytest

from compiler.dtypes import DType
from compiler.loopir.compute import Computation, ReduceAxis, acc_var, build_loops, reduce_init
from compiler.loopir.expr import (Binary, Buffer, Cast, Const, Load, Select, Var, add, as_expr, binary, call, cast,
                                  compare, const, div, flat_index, free_vars, linear_coefficient, logical_and,
                                  max_, min_, mul, select, sub, substitute)
from compiler.loopir.stmt import Alloc, For, Seq, Store

i, j, k = Var("i"), Var("j"), Var("k")
X = Buffer("x", DType.F32, (4, 6, 8))
F = DType.F32


# --- folding ------------------------------------------------------------------------------


def test_integer_identities_fold():
    assert add(i, Const(0)) == i
    assert add(Const(0), i) == i
    assert sub(i, Const(0)) == i
    assert mul(i, Const(1)) == i
    assert mul(Const(1), i) == i
    assert mul(i, Const(0)) == Const(0)
    assert mul(Const(0), i) == Const(0)
    assert div(i, Const(1)) == i


def test_integer_constants_fold():
    assert add(Const(2), Const(3)) == Const(5)
    assert mul(Const(4), Const(5)) == Const(20)
    assert sub(Const(2), Const(7)) == Const(-5)
    assert div(Const(7), Const(2)) == Const(3)
    assert min_(Const(3), 1) == Const(1)
    assert max_(Const(3), 1) == Const(3)


def test_constants_gather_to_the_right():
    assert (i + 1) + 2 == Binary("add", i, Const(3))
    assert (i + 1) - 1 == i
    assert i - 3 == Binary("add", i, Const(-3))


def test_negative_division_does_not_fold():
    # Python floors, the emitted sdiv truncates: folding -7 // 2 either way would be wrong for one.
    assert div(Const(-7), Const(2)) == Binary("div", Const(-7), Const(2))


def test_float_arithmetic_does_not_fold_identities():
    # x + 0.0 is not x for x = -0.0, and x * 0.0 is not 0.0 for inf/nan: keep them.
    x = X[i, j, k]
    assert add(x, Const(0.0, F)) == Binary("add", x, Const(0.0, F))
    assert mul(x, Const(0.0, F)) == Binary("mul", x, Const(0.0, F))
    assert mul(x, Const(1.0, F)) == Binary("mul", x, Const(1.0, F))


def test_operator_sugar_types_the_other_operand():
    x = X[i, j, k]
    assert x + 1 == Binary("add", x, Const(1.0, F))
    assert 2 * x == Binary("mul", Const(2.0, F), x)
    assert 1 - x == Binary("sub", Const(1.0, F), x)
    assert (x / 2).b == Const(2.0, F)
    assert -x == call("neg", x)


def test_binary_refuses_mixed_types():
    with pytest.raises(TypeError):
        binary("add", X[i, j, k], i)


def test_select_and_logical_and_fold_constant_conditions():
    x = X[i, j, k]
    zero = Const(0.0, F)
    assert select(Const(True, DType.BOOL), x, zero) == x
    assert select(Const(False, DType.BOOL), x, zero) == zero
    c = compare("lt", i, 3)
    assert logical_and(Const(True, DType.BOOL), c) == c
    assert logical_and(c, Const(True, DType.BOOL)) == c
    assert isinstance(select(c, x, zero), Select)


def test_cast_folds_int_constants_and_identity():
    assert cast(i, DType.I64) is i
    assert cast(Const(3), DType.I32) == Const(3, DType.I32)
    assert cast(Const(2), DType.BOOL) == Const(True, DType.BOOL)
    assert cast(Const(3), DType.F32) == Cast(Const(3), DType.F32)


def test_const_and_as_expr_normalize_values():
    assert const(1, F) == Const(1.0, F)
    assert const(2.7, DType.I32) == Const(2, DType.I32)
    assert const(1, DType.BOOL) == Const(True, DType.BOOL)
    assert as_expr(True) == Const(True, DType.BOOL)
    assert as_expr(3) == Const(3)
    assert as_expr(i) is i


def test_result_dtypes():
    x = X[i, j, k]
    assert compare("lt", x, 0.0).dtype is DType.BOOL
    assert (x + x).dtype is F
    assert call("exp", x).dtype is F
    assert cast(x, DType.F64).dtype is DType.F64
    assert select(compare("lt", x, 0.0), x, x).dtype is F


def test_structural_equality():
    assert X[i, j + 1, k] == X[i, j + 1, k]
    assert X[i, j + 1, k] != X[i, j + 2, k]
    assert hash(X[i, j, k] + 1.0) == hash(X[i, j, k] + 1.0)


# --- substitute -----------------------------------------------------------------------------


def test_substitute_refolds():
    e = X[i * 2 + 1, j, k + 0]
    assert substitute(e, {i: Const(3)}) == X[Const(7), j, k]
    assert substitute(i * 4 + j, {i: Const(0), j: Const(0)}) == Const(0)
    assert substitute(i + j, {j: Const(0)}) == i


def test_substitute_with_expression_and_gathers_constants():
    e = i + 2
    assert substitute(e, {i: j + 3}) == Binary("add", j, Const(5))


def test_substitute_leaves_other_vars_and_identity():
    e = X[i, j, k]
    assert substitute(e, {}) is e
    assert substitute(e, {Var("z"): Const(1)}) is e


def test_substitute_does_not_confuse_same_named_vars_of_other_types():
    acc = acc_var(F)
    e = acc + X[i, j, k]
    assert substitute(e, {Var("acc"): Const(0)}) == e  # an I64 'acc' is another variable
    assert substitute(e, {acc: Const(1.0, F)}) == Const(1.0, F) + X[i, j, k]


# --- linear_coefficient / flat_index --------------------------------------------------------


@pytest.mark.parametrize("expr,var,expected", [
    (i, i, 1),
    (j, i, 0),
    (Const(5), i, 0),
    (i * 3 + j, i, 3),
    (i * 3 + j, j, 1),
    (3 * i - 2 * i, i, 1),
    ((i + j) * 4, i, 4),
    (Const(8) - i, i, -1),
    (i * j, i, None),
    (i // 2, i, None),
    (i % 4, i, None),
    (min_(i, Const(3)), i, None),
    (min_(j, Const(3)) + i, i, 1),
    (cast(cast(i, DType.I32), DType.I64), i, None),
])
def test_linear_coefficient(expr, var, expected):
    assert linear_coefficient(expr, var) == expected


def test_linear_coefficient_through_int64_cast():
    assert linear_coefficient(Cast(i * 2, DType.I64), i) == 2


def test_linear_coefficient_of_indirect_index_is_unknown():
    table = Buffer("t", DType.I64, (10,))
    assert linear_coefficient(table[i] + j, i) is None
    assert linear_coefficient(table[i] + j, j) == 1


def test_flat_index_row_major():
    assert X.strides == (48, 8, 1)
    off = flat_index(X, (i, j, k))
    assert linear_coefficient(off, i) == 48
    assert linear_coefficient(off, j) == 8
    assert linear_coefficient(off, k) == 1
    assert flat_index(X, (Const(1), Const(2), Const(3))) == Const(48 + 16 + 3)
    assert free_vars(off) == {i, j, k}


# --- build_loops ---------------------------------------------------------------------------


def test_build_loops_pointwise_drops_unit_loops():
    y = Buffer("y", F, (1, 5))
    a, b = Var("a"), Var("b")
    stmt = build_loops(Computation(y, (a, b), X[Const(0), Const(0), b] + X[a, Const(1), b]))
    assert stmt == For(b, 5, Store(y, (Const(0), b), X[Const(0), Const(0), b] + X[Const(0), Const(1), b]))


def test_build_loops_reduction_nest():
    y = Buffer("y", F, (4,))
    a, r = Var("a"), Var("r")
    acc = acc_var(F)
    c = Computation(y, (a,), X[a, r, Const(0)], (ReduceAxis(r, 6),), "max", acc * 2.0)
    stmt = build_loops(c)
    tmp = Buffer("y_acc", F, (1,), "local")
    assert stmt == For(a, 4, Alloc(tmp, Seq((
        Store(tmp, (Const(0),), Const(-math.inf, F)),
        For(r, 6, Store(tmp, (Const(0),), max_(tmp[0], X[a, r, Const(0)]))),
        Store(y, (a,), tmp[0] * 2.0),
    ))))


def test_build_loops_region_with_offsets():
    y = Buffer("y", F, (2, 10))
    a, b = Var("a"), Var("b")
    stmt = build_loops(Computation(y, (a, b), X[a, Const(0), b], extents=(2, 3), offsets=(0, 7)))
    assert stmt == For(a, 2, For(b, 3, Store(y, (a, b + 7), X[a, Const(0), b])))


@pytest.mark.parametrize("combiner,dtype,value", [
    ("sum", F, 0.0), ("prod", F, 1.0), ("max", F, -math.inf), ("min", F, math.inf),
    ("max", DType.I32, -(1 << 31)), ("min", DType.U8, 255), ("max", DType.BOOL, False), ("min", DType.BOOL, True),
])
def test_reduce_init(combiner, dtype, value):
    assert reduce_init(combiner, dtype) == const(value, dtype)


def test_computation_validates():
    y = Buffer("y", F, (4,))
    with pytest.raises(ValueError):
        Computation(y, (i, j), Const(0.0, F))
    with pytest.raises(ValueError):
        Computation(y, (i,), Const(0.0, F), (ReduceAxis(k, 2),))
    with pytest.raises(ValueError):
        Computation(y, (i,), Const(0.0, F), (ReduceAxis(k, 2),), "mean")
