"""Benchmark helpers shared by ``tilec bench`` and the suite benchmark (examples/benchmark.py).

* ``random_inputs(specs, seed)``: one deterministic random array per input spec.
* ``time_alternating(fn_a, fn_b, runs, warmup)``: time two callables in alternating short blocks in
  one process, so that clock changes, thermal state and noisy neighbours hit both sides alike.
* ``compare_outputs(a, b)``: the worst ``max|a - b| / max|b|`` over the outputs (``b`` is the reference).
* ``ort_session(model, threads)``: an onnxruntime CPU session set up the way tilec is compared with
  (all graph optimisations, ``threads`` intra-op threads, one inter-op thread).
* ``time_interleaved`` / ``time_after_gaps``: the contended and gap modes (``TIMING_MODES``): the sides
  run by run with no pause, or each timed run after a 50 ms pause.
* ``benchmark(tilec_session, ort_session, inputs, ..., mode=...)``: all of the above, as a ``BenchResult``.
* ``concurrency_scaling(run, callers)``: runs/s of one session from one thread and from ``callers`` at once.
* ``count_flops(model)``: 2 x the multiply-accumulates of a model's MatMul/Gemm/Conv/ConvTranspose.
* ``measure_fma_peak(threads)``: this machine's fp32 FMA GFLOP/s, from a small kernel compiled here.

The suite of models built on these is compiler/bench_suite.py.

onnxruntime is a dev dependency: it is imported only by ``ort_session``, which raises ``BenchError``
with an install hint when it is missing.
"""

from __future__ import annotations

import math
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


def _spec_fields(spec: Any) -> tuple[str, str, tuple[int | str, ...]]:
    """(name, dtype name, shape) of a NodeArg, a manifest entry dict or a (name, dtype, shape) tuple;
    a symbolic dim stays its name."""
    if isinstance(spec, Mapping):
        name, dtype, shape = spec["name"], spec["dtype"], spec["shape"]
    elif isinstance(spec, tuple):
        name, dtype, shape = spec
    else:
        name, shape = spec.name, spec.shape
        # runtime_stub NodeArg: .type says "tensor(bfloat16)" while .dtype is the uint16 carrier.
        dtype = "bfloat16" if getattr(spec, "type", "") == "tensor(bfloat16)" else spec.dtype
    dtype_name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    return str(name), dtype_name, tuple(d if isinstance(d, str) else int(d) for d in shape)


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


