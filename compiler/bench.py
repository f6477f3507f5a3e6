"""Benchmark helpers shared by ``tilec bench`` and the suite benchmark (examples/benchmark.py).

* ``random_inputs(specs, seed)``: one deterministic random array per input spec.
* ``time_alternating(fn_a, fn_b, runs, warmup)``: time two callables run by run, alternating, in
  one process, so that clock changes, thermal state and noisy neighbours hit both sides alike.
* ``compare_outputs(a, b)``: the worst ``max|a - b| / max|b|`` over the outputs (``b`` is the reference).
* ``ort_session(model, threads)``: an onnxruntime CPU session set up the way tilec is compared with
  (all graph optimisations, ``threads`` intra-op threads, one inter-op thread).
* ``benchmark(tilec_session, ort_session, inputs, ...)``: all of the above, as a ``BenchResult``.

onnxruntime is a dev dependency: it is imported only by ``ort_session``, which raises ``BenchError``
with an install hint when it is missing.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from runtime_stub.errors import TilecError


class BenchError(TilecError):
    """The benchmark cannot run (onnxruntime missing, or unable to load the model)."""


# --- inputs -----------------------------------------------------------------------


def _spec_fields(spec: Any) -> tuple[str, str, tuple[int, ...]]:
    """(name, dtype name, shape) of a NodeArg, a manifest entry dict or a (name, dtype, shape) tuple."""
    if isinstance(spec, Mapping):
        name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
    elif isinstance(spec, tuple):
        name, dtype, shape = spec
    else:
        name, shape = spec.name, spec.shape
        # runtime_stub NodeArg: .type says "tensor(bfloat16)" while .dtype is the uint16 carrier.
        dtype = "bfloat16" if getattr(spec, "type", "") == "tensor(bfloat16)" else spec.dtype
    dtype_name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    return str(name), dtype_name, tuple(int(d) for d in shape)


def random_array(dtype: str, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """A random array: standard normal floats, small non-negative integers (safe as indices), random bools.

    ``bfloat16`` comes back as uint16 bit patterns, the way runtime_stub carries it.
    """
    shape = tuple(shape)
    if dtype == "bfloat16":
        bits = rng.standard_normal(shape, dtype=np.float32).view(np.uint32)
        return (bits >> 16).astype(np.uint16)
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        return rng.integers(0, 8, size=shape).astype(dt)
    raise BenchError(f"cannot make random inputs of dtype {dtype!r}")


def random_inputs(specs: Iterable[Any], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic random inputs, name -> array, for ``specs`` (NodeArgs, manifest entries or tuples)."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in specs:
        name, dtype, shape = _spec_fields(spec)
        inputs[name] = random_array(dtype, shape, rng)
    return inputs


# --- timing -----------------------------------------------------------------------


def time_alternating(fn_a: Callable[[], Any], fn_b: Callable[[], Any], runs: int = 20,
                     warmup: int = 3) -> tuple[list[float], list[float]]:
    """Run ``fn_a`` and ``fn_b`` alternately; returns the per-run times in milliseconds of each.

    ``warmup`` rounds of both run first and are not timed. The side that goes first flips every
    round (a b, b a, a b, ...) so that neither always runs on the other's warm (or cold) caches.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(warmup):
        fn_a()
        fn_b()
    times_a: list[float] = []
    times_b: list[float] = []
    clock = time.perf_counter_ns
    for i in range(runs):
        order = ((fn_a, times_a), (fn_b, times_b)) if i % 2 == 0 else ((fn_b, times_b), (fn_a, times_a))
        for fn, sink in order:
            start = clock()
            fn()
            sink.append((clock() - start) / 1e6)
    return times_a, times_b


@dataclass(frozen=True)
class TimingSummary:
    median_ms: float
    min_ms: float
    mean_ms: float
    max_ms: float
    runs: int


def summarize(times_ms: Sequence[float]) -> TimingSummary:
    return TimingSummary(statistics.median(times_ms), min(times_ms), statistics.fmean(times_ms), max(times_ms),
                         len(times_ms))


# --- accuracy ---------------------------------------------------------------------


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|`` (``b`` is the reference); plain ``max|a - b|`` when ``b`` is all zeros.

    NaNs in the same places compare equal; a shape mismatch is ``inf``.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    a64 = a.astype(np.float64)
    b64 = b.astype(np.float64)
    both_nan = np.isnan(a64) & np.isnan(b64)
    same_inf = np.isinf(a64) & (a64 == b64)
    diff = np.where(both_nan | same_inf, 0.0, np.abs(a64 - b64))
    if np.isnan(diff).any():
        return float("nan")
    finite_ref = np.abs(b64[np.isfinite(b64)])
    scale = float(finite_ref.max()) if finite_ref.size else 0.0
    worst = float(diff.max())
    return worst / scale if scale > 0 else worst


