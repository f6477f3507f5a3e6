"""Dynamic against static against onnxruntime: ``tilec bench --dynamic`` (docs/PERFORMANCE.md, issue 13).

``run_dynamic(names, threads, runs, warmup)`` compiles each model of ``CASES`` once with its
symbolic dims left symbolic, and, for each of its run shapes, once more specialized to that shape
(``input_shapes``); then times, in this one process, the dynamic artifact against the static one
and against onnxruntime (CPUExecutionProvider, ORT_ENABLE_ALL, the same thread count) on the
dynamic model, with ``bench.time_alternating`` (medians). ``DynamicRow.markdown_table(rows)``
formats the table with the geometric means of dynamic/static and dynamic/onnxruntime.
"""

from __future__ import annotations

import pathlib
import statistics
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from compiler import bench
from compiler.models import exported
from compiler.models.light import light_model

Feeds = dict[str, np.ndarray]


def _symbolic_batch(model: onnx.ModelProto, name: str = "N") -> onnx.ModelProto:
    """``model`` with dim 0 of its first input and of its outputs symbolic (what exporters write)."""
    for vi in [model.graph.input[0], *model.graph.output]:
        vi.type.tensor_type.shape.dim[0].dim_param = name
    return model


def _first_input(model: onnx.ModelProto, *shape: int) -> Feeds:
    return {model.graph.input[0].name: np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)}


def _bert_feeds(model: onnx.ModelProto) -> list[Feeds]:
    return [exported.bert_feeds(b, s, vocab=1000) for b, s in ((1, 16), (1, 128), (4, 64))]


# name -> (dynamic model builder, dim_bounds, the run shapes' feeds for the model built)
CASES: dict[str, tuple[Callable[[], onnx.ModelProto], dict[str, tuple[int, int]],
                       Callable[[onnx.ModelProto], list[Feeds]]]] = {
    "bert": (lambda: exported.bert_encoder_model(hidden=256, heads=4, layers=4, vocab=1000, max_pos=512),
             {"sequence": (1, 512)}, _bert_feeds),
    "gpt2": (lambda: exported.bert_encoder_model(hidden=256, heads=4, layers=4, vocab=1000, max_pos=512, causal=True),
             {"sequence": (1, 512)}, _bert_feeds),
    "vit": (lambda: exported.vit_model(image=64, patch=8, hidden=192, heads=3, layers=4), {},
            lambda m: [_first_input(m, n, 3, 64, 64) for n in (1, 4, 8)]),
    "squeezenet": (lambda: _symbolic_batch(light_model("squeezenet")), {},
                   lambda m: [_first_input(m, n, 3, 224, 224) for n in (1, 2, 4)]),
    "cnn_hw": (exported.spatial_cnn_model, {},
               lambda m: [_first_input(m, *s) for s in ((1, 3, 64, 64), (4, 3, 96, 80), (8, 3, 128, 128))]),
}


