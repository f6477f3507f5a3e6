"""Where a model's time goes: per-kernel wall times of a profiled artifact, next to onnxruntime's per-op times.

``profile_model(model, threads, runs)`` compiles ``model`` with ``profile=True`` (every kernel call in
the native code is bracketed by a clock read), runs it ``runs`` times after a warm-up and returns a
``Profile``: each kernel's mean time per run, its ops, its GFLOP/s. With ``compare_ort=True`` the same
inputs also run through onnxruntime with its profiler on, and the report groups both sides by ONNX op
type (a tilec kernel counts under the first op of its fused group, as onnxruntime's fused nodes do),
so the op types where tilec loses stand out. ``tilec profile`` prints it (compiler/cli.py).

The instrumented artifact costs two clock reads per kernel (~50 ns); the report shows the
difference between the runs' wall time and the kernels' sum as the overhead outside kernels.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from compiler import bench
from runtime_stub import InferenceSession, KernelTime


def op_type(kernel: KernelTime) -> str:
    """The first op of the kernel's fused group: what onnxruntime would name the node's type."""
    return kernel.ops.split("+")[0] if kernel.ops else "?"


@dataclass
class Profile:
    threads: int
    runs: int
    wall_ms: float  # mean wall time of one instrumented run (the kernel times are means too)
    kernels: list[KernelTime]
    ort_ms_by_op: dict[str, float] = field(default_factory=dict)  # onnxruntime's mean per run, by op type
    ort_wall_ms: float | None = None

    @property
    def kernel_ms(self) -> float:
        return sum(k.seconds for k in self.kernels) * 1e3

    def top(self, n: int) -> list[KernelTime]:
        return sorted(self.kernels, key=lambda k: -k.seconds)[:n]

    def by_op(self) -> list[tuple[str, int, float, float | None]]:
        """(op type, kernels, tilec ms, onnxruntime ms) per op type, slowest tilec first."""
        ms: dict[str, float] = defaultdict(float)
        count: dict[str, int] = defaultdict(int)
        for k in self.kernels:
            ms[op_type(k)] += k.seconds * 1e3
            count[op_type(k)] += 1
        ops = sorted(set(ms) | set(self.ort_ms_by_op), key=lambda op: -max(ms.get(op, 0.0), self.ort_ms_by_op.get(op, 0.0)))
        return [(op, count.get(op, 0), ms.get(op, 0.0), self.ort_ms_by_op.get(op) if self.ort_ms_by_op else None)
                for op in ops]


def profile_model(model: Any, threads: int, runs: int = 20, warmup: int = 3, seed: int = 0,
                  input_shapes: dict[str, tuple[int, ...]] | None = None, compare_ort: bool = False,
                  dim_bounds: dict[str, tuple[int | None, int | None]] | None = None) -> Profile:
    import compiler

    threads = threads or bench.default_threads()
    with tempfile.TemporaryDirectory(prefix="tilec-profile-") as tmp:
        # Symbolic dims stay symbolic; ``input_shapes`` are the run shapes.
        artifact = compiler.compile(model, pathlib.Path(tmp) / "model.tilec", profile=True, dim_bounds=dim_bounds)
        with InferenceSession(artifact, threads=threads) as session:
            inputs = bench.random_inputs(session.get_inputs(), seed=seed, shapes=input_shapes)
            _timed_runs(lambda: session.run(None, inputs), warmup)
            session.kernel_profile(reset=True)
            wall = _timed_runs(lambda: session.run(None, inputs), runs)
            result = Profile(threads, runs, statistics.fmean(wall), session.kernel_profile())
        if compare_ort:
            result.ort_ms_by_op, result.ort_wall_ms = _ort_profile(model, threads, inputs, runs, warmup, tmp)
    return result


def _timed_runs(run: Callable[[], Any], count: int) -> list[float]:
    """Wall milliseconds of ``count`` calls of ``run``."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def _ort_profile(model: Any, threads: int, inputs: dict, runs: int, warmup: int,
                 tmp: str) -> tuple[dict[str, float], float]:
    """onnxruntime's mean time per run by op type (its own profiler), and its median wall time."""
    session = bench.ort_session(model, threads, profile_prefix=os.path.join(tmp, "ort_profile"))
    names = {arg.name for arg in session.get_inputs()}
    feed = {k: v for k, v in inputs.items() if k in names}
    _timed_runs(lambda: session.run(None, feed), warmup)
    wall = _timed_runs(lambda: session.run(None, feed), runs)
    events = json.loads(pathlib.Path(session.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time") and "op_name" in args:
            per_op[args["op_name"]] += float(event.get("dur", 0)) / 1e3
    total_runs = warmup + runs
    return {op: ms / total_runs for op, ms in per_op.items()}, bench.summarize(wall).median_ms
