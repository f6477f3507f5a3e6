"""The ``tilec`` command line: compile, run, inspect, bench, profile, compare, support.

``main(argv=None) -> int`` never raises (except for SystemExit from nothing): exit codes are
0 success, 1 a TilecError or an OS error (one ``tilec: error: ...`` line, no traceback),
2 a usage error (argparse), 3 ``tilec compare`` found a value beyond tolerance, 70 an internal
error (a bug: traceback only with TILEC_DEBUG=1), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Sequence

from compiler.codegen.cuda.target import CUDA_ARCHS
from compiler.graph.passes.precision import PRECISIONS
from compiler.compare import DEFAULT_ATOL, DEFAULT_RTOL, FUSION_NOTE, Row, Status, compare_model
from compiler.progress import ProgressPrinter
from runtime_stub.errors import InvalidInputError, TilecError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

TARGETS = ("host", "x86_64-linux-gnu", "aarch64-linux-gnu", "cuda", *(f"cuda:{arch}" for arch in CUDA_ARCHS))


class CliError(TilecError):
    """A bad command-line value found after parsing (missing file, malformed --input, ...)."""


def _eprint(*parts: Any) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --- argument types -----------------------------------------------------------------


def _input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``name=2x64`` (or ``name=2,64``; ``name=`` for a scalar) → ("name", (2, 64))."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=DIMS such as x=2x64, got {text!r}")
    dims = dims.strip()
    try:
        shape = tuple(int(d) for d in dims.replace(",", "x").split("x")) if dims else ()
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad dimensions in {text!r}: use integers separated by 'x', e.g. x=2x64") from None
    if any(d < 0 for d in shape):
        raise argparse.ArgumentTypeError(f"negative dimension in {text!r}")
    return name, shape


def _dim_bound(text: str) -> tuple[str, tuple[int | None, int | None]]:
    """``batch=1:64`` (either end may be omitted: ``seq=:512``, ``seq=8:``) → ("batch", (1, 64))."""
    name, sep, bounds = text.partition("=")
    lo, colon, hi = bounds.partition(":")
    if not sep or not name or not colon:
        raise argparse.ArgumentTypeError(f"expected NAME=MIN:MAX such as batch=1:64 (either end may be omitted), "
                                         f"got {text!r}")
    try:
        return name, (int(lo) if lo.strip() else None, int(hi) if hi.strip() else None)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad bounds in {text!r}: use integers, e.g. batch=1:64") from None


def _dims_dict(pairs: Sequence[tuple[str, tuple[int | None, int | None]]] | None) -> dict | None:
    if not pairs:
        return None
    bounds: dict[str, tuple[int | None, int | None]] = {}
    for name, bound in pairs:
        if name in bounds and bounds[name] != bound:
            raise CliError(f"--dim gives {name!r} twice: {bounds[name]} and {bound}")
        bounds[name] = bound
    return bounds


def _input_file(text: str) -> tuple[str, str]:
    """``name=file.npy`` → ("name", "file.npy")."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy, got {text!r}")
    return name, path


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _thread_counts(text: str) -> list[int]:
    """``1,2`` → [1, 2]: one or more thread counts (0: every usable CPU)."""
    counts = [_non_negative_int(part.strip()) for part in text.split(",") if part.strip()]
    if not counts:
        raise argparse.ArgumentTypeError(f"expected thread counts such as 1 or 1,2, got {text!r}")
    return list(dict.fromkeys(counts))


def _peak_gflops(text: str) -> float | str:
    """A positive number of GFLOP/s, or the word ``measure``."""
    if text == "measure":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GFLOP/s (a number) or 'measure', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive GFLOP/s, got {text!r}")
    return value


