"""GPU thread mapping of a scheduled loop IR kernel body.

Each top-level statement of the body (the body is a ``Seq`` of nests, one or
more per computation) becomes one kernel launch. The maximal perfect nest of
outer ``For`` loops of that statement is flattened into one global thread
index (``blockIdx.x * blockDim.x + threadIdx.x``, guarded by ``idx < total``);
the loop variables are recovered by div/mod, innermost fastest, so
consecutive threads touch consecutive elements of row-major outputs. What is
inside the nest (reduction loops, accumulator tiles, split tails) runs
sequentially in each thread.

A loop is only mapped to threads when its iterations write disjoint elements:
its variable must occur in the index of every global store inside it. The
first loop that fails this stays a sequential loop, with everything inside it.

Future work: shared-memory tiling (GEMM / Conv), block-level reductions for
long reduction axes, and a GPU-specific schedule instead of the CPU one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.loopir.expr import flat_index, free_vars
from compiler.loopir.stmt import For, Seq, Stmt, Store, walk_stmts


@dataclass(frozen=True)
class ThreadMapping:
    loops: tuple[For, ...]  # outermost first; flattened into the thread index
    body: Stmt  # run by each thread with the loop variables bound

    @property
    def total(self) -> int:
        return math.prod(f.extent for f in self.loops)


def top_level(body: Stmt) -> tuple[Stmt, ...]:
    return body.stmts if isinstance(body, Seq) else (body,)


def _writes_disjoint(loop: For) -> bool:
    stores = [s for s in walk_stmts(loop.body) if isinstance(s, Store) and s.buffer.scope == "global"]
    return all(loop.var in free_vars(flat_index(s.buffer, s.indices)) for s in stores)


def map_nest(s: Stmt) -> ThreadMapping:
    loops: list[For] = []
    node = s
    while isinstance(node, For) and _writes_disjoint(node):
        loops.append(node)
        node = node.body
    return ThreadMapping(tuple(loops), node)


def map_threads(body: Stmt) -> list[ThreadMapping]:
    return [map_nest(s) for s in top_level(body)]
