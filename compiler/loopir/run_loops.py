"""Loops of the run: a contiguous stretch of kernels that ``tilec_run`` repeats.

A ``Loop``, ``Scan`` or recurrence (RNN/GRU/LSTM) whose trip count is only known
at run time, or is too long to unroll, stays a loop: its body's nodes are
compiled once and run once per iteration (``RunLoop``). The body reads the
iteration counter (``RunLoop.var``, an ``IterVar``) as an index offset; its
loop-carried state lives in buffers that the iteration's last kernel updates.
The trip count is a size (a dim, a value read from an input, or a constant);
``condition``, where given, names a one-element bool value (a loop-carried
state) that the run reads before each iteration: the loop stops when it is
false. Loops nest: a node's ``loops`` list its enclosing loops, outermost first.
"""

from __future__ import annotations

from dataclasses import dataclass

from compiler.loopir.expr import Const, Expr, binary
from compiler.loopir.sizes import IterVar, Size, size_expr


@dataclass(frozen=True)
class RunLoop:
    name: str
    trip: Size
    condition: str | None = None

    @property
    def var(self) -> IterVar:
        return IterVar(self.name)

    def position(self, reverse: bool) -> Expr:
        """The step an iteration works on: the counter, or counted from the end (``trip - 1 - i``)."""
        if not reverse:
            return self.var
        return binary("sub", binary("sub", size_expr(self.trip), Const(1)), self.var)
