"""Memory for a session's large outputs, used again once the caller has let go of every array on it.

Why: a fresh numpy array larger than malloc's mmap threshold (128 KiB by default, and glibc gives such
memory back to the kernel when it is freed) is new pages every run, and the first write to each page
faults. A decoder step's present caches at past 512 (8 arrays of 264 KiB) took ~290 page faults, 0.6 ms,
per step: more than the copy itself. onnxruntime's outputs come from its arena; ours come from here.

Contract:

* ``OutputMemory(outputs).take(index, nbytes)`` is a 64-byte-aligned uint8 array of exactly ``nbytes``
  (>= ``MIN_BYTES``) for output ``index`` of a run, on a block of that output's pool. A block is given out
  again only when no array that views it is alive (its reference count is the pool's alone), so an
  output the caller still holds, or feeds back as an input (a decoder's present as the next past), is
  never written under it.
* A new block has room to grow (1/8 more, to whole pages), so the slowly growing outputs of a decode
  loop reuse the same blocks for many steps; a block serves requests from half its size up.
* Each output tracks at most ``TRACKED`` blocks, idle ones dropped first, then the least recently used:
  the memory that nobody uses stays bounded (three runs' outputs) even after a caller that kept many
  runs' outputs drops them all, and a decode loop (one step's presents held as the next past while the
  step before's are free) needs two.
* Thread-safe: concurrent runs of one session take blocks under one lock.
"""

from __future__ import annotations

import sys
import threading

import numpy as np

MIN_BYTES = 1 << 16  # below this malloc's heap reuses freed memory without faults
ALIGNMENT = 64
PAGE = 4096
TRACKED = 3

_probe = [(np.empty(0, dtype=np.uint8), 0)]
_IDLE_REFERENCES = sys.getrefcount(_probe[0][0])  # the pool's (block, start) pair and getrefcount's argument
del _probe


class OutputMemory:
    def __init__(self, outputs: int) -> None:
        # Per output: (owner, aligned start) pairs, least recently used first.
        self._blocks: list[list[tuple[np.ndarray, int]]] = [[] for _ in range(outputs)]
        self._lock = threading.Lock()

    def take(self, index: int, nbytes: int) -> np.ndarray:
        with self._lock:
            blocks = self._blocks[index]
            chosen = None
            for k in range(len(blocks)):
                room = blocks[k][0].size - ALIGNMENT
                if nbytes <= room <= 2 * nbytes and sys.getrefcount(blocks[k][0]) == _IDLE_REFERENCES:
                    chosen = blocks.pop(k)
                    break
            if chosen is None:
                chosen = _new_block(nbytes)
                if len(blocks) >= TRACKED:
                    idle = [k for k in range(len(blocks)) if sys.getrefcount(blocks[k][0]) == _IDLE_REFERENCES]
                    del blocks[idle[0] if idle else 0]
            blocks.append(chosen)
            block, start = chosen
            return block[start:start + nbytes]  # a view: the block is busy while it (or a view of it) lives


def _new_block(nbytes: int) -> tuple[np.ndarray, int]:
    room = -(-(nbytes + nbytes // 8) // PAGE) * PAGE
    block = np.empty(room + ALIGNMENT, dtype=np.uint8)
    return block, -block.ctypes.data % ALIGNMENT