def compare_outputs(a: Sequence[np.ndarray] | Mapping[str, np.ndarray],
                    b: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> float:
    """The worst ``relative_error`` over the outputs; dicts are matched by name, sequences by position."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        if set(a) != set(b):
            raise BenchError(f"the outputs differ: {sorted(a)} vs {sorted(b)}")
        pairs = [(a[name], b[name]) for name in b]
    else:
        a_list = list(a.values()) if isinstance(a, Mapping) else list(a)
        b_list = list(b.values()) if isinstance(b, Mapping) else list(b)
        if len(a_list) != len(b_list):
            raise BenchError(f"the models have {len(a_list)} and {len(b_list)} outputs")
        pairs = list(zip(a_list, b_list))
    worst = 0.0
    for x, y in pairs:
        err = relative_error(x, y)
        if np.isnan(err) or err > worst:
            worst = err
        if np.isnan(worst):
            break
    return worst


# --- onnxruntime ------------------------------------------------------------------


def default_threads() -> int:
    """The CPUs this process may run on (what runtime_stub uses when threads is None)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def ort_session(model: Any, threads: int, note: Callable[[str], None] | None = None):
    """An onnxruntime CPU session: ORT_ENABLE_ALL, ``threads`` intra-op threads, 1 inter-op thread.

    ``model``: a path, serialized bytes or an onnx.ModelProto. A model whose IR version is newer than
    this onnxruntime reads (the onnx package saves its own newest one) is retried once with the IR
    version onnxruntime names as its maximum; ``note`` is told when that happens.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise BenchError("benchmarking needs onnxruntime, which is not installed; "
                         "install it with: pip install onnxruntime (or pip install -e '.[dev]')") from None
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3

    def load(source: Any):
        return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])

    try:
        return load(model)
    except Exception as exc:  # onnxruntime raises its own pybind types
        message = str(exc).strip()
        newest = re.search(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)", message)
        if newest is None:
            first = message.splitlines()[0] if message else type(exc).__name__
            raise BenchError(f"onnxruntime cannot load the model: {first}") from None
    import onnx

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    proto.ir_version = int(newest.group(2))
    if note:
        note(f"onnxruntime reads IR version <= {newest.group(2)}; gave it the model as IR version "
             f"{newest.group(2)} (the file says {newest.group(1)})")
    try:
        return load(proto.SerializeToString())
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"onnxruntime cannot load the model: {first}") from None


# --- the whole comparison ---------------------------------------------------------


@dataclass(frozen=True)
class BenchResult:
    tilec: TimingSummary
    ort: TimingSummary
    max_rel_diff: float  # max|tilec - ort| / max|ort| over all outputs
    threads: int

    @property
    def ratio(self) -> float:
        """tilec median / onnxruntime median: below 1 means tilec is faster."""
        return self.tilec.median_ms / self.ort.median_ms if self.ort.median_ms > 0 else float("inf")


def benchmark(tilec_session: Any, ort_sess: Any, inputs: Mapping[str, np.ndarray], *, runs: int = 20,
              warmup: int = 3, threads: int = 0) -> BenchResult:
    """Time ``tilec_session`` against ``ort_sess`` alternately on ``inputs`` and compare their outputs."""
    ort_inputs = {arg.name for arg in ort_sess.get_inputs()}
    ort_feed = {name: value for name, value in inputs.items() if name in ort_inputs}
    ort_names = [arg.name for arg in ort_sess.get_outputs()]
    tilec_names = [arg.name for arg in tilec_session.get_outputs()]

    def run_tilec():
        return tilec_session.run(None, inputs)

    def run_ort():
        return ort_sess.run(None, ort_feed)

    out_t = dict(zip(tilec_names, run_tilec()))
    out_o = dict(zip(ort_names, run_ort()))
    if set(out_t) == set(out_o):
        diff = compare_outputs(out_t, out_o)
    else:
        diff = compare_outputs(list(out_t.values()), list(out_o.values()))
    times_t, times_o = time_alternating(run_tilec, run_ort, runs, warmup)
    return BenchResult(summarize(times_t), summarize(times_o), diff, threads)
