"""Static memory planning for the workspace arena of one ``tilec_run`` call.

Contract: ``plan_arena(buffers)`` assigns each intermediate buffer an offset in one
arena such that

* every offset is a multiple of ``ARENA_ALIGNMENT`` (64 bytes: a cache line, and enough
  for any vector load the code generator emits);
* two buffers whose lifetimes overlap (inclusive step ranges ``[first, last]``) never
  share a byte;
* buffers whose lifetimes are disjoint reuse memory.

Algorithm: greedy by size (largest first) with best fit: each buffer goes into the
smallest gap between already-placed, time-overlapping buffers that can hold it (lowest
offset on ties), or after the last of them. The result is deterministic: ties in size
are broken by first use, then by key.

Buffers of symbolic size (a model with symbolic dimensions) go after the static
ones, each in a ``SymbolicSlot`` whose offset is computed per run: the end of the
static part or of every earlier slot live at the same time, whichever is last
(``plan_symbolic_slots``). That holds for every value of the size variables, and
slots never live together still share bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from compiler.loopir.expr import Const, Expr, div, mul
from compiler.loopir.sizes import Size, size_add

ARENA_ALIGNMENT = 64


@dataclass(frozen=True)
class BufferLifetime:
    """A buffer of ``size`` bytes, live from step ``first`` (its write) to ``last`` (its last read)."""

    key: str
    size: Size
    first: int
    last: int

    def overlaps_in_time(self, other: "BufferLifetime") -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class ArenaPlan:
    """Byte offset of every buffer in the arena, and the arena's total size."""

    offsets: dict[str, int]
    size: int


def _aligned(size: int) -> int:
    return (size + ARENA_ALIGNMENT - 1) // ARENA_ALIGNMENT * ARENA_ALIGNMENT


def _validate(buffers: list[BufferLifetime]) -> None:
    seen: set[str] = set()
    for buf in buffers:
        if buf.key in seen:
            raise ValueError(f"buffer {buf.key!r} appears twice in the memory plan")
        seen.add(buf.key)
        if isinstance(buf.size, int) and buf.size < 0:
            raise ValueError(f"buffer {buf.key!r} has a negative size {buf.size}")
        if buf.first > buf.last:
            raise ValueError(f"buffer {buf.key!r} is last used (step {buf.last}) before it is written (step {buf.first})")


def _best_offset(size: int, occupied: Iterable[tuple[int, int]]) -> int:
    """Lowest-waste aligned offset for ``size`` bytes among the ``[start, end)`` ranges in use."""
    best: tuple[int, int] | None = None  # (gap size, offset)
    cursor = 0
    for start, end in sorted(occupied):
        gap = start - cursor
        if gap >= size and (best is None or gap < best[0]):
            best = (gap, cursor)
        cursor = max(cursor, end)
    return cursor if best is None else best[1]


def plan_arena(buffers: list[BufferLifetime]) -> ArenaPlan:
    """Place ``buffers`` in one arena, reusing memory between buffers that are never live together."""
    _validate(buffers)
    order = sorted(buffers, key=lambda b: (-b.size, b.first, b.key))
    placed: list[tuple[BufferLifetime, int]] = []
    offsets: dict[str, int] = {}
    arena_size = 0
    for buf in order:
        size = _aligned(buf.size)
        if size == 0:
            offsets[buf.key] = 0  # occupies nothing, so it collides with nothing
            continue
        occupied = [(off, off + _aligned(other.size)) for other, off in placed if other.overlaps_in_time(buf)]
        offset = _best_offset(size, occupied)
        offsets[buf.key] = offset
        placed.append((buf, offset))
        arena_size = max(arena_size, offset + size)
    return ArenaPlan(offsets={b.key: offsets[b.key] for b in buffers}, size=arena_size)


@dataclass(frozen=True)
class SymbolicSlot:
    """A buffer of symbolic ``size`` bytes (rounded up to the alignment) at the per-run offset
    ``max(base, end of each slot in after)``, ``base`` being the static part's size."""

    key: str
    size: Expr
    after: tuple[str, ...]


def aligned_size(size: Size) -> Size:
    if isinstance(size, int):
        return _aligned(size)
    return mul(div(size_add(size, ARENA_ALIGNMENT - 1), Const(ARENA_ALIGNMENT)), Const(ARENA_ALIGNMENT))


def plan_symbolic_slots(buffers: list[BufferLifetime]) -> list[SymbolicSlot]:
    """Slots for buffers of symbolic ``size``, in order of first use (see the module docstring)."""
    _validate(buffers)
    slots: list[SymbolicSlot] = []
    placed: list[BufferLifetime] = []
    for buf in sorted(buffers, key=lambda b: (b.first, b.key)):
        after = tuple(other.key for other in placed if other.overlaps_in_time(buf))
        slots.append(SymbolicSlot(buf.key, aligned_size(buf.size), after))
        placed.append(buf)
    return slots