@dataclass(frozen=True)
class DynamicRow:
    model: str
    shapes: str
    threads: int
    dynamic_ms: float | None = None
    static_ms: float | None = None
    ort_ms: float | None = None
    max_rel_diff: float | None = None  # dynamic vs onnxruntime, relative to max |ort|
    error: str | None = None

    @property
    def vs_static(self) -> float | None:
        return self.dynamic_ms / self.static_ms if self.dynamic_ms and self.static_ms else None

    @property
    def vs_ort(self) -> float | None:
        return self.dynamic_ms / self.ort_ms if self.dynamic_ms and self.ort_ms else None

    @staticmethod
    def markdown_table(rows: Sequence["DynamicRow"]) -> str:
        lines = ["| model | run shape | threads | dynamic ms | static ms | onnxruntime ms | dynamic/static | "
                 "dynamic/onnxruntime | max rel diff |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            if r.error:
                lines.append(f"| {r.model} | {r.shapes} | {r.threads} | {r.error} | | | | | |")
                continue
            lines.append(f"| {r.model} | {r.shapes} | {r.threads} | {r.dynamic_ms:.3f} | {r.static_ms:.3f} | "
                         f"{r.ort_ms:.3f} | {r.vs_static:.2f} | {r.vs_ort:.2f} | {r.max_rel_diff:.1e} |")
        for threads in sorted({r.threads for r in rows}):
            ok = [r for r in rows if r.threads == threads and not r.error]
            if ok:
                lines.append(f"| **geomean** | | {threads} | | | | **{bench.geomean([r.vs_static for r in ok]):.2f}** | "
                             f"**{bench.geomean([r.vs_ort for r in ok]):.2f}** | |")
        return "\n".join(lines)


def _shape_text(feeds: Feeds) -> str:
    return ", ".join(f"{name}={'x'.join(map(str, a.shape))}" for name, a in feeds.items())


def run_dynamic(names: Sequence[str] | None = None, threads: Sequence[int] = (1,), runs: int = 20, warmup: int = 3,
                progress: Callable[[str], None] | None = None) -> list[DynamicRow]:
    import compiler
    from runtime_stub import InferenceSession

    rows: list[DynamicRow] = []
    say = progress or (lambda line: None)
    for name in names or list(CASES):
        make, bounds, feeds_of = CASES[name]
        model = make()
        with tempfile.TemporaryDirectory(prefix="tilec-dynamic-") as tmp:
            folder = pathlib.Path(tmp)
            say(f"{name}: compiling the dynamic artifact")
            try:
                dynamic_path = compiler.compile(model, folder / "dynamic.tilec", dim_bounds=bounds or None)
            except Exception as exc:  # noqa: BLE001 - a row says what failed; the suite goes on
                rows.append(DynamicRow(name, "-", 0, error=f"dynamic compile: {type(exc).__name__}: {exc}"[:200]))
                continue
            for k, feeds in enumerate(feeds_of(model)):
                shapes = _shape_text(feeds)
                say(f"{name} {shapes}: compiling the static artifact")
                try:
                    static_path = compiler.compile(model, folder / f"static{k}.tilec",
                                                   input_shapes={n: a.shape for n, a in feeds.items()})
                except Exception as exc:  # noqa: BLE001
                    rows.append(DynamicRow(name, shapes, 0, error=f"static compile: {type(exc).__name__}: {exc}"[:200]))
                    continue
                for t in threads:
                    rows.append(_time_one(name, shapes, t, dynamic_path, static_path, model, feeds, runs, warmup,
                                          InferenceSession))
    return rows


def _time_one(name: str, shapes: str, threads: int, dynamic_path: Any, static_path: Any, model: onnx.ModelProto,
              feeds: Feeds, runs: int, warmup: int, session_type: Any) -> DynamicRow:
    try:
        with session_type(dynamic_path, threads=threads) as dynamic, session_type(static_path, threads=threads) as static:
            ort = bench.ort_session(model, threads)
            want = ort.run(None, feeds)
            got = dynamic.run(None, feeds)
            scale = max(max(float(np.abs(w).max(initial=0.0)) for w in want), 1e-30)
            diff = max(float(np.abs(g - w).max(initial=0.0)) for g, w in zip(got, want)) / scale
            dyn_a, static_t = bench.time_alternating(lambda: dynamic.run(None, feeds), lambda: static.run(None, feeds),
                                                     runs, warmup)
            dyn_b, ort_t = bench.time_alternating(lambda: dynamic.run(None, feeds), lambda: ort.run(None, feeds),
                                                  runs, warmup)
        return DynamicRow(name, shapes, threads, statistics.median(dyn_a + dyn_b), statistics.median(static_t),
                          statistics.median(ort_t), diff)
    except Exception as exc:  # noqa: BLE001
        return DynamicRow(name, shapes, threads, error=f"{type(exc).__name__}: {exc}"[:200])
