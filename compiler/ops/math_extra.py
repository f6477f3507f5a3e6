"""More elementwise ops: trigonometry, predicates, logic and bitwise ops, Mod, BitShift, activations.

Same shape as :mod:`compiler.ops.elementwise`: one scalar formula per op, applied
with numpy broadcasting by ``_broadcasting``.
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Expr, binary, call, cast, compare, const, logical_and, max_, min_, select
from compiler.loopir.sizes import differs, has_values
from compiler.ops.api import LoweringContext, Tensor
from compiler.ops.elementwise import Formula, _broadcasting, _c
from compiler.ops.registry import OpDef, defop
from compiler.ops.shape import onnx_cast


def _f(ctx: LoweringContext, name: str, default: float) -> float:
    return float(ctx.attr(name, default))


def _is_inf(ctx: LoweringContext, x: Expr) -> Expr:
    pos, neg = call("isinf_pos", x, dtype=DType.BOOL), call("isinf_neg", x, dtype=DType.BOOL)
    want_pos, want_neg = ctx.attr("detect_positive", 1), ctx.attr("detect_negative", 1)
    if want_pos and want_neg:
        return binary("or", pos, neg)
    return pos if want_pos else neg if want_neg else const(False, DType.BOOL)


def _mod(ctx: LoweringContext, a: Expr, b: Expr) -> Expr:
    r = binary("rem", a, b)  # C semantics: the sign of the dividend (ONNX fmod=1)
    if ctx.attr("fmod", 0) or not a.dtype.is_signed:
        return r
    zero = const(0, a.dtype)
    # Python semantics (fmod=0): the sign of the divisor.
    wrong_sign = logical_and(compare("ne", r, zero), compare("ne", compare("lt", r, zero), compare("lt", b, zero)))
    return select(wrong_sign, r + b, r)


def _bitshift(ctx: LoweringContext, a: Expr, b: Expr) -> Expr:
    left = ctx.attr("direction") == "LEFT"
    zero = const(0, a.dtype)
    # Shifts outside [0, width) are 0 (a right shift of a negative value by >= width is -1).
    out_of_range = binary("or", compare("ge", b, const(a.dtype.bits, b.dtype)), compare("lt", b, zero))
    too_far = select(compare("lt", a, zero), const(-1, a.dtype), zero) if a.dtype.is_signed and not left else zero
    return select(out_of_range, too_far, binary("shl" if left else "shr", a, b))


def _selu(ctx: LoweringContext, x: Expr) -> Expr:
    alpha, gamma = _f(ctx, "alpha", 1.67326319217681884765625), _f(ctx, "gamma", 1.05070102214813232421875)
    neg = _c(x, gamma) * (_c(x, alpha) * call("exp", x) - _c(x, alpha))
    return select(compare("gt", x, _c(x, 0)), _c(x, gamma) * x, neg)


def _celu(ctx: LoweringContext, x: Expr) -> Expr:
    alpha = _f(ctx, "alpha", 1.0)
    return max_(x, _c(x, 0)) + min_(_c(x, 0), _c(x, alpha) * (call("exp", x / _c(x, alpha)) - _c(x, 1)))


def _softplus(x: Expr) -> Expr:
    return call("log", call("exp", x) + _c(x, 1.0))


def _shrink(ctx: LoweringContext, x: Expr) -> Expr:
    lambd, bias = _f(ctx, "lambd", 0.5), _f(ctx, "bias", 0.0)
    return select(compare("lt", x, _c(x, -lambd)), x + _c(x, bias),
                  select(compare("gt", x, _c(x, lambd)), x - _c(x, bias), _c(x, 0)))


def _swish(ctx: LoweringContext, x: Expr) -> Expr:
    ax = _c(x, _f(ctx, "alpha", 1.0)) * x
    return x * (_c(x, 1.0) / (_c(x, 1.0) + call("exp", -ax)))


UNARY: dict[str, Formula] = {
    **{name: (lambda f: lambda ctx, x: call(f, x))(name.lower())
       for name in ("Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
                    "Sign", "Round")},
    "IsNaN": lambda ctx, x: call("isnan", x, dtype=DType.BOOL),
    "IsInf": _is_inf,
    "Not": lambda ctx, x: call("not", x),
    "BitwiseNot": lambda ctx, x: call("not", x),
    "Selu": _selu,
    "Celu": _celu,
    "Mish": lambda ctx, x: x * call("tanh", _softplus(x)),
    "Swish": _swish,
    "ThresholdedRelu": lambda ctx, x: select(compare("gt", x, _c(x, _f(ctx, "alpha", 1.0))), x, _c(x, 0)),
    "Shrink": _shrink,
}
BINARY: dict[str, Formula] = {
    "Or": lambda ctx, a, b: binary("or", a, b),
    "Xor": lambda ctx, a, b: binary("xor", a, b),
    "BitwiseAnd": lambda ctx, a, b: binary("and", a, b),
    "BitwiseOr": lambda ctx, a, b: binary("or", a, b),
    "BitwiseXor": lambda ctx, a, b: binary("xor", a, b),
    "Mod": _mod,
    "BitShift": _bitshift,
}


def cast_like(ctx: LoweringContext) -> list[Tensor]:
    x, out = ctx.input(0), ctx.output_type(0)
    return [ctx.compute(out.shape, lambda i: onnx_cast(ctx, x[i], out.dtype), dtype=out.dtype, name="castlike")]


def dropout(ctx: LoweringContext) -> list[Tensor]:
    """Inference Dropout: the identity (and an all-true mask); training mode is random, so refused."""
    training = ctx.const_input(2, "training_mode") if ctx.has_input(2) else None
    if (training is not None and bool(training)) or ctx.attr("is_test", 1) == 0 and ctx.opset < 7:
        ctx.unsupported("training_mode=1 drops random elements; only inference Dropout is supported")
    x = ctx.input(0)
    results = [ctx.compute(x.shape, lambda i: x[i], dtype=x.dtype, name="dropout")]
    if len(ctx.node.outputs) > 1:
        results.append(ctx.compute(x.shape, lambda i: const(True, DType.BOOL), dtype=DType.BOOL, name="mask"))
    return results


def eye_like(ctx: LoweringContext) -> list[Tensor]:
    out, k = ctx.output_type(0), int(ctx.attr("k", 0))
    return [ctx.compute(out.shape, lambda i: cast(compare("eq", i[1] - i[0], k), out.dtype), dtype=out.dtype,
                        name="eyelike")]


def constant_of_shape(ctx: LoweringContext) -> list[Tensor]:
    out = ctx.output_type(0)
    ctx.require_dims(ctx.size_input(0, "shape"), "shape")
    value = ctx.attr("value")
    scalar = 0.0 if value is None else value.reshape(-1)[0].item()
    return [ctx.compute(out.shape, lambda i: const(scalar, out.dtype), dtype=out.dtype, name="fill")]


def range_op(ctx: LoweringContext) -> list[Tensor]:
    start, delta, out = ctx.input(0), ctx.input(2), ctx.output_type(0)
    step = ctx.size_input(2, "delta") if ctx.input_value(2).const is not None else []
    if step and has_values(step[0]):
        ctx.require_that(differs(step[0], 0), "delta must not be 0")
    return [ctx.compute(out.shape, lambda i: start[()] + cast(i[0], out.dtype) * delta[()], dtype=out.dtype,
                        name="range")]


OPS: list[OpDef] = [defop(name, _broadcasting(f), "elementwise") for name, f in {**UNARY, **BINARY}.items()] + [
    defop("CastLike", cast_like),
    defop("Dropout", dropout),
    defop("EyeLike", eye_like),
    defop("ConstantOfShape", constant_of_shape),
    defop("Range", range_op),
]
