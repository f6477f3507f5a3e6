"""Loss functions: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss.

Both take scores ``x`` of shape ``(N, C, d1..dk)`` and integer targets of shape
``(N, d1..dk)``. The per-element loss is ``-x[n, t, d...] * weight[t]``, and 0
where ``t == ignore_index``. ``reduction`` is ``none`` (the per-element
losses), ``sum``, or ``mean``: the sum divided by the sum of the weights that
applied (the count of non-ignored targets without a weight input), so a mean
with every target ignored is 0/0 = NaN, as in the spec's reference.
SoftmaxCrossEntropyLoss is this applied to ``LogSoftmax(x)`` over the class
axis, which it may also return as its optional second output.

Sums of half-precision losses are accumulated in float32. A target outside
``[0, C)`` that is not ``ignore_index`` is outside the spec: it reads the
nearest class instead of out of bounds.
"""

from __future__ import annotations

from compiler.dtypes import DType
from compiler.loopir.expr import Const, Expr, cast, compare, const, max_, min_, select
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop
from compiler.ops.softmax import softmax_over

_REDUCTIONS = ("none", "sum", "mean")


def _nll(ctx: LoweringContext, scores: Tensor) -> Tensor:
    """The loss of log-probabilities ``scores`` against input 1 (targets), weighted by input 2 if given."""
    target = ctx.input(1)
    weight = ctx.input(2) if ctx.has_input(2) else None
    reduction = ctx.attr("reduction", "mean")
    if reduction not in _REDUCTIONS:
        ctx.unsupported(f"reduction={reduction!r} (expected one of {', '.join(_REDUCTIONS)})")
    if scores.rank < 2 or target.shape != (scores.shape[0], *scores.shape[2:]):
        ctx.unsupported(f"scores of shape {scores.shape} do not match targets of shape {target.shape}")
    ignore = ctx.attr("ignore_index")
    classes = scores.shape[1]
    dtype = scores.dtype
    acc = DType.F64 if dtype is DType.F64 else DType.F32

    def counted(i: Index) -> Expr:
        """Whether the target at ``i`` takes part (is not ``ignore_index``)."""
        if ignore is None:
            return const(True, DType.BOOL)
        return compare("ne", cast(target[i], DType.I64), int(ignore))

    def label(i: Index) -> Expr:
        return min_(max_(cast(target[i], DType.I64), Const(0)), Const(classes - 1))

    def applied_weight(i: Index) -> Expr:
        w = weight[(label(i),)] if weight is not None else const(1, dtype)
        return select(counted(i), w, const(0, dtype))

    def loss(i: Index) -> Expr:
        picked = -scores[[i[0], label(i), *i[1:]]]
        if weight is not None:
            picked = picked * weight[(label(i),)]
        return select(counted(i), picked, const(0, dtype))

    if reduction == "none":
        return ctx.compute(target.shape, loss, dtype=dtype, name="nll")
    extents = target.shape
    divisor: Expr | None = None
    if reduction == "mean":
        if weight is None and ignore is None:
            divisor = const(target.buffer.numel, acc)
        else:
            total_weight = ctx.reduce((), extents, lambda i, r: cast(applied_weight(r), acc), "sum",
                                      name="nll_weight_sum", materialize=True)
            divisor = total_weight[()]
    return ctx.reduce((), extents, lambda i, r: cast(loss(r), acc), "sum",
                      lambda total, i: cast(total if divisor is None else total / divisor, dtype), name="nll")


def negative_log_likelihood_loss(ctx: LoweringContext) -> list[Tensor]:
    return [_nll(ctx, ctx.input(0))]


def softmax_cross_entropy_loss(ctx: LoweringContext) -> list[Tensor]:
    log_prob = softmax_over(ctx, ctx.input(0), [1], log=True)
    if len(ctx.node.outputs) > 1 and ctx.node.outputs[1] is not None:
        # Returned, log_prob must be stored; the loss then reads it instead of recomputing it.
        ctx.materialized.add(log_prob.buffer.name)
        return [_nll(ctx, log_prob), log_prob]
    return [_nll(ctx, log_prob)]


OPS: list[OpDef] = [
    defop("NegativeLogLikelihoodLoss", negative_log_likelihood_loss, since=12),
    defop("SoftmaxCrossEntropyLoss", softmax_cross_entropy_loss, since=12),
]
