"""``tilec compile``'s progress (compiler/progress.py): one live line on a terminal, with steps and the
time left; a line per stage elsewhere."""

from __future__ import annotations

import io

from compiler.progress import ProgressPrinter


def _printer(live: bool) -> tuple[ProgressPrinter, io.StringIO, list[float]]:
    now = [0.0]
    stream = io.StringIO()
    return ProgressPrinter(stream, live=live, clock=lambda: now[0], width=80), stream, now


def test_on_a_terminal_one_line_is_rewritten_with_steps_and_time_left() -> None:
    printer, stream, now = _printer(live=True)
    printer("frontend")
    now[0] = 1.0
    printer("lowering")
    now[0] = 3.0
    printer("lowering 2/10: Conv+Relu")  # 1 s per step so far: 8 s left
    printer.close()
    text = stream.getvalue()
    assert "\n" not in text[:-1] and text.endswith("\n")  # one line, ended once
    frames = text.rstrip("\n").split("\r\x1b[K")[1:]
    assert frames[0] == "[   0.00s] frontend" and frames[1] == "[   1.00s] lowering"
    assert frames[2] == "[   3.00s] lowering 2/10, ~8s left: Conv+Relu"


def test_elsewhere_a_line_per_stage_and_no_steps() -> None:
    printer, stream, now = _printer(live=False)
    printer("frontend")
    now[0] = 2.5
    printer("llvm codegen (56 kernels, 3 modules)")
    printer("llvm codegen 1/3: module 2")
    printer.close()
    assert stream.getvalue() == "[   0.00s] frontend\n[   2.50s] llvm codegen (56 kernels, 3 modules)\n"


def test_a_live_line_is_cut_to_the_terminal_width() -> None:
    printer, stream, _ = _printer(live=True)
    printer("lowering 1/2: " + "Conv+" * 40)
    assert len(stream.getvalue().split("\r\x1b[K")[-1]) == 79
