"""Compile progress as a user sees it on stderr (``tilec compile``).

The compiler reports progress as lines (``compiler.compile(progress=...)``): a stage's name when it
starts ("frontend", "llvm codegen (56 kernels, 3 modules)") and, within a stage of many steps, each step
as ``"<stage> <done>/<total>: <what>"`` ("lowering 12/57: Conv+Relu", "llvm codegen 2/3: module 1").

``ProgressPrinter(stream, live)`` is such a callable. Live (the stream is a terminal): one line, rewritten
in place, with the elapsed time and, within a stage of steps, the steps done and the time left at the
stage's pace so far. Not live (a log, a pipe, CI): one line per stage, the steps left out. ``close()``
ends the live line.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

STEP = re.compile(r"^(?P<stage>.+?) (?P<done>\d+)/(?P<total>\d+)(?:: (?P<what>.*))?$")


@dataclass
class ProgressPrinter:
    stream: TextIO
    live: bool
    clock: Callable[[], float] = time.perf_counter
    width: int = field(default_factory=lambda: shutil.get_terminal_size().columns)
    _start: float = field(init=False)
    _stage_start: float = field(init=False)
    _drawn: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._start = self._stage_start = self.clock()

    def __call__(self, line: str) -> None:
        now = self.clock()
        elapsed = f"[{now - self._start:7.2f}s]"
        step = STEP.match(line)
        if step is None:
            self._stage_start = now
            if not self.live:
                self.stream.write(f"{elapsed} {line}\n")
                self.stream.flush()
                return
            text = f"{elapsed} {line}"
        else:
            if not self.live:
                return
            done, total = int(step["done"]), int(step["total"])
            left = (now - self._stage_start) / max(done, 1) * (total - done)
            what = f": {step['what']}" if step["what"] else ""
            text = f"{elapsed} {step['stage']} {done}/{total}, ~{left:.0f}s left{what}"
        self.stream.write("\r\x1b[K" + text[:max(self.width - 1, 20)])
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False