def _tolerance(text: str) -> float:
    """A finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _shapes_dict(pairs: Sequence[tuple[str, tuple[int, ...]]] | None) -> dict[str, tuple[int, ...]] | None:
    if not pairs:
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in pairs:
        if name in shapes and shapes[name] != shape:
            raise CliError(f"--input-shape gives {name!r} twice: {shapes[name]} and {shape}")
        shapes[name] = shape
    return shapes


# --- formatting helpers -------------------------------------------------------------


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # unreachable


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None, indent: str = "  ",
           align: str = "") -> str:
    """Columns padded to their widest cell; ``align`` has one 'l' or 'r' per column (default all 'l')."""
    all_rows = ([list(header)] if header else []) + [list(r) for r in rows]
    if not all_rows:
        return ""
    widths = [max(len(r[i]) for r in all_rows) for i in range(len(all_rows[0]))]
    lines = []
    for k, row in enumerate(all_rows):
        cells = [cell.rjust(w) if align[i:i + 1] == "r" else cell.ljust(w)
                 for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append(indent + "  ".join(cells).rstrip())
        if header and k == 0:
            lines.append(indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _kernel_label(kernel: Any) -> str:
    ops = kernel.get("ops", "") if isinstance(kernel, dict) else kernel
    return "+".join(ops) if isinstance(ops, (list, tuple)) else str(ops)


def _is_artifact(path: str | os.PathLike) -> bool:
    from runtime_stub.artifact import MAGIC_PREFIX

    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC_PREFIX)) == MAGIC_PREFIX
    except OSError:
        return False


# --- compile ------------------------------------------------------------------------


def _timings_table(timings: dict[str, float]) -> str:
    """Top-level stages in order; ``prefix.sub`` entries (llvm.parse, ...) indented under their stage."""
    top = [k for k in timings if "." not in k]
    subs = [k for k in timings if "." in k]
    total = sum(timings[k] for k in top) or 1e-12
    rows: list[list[str]] = []
    placed: set[str] = set()

    def row(name: str, label: str) -> list[str]:
        seconds = timings[name]
        return [label, f"{seconds * 1e3:.1f}", f"{100 * seconds / total:.1f}%"]

    for stage in top:
        rows.append(row(stage, stage))
        for sub in subs:
            if sub not in placed and stage.startswith(sub.split(".", 1)[0]):
                rows.append(row(sub, "  " + sub))
                placed.add(sub)
    for sub in subs:
        if sub not in placed:
            rows.append(row(sub, "  " + sub))
    rows.append(["total", f"{total * 1e3:.1f}", "100.0%"])
    return _table(rows, header=["stage", "ms", "share"], align="lrr")


def cmd_compile(args: argparse.Namespace) -> int:
    import compiler

    start = time.perf_counter()
    progress = None if args.quiet else ProgressPrinter(sys.stderr, live=sys.stderr.isatty())
    model_path = pathlib.Path(args.model)
    if not model_path.exists():
        raise CliError(f"no such model file: {args.model}")
    if model_path.is_dir():
        raise CliError(f"{args.model} is a directory, not an ONNX model")
    if pathlib.Path(args.output).is_dir():
        raise CliError(f"-o {args.output} is a directory; give the artifact's file name, e.g. {args.output}/model.tilec")
    timings: dict[str, float] = {}
    try:
        out = compiler.compile(str(model_path), args.output, target=args.target, cpu=args.cpu,
                               input_shapes=_shapes_dict(args.input_shape), dim_bounds=_dims_dict(args.dim),
                               constant_inputs=_load_inputs(args.constant_input, "--constant-input") or None,
                               dump_ir=args.dump_ir, progress=progress, timings=timings, profile=args.profile,
                               precision=args.precision)
    finally:
        if progress is not None:
            progress.close()
    elapsed = time.perf_counter() - start
    if args.time_passes:
        _eprint("stage timings:")
        _eprint(_timings_table(timings))
    size = os.path.getsize(out)
    onnx_size = model_path.stat().st_size
    ratio = f", {size / onnx_size:.2f}x the ONNX file ({_human_size(onnx_size)})" if onnx_size else ""
    if args.dump_ir and not args.quiet:
        _eprint(f"IR dumped to {args.dump_ir}")
    print(f"{out}: {_human_size(size)}{ratio}, compiled in {elapsed:.2f} s")
    return EXIT_OK


# --- run ----------------------------------------------------------------------------


def _load_inputs(pairs: Sequence[tuple[str, str]] | None, flag: str = "--input") -> dict[str, Any]:
    """``{name: array}`` from NAME=FILE.npy arguments of ``flag``."""
    import numpy as np

    feed: dict[str, Any] = {}
    for name, path in pairs or ():
        if name in feed:
            raise CliError(f"{flag} gives {name!r} twice")
        try:
            feed[name] = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise CliError(f"input {name!r}: no such file: {path}") from None
        except (OSError, ValueError) as exc:
            raise CliError(f"input {name!r}: cannot read {path} as a .npy array: {exc}") from None
        if not isinstance(feed[name], np.ndarray):
            raise CliError(f"input {name!r}: {path} holds several arrays (.npz); give one .npy file per input")
    return feed


def _check_input_names(feed: dict[str, Any], session: Any) -> None:
    known = [arg.name for arg in session.get_inputs()]
    unknown = [name for name in feed if name not in known]
    if unknown:
        expected = "; ".join(arg.describe() for arg in session.get_inputs()) or "none"
        raise InvalidInputError(f"unknown input(s) {', '.join(map(repr, unknown))}; the model's inputs are: {expected}")


def _summary_lines(value: Any, max_values: int = 6) -> list[str]:
    import numpy as np

    arr = np.asarray(value)
    lines = []
    if arr.size == 0:
        return ["  (empty)"]
    flat = arr.reshape(-1)
    if arr.dtype.kind in "fiub":
        data = flat.astype(np.float64)
        finite = data[np.isfinite(data)]
        stats = f"min {finite.min():.6g}  max {finite.max():.6g}  mean {finite.mean():.6g}" if finite.size else "no finite values"
        bad = data.size - finite.size
        if bad:
            stats += f"  ({bad} non-finite)"
        lines.append("  " + stats)
    head = ", ".join(f"{v:.6g}" if arr.dtype.kind == "f" else str(v) for v in flat[:max_values].tolist())
    more = ", ..." if flat.size > max_values else ""
    lines.append(f"  values: [{head}{more}]")
    is_vector = arr.ndim == 1 or (arr.ndim == 2 and arr.shape[0] == 1)
    if arr.dtype.kind == "f" and is_vector and flat.size > 1:
        k = min(5, flat.size)
        scores = np.where(np.isnan(flat), -np.inf, flat)
        top = np.argsort(-scores, kind="stable")[:k]
        lines.append("  top-" + str(k) + ": " + ", ".join(f"{int(i)} ({flat[i]:.6g})" for i in top))
    return lines


def cmd_run(args: argparse.Namespace) -> int:
    from compiler.bench import random_inputs
    from runtime_stub import InferenceSession

    feed = _load_inputs(args.input)
    session = InferenceSession(args.artifact, threads=args.threads)
    _check_input_names(feed, session)
    missing = [arg for arg in session.get_inputs() if arg.name not in feed]
    if missing and (args.random or not feed):
        symbolic = [arg for arg in missing if any(isinstance(d, str) for d in arg.shape)]
        if symbolic:
            raise CliError(f"input {symbolic[0].name!r} has symbolic shape {_shape_str(symbolic[0].shape)}, so a "
                           f"random one has no size; give it with --input {symbolic[0].name}=FILE.npy")
        feed.update(random_inputs(missing, seed=args.seed))
        _eprint(f"random inputs (seed {args.seed}): " + ", ".join(
            f"{arg.name} {arg.type} {_shape_str(arg.shape)}" for arg in missing))
    start = time.perf_counter()
    outputs = session.run(None, feed)
    latency = (time.perf_counter() - start) * 1e3
    for arg, value in zip(session.get_outputs(), outputs):
        if isinstance(value, list):  # ZipMap's maps
            print(f"{arg.name}: {arg.type}, {len(value)} map(s)")
            print(f"  first: {value[0] if value else None}")
            continue
        print(f"{arg.name}: {arg.type} {_shape_str(value.shape)} ({value.dtype})")
        for line in _summary_lines(value):
            print(line)
    print(f"latency: {latency:.3f} ms (one run, {session.num_threads} thread(s), includes input checks)")
    session.close()
    return EXIT_OK


# --- inspect ------------------------------------------------------------------------


def cmd_inspect(args: argparse.Namespace) -> int:
    from runtime_stub.artifact import read_artifact

    # read_artifact verifies the digest but loads no native code: artifacts for other machines work too.
    artifact = read_artifact(args.artifact)
    manifest = artifact.manifest
    if args.json:
        print(json.dumps(manifest, indent=2, sort_keys=True))
        return EXIT_OK
    out: list[str] = [f"artifact:   {args.artifact}",
                      f"format:     version {manifest.get('format_version')}, "
                      f"built by tilec {manifest.get('compiler_version', '?')}"]
    target = manifest.get("target") or {}
    out.append(f"target:     {target.get('kind', '?')} {target.get('triple', '?')} "
               f"(arch {target.get('arch', '?')}, cpu {target.get('cpu', '?')})")
    features = target.get("features") or []
    out.append(f"requires:   {' '.join(features) if features else '(no CPU features beyond the base ISA)'}")
    for role in ("inputs", "outputs"):
        entries = manifest.get(role) or []
        out.append(f"{role}:")
        out.append(_table([[str(e.get("name")), str(e.get("dtype")), _shape_str(e.get("shape", []))] for e in entries])
                   or "  (none)")
    dims = manifest.get("dims") or []
    if dims:
        out.append("dims:")
        out.append(_table([[str(d.get("name")), f"{d.get('min')}..{d.get('max')}"] for d in dims]))
    kernels = manifest.get("kernels") or []
    out.append(f"kernels:    {len(kernels)}")
    shown = 20
    out.append(_table([[f"{k:4d}", _kernel_label(kernel), str(kernel.get("name", ""))]
                       for k, kernel in enumerate(kernels[:shown])]))
    if len(kernels) > shown:
        out.append(f"  ... and {len(kernels) - shown} more")
    workspace = int(manifest.get("workspace_size", 0))
    grows = " + buffers sized per run from the dims" if dims else ""
    out.append(f"workspace:  {_human_size(workspace)} ({workspace} bytes){grows}")
    sections = manifest.get("sections") or {}
    out.append("sections:")
    names = {"native": "native code", "weights": "weights"}
    out.append(_table([[names.get(name, name), _human_size(int(info.get("size", 0))), f"{int(info.get('size', 0))} bytes"]
                       for name, info in sorted(sections.items())], align="lrr") or "  (none)")
    total = os.path.getsize(args.artifact)
    out.append(f"total size: {_human_size(total)} ({total} bytes)")
    options = (manifest.get("build") or {}).get("options") or {}
    if options:
        out.append("build options: " + ", ".join(f"{k}={v}" for k, v in sorted(options.items())))
    print("\n".join(line for line in out if line))
    return EXIT_OK


# --- bench --------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    if args.dynamic and args.decode:
        raise CliError("give one of --dynamic and --decode")
    if args.dynamic or args.decode:
        flag = "--dynamic" if args.dynamic else "--decode"
        if args.model or args.onnx or args.input_shape or args.suite:
            raise CliError(f"{flag} benchmarks its own models: give no MODEL, --onnx, --input-shape or --suite")
        return _bench_dynamic(args) if args.dynamic else _bench_decode(args)
    if args.suite:
        if args.model or args.onnx or args.input_shape:
            raise CliError("--suite benchmarks the built-in models: give no MODEL, --onnx or --input-shape")
        return _bench_concurrency(args) if args.concurrency else _bench_suite(args)
    if args.models or args.out or args.peak_gflops is not None or args.concurrency:
        raise CliError("--models, --out, --peak-gflops and --concurrency go with --suite")
    if not args.model:
        raise CliError("give a MODEL to benchmark, or --suite for the built-in models")
    return _bench_model(args)


def _bench_model(args: argparse.Namespace) -> int:
    import compiler
    from compiler import bench
    from runtime_stub import InferenceSession

    model = pathlib.Path(args.model)
    if not model.exists():
        raise CliError(f"no such file: {args.model}")
    with tempfile.TemporaryDirectory(prefix="tilec-bench-") as tmp:
        if _is_artifact(model):
            if not args.onnx:
                raise CliError(f"{args.model} is a tilec artifact: give the ONNX model for onnxruntime with --onnx MODEL")
            artifact, onnx_model = model, pathlib.Path(args.onnx)
            if not onnx_model.exists():
                raise CliError(f"no such ONNX model: {args.onnx}")
        else:
            onnx_model = pathlib.Path(args.onnx) if args.onnx else model
            artifact = pathlib.Path(tmp) / "model.tilec"
            start = time.perf_counter()
            # Symbolic dims stay symbolic: --input-shape gives the run shapes, as a server would see them.
            compiler.compile(str(model), artifact)
            _eprint(f"compiled {model} in {time.perf_counter() - start:.2f} s")
        for threads in args.threads or [0]:
            threads = threads or bench.default_threads()
            with InferenceSession(artifact, threads=threads) as tilec_session:
                ort = bench.ort_session(onnx_model, threads, note=lambda line: _eprint(f"note: {line}"))
                try:
                    inputs = bench.random_inputs(tilec_session.get_inputs(), seed=args.seed,
                                                 shapes=_shapes_dict(args.input_shape))
                except ValueError as exc:
                    raise CliError(str(exc)) from None
                result = bench.benchmark(tilec_session, ort, inputs, runs=args.runs, warmup=args.warmup,
                                         threads=threads, mode=args.mode)
            _print_bench_result(onnx_model, args, result)
    return EXIT_OK


def _print_bench_result(onnx_model: pathlib.Path, args: argparse.Namespace, result: Any) -> None:
    print(f"model: {onnx_model}  threads: {result.threads}  runs: {args.runs} (after {args.warmup} warmup, alternating)")
    print(_table([["tilec", f"{result.tilec.median_ms:.3f}", f"{result.tilec.min_ms:.3f}"],
                  ["onnxruntime", f"{result.ort.median_ms:.3f}", f"{result.ort.min_ms:.3f}"]],
                 header=["", "median ms", "min ms"], align="lrr"))
    verdict = "faster" if result.ratio < 1 else "slower" if result.ratio > 1 else "as fast"
    print(f"ratio tilec/ort (median): {result.ratio:.3f}  (tilec is {verdict})")
    print(f"max abs diff / max |ort|: {result.max_rel_diff:.3e}")


def _bench_decode(args: argparse.Namespace) -> int:
    from compiler import bench_decode

    return _bench_builtin(args, bench_decode.CASES, bench_decode.run_decode, bench_decode.DecodeRow.markdown_table)


def _bench_dynamic(args: argparse.Namespace) -> int:
    from compiler import bench_dynamic

    return _bench_builtin(args, bench_dynamic.CASES, bench_dynamic.run_dynamic, bench_dynamic.DynamicRow.markdown_table)


def _bench_builtin(args: argparse.Namespace, cases: Any, run: Any, table: Any) -> int:
    """A benchmark of built-in models (``--dynamic``, ``--decode``): ``run`` the picked ``cases``, print the table."""
    from compiler import bench

    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else list(cases)
    unknown = [n for n in names if n not in cases]
    if unknown:
        raise CliError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(cases)}")
    threads = args.threads or list(dict.fromkeys([1, bench.default_threads()]))
    start = time.perf_counter()
    rows = run(names, threads, runs=args.runs, warmup=args.warmup,
               progress=lambda line: _eprint(f"[{time.perf_counter() - start:7.1f}s] {line}"))
    print(table(rows))
    return EXIT_OK if all(row.error is None for row in rows) else EXIT_ERROR


def _bench_suite(args: argparse.Namespace) -> int:
    from compiler import bench, bench_suite, models

    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else list(models.SUITE)
    unknown = [n for n in names if n not in models.SUITE]
    if unknown:
        raise CliError(f"unknown suite model(s) {', '.join(unknown)}; known: {', '.join(models.SUITE)}")
    threads = args.threads or list(dict.fromkeys([1, bench.default_threads()]))
    peak = {None: bench_suite.DEFAULT_PEAK_GFLOPS, "measure": None}.get(args.peak_gflops, args.peak_gflops)
    start = time.perf_counter()
    report = bench_suite.run_suite(names, threads, runs=args.runs, warmup=args.warmup, seed=args.seed,
                                   peak_gflops=peak, mode=args.mode,
                                   progress=lambda line: _eprint(f"[{time.perf_counter() - start:7.1f}s] {line}"))
    meta = report.meta
    peaks = ", ".join(f"{p:.1f} on {t}" for t, p in meta["peak_gflops"].items())
    print(f"machine: {meta['cpu']} ({meta['llvm_cpu']}), {meta['usable_cpus']} usable CPU(s); "
          f"load average {' '.join(f'{x:.2f}' for x in meta['load_average'] or [])}")
    print(f"FMA peak GFLOP/s ({meta['peak_source']}): {peaks} thread(s); runs: {args.runs} "
          f"(after {args.warmup} warmup, {args.mode} mode); onnxruntime {meta['onnxruntime']}")
    print(_table(report.table(), header=bench_suite.TABLE_HEADER, indent="", align="lrrrrrrrl"))
    for t, ratio in report.geomean_ratios().items():
        print(f"geomean ratio tilec/ort at {t} thread(s): {ratio:.3f}")
    compile_times = {row.model: row.compile_s for row in report.rows if row.compile_s is not None}
    if compile_times:
        print("compile s: " + ", ".join(f"{m} {s:.1f}" for m, s in compile_times.items()))
    if args.out:
        for path in report.write(args.out, note=lambda line: _eprint(f"note: {line}")):
            print(f"wrote {path}")
    return EXIT_OK if all(row.error is None for row in report.rows) else EXIT_ERROR


def _bench_concurrency(args: argparse.Namespace) -> int:
    from compiler import bench_suite, models

    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else list(models.SUITE)
    unknown = [n for n in names if n not in models.SUITE]
    if unknown:
        raise CliError(f"unknown suite model(s) {', '.join(unknown)}; known: {', '.join(models.SUITE)}")
    start = time.perf_counter()
    rows = bench_suite.run_concurrency(names, callers=args.concurrency, seed=args.seed,
                                       progress=lambda line: _eprint(f"[{time.perf_counter() - start:7.1f}s] {line}"))
    print(bench_suite.ConcurrencyRow.markdown_table(rows))
    return EXIT_OK if all(row.error is None for row in rows) else EXIT_ERROR


# --- profile ------------------------------------------------------------------------


def cmd_profile(args: argparse.Namespace) -> int:
    from compiler import models, profile

    if args.suite_model:
        if args.model:
            raise CliError("give a MODEL or --suite-model, not both")
        if args.suite_model not in models.SUITE:
            raise CliError(f"unknown suite model {args.suite_model}; known: {', '.join(models.SUITE)}")
        model: Any = models.build(args.suite_model)
    elif args.model:
        if not pathlib.Path(args.model).exists():
            raise CliError(f"no such model file: {args.model}")
        if _is_artifact(args.model):
            raise CliError(f"{args.model} is a tilec artifact; profile the ONNX model (it is recompiled with timers)")
        model = args.model
    else:
        raise CliError("give a MODEL, or --suite-model NAME")
    try:
        result = profile.profile_model(model, args.threads, runs=args.runs, warmup=args.warmup, seed=args.seed,
                                       input_shapes=_shapes_dict(args.input_shape), compare_ort=args.ort,
                                       dim_bounds=_dims_dict(args.dim))
    except ValueError as exc:  # a symbolic input without its run shape
        raise CliError(str(exc)) from None
    print(f"threads: {result.threads}  runs: {result.runs}  mean wall {result.wall_ms:.3f} ms "
          f"(kernels {result.kernel_ms:.3f} ms, outside kernels {result.wall_ms - result.kernel_ms:.3f} ms)")
    total = result.kernel_ms or 1.0
    rows, cumulative = [], 0.0
    for k in result.top(args.top):
        ms = k.seconds * 1e3
        cumulative += ms
        rows.append([k.name, k.ops, f"{ms:.3f}", f"{100 * ms / total:.1f}", f"{100 * cumulative / total:.1f}",
                     f"{k.gflops_per_second:.1f}" if k.flops else "-"])
    print(f"the {len(rows)} slowest of {len(result.kernels)} kernels:")
    print(_table(rows, header=["kernel", "ops", "ms", "%", "cum %", "GFLOP/s"], align="llrrrr"))
    op_rows = [[op, str(count), f"{ms:.3f}", "-" if ort_ms is None else f"{ort_ms:.3f}",
                f"{ms / ort_ms:.2f}" if ort_ms else "-"] for op, count, ms, ort_ms in result.by_op()]
    print("by op type (a fused kernel counts under its first op)" +
          (", onnxruntime from its own profiler on the same inputs:" if args.ort else ":"))
    print(_table(op_rows, header=["op", "kernels", "tilec ms", "ort ms", "ratio"], align="lrrrr"))
    if result.ort_wall_ms is not None:
        print(f"onnxruntime median wall {result.ort_wall_ms:.3f} ms (with its profiler on)")
    return EXIT_OK


# --- compare ------------------------------------------------------------------------


def _float_cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}" if value == 0 or math.isinf(value) else f"{value:.2e}"


def _index_str(index: Sequence[int] | None) -> str:
    return "-" if index is None else "[" + ",".join(str(i) for i in index) + "]"


def _compare_status(row: Row) -> str:
    if row.status is Status.SKIPPED:
        return f"skipped: {row.note}"
    text = row.status.value + (" (folded)" if row.folded else "")
    return f"{text}: {row.note}" if row.note else text


def _divergence_line(row: Row) -> str:
    where = f"{row.op_type} '{row.node}' (node {row.position}), output '{row.output}'"
    if row.note:
        return f"first divergence: {where}: {row.note}"
    got, want = (f"{v:.6g}" if isinstance(v, float) else str(v) for v in (row.got, row.want))
    return (f"first divergence: {where}: {row.bad} of {row.numel} element(s) beyond tolerance, first at "
            f"{_index_str(row.first_bad)}: tilec {got}, onnxruntime {want} (max abs {_float_cell(row.max_abs)}, "
            f"max rel {_float_cell(row.max_rel)})")


def cmd_compare(args: argparse.Namespace) -> int:
    for flag, path in (("MODEL", args.model), ("--reference", args.reference)):
        if path is None:
            continue
        if not pathlib.Path(path).exists():
            raise CliError(f"no such model file: {path}")
        if _is_artifact(path):
            raise CliError(f"{flag} {path} is a tilec artifact; compare needs the ONNX model (it is recompiled with "
                           "every intermediate value exposed)")
    result = compare_model(args.model, _load_inputs(args.input), reference=args.reference, target=args.target,
                           cpu=args.cpu, input_shapes=_shapes_dict(args.input_shape),
                           constant_inputs=_load_inputs(args.constant_input, "--constant-input") or None,
                           rtol=args.rtol, atol=args.atol, per_element=args.per_element, seed=args.seed,
                           threads=args.threads, chunk=args.chunk)
    on = f" running {args.reference}" if args.reference else ""
    print(f"note: {FUSION_NOTE} ({result.kernels} kernel(s) in {result.builds} build(s))")
    if result.random_inputs:
        print(f"random inputs (seed {result.seed}): {', '.join(result.random_inputs)}")
    rows = [[str(r.position), r.node, r.op_type, r.output, _float_cell(r.max_abs), _float_cell(r.max_rel),
             _index_str(r.first_bad), _compare_status(r)] for r in result.rows]
    print(_table(rows, header=["#", "node", "op", "output", "max abs", "max rel", "first bad", "status"],
                 indent="", align="rlllrrll"))
    compared, folded = result.compared, sum(r.folded for r in result.rows)
    skipped = len(result.rows) - len(compared)
    scale = "each element's |ref|" if args.per_element else "each tensor's max |ref|"
    print(f"compared {len(compared)} value(s) with onnxruntime{on} (rtol {args.rtol:g} of {scale}, atol {args.atol:g}; integers and "
          f"bools exactly): {len(result.diverged)} beyond tolerance, {folded} folded at compile time, {skipped} skipped")
    first = result.first_divergence
    if first is None:
        print("every compared value is within tolerance")
        return EXIT_OK
    print(_divergence_line(first))
    return EXIT_DIVERGED


# --- support ------------------------------------------------------------------------


def support_rows() -> list[tuple[str, str, str, str, str]]:
    """(op type, domain, kind, opset versions, dtypes) for every op in the registry and every op the
    frontend expands into others (kind ``expanded``), sorted by domain then op.

    The versions are the op's ONNX schema versions from its lowering's ``since`` on (older models
    are converted up); the dtypes are the element types its newest schema allows that tilec has.
    """
    import onnx

    from compiler.dtypes import DType
    from compiler.frontend.expand import EXPANDERS, REFUSED
    from compiler.frontend.strings import STRING_OPS
    from compiler.ops.registry import OPS

    schemas: dict[tuple[str, str], list[onnx.defs.OpSchema]] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        schemas.setdefault((schema.domain, schema.name), []).append(schema)
    onnx_types = {name.lower(): value for name, value in onnx.TensorProto.DataType.items()}

    def dtypes_of(schema: onnx.defs.OpSchema) -> str:
        names = set()
        for constraint in schema.type_constraints:
            for text in constraint.allowed_type_strs:
                inner = text.removeprefix("tensor(").removesuffix(")")
                try:
                    names.add(DType.from_onnx(onnx_types.get(inner, -1)).value)
                except KeyError:
                    continue  # a type tilec does not have (or a sequence/optional type)
        if (schema.domain, schema.name) not in STRING_OPS:
            names.discard(DType.STRING.value)  # only those ops' lowerings take strings
        return ", ".join(sorted(names))

    rows = []
    for op in OPS.values():
        history = sorted(schemas.get((op.domain, op.op_type), []), key=lambda s: s.since_version)
        versions = [str(s.since_version) for s in history if s.since_version >= op.since]
        rows.append((op.op_type, op.domain or "ai.onnx", op.kind, ", ".join(versions) or str(op.since),
                     dtypes_of(history[-1]) if history else ""))
    for domain, op_type in set(EXPANDERS) - set(REFUSED):
        history = sorted(schemas.get((domain, op_type), []), key=lambda s: s.since_version)
        rows.append((op_type, domain or "ai.onnx", "expanded", ", ".join(str(s.since_version) for s in history) or "1",
                     dtypes_of(history[-1]) if history else ""))
    return sorted(rows, key=lambda r: (r[1] != "ai.onnx", r[1], r[0]))


def support_markdown() -> str:
    rows = support_rows()
    lines = ["# Supported ONNX operators", "",
             "<!-- Generated by `tilec support --markdown > docs/SUPPORTED_OPS.md`; do not edit by hand. -->", "",
             f"tilec lowers {len(rows)} operators. *Opsets* are the op's ONNX versions the lowering handles "
             "(models older than opset 17 are converted first where ONNX's converter can). *Dtypes* are the "
             "element types the op's newest schema allows that tilec supports. *Kind* is how the fusion pass "
             "treats the op: `elementwise` ops fuse into their producer's kernel, `view` ops only reinterpret "
             "a buffer (no kernel), `compute` ops get kernels of their own, `expanded` ops are rewritten by the "
             "frontend into the others (control flow, recurrent cells, onnxruntime's `com.microsoft` contrib ops).", "",
             "| Op | Domain | Kind | Opsets | Dtypes |", "|---|---|---|---|---|"]
    lines += [f"| {op} | {domain} | {kind} | {opsets} | {dtypes} |" for op, domain, kind, opsets, dtypes in rows]
    return "\n".join(lines) + "\n"


def cmd_support(args: argparse.Namespace) -> int:
    if args.markdown:
        sys.stdout.write(support_markdown())
        return EXIT_OK
    rows = support_rows()
    print(_table([[op, domain, kind, opsets] for op, domain, kind, opsets, _ in rows],
                 header=["op", "domain", "kind", "opsets"], indent=""))
    print(f"{len(rows)} operators")
    return EXIT_OK


# --- parser and main ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from compiler import __version__

    parser = argparse.ArgumentParser(
        prog="tilec", description="tilec: an ahead-of-time compiler for ONNX models.",
        epilog="Set TILEC_DEBUG=1 for tracebacks on internal errors.")
    parser.add_argument("--version", action="version", version=f"tilec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("compile", help="compile an ONNX model into a .tilec artifact",
                       description="Compile an ONNX model into a .tilec artifact.")
    p.add_argument("model", metavar="MODEL", help="the .onnx model")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the artifact to write")
    p.add_argument("--target", default="host", choices=TARGETS, help="target machine (default: host); cuda is sm_80 code plus PTX for newer GPUs")
    p.add_argument("--cpu", metavar="NAME", help="CPU name, optionally with +feature suffixes (e.g. skylake-avx512)")
    p.add_argument("--input-shape", action="append", type=_input_shape, metavar="NAME=DIMS",
                   help="bind an input's shape, e.g. x=2x64 (repeatable); unbound symbolic dims stay symbolic")
    p.add_argument("--dim", action="append", type=_dim_bound, metavar="NAME=MIN:MAX",
                   help="the range a symbolic dimension may take at run time, e.g. batch=1:64 (either end may be "
                        "omitted; repeatable)")
    p.add_argument("--constant-input", action="append", type=_input_file, metavar="NAME=FILE.npy",
                   help="fix an input that determines shapes (axes, sizes) to the array in FILE.npy; it is "
                        "compiled in and leaves the artifact's inputs (repeatable)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (default): the model's types; bf16: float32 MatMul/Gemm/Conv on bfloat16 operands, "
                        "float32 sums (AVX512-BF16 CPUs)")
    p.add_argument("--dump-ir", metavar="DIR", help="write the graph IR and each kernel's loop IR into DIR")
    p.add_argument("--time-passes", action="store_true", help="print a table of stage timings to stderr")
    p.add_argument("--profile", action="store_true",
                   help="time every kernel at run time (InferenceSession.kernel_profile; see also `tilec profile`)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("run", help="run an artifact once and summarize its outputs",
                       description="Run an artifact once on .npy inputs (or random ones) and summarize its outputs.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--input", action="append", type=_input_file, metavar="NAME=FILE.npy",
                   help="an input from a .npy file (repeatable)")
    p.add_argument("--threads", type=_non_negative_int, default=None, help="threads (default: every usable CPU)")
    p.add_argument("--random", action="store_true",
                   help="random values for inputs not given with --input (the default when no --input is given)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", help="describe an artifact (manifest, target, kernels, sizes)",
                       description="Describe an artifact without loading its native code.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--json", action="store_true", help="print the raw manifest as JSON")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("bench", help="time tilec against onnxruntime (one model, or the benchmark suite)",
                       description="Time tilec against onnxruntime (CPU, ORT_ENABLE_ALL, the same intra-op thread "
                                   "count), run by run alternately, and check that their outputs agree. With "
                                   "--suite: the built-in benchmark models, a table with GFLOP/s and % of the FMA "
                                   "peak, and the geometric-mean ratio per thread count (docs/PERFORMANCE.md).")
    p.add_argument("model", metavar="MODEL", nargs="?",
                   help="an .onnx model (compiled to a temporary artifact) or a .tilec artifact")
    p.add_argument("--onnx", metavar="MODEL", help="the ONNX model for onnxruntime (required when MODEL is an artifact)")
    p.add_argument("--threads", type=_thread_counts, default=None, metavar="N[,N...]",
                   help="thread counts for both, e.g. 1,2 (0: every usable CPU; default: every usable CPU, "
                        "or 1 and every usable CPU with --suite)")
    p.add_argument("--runs", type=_positive_int, default=20, help="timed runs of each (default 20)")
    p.add_argument("--warmup", type=_non_negative_int, default=3, help="untimed runs of each first (default 3)")
    p.add_argument("--input-shape", action="append", type=_input_shape, metavar="NAME=DIMS",
                   help="the run shape of an input with symbolic dims, e.g. x=2x64 (repeatable); the model is compiled once, its symbolic dims left symbolic")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--suite", action="store_true", help="benchmark the built-in model suite instead of MODEL")
    p.add_argument("--dynamic", action="store_true",
                   help="benchmark artifacts with symbolic dims against ones compiled for each run shape and "
                        "against onnxruntime (models: bench_dynamic.CASES; --models to pick)")
    p.add_argument("--decode", action="store_true",
                   help="benchmark KV-cache decoders, one decode step over pasts of 16/128/512 tokens and a 128-token "
                        "prefill, against onnxruntime (models: bench_decode.CASES; --models to pick)")
    p.add_argument("--models", metavar="A,B", help="with --suite, --dynamic or --decode: only these models "
                                                    "(default: all of them)")
    p.add_argument("--out", metavar="DIR", help="with --suite: write the results (CSV, JSON, Markdown) and a plot (PNG) into DIR")
    p.add_argument("--mode", choices=("quiet", "contended", "gap"), default="quiet",
                   help="how runs are timed: quiet (alternating blocks after a pause; default), contended (run by "
                        "run with no pause, beside the other runtime's spinning threads) or gap (a 50 ms pause "
                        "before every timed run, as a server between requests)")
    p.add_argument("--concurrency", type=_positive_int, metavar="N",
                   help="with --suite: instead of latencies, the runs/s of one threads=1 session called from 1 and "
                        "from N request threads at once, tilec's and onnxruntime's")
    p.add_argument("--peak-gflops", type=_peak_gflops, metavar="GFLOPS|measure",
                   help="with --suite: one core's fp32 FMA peak for '%% peak', times the threads (default: the "
                        "peak measured on the project's Zen 4 machine, docs/PERFORMANCE.md), or 'measure' "
                        "to measure it now")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("profile", help="time every kernel of a model (and, with --ort, onnxruntime's ops)",
                       description="Compile MODEL with a timer around every kernel, run it and print where the "
                                   "time goes: the slowest kernels with their GFLOP/s, and totals per op type.")
    p.add_argument("model", metavar="MODEL", nargs="?", help="the .onnx model")
    p.add_argument("--suite-model", metavar="NAME", help="a model of the benchmark suite instead (e.g. squeezenet)")
    p.add_argument("--threads", type=_non_negative_int, default=1, help="threads (default 1; 0: every usable CPU)")
    p.add_argument("--runs", type=_positive_int, default=20, help="timed runs (default 20)")
    p.add_argument("--warmup", type=_non_negative_int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--top", type=_positive_int, default=25, help="kernels to list (default 25)")
    p.add_argument("--ort", action="store_true", help="also profile onnxruntime and compare per op type")
    p.add_argument("--input-shape", action="append", type=_input_shape, metavar="NAME=DIMS",
                   help="the run shape of an input with symbolic dims, e.g. x=2x64 (repeatable)")
    p.add_argument("--dim", action="append", type=_dim_bound, metavar="NAME=MIN:MAX",
                   help="the compiled range of a symbolic dim, as for compile (e.g. an empty past: past=0:1024)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("compare", help="find the first node where tilec's values differ from onnxruntime's",
                       description="Compile MODEL with every intermediate value made a graph output, run it and "
                                   "onnxruntime on the same inputs, and print for every node output, in topological "
                                   "order, the largest absolute and relative error and the first element beyond "
                                   "tolerance, then the first node that diverges. Exposing the values keeps each "
                                   "one materialized, so tilec fuses less than in a plain build. Exit status 3 when "
                                   "a value is beyond tolerance.")
    p.add_argument("model", metavar="MODEL", help="the .onnx model")
    p.add_argument("--input", action="append", type=_input_file, metavar="NAME=FILE.npy",
                   help="an input from a .npy file (repeatable); the others get random values")
    p.add_argument("--input-shape", action="append", type=_input_shape, metavar="NAME=DIMS",
                   help="bind an input's shape, e.g. x=2x64 (repeatable; an --input array binds its own)")
    p.add_argument("--constant-input", action="append", type=_input_file, metavar="NAME=FILE.npy",
                   help="compile an input that determines shapes in, as `tilec compile --constant-input` (repeatable)")
    p.add_argument("--target", default="host", choices=TARGETS, help="target machine (default: host); it must run here")
    p.add_argument("--cpu", metavar="NAME", help="CPU name, optionally with +feature suffixes")
    p.add_argument("--rtol", type=_tolerance, default=DEFAULT_RTOL,
                   help=f"relative tolerance (default {DEFAULT_RTOL:g}): |tilec - ref| <= atol + rtol * max|ref| "
                        "over the tensor (each element's |ref| with --per-element)")
    p.add_argument("--per-element", action="store_true",
                   help="scale rtol by each element's |ref| (numpy's isclose) instead of the tensor's largest")
    p.add_argument("--atol", type=_tolerance, default=DEFAULT_ATOL, help=f"absolute tolerance (default {DEFAULT_ATOL:g})")
    p.add_argument("--reference", metavar="MODEL",
                   help="run this ONNX model in onnxruntime instead of MODEL (same value names), e.g. the original "
                        "of a rewritten model")
    p.add_argument("--threads", type=_non_negative_int, default=None, help="threads of both (default: every usable CPU)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--chunk", type=_positive_int, metavar="N",
                   help="compare N values per build (bounds memory on large models; one compile per chunk)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("support", help="list the supported ONNX operators",
                       description="List the ONNX operators tilec compiles.")
    p.add_argument("--markdown", action="store_true", help="print a Markdown document (docs/SUPPORTED_OPS.md)")
    p.set_defaults(func=cmd_support)
    return parser


def _error_message(exc: BaseException) -> str:
    message = str(exc).strip()
    if isinstance(exc, KeyError) and exc.args:  # str(KeyError) adds quotes
        message = str(exc.args[0])
    return message or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help / --version (0) and usage errors (2)
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        return args.func(args)
    except KeyboardInterrupt:
        _eprint("tilec: interrupted")
        return EXIT_INTERRUPTED
    except TilecError as exc:
        _eprint(f"tilec: error: {_error_message(exc)}")
        return EXIT_ERROR
    except BrokenPipeError:
        # `tilec support | head`: the reader left; say nothing more.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_OK
    except OSError as exc:  # unwritable output, missing folder, disk full: the user's to fix
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        _eprint(f"tilec: error: {exc.strerror or exc}{where}")
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug in tilec
        _eprint(f"tilec: internal error: {type(exc).__name__}: {_error_message(exc)}")
        if os.environ.get("TILEC_DEBUG") == "1":
            traceback.print_exc()
        else:
            _eprint("this is a bug in tilec; please report it with the command and the model "
                    "(rerun with TILEC_DEBUG=1 for a traceback)")
        return EXIT_INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
