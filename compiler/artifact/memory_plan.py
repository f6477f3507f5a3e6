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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

ARENA_ALIGNMENT = 64


@dataclass(frozen=True)
class BufferLifetime:
    """A buffer of ``size`` bytes, live from step ``first`` (its write) to ``last`` (its last read)."""

    key: str
    size: int
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
        if buf.size < 0:
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
