"""Memory for a session's large outputs, used again once the caller has let go of every array on it.

Why: a fresh numpy array larger than malloc's mmap threshold (128 KiB by default, and glibc gives such
memory back to the kernel when it is freed) is new pages every run, and the first write to each page
faults. A decoder step's present caches at past 512 (8 arrays of 264 KiB) took ~290 page faults, 0.6 ms,
per step: more than the copy itself. onnxruntime's outputs come from its arena; ours come from here.

Contract:

* ``OutputMemory.take(nbytes)`` is a 64-byte-aligned uint8 array of exactly ``nbytes`` (>= ``MIN_BYTES``)
  on a block of this pool. A block is given out again only when no array that views it is alive (its
  reference count is the pool's alone), so an output the caller still holds, or feeds back as an input
  (a decoder's present as the next past), is never written under it.
* A new block has room to grow (1/8 more, to whole pages), so the slowly growing outputs of a decode
  loop reuse the same blocks for many steps; a block serves requests from half its size up.
* Idle blocks are kept up to the bytes of the largest run's request (``end_run``), least recently used
  dropped first, and blocks are tracked up to three runs' worth: the pool holds at most that much memory
  that nobody uses, even after a caller that kept many runs' outputs drops them all.
* Thread-safe: concurrent runs of one session take blocks under one lock.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

MIN_BYTES = 1 << 16  # below this malloc's heap reuses freed memory without faults
ALIGNMENT = 64
PAGE = 4096
TRACKED_RUNS = 3  # blocks tracked, in runs' worth of outputs: a decode step's, its input's, the idle ones

_probe = [np.empty(0, dtype=np.uint8)]
_IDLE_REFERENCES = sys.getrefcount(_probe[0])  # the pool's list and getrefcount's argument
del _probe


class OutputMemory:
    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []  # uint8 owners, least recently used first
        self._lock = threading.Lock()
        self._keep = 0  # idle bytes kept: the largest run's taken bytes

    def take(self, nbytes: int) -> np.ndarray:
        with self._lock:
            blocks = self._blocks
            best = -1
            for i in range(len(blocks)):
                size = blocks[i].size - ALIGNMENT
                if nbytes <= size <= 2 * nbytes and sys.getrefcount(blocks[i]) == _IDLE_REFERENCES and (
                        best < 0 or size < blocks[best].size - ALIGNMENT):
                    best = i
            block = blocks.pop(best) if best >= 0 else self._new_block(nbytes)
            blocks.append(block)
            start = -block.ctypes.data % ALIGNMENT
            return block[start:start + nbytes]  # a view: the block is busy while it (or a view of it) lives

    def end_run(self, taken_bytes: int) -> None:
        """After a run that took ``taken_bytes`` from the pool: forget the least recently used blocks beyond
        ``keep`` idle bytes (the largest run's), and beyond ``TRACKED_RUNS`` runs' worth in all (blocks a
        caller keeps stay the caller's; the pool then never holds them once they are dropped)."""
        with self._lock:
            self._keep = max(self._keep, taken_bytes)
            blocks = self._blocks
            idle = [sys.getrefcount(blocks[i]) == _IDLE_REFERENCES for i in range(len(blocks))]
            idle_excess = sum(b.size for b, free in zip(blocks, idle) if free) - self._keep
            total_excess = sum(b.size for b in blocks) - TRACKED_RUNS * self._keep
            kept = []
            for block, free in zip(blocks, idle):  # least recently used first
                if total_excess > 0 or (free and idle_excess > 0):
                    total_excess -= block.size
                    idle_excess -= block.size if free else 0
                else:
                    kept.append(block)
            self._blocks = kept

    @staticmethod
    def _new_block(nbytes: int) -> np.ndarray:
        room = -(-(nbytes + nbytes // 8) // PAGE) * PAGE
        return np.empty(room + ALIGNMENT, dtype=np.uint8)