def random_inputs(specs: Iterable[Any], seed: int = 0,
                  shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, np.ndarray]:
    """Deterministic random inputs, name -> array, for ``specs`` (NodeArgs, manifest entries or tuples);
    ``shapes`` gives the run shape of inputs with symbolic dims (an artifact that runs at any shape)."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in specs:
        name, dtype, shape = _spec_fields(spec)
        if shapes and name in shapes:
            shape = tuple(int(d) for d in shapes[name])
        elif any(isinstance(d, str) for d in shape):
            raise ValueError(f"input {name!r} has symbolic shape {list(shape)}: give its run shape "
                             f"(--input-shape {name}=AxB...)")
        inputs[name] = random_array(dtype, shape, rng)
    return inputs


# --- timing -----------------------------------------------------------------------


# Pause at each switch of sides (see time_alternating).
SETTLE_S = 0.1


def time_alternating(fn_a: Callable[[], Any], fn_b: Callable[[], Any], runs: int = 20,
                     warmup: int = 3, block: int = 5, settle_s: float = SETTLE_S) -> tuple[list[float], list[float]]:
    """Run ``fn_a`` and ``fn_b`` in alternating blocks; returns the per-run times in milliseconds of each.

    ``warmup`` rounds of both run first and are not timed. Then each side runs ``block``
    times in a row, the first of them untimed, before the other side's block, after a pause of
    ``settle_s``: onnxruntime's worker threads keep spinning on the cores for tens of
    milliseconds after a run (measured with two threads: MobileNetV2's 5.3 ms tilec runs took
    15 ms for 60 ms after an onnxruntime run, 5.5 ms after a 50 ms pause), which would otherwise
    be charged to the other side; the untimed first run pays for cold caches. The rest run as an
    application calls them, back to back. The side that goes first flips every round so neither
    always inherits the other's caches.
    """
    if runs < 1 or warmup < 0 or block < 2:
        raise ValueError(f"need runs >= 1, warmup >= 0 and block >= 2, got runs={runs}, warmup={warmup}, "
                         f"block={block}")
    times_a, times_b = _warmed_up(fn_a, fn_b, warmup)
    round_ = 0
    while len(times_a) < runs or len(times_b) < runs:
        sides = ((fn_a, times_a), (fn_b, times_b))
        for fn, sink in sides if round_ % 2 == 0 else sides[::-1]:
            todo = min(block - 1, runs - len(sink))
            if todo:
                time.sleep(settle_s)  # the other side's threads stop spinning
                fn()  # untimed: absorbs the switch from the other side
            for _ in range(todo):
                _timed(fn, sink)
        round_ += 1
    return times_a, times_b


def time_interleaved(fn_a: Callable[[], Any], fn_b: Callable[[], Any], runs: int = 20,
                     warmup: int = 3) -> tuple[list[float], list[float]]:
    """The contended mode: ``fn_a``, ``fn_b``, ``fn_a``, ... back to back with no pause, every run timed, so
    each side runs while the other's pool threads still spin on the cores (a process sharing its cores
    with another runtime, numpy's BLAS or a web server). Milliseconds per run of each."""
    return time_after_gaps(fn_a, fn_b, runs, warmup, gap_s=0.0)


# The pause before every timed run of the gap mode: a server seeing one request every 50 ms.
GAP_S = 0.05


def time_after_gaps(fn_a: Callable[[], Any], fn_b: Callable[[], Any], runs: int = 20, warmup: int = 3,
                    gap_s: float = GAP_S) -> tuple[list[float], list[float]]:
    """The gap mode: every timed run follows a pause of ``gap_s`` (none: the contended mode), the sides taking
    turns, so each run finds the pool's threads asleep (a server between requests). Milliseconds per run."""
    times_a, times_b = _warmed_up(fn_a, fn_b, warmup)
    for _ in range(runs):
        for fn, sink in ((fn_a, times_a), (fn_b, times_b)):
            if gap_s:
                time.sleep(gap_s)
            _timed(fn, sink)
    return times_a, times_b


