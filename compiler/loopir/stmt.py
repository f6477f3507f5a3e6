"""Loop IR statements: loop nests over buffers, with schedule annotations on loops.

A ``Kernel`` is one native function: its parameters are global buffers, its
body a statement tree of ``For`` (serial / parallel / vectorized / unrolled),
``Store``, ``Seq`` and ``Alloc`` (a local scratch buffer, e.g. a register
accumulator tile). GPU schedules (compiler/codegen/cuda) also use ``For``
loops mapped to thread blocks and to the threads of a block, ``shared``
buffers, ``Barrier`` and ``If``; the CPU codegen never sees them. Loops
always start at 0; an extent is an int or, in a model with symbolic
dimensions, an int64 expression over size variables (``sizes.SizeVar``),
evaluated once when the loop starts. Statements are frozen dataclasses,
so schedule transforms return new trees and tests can compare them
structurally.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Mapping

from compiler.loopir.expr import Buffer, Expr, Load, Var, map_loads, substitute, walk
from compiler.loopir.sizes import SizeVar, size_vars


class ForKind(enum.Enum):
    SERIAL = "for"
    PARALLEL = "parallel for"
    VECTORIZED = "vectorized for"
    UNROLLED = "unrolled for"
    # GPU: iterations run as thread blocks / as the threads of one block, all at once.
    GPU_BLOCK = "block for"
    GPU_THREAD = "thread for"


@dataclass(frozen=True)
class Stmt:
    pass


@dataclass(frozen=True)
class For(Stmt):
    var: Var
    extent: "int | Expr"
    body: Stmt
    kind: ForKind = ForKind.SERIAL
    # A parallel loop over symbolic sizes runs on the thread pool only when this much work (an int64 size
    # expression: scalar operations of the whole loop) reaches ``min_work``; below it, on the caller.
    work: "Expr | None" = None
    min_work: int = 0


@dataclass(frozen=True)
class Store(Stmt):
    buffer: Buffer
    indices: tuple[Expr, ...]
    value: Expr


@dataclass(frozen=True)
class Seq(Stmt):
    stmts: tuple[Stmt, ...]


@dataclass(frozen=True)
class Alloc(Stmt):
    """``buffer`` (scope local) exists while ``body`` runs."""

    buffer: Buffer
    body: Stmt


@dataclass(frozen=True)
class If(Stmt):
    """``body`` runs only where ``cond`` (bool) holds; GPU schedules guard the edges of partial tiles with it."""

    cond: Expr
    body: Stmt


@dataclass(frozen=True)
class Prefetch(Stmt):
    """A hint: bring the cache line holding ``address`` (a load, never evaluated as a value) toward the
    core ahead of its use, into L2. It changes no value; schedules place it where a stream would
    otherwise wait on memory (the next column panel of weights larger than the caches)."""

    address: Load


@dataclass(frozen=True)
class Barrier(Stmt):
    """GPU: every thread of the block waits here until all have arrived (``__syncthreads``)."""


@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple[Buffer, ...]
    body: Stmt
    # What the kernel computes, for the printer, profiles and the manifest (e.g. "Conv+Relu").
    label: str = ""
    # Floating-point work of its reductions (``Computation.flops``), for profiles' GFLOP/s.
    flops: int = 0
    # The predicate under which the run calls it (a branch of a run-time If: over the dims and data
    # conditions' bytes); None: always.
    guard: Expr | None = None


def seq(*stmts: Stmt) -> Stmt:
    """A sequence, flattening nested sequences and dropping empty ones."""
    flat: list[Stmt] = []
    for s in stmts:
        if isinstance(s, Seq):
            flat.extend(s.stmts)
        else:
            flat.append(s)
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def stmt_children(s: Stmt) -> tuple[Stmt, ...]:
    if isinstance(s, (For, Alloc, If)):
        return (s.body,)
    if isinstance(s, Seq):
        return s.stmts
    return ()


def with_children(s: Stmt, kids: tuple[Stmt, ...]) -> Stmt:
    if isinstance(s, (For, Alloc, If)):
        return replace(s, body=kids[0])
    if isinstance(s, Seq):
        return seq(*kids)
    return s


def walk_stmts(s: Stmt) -> Iterator[Stmt]:
    yield s
    for c in stmt_children(s):
        yield from walk_stmts(c)


def map_stmts(s: Stmt, fn: Callable[[Stmt], Stmt | None]) -> Stmt:
    """Rewrite bottom-up: ``fn`` returns a replacement or None to keep the (rebuilt) node."""
    kids = stmt_children(s)
    if kids:
        new = tuple(map_stmts(c, fn) for c in kids)
        if new != kids:
            s = with_children(s, new)
    out = fn(s)
    return s if out is None else out


def held_exprs(node: Stmt) -> tuple[Expr, ...]:
    """The expressions ``node`` itself holds (not its children's): a store's indices and value, an If's
    condition, a prefetch's address."""
    if isinstance(node, Store):
        return (*node.indices, node.value)
    if isinstance(node, If):
        return (node.cond,)
    if isinstance(node, Prefetch):
        return (node.address,)
    return ()


def with_held_exprs(node: Stmt, fn: Callable[[Expr], Expr]) -> Stmt | None:
    """``node`` with ``fn`` applied to each expression it holds; None for a node that holds none."""
    if isinstance(node, Store):
        return Store(node.buffer, tuple(fn(i) for i in node.indices), fn(node.value))
    if isinstance(node, If):
        return If(fn(node.cond), node.body)
    if isinstance(node, Prefetch):
        address = fn(node.address)
        assert isinstance(address, Load)
        return Prefetch(address)
    return None


def substitute_stmt(s: Stmt, mapping: dict[Var, Expr]) -> Stmt:
    return map_stmts(s, lambda node: with_held_exprs(node, lambda e: substitute(e, mapping)))


def rename_buffers(s: Stmt, names: Mapping[str, str]) -> Stmt:
    """``s`` with every buffer whose name ``names`` maps renamed, in loads, stores and allocations."""
    def buffer(b: Buffer) -> Buffer:
        return replace(b, name=names[b.name]) if b.name in names else b

    def load(e: Load) -> Expr:
        return Load(buffer(e.buffer), e.indices)

    def rewrite(node: Stmt) -> Stmt | None:
        if isinstance(node, Alloc):
            return Alloc(buffer(node.buffer), node.body)
        held = with_held_exprs(node, lambda e: map_loads(e, load))
        return replace(held, buffer=buffer(node.buffer)) if isinstance(held, Store) else held

    return map_stmts(s, rewrite)


def canonical_kernel(kernel: Kernel) -> Kernel:
    """``kernel`` with its name, its buffers' names and its loop variables' names replaced by
    positional ones (parameters ``p0, p1, ...`` in order, local buffers ``l<k>`` in order of
    allocation, loop variables ``v<k>`` in order of their loops): two kernels that compute the
    same thing over buffers of the same types and shapes, such as the same layer repeated in a
    network, have equal canonical forms, and the code generators emit one function for both."""
    names = {b.name: f"p{i}" for i, b in enumerate(kernel.params)}
    loop_vars: dict[Var, Expr] = {}
    for node in walk_stmts(kernel.body):
        if isinstance(node, Alloc) and node.buffer.name not in names:
            names[node.buffer.name] = f"l{len(names)}"
        elif isinstance(node, For) and node.var not in loop_vars:
            loop_vars[node.var] = Var(f"v{len(loop_vars)}", node.var.type)

    def rename_loop(node: Stmt) -> Stmt | None:
        return replace(node, var=loop_vars[node.var]) if isinstance(node, For) else None

    body = map_stmts(substitute_stmt(rename_buffers(kernel.body, names), loop_vars), rename_loop)
    return Kernel("kernel", tuple(replace(b, name=names[b.name]) for b in kernel.params), body)


def stmt_exprs(s: Stmt) -> Iterator[Expr]:
    """Every expression directly held by statements in ``s`` (store indices and values, conditions,
    prefetch addresses)."""
    for node in walk_stmts(s):
        yield from held_exprs(node)


def accesses_by_buffer(s: Stmt) -> dict[str, list[tuple[tuple[Expr, ...], bool]]]:
    """Buffer name -> (indices, is_store) of every access to it in ``s`` (a prefetch counts as a load)."""
    found: dict[str, list[tuple[tuple[Expr, ...], bool]]] = {}
    for node in walk_stmts(s):
        if isinstance(node, Store):
            found.setdefault(node.buffer.name, []).append((node.indices, True))
        for e in held_exprs(node):
            for sub in walk(e):
                if isinstance(sub, Load):
                    found.setdefault(sub.buffer.name, []).append((sub.indices, False))
    return found


def loads_and_stores(s: Stmt) -> Iterator[tuple[Buffer, bool]]:
    """(buffer, is_store) for every access in ``s`` (a prefetch counts as a load)."""
    for node in walk_stmts(s):
        if isinstance(node, Store):
            yield node.buffer, True
        for e in held_exprs(node):
            for sub in walk(e):
                if isinstance(sub, Load):
                    yield sub.buffer, False


def find_loops(s: Stmt, name: str) -> list[For]:
    return [n for n in walk_stmts(s) if isinstance(n, For) and n.var.name == name]


def kernel_size_vars(kernel: "Kernel") -> set[SizeVar]:
    """The size variables a kernel reads: in its extents, its expressions and its buffers' shapes."""
    found: set[SizeVar] = set()
    for node in walk_stmts(kernel.body):
        if isinstance(node, For):
            found |= size_vars(node.extent)
    found |= size_vars(*stmt_exprs(kernel.body))
    for buffer, _ in loads_and_stores(kernel.body):
        found |= size_vars(*buffer.shape)
    return found
