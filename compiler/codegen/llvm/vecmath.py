"""Vectorizable float32 exp, erf and tanh built from LLVM IR arithmetic.

LLVM lowers ``llvm.exp.v16f32`` (and calls to ``erff``/``tanhf``) to one libm call per
lane: a softmax or an Erf-Gelu then costs several ns per element. These versions are
straight-line vector code (range reduction, polynomials, exponent-field scaling) that
work lane-wise on scalars or vectors alike.

Accuracy (float32, measured against float64 over the whole range in
tests/codegen/test_codegen_vecmath.py): exp within 2 ulp, erf and tanh within 3e-7
absolute and 2e-6 relative. Special values follow IEEE/libm: NaN propagates,
exp(+inf) = +inf, exp(-inf) = 0, erf/tanh(+-inf) = +-1.

The polynomial coefficients were fitted for tilec (least squares in float64 on
Chebyshev nodes, error far below float32 rounding): erf(x)/x and tanh(x)/x as
polynomials in x^2 near 0; -log(erfc(a)) as a polynomial in a on [0.875, 4].
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import llvmlite.ir as ir

from compiler.codegen.llvm.types import I32

F32 = ir.FloatType()

_LOG2E = 1.4426950408889634
# ln 2 split so that n * _LN2_HI is exact for |n| < 2^9 (Cody-Waite).
_LN2_HI = 0.693145751953125
_LN2_LO = 1.4286068203094173e-06
_EXP_MAX = 88.72283  # exp overflows float32 above ln(FLT_MAX) = 88.7228391
_EXP_MIN = -104.0  # below this exp is 0 in float32 (subnormals end at -103.28)
_EXP_TAYLOR = [1 / math.factorial(k) for k in range(8)]

_ERF_SMALL_LIMIT = 0.875
_ERF_SMALL = [1.1283791670102532, -0.37612636911430986, 0.11283743982656852, -0.02686214359760214,
              0.005208073283575593, -0.0008225846430296059, 8.73750619051728e-05]
_ERF_LARGE = [-0.0002966554997062242, 1.1301408300607818, 0.6319799572187826, 0.10993910225836277,
              -0.026343140412741592, 0.004732852206518762, -0.0005912423424794929, 4.541467636668874e-05,
              -1.6054132291303276e-06]
_ERF_ONE_FROM = 4.0  # erf(x) rounds to 1.0f from x = 3.92

_TANH_SMALL_LIMIT = 0.625
_TANH_SMALL = [0.9999999983352154, -0.3333327764209961, 0.13331417870511533, -0.053739793419261474,
               0.020642109157231536, -0.00570981419117869]
_TANH_ONE_FROM = 9.5  # tanh(x) rounds to 1.0f from x = 9.01


class _Math:
    """Lane-wise float32 helpers on one builder; values are f32 scalars or <N x float> vectors."""

    def __init__(self, b: ir.IRBuilder, module: ir.Module, like: ir.Value, features: tuple[str, ...]) -> None:
        self.b = b
        self.module = module
        self.lanes = like.type.count if isinstance(like.type, ir.VectorType) else None
        # llvm.ldexp is vscalefps with AVX-512 and a libm call per lane elsewhere.
        self.scales_in_one_step = "avx512f" in features and self.lanes is not None

    def f(self, value: float) -> ir.Value:
        c = ir.Constant(F32, value)
        return c if self.lanes is None else ir.Constant(ir.VectorType(F32, self.lanes), [c] * self.lanes)

    def i(self, value: int) -> ir.Value:
        c = ir.Constant(I32, value)
        return c if self.lanes is None else ir.Constant(ir.VectorType(I32, self.lanes), [c] * self.lanes)

    def intrinsic(self, name: str, *args: ir.Value) -> ir.Value:
        t = args[0].type
        suffix = f"v{self.lanes}f32" if self.lanes is not None else "f32"
        full = f"{name}.{suffix}"
        fn = self.module.globals.get(full) or ir.Function(self.module, ir.FunctionType(t, [t] * len(args)), full)
        return self.b.call(fn, list(args))

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return self.intrinsic("llvm.fma", a, b, c)

    def horner(self, x: ir.Value, coefficients: Sequence[float]) -> ir.Value:
        """c0 + c1 x + c2 x^2 + ... (coefficients lowest degree first)."""
        acc = self.f(coefficients[-1])
        for c in reversed(coefficients[:-1]):
            acc = self.fma(acc, x, self.f(c))
        return acc

    def select_where(self, op: str, a: ir.Value, b: ir.Value, then: ir.Value, otherwise: ir.Value) -> ir.Value:
        return self.b.select(self.b.fcmp_ordered(op, a, b), then, otherwise)

    def keep_nan(self, x: ir.Value, result: ir.Value) -> ir.Value:
        return self.b.select(self.b.fcmp_unordered("uno", x, x), x, result)

    def vtype(self, element: ir.Type) -> ir.Type:
        return element if self.lanes is None else ir.VectorType(element, self.lanes)

    def pow2(self, n: ir.Value) -> ir.Value:
        """2^n for integer n in [-126, 127], built in the exponent field."""
        bits = self.b.shl(self.b.add(n, self.i(127)), self.i(23))
        return self.b.bitcast(bits, self.vtype(F32))

    def exp(self, x: ir.Value) -> ir.Value:
        # Compare-and-select clamps are one vmaxps/vminps each (llvm.maxnum's NaN rule costs a blend
        # more); a NaN lane is restored at the end.
        clamped = self.select_where(">", x, self.f(_EXP_MIN), x, self.f(_EXP_MIN))
        clamped = self.select_where("<", clamped, self.f(_EXP_MAX), clamped, self.f(_EXP_MAX))
        n = self.intrinsic("llvm.roundeven", self.b.fmul(clamped, self.f(_LOG2E)))
        r = self.fma(n, self.f(-_LN2_HI), clamped)
        r = self.fma(n, self.f(-_LN2_LO), r)
        p = self.horner(r, _EXP_TAYLOR)
        k = self.b.fptosi(n, self.vtype(I32))
        if self.scales_in_one_step:
            # vscalefps: p * 2^k in one instruction, subnormal results included.
            scaled = self.ldexp(p, k)
        else:
            # 2^k in two halves: k reaches -150 (subnormal results), beyond one exponent field.
            half = self.b.ashr(k, self.i(1))
            scaled = self.b.fmul(self.b.fmul(p, self.pow2(half)), self.pow2(self.b.sub(k, half)))
        scaled = self.select_where(">", x, self.f(_EXP_MAX), self.f(math.inf), scaled)
        return self.keep_nan(x, scaled)

    def ldexp(self, x: ir.Value, k: ir.Value) -> ir.Value:
        suffix = f"v{self.lanes}f32.v{self.lanes}i32" if self.lanes is not None else "f32.i32"
        name = f"llvm.ldexp.{suffix}"
        fn = self.module.globals.get(name) or ir.Function(self.module, ir.FunctionType(x.type, [x.type, k.type]), name)
        return self.b.call(fn, [x, k])

    def copysign(self, magnitude: ir.Value, sign_of: ir.Value) -> ir.Value:
        return self.intrinsic("llvm.copysign", magnitude, sign_of)

    def erf(self, x: ir.Value) -> ir.Value:
        a = self.intrinsic("llvm.fabs", x)
        small = self.b.fmul(a, self.horner(self.b.fmul(a, a), _ERF_SMALL))
        a_large = self.intrinsic("llvm.minnum", a, self.f(_ERF_ONE_FROM))
        large = self.b.fsub(self.f(1.0), self.exp(self.b.fneg(self.horner(a_large, _ERF_LARGE))))
        magnitude = self.select_where("<", a, self.f(_ERF_SMALL_LIMIT), small, large)
        return self.keep_nan(x, self.copysign(magnitude, x))

    def tanh(self, x: ir.Value) -> ir.Value:
        a = self.intrinsic("llvm.fabs", x)
        small = self.b.fmul(a, self.horner(self.b.fmul(a, a), _TANH_SMALL))
        doubled = self.b.fmul(self.intrinsic("llvm.minnum", a, self.f(_TANH_ONE_FROM)), self.f(2.0))
        large = self.b.fsub(self.f(1.0), self.b.fdiv(self.f(2.0), self.b.fadd(self.exp(doubled), self.f(1.0))))
        magnitude = self.select_where("<", a, self.f(_TANH_SMALL_LIMIT), small, large)
        return self.keep_nan(x, self.copysign(magnitude, x))


FUNCTIONS: dict[str, Callable[[_Math, ir.Value], ir.Value]] = {
    "exp": _Math.exp, "erf": _Math.erf, "tanh": _Math.tanh,
}


def emit(name: str, b: ir.IRBuilder, module: ir.Module, x: ir.Value, features: tuple[str, ...] = ()) -> ir.Value:
    """``name(x)`` for a float32 scalar or vector ``x`` (``name`` in ``FUNCTIONS``), using the instructions
    of the target's LLVM ``features`` where they pay."""
    return FUNCTIONS[name](_Math(b, module, x, features), x)