def _warmed_up(fn_a: Callable[[], Any], fn_b: Callable[[], Any], warmup: int) -> tuple[list[float], list[float]]:
    """Run both ``warmup`` times, untimed; the empty lists of the timed runs to come."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    return [], []


def _timed(fn: Callable[[], Any], sink: list[float]) -> None:
    start = time.perf_counter_ns()
    fn()
    sink.append((time.perf_counter_ns() - start) / 1e6)


# How the runs of the two sides are timed (``benchmark(mode=...)``, ``tilec bench --mode``).
TIMING_MODES: dict[str, Callable[..., tuple[list[float], list[float]]]] = {
    "quiet": time_alternating, "contended": time_interleaved, "gap": time_after_gaps}


@dataclass(frozen=True)
class TimingSummary:
    median_ms: float
    min_ms: float
    mean_ms: float
    max_ms: float
    runs: int


def geomean(values: Sequence[float | None]) -> float:
    """The geometric mean of the values given (None and 0 skipped); NaN when none is."""
    kept = [v for v in values if v]
    return math.exp(statistics.fmean(math.log(v) for v in kept)) if kept else float("nan")


def summarize(times_ms: Sequence[float]) -> TimingSummary:
    return TimingSummary(statistics.median(times_ms), min(times_ms), statistics.fmean(times_ms), max(times_ms),
                         len(times_ms))


# --- accuracy ---------------------------------------------------------------------


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """``max|a - b| / max|b|`` (``b`` is the reference); plain ``max|a - b|`` when ``b`` is all zeros.

    NaNs in the same places compare equal; a shape mismatch is ``inf``. Strings compare exactly (0 or
    ``inf``); ZipMap's lists of dicts by their keys (exactly) and values.
    """
    if isinstance(a, list) or isinstance(b, list):
        if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b) or \
                any(list(x) != list(y) for x, y in zip(a, b)):
            return float("inf")
        a, b = [list(x.values()) for x in a], [list(y.values()) for y in b]
    a = np.asarray(a)
    b = np.asarray(b)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    if a.dtype.kind in "OUS" or b.dtype.kind in "OUS":
        return 0.0 if a.tolist() == b.tolist() else float("inf")
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


def ort_session(model: Any, threads: int, note: Callable[[str], None] | None = None,
                profile_prefix: str | None = None):
    """An onnxruntime CPU session: ORT_ENABLE_ALL, ``threads`` intra-op threads, 1 inter-op thread.

    ``profile_prefix``: turn on onnxruntime's profiler, writing its JSON next to that path prefix.
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
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix

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
              warmup: int = 3, threads: int = 0, mode: str = "quiet") -> BenchResult:
    """Time ``tilec_session`` against ``ort_sess`` on ``inputs`` (``mode``: a key of ``TIMING_MODES``) and
    compare their outputs."""
    if mode not in TIMING_MODES:
        raise BenchError(f"unknown timing mode {mode!r}; known: {', '.join(TIMING_MODES)}")
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
    times_t, times_o = TIMING_MODES[mode](run_tilec, run_ort, runs, warmup)
    return BenchResult(summarize(times_t), summarize(times_o), diff, threads)


@dataclass(frozen=True)
class Scaling:
    """Runs per second of one session called from 1 and from ``callers`` Python threads at once."""

    callers: int
    alone_per_s: float
    together_per_s: float

    @property
    def factor(self) -> float:
        return self.together_per_s / self.alone_per_s


def concurrency_scaling(run: Callable[[], Any], callers: int = 2, seconds: float = 2.0) -> Scaling:
    """How ``run`` (one session's ``run`` on fixed inputs) scales when ``callers`` threads call it at once:
    each configuration runs for about ``seconds`` after one untimed call per thread."""
    import threading

    def rate(threads: int) -> float:
        done = [0] * threads
        start_line = threading.Barrier(threads + 1)
        deadline = [math.inf]  # set once every thread has made its untimed call

        def caller(k: int) -> None:
            run()
            start_line.wait()
            while time.perf_counter() < deadline[0]:
                run()
                done[k] += 1

        workers = [threading.Thread(target=caller, args=(k,)) for k in range(threads)]
        for w in workers:
            w.start()
        start_line.wait()
        began = time.perf_counter()
        deadline[0] = began + seconds
        for w in workers:
            w.join()
        return sum(done) / (time.perf_counter() - began)

    return Scaling(callers, rate(1), rate(callers))


# --- work and the machine's peak --------------------------------------------------


def _dims(value: Any) -> tuple[int, ...] | None:
    """The static shape of a ValueInfoProto, or None when any dimension is unknown."""
    shape = value.type.tensor_type.shape
    if not value.type.tensor_type.HasField("shape") or any(not d.HasField("dim_value") for d in shape.dim):
        return None
    return tuple(int(d.dim_value) for d in shape.dim)


def _matmul_flops(node: Any, shape: Callable[[str], tuple[int, ...] | None]) -> int | None:
    a, out = shape(node.input[0]), shape(node.output[0])
    return None if a is None or out is None else 2 * math.prod(out) * a[-1]


