"""KV-cache decoding against onnxruntime: ``tilec bench --decode`` (docs/PERFORMANCE.md, issue 14).

``run_decode(names, threads, runs, warmup)`` builds each decoder of ``CASES`` (``compiler.models.decoder``,
random weights), compiles it once with the past length symbolic in [0, 1024], and times, in this one
process and with ``bench.time_alternating`` (medians), tilec's artifact against onnxruntime
(CPUExecutionProvider, ORT_ENABLE_ALL, the same thread count) on the same model and feeds: one decode
step (batch 1, one new token) over pasts of 16, 128 and 512 tokens, and a 128-token prefill (empty past).
``DecodeRow.markdown_table(rows)`` formats the rows with the geometric mean of the ratios per phase.
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
from compiler.models.decoder import DecoderShape, gpt2_decoder_model, llama_decoder_model, step_feeds
from compiler.models.quantized import weights_to_4bit

MAX_PAST = 1024
VOCAB = 8192

# name -> the decoder and its shape (the sizes; an 8192-token vocabulary for both)
CASES: dict[str, Callable[[], tuple[onnx.ModelProto, DecoderShape]]] = {
    "llama_gqa": lambda: llama_decoder_model(layers=4, hidden=512, heads=8, kv_heads=2, intermediate=1408, vocab=VOCAB),
    "gpt2_small": lambda: gpt2_decoder_model(layers=12, hidden=768, heads=12, vocab=VOCAB, max_positions=MAX_PAST + 128),
    # llama_gqa with 4-bit weights (MatMulNBits), as onnxruntime's weight-only quantizer writes them
    "llama_gqa_int4": lambda: _int4(CASES["llama_gqa"]()),
}


def _int4(case: tuple[onnx.ModelProto, DecoderShape]) -> tuple[onnx.ModelProto, DecoderShape]:
    model, shape = case
    return weights_to_4bit(model), shape

# (phase label, past length, new tokens)
PHASES = (("decode", 16, 1), ("decode", 128, 1), ("decode", 512, 1), ("prefill", 0, 128))


@dataclass(frozen=True)
class DecodeRow:
    model: str
    phase: str
    past: int
    new: int
    threads: int
    tilec_ms: float | None = None
    ort_ms: float | None = None
    max_rel_diff: float | None = None  # logits vs onnxruntime's, relative to max |logits|
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        return self.tilec_ms / self.ort_ms if self.tilec_ms and self.ort_ms else None

    @staticmethod
    def markdown_table(rows: Sequence["DecodeRow"]) -> str:
        lines = ["| model | phase | past | new tokens | threads | tilec ms | onnxruntime ms | tilec/onnxruntime | "
                 "max rel diff |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            if r.error:
                lines.append(f"| {r.model} | {r.phase} | {r.past} | {r.new} | {r.threads} | {r.error} | | | |")
                continue
            lines.append(f"| {r.model} | {r.phase} | {r.past} | {r.new} | {r.threads} | {r.tilec_ms:.3f} | "
                         f"{r.ort_ms:.3f} | {r.ratio:.2f} | {r.max_rel_diff:.1e} |")
        for phase in dict.fromkeys(r.phase for r in rows):
            for threads in sorted({r.threads for r in rows}):
                ok = [r.ratio for r in rows if r.phase == phase and r.threads == threads and r.ratio]
                if ok:
                    lines.append(f"| **geomean** | {phase} | | | {threads} | | | **{bench.geomean(ok):.2f}** | |")
        return "\n".join(lines)


def _feeds(shape: DecoderShape, past: int, new: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(past + new)
    cache = [rng.standard_normal((1, shape.kv_heads, past, shape.head_dim)).astype(np.float32)
             for _ in range(2 * shape.layers)] if past else []
    return step_feeds(shape, rng.integers(0, shape.vocab, (1, new)), cache, np.ones((1, past + new), np.int64))


def run_decode(names: Sequence[str] | None = None, threads: Sequence[int] = (1,), runs: int = 20, warmup: int = 3,
               progress: Callable[[str], None] | None = None) -> list[DecodeRow]:
    import compiler
    from runtime_stub import InferenceSession

    rows: list[DecodeRow] = []
    say = progress or (lambda line: None)
    for name in names or list(CASES):
        model, shape = CASES[name]()
        with tempfile.TemporaryDirectory(prefix="tilec-decode-") as tmp:
            say(f"{name}: compiling")
            try:
                path = compiler.compile(model, pathlib.Path(tmp) / "decoder.tilec",
                                        dim_bounds={"past_sequence_length": (0, MAX_PAST)})
            except Exception as exc:  # noqa: BLE001 - a row says what failed; the suite goes on
                rows.append(DecodeRow(name, "-", 0, 0, 0, error=f"compile: {type(exc).__name__}: {exc}"[:200]))
                continue
            for t in threads:
                with InferenceSession(path, threads=t) as session:
                    ort = bench.ort_session(model, t)
                    for phase, past, new in PHASES:
                        say(f"{name}: {phase} past {past} new {new}, {t} thread(s)")
                        rows.append(_time_one(name, phase, past, new, t, session, ort, _feeds(shape, past, new),
                                              runs, warmup))
    return rows


def _time_one(name: str, phase: str, past: int, new: int, threads: int, session: Any, ort: Any,
              feeds: dict[str, np.ndarray], runs: int, warmup: int) -> DecodeRow:
    try:
        got, want = session.run(["logits"], feeds)[0], ort.run(["logits"], feeds)[0]
        diff = float(np.abs(got - want).max()) / max(float(np.abs(want).max()), 1e-30)
        tilec_t, ort_t = bench.time_alternating(lambda: session.run(None, feeds), lambda: ort.run(None, feeds),
                                                runs, warmup)
        return DecodeRow(name, phase, past, new, threads, statistics.median(tilec_t), statistics.median(ort_t), diff)
    except Exception as exc:  # noqa: BLE001
        return DecodeRow(name, phase, past, new, threads, error=f"{type(exc).__name__}: {exc}"[:200])
