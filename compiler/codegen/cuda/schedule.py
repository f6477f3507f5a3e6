"""GPU schedules and the thread mapping of a scheduled kernel body.

``schedule_computation(c, compute_capability)`` is the CUDA target's schedule
(the lowering driver asks the target for it instead of the CPU defaults): a
contraction big enough to gain from it gets a shared-memory tiled kernel, on
tensor cores where its operand type has them on the target
(``tensor_cores.py``: float16, bfloat16), else ``tiling.py``'s (a grouped
conv's output channel is split into group and member first, so each group is
one GEMM of a batch: ``compiler/schedule/groups.py``); a reduction
over long contiguous rows gets a warp or a block per output element
(``row_reduce.py``: shuffles, shared memory); every
other computation keeps its canonical nest (spatial loops outside, any
reduction inside), which ``map_threads`` gives one thread per output element.

``map_threads(body)``: each top-level statement of a kernel body (a ``Seq`` of
nests, one or more per computation) becomes one kernel launch, mapped one of
two ways:

* blocked: the statement is a ``block for`` nest. Its ``block for`` loops are
  the grid, the ``shared`` allocations below them the block's shared memory,
  the ``thread for`` loops below those the threads of a block, and what is
  inside runs in each thread (``Barrier`` synchronises the block).
* flat: the maximal perfect nest of outer ``For`` loops is flattened into one
  index that a grid-stride loop spreads over all threads of the grid (loop
  variables recovered by div/mod, innermost fastest, so consecutive threads
  touch consecutive elements of row-major outputs); what is inside the nest
  runs sequentially in each thread. A loop is only mapped to threads when its
  iterations write disjoint elements: its variable must occur in the index of
  every global store inside it. The first loop that fails this stays a
  sequential loop, with everything inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from compiler.codegen.cuda.row_reduce import WarpReduce, reduce_rows
from compiler.codegen.cuda.tensor_cores import tile_contraction_tc
from compiler.codegen.cuda.tiling import tile_contraction
from compiler.loopir.compute import Computation, build_loops
from compiler.loopir.expr import Buffer, flat_index, free_vars
from compiler.loopir.stmt import Alloc, Barrier, For, ForKind, Seq, Stmt, Store, walk_stmts
from compiler.schedule.groups import split_grouped_index


def schedule_computation(c: Computation, compute_capability: tuple[int, int]) -> Stmt:
    # A grouped conv's output channel splits into (group, member): the group becomes a batch of GEMMs.
    grouped = split_grouped_index(c)
    for scheduled in (tile_contraction_tc(grouped, compute_capability), tile_contraction(grouped), reduce_rows(c)):
        if scheduled is not None:
            return scheduled
    return build_loops(c)


@dataclass(frozen=True)
class ThreadMapping:
    threads: tuple[For, ...]  # outermost first: the threads of a block (blocked) or of the whole grid (flat)
    body: Stmt  # run by each thread with the loop variables bound
    blocks: tuple[For, ...] = ()  # blocked only: the thread blocks, outermost first
    shared: tuple[Buffer, ...] = ()  # blocked only: each block's shared memory

    @property
    def blocked(self) -> bool:
        return bool(self.blocks)

    @property
    def total(self) -> int:
        """Threads that do work (flat), or threads per block (blocked)."""
        return math.prod(f.extent for f in self.threads)

    @property
    def grid(self) -> int:
        """Thread blocks of a blocked mapping."""
        return math.prod(f.extent for f in self.blocks)

    @property
    def empty(self) -> bool:
        return self.total == 0 or self.grid == 0

    @property
    def synchronises(self) -> bool:
        """Whether threads wait for each other: at barriers, or in warp shuffles (lanes exchange values)."""
        return any(isinstance(s, (Barrier, WarpReduce)) for s in walk_stmts(self.body))


def top_level(body: Stmt) -> tuple[Stmt, ...]:
    return body.stmts if isinstance(body, Seq) else (body,)


def _writes_disjoint(loop: For) -> bool:
    stores = [s for s in walk_stmts(loop.body) if isinstance(s, Store) and s.buffer.scope == "global"]
    return all(loop.var in free_vars(flat_index(s.buffer, s.indices)) for s in stores)


def _map_blocked(s: For) -> ThreadMapping:
    blocks: list[For] = []
    shared: list[Buffer] = []
    threads: list[For] = []
    node: Stmt = s
    while isinstance(node, For) and node.kind is ForKind.GPU_BLOCK:
        blocks.append(node)
        node = node.body
    while isinstance(node, Alloc) and node.buffer.scope == "shared":
        shared.append(node.buffer)
        node = node.body
    while isinstance(node, For) and node.kind is ForKind.GPU_THREAD:
        threads.append(node)
        node = node.body
    inner = [n for n in walk_stmts(node) if (isinstance(n, For) and n.kind in (ForKind.GPU_BLOCK, ForKind.GPU_THREAD))
             or (isinstance(n, Alloc) and n.buffer.scope == "shared")]
    if inner or not threads:
        raise ValueError("a GPU nest must be block loops, then shared allocations, then thread loops")
    return ThreadMapping(tuple(threads), node, tuple(blocks), tuple(shared))


def map_nest(s: Stmt) -> ThreadMapping:
    if isinstance(s, For) and s.kind is ForKind.GPU_BLOCK:
        return _map_blocked(s)
    loops: list[For] = []
    node = s
    while isinstance(node, For) and _writes_disjoint(node):
        loops.append(node)
        node = node.body
    return ThreadMapping(tuple(loops), node)


def map_threads(body: Stmt) -> list[ThreadMapping]:
    return [map_nest(s) for s in top_level(body)]