def _gemm_flops(node: Any, shape: Callable[[str], tuple[int, ...] | None]) -> int | None:
    a, out = shape(node.input[0]), shape(node.output[0])
    trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
    return None if a is None or out is None else 2 * math.prod(out) * (a[0] if trans_a else a[1])


def _conv_flops(node: Any, shape: Callable[[str], tuple[int, ...] | None]) -> int | None:
    # Each output element is a dot product over one group's channels times the kernel window.
    w, out = shape(node.input[1]), shape(node.output[0])
    return None if w is None or out is None else 2 * math.prod(out) * math.prod(w[1:])


def _conv_transpose_flops(node: Any, shape: Callable[[str], tuple[int, ...] | None]) -> int | None:
    # Each input element is scattered through (output channels per group) x kernel window weights.
    x, w = shape(node.input[0]), shape(node.input[1])
    return None if x is None or w is None else 2 * math.prod(x) * math.prod(w[1:])


# The multiply-accumulate ops, counted as 2 FLOP per MAC. Everything else (elementwise, pooling,
# normalization, softmax) is left out: it is memory-bound, small next to the MACs of the models
# benchmarked, and counting it would inflate "% of FMA peak".
MAC_OPS: dict[str, Callable[[Any, Callable[[str], tuple[int, ...] | None]], int | None]] = {
    "MatMul": _matmul_flops, "Gemm": _gemm_flops, "Conv": _conv_flops, "ConvTranspose": _conv_transpose_flops,
}


def _shape_skeleton(model: Any, max_elements: int = 4096) -> Any:
    """``model`` with each initializer of more than ``max_elements`` turned into a typed graph input.

    Shape inference copies the whole model; weights only matter to it through their shapes, while
    the small constants (Reshape targets, Slice bounds) keep the values that shapes depend on.
    """
    from onnx import helper

    graph = model.graph
    declared = {v.name for v in graph.input}
    big = [init for init in graph.initializer if math.prod(init.dims) > max_elements]
    big_names = {init.name for init in big}
    inputs = [*graph.input, *(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
                              for init in big if init.name not in declared)]
    skeleton = helper.make_graph(list(graph.node), graph.name, inputs, list(graph.output),
                                 [init for init in graph.initializer if init.name not in big_names],
                                 value_info=list(graph.value_info))
    return helper.make_model(skeleton, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                             functions=list(model.functions))


def count_flops(model: Any) -> int:
    """2 x the multiply-accumulates of the MatMul/Gemm/Conv/ConvTranspose nodes of ``model``'s main graph.

    ``model``: an onnx.ModelProto or a path. Shapes come from ONNX shape inference (with data
    propagation); a MAC node whose shapes stay unknown raises ``BenchError``. Subgraphs (If/Loop
    bodies) are not counted.
    """
    import onnx

    proto = model if hasattr(model, "graph") else onnx.load(os.fspath(model))
    graph = onnx.shape_inference.infer_shapes(_shape_skeleton(proto), data_prop=True).graph
    shapes = {v.name: _dims(v) for v in (*graph.input, *graph.value_info, *graph.output)}
    shapes.update({init.name: tuple(int(d) for d in init.dims) for init in graph.initializer})
    total = 0
    for node in graph.node:
        counter = MAC_OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if counter is None:
            continue
        flops = counter(node, shapes.get)
        if flops is None:
            raise BenchError(f"cannot count the FLOPs of {node.op_type} node {node.name or node.output[0]!r}: "
                             "its shapes are not static (bind the inputs' shapes first)")
        total += flops
    return total


