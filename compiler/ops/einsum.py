"""Einsum: the equation is parsed at compile time and lowered as one sum-reduction.

Every label (letter, or one dimension of the ellipsis) becomes an index
variable: output labels are the output's index, every other label a reduction
axis. The body is the product of the operands loaded at their labels, so a
label repeated within one operand reads its diagonal, a label only in the
inputs is summed, and a label only in the output is impossible (refused).
Ellipsis dimensions broadcast numpy-style (right-aligned, size 1 stretches);
the implicit form's output is the ellipsis, then the letters used exactly once
in ASCII order.
"""

from __future__ import annotations

from collections import Counter

from compiler.loopir.expr import Const, Expr
from compiler.loopir.sizes import Size, is_one, same_size
from compiler.ops.api import Index, LoweringContext, Tensor
from compiler.ops.registry import OpDef, defop

ELLIPSIS = "..."


def _split_term(term: str) -> tuple[list[str], bool]:
    """A term's letters around its ellipsis (marked by one ``ELLIPSIS`` entry), and whether it has one."""
    if term.count(ELLIPSIS) > 1:
        raise ValueError(f"term {term!r} has more than one ellipsis")
    head, dots, tail = term.partition(ELLIPSIS)
    letters = [*head, *([ELLIPSIS] if dots else []), *tail]
    if any(c != ELLIPSIS and not c.isalpha() for c in letters):
        raise ValueError(f"term {term!r} has a character that is not a letter")
    return letters, bool(dots)


def _labels(term: list[str], ellipsis: list[str]) -> list[str]:
    """The term with its ellipsis replaced by the trailing ``len`` labels of ``ellipsis`` it covers."""
    out: list[str] = []
    for c in term:
        out.extend(ellipsis if c == ELLIPSIS else [c])
    return out


def parse_equation(equation: str, ranks: list[int]) -> tuple[list[list[str]], list[str]]:
    """(labels of each operand's dims, labels of the output's dims) for ``equation`` on operands of ``ranks``.

    Ellipsis dimensions get labels ``"...0"``, ``"...1"``, ..., right-aligned across operands.
    """
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = [_split_term(t) for t in lhs.split(",")]
    if len(terms) != len(ranks):
        raise ValueError(f"{len(terms)} terms for {len(ranks)} inputs")
    spans = []
    for (letters, dotted), rank in zip(terms, ranks):
        span = rank - (len(letters) - dotted)
        if span < 0 or (span and not dotted):
            raise ValueError(f"term {''.join(letters)!r} does not match an input of rank {rank}")
        spans.append(span)
    width = max(spans, default=0)
    dims = [f"{ELLIPSIS}{k}" for k in range(width)]
    inputs = [_labels(letters, dims[width - span:]) for (letters, _), span in zip(terms, spans)]
    if arrow:
        output = _labels(_split_term(rhs)[0], dims)
        if len(set(output)) != len(output):
            raise ValueError(f"output term {rhs!r} repeats a label")
    else:
        counts = Counter(c for term, _ in terms for c in term if c != ELLIPSIS)
        output = dims + sorted(c for c, n in counts.items() if n == 1)
    return inputs, output


def einsum(ctx: LoweringContext) -> list[Tensor]:
    operands = [ctx.input(k) for k in range(len(ctx.node.inputs))]
    out = ctx.output_type(0)
    try:
        inputs, output = parse_equation(str(ctx.attr("equation")), [x.rank for x in operands])
    except ValueError as exc:
        ctx.unsupported(f"equation {ctx.attr('equation')!r}: {exc}")
    sizes: dict[str, Size] = {}
    for labels, x in zip(inputs, operands):
        for label, n in zip(labels, x.shape):
            known = sizes.get(label)
            if known is None or is_one(known):
                sizes[label] = n
            elif not is_one(n) and not same_size(known, n):
                ctx.unsupported(f"label {label!r} has sizes {known} and {n}")
    if any(label not in sizes for label in output):
        ctx.unsupported(f"output label(s) {[lb for lb in output if lb not in sizes]} appear in no input")
    if not all(same_size(sizes[label], d) for label, d in zip(output, out.shape)) or len(output) != len(out.shape):
        ctx.unsupported(f"equation gives shape {[sizes[lb] for lb in output]}, output is {list(out.shape)}")
    summed = [label for label in sizes if label not in output]

    def body(i: Index, r: Index) -> Expr:
        env = {**dict(zip(output, i)), **dict(zip(summed, r))}
        product: Expr | None = None
        for labels, x in zip(inputs, operands):
            # A size-1 dim under a longer label broadcasts.
            value = x[[Const(0) if is_one(n) else env[label] for label, n in zip(labels, x.shape)]]
            product = value if product is None else product * value
        return product

    return [ctx.reduce(out.shape, [sizes[label] for label in summed], body, "sum", name="einsum")]


OPS: list[OpDef] = [defop("Einsum", einsum, since=12)]
