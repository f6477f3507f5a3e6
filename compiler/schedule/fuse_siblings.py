"""Fuse adjacent loop nests of a kernel that walk the same space, one iteration of each at a time.

Contract: ``fuse_siblings(body)`` takes a kernel body (a sequence of nests) and returns it with
adjacent top-level loops ``for u in 0..n { A(u) }; for v in 0..n { B(v) }`` replaced by
``for u in 0..n { A(u); B(u) }`` wherever that cannot change a value. Two loops fuse when they have the
same extent, kind (serial or parallel: not vector lanes or unrolled copies) and thread-pool gate,
allocate no local buffer of the same name, and every buffer both of them touch, at least one
writing it, is accessed by both at one element set per iteration: every access to it indexes the
same dims with the same expressions of the loop var, and those dims name the var exactly (``u``, or
``u / c`` next to ``u % c``). Then no iteration of ``B`` sees what another iteration of ``A``
wrote or will write, and no iteration of ``A`` what ``B`` writes.

Why: a softmax, a layer norm or an RMSNorm is several passes over the same rows (max, exps, sum,
scale). As separate nests each streams the whole tensor through memory and each parallel nest is
one fork/join of the thread pool; fused over the outer (parallel) loop, each pass runs over one
slice of rows that is still in cache for the next, and the kernel forks once. The row loops inside
stay apart: fused too, every row would wait for its own max and sum (a chain of horizontal folds)
before its next pass, where separate passes overlap the rows (a 1024x128 softmax: 53 against 43 µs).
"""

from __future__ import annotations

from dataclasses import replace

from compiler.loopir.expr import Binary, Expr, Var, free_vars
from compiler.loopir.stmt import Alloc, For, ForKind, Seq, Stmt, accesses_by_buffer, seq, substitute_stmt, walk_stmts

_FUSABLE_KINDS = (ForKind.SERIAL, ForKind.PARALLEL)

def _names_var(exprs: tuple[Expr, ...], var: Var) -> bool:
    """Whether ``exprs`` (the dims of an access that mention ``var``) determine ``var``."""
    if any(e == var for e in exprs):
        return True
    quotients = {e.b for e in exprs if isinstance(e, Binary) and e.op == "div" and e.a == var}
    remainders = {e.b for e in exprs if isinstance(e, Binary) and e.op == "rem" and e.a == var}
    return any(not free_vars(c) and c in remainders for c in quotients)


def _same_element_per_iteration(uses: list[tuple[tuple[Expr, ...], bool]], var: Var) -> bool:
    keys = set()
    for indices, _ in uses:
        dims = tuple(k for k, e in enumerate(indices) if var in free_vars(e))
        key = tuple((k, indices[k]) for k in dims)
        if not dims or any(free_vars(indices[k]) != {var} for k in dims) or not _names_var(tuple(e for _, e in key), var):
            return False
        keys.add(key)
    return len(keys) == 1


def _allocated(s: Stmt) -> set[str]:
    return {n.buffer.name for n in walk_stmts(s) if isinstance(n, Alloc)}


def _fusable(a: Stmt, b: Stmt) -> bool:
    if not (isinstance(a, For) and isinstance(b, For)) or a.kind not in _FUSABLE_KINDS:
        return False
    if (a.kind, a.extent, a.work, a.min_work) != (b.kind, b.extent, b.work, b.min_work):
        return False
    if _allocated(a.body) & _allocated(b.body):
        return False
    first, second = accesses_by_buffer(a.body), accesses_by_buffer(substitute_stmt(b.body, {b.var: a.var}))
    for name in first.keys() & second.keys():
        uses = first[name] + second[name]
        if any(is_store for _, is_store in uses) and not _same_element_per_iteration(uses, a.var):
            return False
    return True


def _fuse_sequence(stmts: list[Stmt]) -> list[Stmt]:
    fused: list[Stmt] = []
    for s in stmts:
        if fused and _fusable(fused[-1], s):
            loop = fused[-1]
            assert isinstance(loop, For) and isinstance(s, For)
            fused[-1] = replace(loop, body=seq(loop.body, substitute_stmt(s.body, {s.var: loop.var})))
        else:
            fused.append(s)
    return fused


def fuse_siblings(body: Stmt) -> Stmt:
    return seq(*_fuse_sequence(list(body.stmts) if isinstance(body, Seq) else [body]))