def _fma_kernel_library(lanes: int, accumulators: int, target: Any) -> bytes:
    """A shared object exporting ``void fma_peak(i64 n, float *out)``: n rounds of ``accumulators``
    independent vector FMAs (``lanes`` floats each), then their sum stored to ``out`` so none is dead.

    Independent chains hide the FMA latency, so the loop runs at the FMA units' throughput.
    """
    import llvmlite.ir as ir

    from compiler.codegen.link import link_shared_object
    from compiler.codegen.llvm.emitter import ModuleEmitter
    from compiler.codegen.llvm.module import compile_module

    f32, i64 = ir.FloatType(), ir.IntType(64)
    vec = ir.VectorType(f32, lanes)
    module = ir.Module(name="fma_peak")
    module.triple = target.triple
    fma = ModuleEmitter(module).intrinsic("llvm.fma", vec, 3)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [i64, ir.PointerType()]), "fma_peak")
    n, out = fn.args
    entry, loop, done = (fn.append_basic_block(name) for name in ("entry", "loop", "done"))
    b = ir.IRBuilder(entry)
    b.branch(loop)
    b.position_at_end(loop)
    counter = b.phi(i64)
    accs = [b.phi(vec) for _ in range(accumulators)]
    # a x acc + c with a < 1 converges to c / (1 - a): the values stay finite however long it runs.
    scale, shift = ir.Constant(vec, [0.999] * lanes), ir.Constant(vec, [1e-3] * lanes)
    nexts = [b.call(fma, [acc, scale, shift]) for acc in accs]
    step = b.add(counter, ir.Constant(i64, 1))
    b.cbranch(b.icmp_unsigned("<", step, n), loop, done)
    counter.add_incoming(ir.Constant(i64, 0), entry)
    counter.add_incoming(step, loop)
    for k, (acc, nxt) in enumerate(zip(accs, nexts)):
        acc.add_incoming(ir.Constant(vec, [float(k)] * lanes), entry)
        acc.add_incoming(nxt, loop)
    b.position_at_end(done)
    total = nexts[0]
    for nxt in nexts[1:]:
        total = b.fadd(total, nxt)
    b.store(b.extract_element(total, ir.Constant(ir.IntType(32), 0)), out)
    b.ret_void()
    return link_shared_object([compile_module(module, target)], target.triple, target.cpu)


def measure_fma_peak(threads: int = 1, seconds: float = 0.2, repeats: int = 5) -> float:
    """This machine's fp32 FMA throughput in GFLOP/s with ``threads`` threads running at once.

    Compiles (with tilec's LLVM code generator and linker, for the host CPU) a loop of independent
    vector FMAs, and runs it on ``threads`` Python threads (ctypes drops the GIL during the call);
    the best of ``repeats`` rounds of about ``seconds`` each. A loaded machine measures low.
    """
    import ctypes
    import tempfile
    import threading

    from compiler.codegen.target import host_target

    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    target = host_target()
    lanes = target.vector_lanes(4)
    accumulators = min(16, target.vector_registers - 4)  # two registers for the constants, spare for the loop
    with tempfile.TemporaryDirectory(prefix="tilec-peak-") as tmp:
        path = os.path.join(tmp, "fma_peak.so")
        with open(path, "wb") as f:
            f.write(_fma_kernel_library(lanes, accumulators, target))
        kernel = ctypes.CDLL(path).fma_peak
    kernel.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_float)]
    kernel.restype = None
    flops_per_round = 2 * lanes * accumulators
    sink = ctypes.c_float()

    def seconds_for(rounds: int) -> float:
        start = time.perf_counter()
        kernel(rounds, ctypes.byref(sink))
        return time.perf_counter() - start

    rounds = 1 << 16
    while seconds_for(rounds) < seconds / 2:  # calibrated on one thread: each round then takes ~seconds
        rounds *= 2

    best = 0.0
    for _ in range(repeats):
        barrier = threading.Barrier(threads + 1)
        workers = [threading.Thread(target=lambda: (barrier.wait(), kernel(rounds, ctypes.byref(ctypes.c_float()))))
                   for _ in range(threads)]
        for worker in workers:
            worker.start()
        barrier.wait()
        start = time.perf_counter()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - start
        best = max(best, threads * rounds * flops_per_round / elapsed / 1e9)
    return best
