"""The benchmark suite behind ``tilec bench --suite`` and examples/benchmark.py (docs/PERFORMANCE.md).

``run_suite(names, threads, ...)`` builds each model of ``compiler.models.SUITE``, counts its
GFLOP (``bench.count_flops``), compiles it once with tilec (timed), then for each thread count
times the artifact against onnxruntime (CPUExecutionProvider, ORT_ENABLE_ALL, the same intra-op
thread count) with ``bench.benchmark``: alternating runs in one process, warm-up excluded,
medians. A model that fails to build, compile or run gets a row with its error; the suite goes on.

``mode`` picks how the runs are timed (``bench.TIMING_MODES``): ``quiet`` (alternating blocks after a
pause), ``contended`` (run by run, no pause: each side beside the other's spinning threads) or ``gap``
(a 50 ms pause before every timed run: a server between requests).
``run_concurrency(names, callers)`` measures instead how one threads=1 session of each runtime scales
when ``callers`` request threads call it at once (``ConcurrencyRow``).

``SuiteReport`` holds the rows and a description of the machine and run; ``table()`` gives the
printed table's cells, ``geomean_ratios()`` the geometric-mean tilec/ort ratio per thread count,
``markdown()`` all of it as Markdown, and ``write(out_dir)`` writes perf_results.csv, .json, .md and
perf_ratios.png (the plot only when matplotlib, a dev dependency, is installed).

"% of peak" is GFLOP/s over the machine's fp32 FMA peak at that thread count: ``peak_gflops``
per core times the threads (default ``DEFAULT_PEAK_GFLOPS``, measured on the project's machine),
or measured here with ``bench.measure_fma_peak`` when ``peak_gflops`` is None.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from compiler import bench

# One Zen 4 core's fp32 FMA throughput (AVX-512 at ~3.67 GHz), measured with bench.measure_fma_peak
# on the 2-core machine this project is developed on.
DEFAULT_PEAK_GFLOPS = 117.5

CSV_NAME, JSON_NAME, MARKDOWN_NAME, PLOT_NAME = ("perf_results.csv", "perf_results.json", "perf_results.md",
                                                "perf_ratios.png")
# A tilec/ort output difference beyond this (relative to max |ort|) is flagged in the table.
DIFF_WARNING = 1e-3


@dataclass(frozen=True)
class SuiteRow:
    model: str
    threads: int
    gflop: float | None
    peak_gflops: float  # the machine's FMA peak at this thread count
    compile_s: float | None = None
    tilec_ms: float | None = None  # medians
    ort_ms: float | None = None
    tilec_min_ms: float | None = None
    ort_min_ms: float | None = None
    max_rel_diff: float | None = None  # max |tilec - ort| / max |ort| over the outputs
    error: str | None = None
    compile_stages: dict[str, float] | None = None  # seconds per compiler stage (JSON only)

    @property
    def ratio(self) -> float | None:
        """tilec / onnxruntime median time: below 1, tilec is faster."""
        return self.tilec_ms / self.ort_ms if self.tilec_ms and self.ort_ms else None

    def gflops(self, ms: float | None) -> float | None:
        return self.gflop / (ms / 1e3) if self.gflop and ms else None

    def peak_percent(self, ms: float | None) -> float | None:
        rate = self.gflops(ms)
        return 100 * rate / self.peak_gflops if rate is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "ratio": self.ratio,
                "tilec_gflops": self.gflops(self.tilec_ms), "tilec_peak_pct": self.peak_percent(self.tilec_ms),
                "ort_gflops": self.gflops(self.ort_ms), "ort_peak_pct": self.peak_percent(self.ort_ms)}


CSV_COLUMNS = ("model", "threads", "gflop", "compile_s", "tilec_ms", "ort_ms", "ratio", "tilec_gflops",
               "tilec_peak_pct", "ort_gflops", "ort_peak_pct", "tilec_min_ms", "ort_min_ms", "max_rel_diff",
               "peak_gflops", "error")
TABLE_HEADER = ("model", "threads", "GFLOP", "tilec ms", "ort ms", "ratio", "tilec GFLOP/s", "% peak",
                "max rel diff")


@dataclass
class SuiteReport:
    rows: list[SuiteRow] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def geomean_ratios(self) -> dict[int, float]:
        """threads -> geometric mean of the tilec/ort ratios of the models that ran."""
        by_threads: dict[int, list[float]] = {}
        for row in self.rows:
            if row.ratio is not None:
                by_threads.setdefault(row.threads, []).append(row.ratio)
        return {t: math.exp(sum(map(math.log, ratios)) / len(ratios)) for t, ratios in sorted(by_threads.items())}

    def table(self) -> list[list[str]]:
        """The printed table's cells, one row per (model, threads), in TABLE_HEADER's order."""

        def num(value: float | None, fmt: str) -> str:
            return "-" if value is None else format(value, fmt)

        cells = []
        for row in self.rows:
            if row.error:
                cells.append([row.model, str(row.threads), num(row.gflop, ".3f"), "error: " + row.error,
                              "", "", "", "", ""])
                continue
            diff = num(row.max_rel_diff, ".1e") + (" !" if (row.max_rel_diff or 0) > DIFF_WARNING else "")
            cells.append([row.model, str(row.threads), num(row.gflop, ".3f"), num(row.tilec_ms, ".3f"),
                          num(row.ort_ms, ".3f"), num(row.ratio, ".2f"), num(row.gflops(row.tilec_ms), ".1f"),
                          num(row.peak_percent(row.tilec_ms), ".1f"), diff])
        return cells

    def markdown(self) -> str:
        """The table, the geometric means and the compile times as Markdown (for docs/PERFORMANCE.md)."""
        lines = ["| " + " | ".join(TABLE_HEADER) + " |", "|" + "---|" * len(TABLE_HEADER)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.table()]
        lines.append("")
        lines += [f"Geometric-mean ratio tilec/ort at {t} thread(s): **{r:.3f}**  " for t, r in
                  self.geomean_ratios().items()]
        compile_s = {row.model: row.compile_s for row in self.rows if row.compile_s is not None}
        if compile_s:
            lines += ["", "| model | tilec compile s |", "|---|---|"]
            lines += [f"| {model} | {seconds:.1f} |" for model, seconds in compile_s.items()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta, "rows": [row.as_dict() for row in self.rows],
                "geomean_ratio": {str(t): r for t, r in self.geomean_ratios().items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SuiteReport":
        """The report ``to_json`` saved (derived columns are recomputed), e.g. to redraw its plot."""
        names = {f.name for f in dataclasses.fields(SuiteRow)}
        return cls([SuiteRow(**{k: v for k, v in row.items() if k in names}) for row in data["rows"]],
                   dict(data.get("meta", {})))

    def write(self, out_dir: str | os.PathLike, note: Callable[[str], None] | None = None) -> list[pathlib.Path]:
        """Write the CSV, the JSON and (with matplotlib) the ratio plot into ``out_dir``; returns their paths."""
        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / CSV_NAME, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: ("" if v is None else v) for k, v in row.as_dict().items() if k in CSV_COLUMNS})
        (out / JSON_NAME).write_text(json.dumps(self.to_json(), indent=2) + "\n")
        (out / MARKDOWN_NAME).write_text(self.markdown())
        written = [out / CSV_NAME, out / JSON_NAME, out / MARKDOWN_NAME]
        plot = self.plot(out / PLOT_NAME, note)
        return written + ([plot] if plot else [])

    def plot(self, path: pathlib.Path, note: Callable[[str], None] | None = None) -> pathlib.Path | None:
        """A bar chart of the tilec/ort ratios, one bar per thread count per model; None without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")  # files only: no display needed
            import matplotlib.pyplot as plt
            import matplotlib.ticker
        except ImportError:
            if note:
                note("matplotlib is not installed: no plot (pip install matplotlib, or the dev extra)")
            return None
        models = list(dict.fromkeys(row.model for row in self.rows))
        threads = sorted({row.threads for row in self.rows})
        ratios = {(row.model, row.threads): row.ratio for row in self.rows}
        geomeans = self.geomean_ratios()
        width = 0.8 / max(len(threads), 1)
        fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(models) + 2), 4.5))
        for k, t in enumerate(threads):
            xs = [i + (k - (len(threads) - 1) / 2) * width for i in range(len(models))]
            values = [ratios.get((m, t)) or 1.0 for m in models]  # a failed model draws no bar
            label = f"{t} thread{'s' if t > 1 else ''}"
            if t in geomeans:
                label += f" (geomean {geomeans[t]:.2f})"
            # Bars grow from 1 (parity) on a log axis: faster-than-ort bars point down, and 2x and 1/2x
            # are equally long.
            bars = ax.bar(xs, [v - 1 for v in values], width, bottom=1.0, label=label)
            ax.bar_label(bars, labels=[f"{ratios[(m, t)]:.2f}" if ratios.get((m, t)) else "failed" for m in models],
                         fontsize=7, padding=2)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xticks(range(len(models)), models, rotation=35, ha="right")
        ax.set_ylabel("tilec / onnxruntime median time (lower is better)")
        ax.set_title("tilec vs onnxruntime (CPU) per model")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


def machine_description() -> dict[str, Any]:
    """What the numbers were measured on and with: CPU, usable cores, versions, load, time."""
    import llvmlite.binding as llvm
    import numpy as np

    import compiler

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    features = llvm.get_host_cpu_features()
    return {"cpu": cpu, "llvm_cpu": llvm.get_host_cpu_name(), "usable_cpus": bench.default_threads(),
            "avx512f": bool(features.get("avx512f")), "platform": platform.platform(),
            "python": platform.python_version(), "tilec": compiler.__version__, "onnxruntime": ort_version,
            "numpy": np.__version__, "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _failure(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def run_suite(names: Sequence[str], threads: Sequence[int], *, runs: int = 20, warmup: int = 3, seed: int = 0,
              peak_gflops: float | None = DEFAULT_PEAK_GFLOPS, mode: str = "quiet",
              progress: Callable[[str], None] | None = None) -> SuiteReport:
    """Benchmark the suite models ``names`` at each thread count of ``threads`` (see the module docstring).

    ``peak_gflops``: one core's FMA peak (scaled by the thread count), or None to measure the peak
    at each thread count here. ``mode``: how the runs are timed (``bench.TIMING_MODES``: quiet,
    contended, gap). ``progress`` gets one line per step.
    """
    import compiler
    from compiler import models

    say = progress or (lambda line: None)
    unknown = [name for name in names if name not in models.SUITE]
    if unknown:
        raise bench.BenchError(f"unknown suite model(s) {', '.join(unknown)}; known: {', '.join(models.SUITE)}")
    threads = [t or bench.default_threads() for t in threads]
    if peak_gflops is None:
        peaks = {t: bench.measure_fma_peak(t) for t in dict.fromkeys(threads)}
        say("measured FMA peak: " + ", ".join(f"{p:.1f} GFLOP/s on {t} thread(s)" for t, p in peaks.items()))
    else:
        peaks = {t: peak_gflops * t for t in threads}
    report = SuiteReport(meta={**machine_description(), "runs": runs, "warmup": warmup, "seed": seed, "mode": mode,
                               "threads": list(threads), "peak_source": "measured" if peak_gflops is None else "given",
                               "peak_gflops_per_core": peak_gflops, "peak_gflops": {str(t): p for t, p in peaks.items()}})
    for name in names:
        gflop = None
        try:
            model = models.build(name)
            gflop = bench.count_flops(model) / 1e9
            with tempfile.TemporaryDirectory(prefix="tilec-suite-") as tmp:
                start = time.perf_counter()
                stages: dict[str, float] = {}
                artifact = compiler.compile(model, pathlib.Path(tmp) / f"{name}.tilec", timings=stages)
                compile_s = time.perf_counter() - start
                say(f"{name}: {gflop:.3f} GFLOP, compiled in {compile_s:.1f} s")
                for t in threads:
                    row = _bench_one(name, model, artifact, t, gflop, peaks[t], compile_s, runs, warmup, seed, mode)
                    report.rows.append(dataclasses.replace(row, compile_stages=stages))
                    say(_progress_line(report.rows[-1]))
        except Exception as exc:  # noqa: BLE001 - any failure (a tilec bug included) is one model's result
            report.rows += [SuiteRow(name, t, gflop, peaks[t], error=_failure(exc)) for t in threads
                            if not any(r.model == name and r.threads == t for r in report.rows)]
            say(f"{name}: failed: {_failure(exc)}")
    report.meta["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return report


def _bench_one(name: str, model: Any, artifact: pathlib.Path, threads: int, gflop: float, peak: float,
               compile_s: float, runs: int, warmup: int, seed: int, mode: str) -> SuiteRow:
    from runtime_stub import InferenceSession

    with InferenceSession(artifact, threads=threads) as session:
        inputs = bench.random_inputs(session.get_inputs(), seed=seed)
        result = bench.benchmark(session, bench.ort_session(model, threads), inputs, runs=runs, warmup=warmup,
                                 threads=threads, mode=mode)
    return SuiteRow(name, threads, gflop, peak, compile_s, result.tilec.median_ms, result.ort.median_ms,
                    result.tilec.min_ms, result.ort.min_ms, result.max_rel_diff)


def _progress_line(row: SuiteRow) -> str:
    return (f"{row.model} @ {row.threads} thread(s): tilec {row.tilec_ms:.3f} ms, ort {row.ort_ms:.3f} ms, "
            f"ratio {row.ratio:.2f}")


@dataclass(frozen=True)
class ConcurrencyRow:
    """One session (threads=1) of each runtime called from 1 and from ``callers`` Python threads at once."""

    model: str
    tilec: bench.Scaling | None = None
    ort: bench.Scaling | None = None
    error: str | None = None

    @staticmethod
    def markdown_table(rows: Sequence["ConcurrencyRow"]) -> str:
        lines = ["| model | tilec runs/s, 1 caller | tilec, 2 callers | tilec scaling | onnxruntime, 1 caller "
                 "| onnxruntime, 2 callers | onnxruntime scaling |", "|---|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            if r.error is not None or r.tilec is None or r.ort is None:
                lines.append(f"| {r.model} | {r.error} | | | | | |")
                continue
            lines.append(f"| {r.model} | {r.tilec.alone_per_s:.1f} | {r.tilec.together_per_s:.1f} | "
                         f"**{r.tilec.factor:.2f}x** | {r.ort.alone_per_s:.1f} | {r.ort.together_per_s:.1f} | "
                         f"{r.ort.factor:.2f}x |")
        return "\n".join(lines)


def run_concurrency(names: Sequence[str], callers: int = 2, seconds: float = 2.0, seed: int = 0,
                    progress: Callable[[str], None] | None = None) -> list[ConcurrencyRow]:
    """For each suite model: the runs/s of one threads=1 session from 1 and from ``callers`` request threads,
    tilec's and onnxruntime's (``bench.concurrency_scaling``), on the same random inputs."""
    import compiler
    from compiler import models
    from runtime_stub import InferenceSession

    say = progress or (lambda line: None)
    rows = []
    for name in names:
        try:
            model = models.build(name)
            with tempfile.TemporaryDirectory(prefix="tilec-concurrency-") as tmp:
                artifact = compiler.compile(model, pathlib.Path(tmp) / f"{name}.tilec")
                with InferenceSession(artifact, threads=1) as session:
                    inputs = bench.random_inputs(session.get_inputs(), seed=seed)
                    tilec = bench.concurrency_scaling(lambda: session.run(None, inputs), callers, seconds)
            ort = bench.ort_session(model, 1)
            ort_feed = {arg.name: inputs[arg.name] for arg in ort.get_inputs()}
            ort_scaling = bench.concurrency_scaling(lambda: ort.run(None, ort_feed), callers, seconds)
            rows.append(ConcurrencyRow(name, tilec, ort_scaling))
            say(f"{name}: tilec {tilec.factor:.2f}x, onnxruntime {ort_scaling.factor:.2f}x with {callers} callers")
        except Exception as exc:  # noqa: BLE001 - one model's failure is its row
            rows.append(ConcurrencyRow(name, error=_failure(exc)))
            say(f"{name}: failed: {_failure(exc)}")
    return rows
