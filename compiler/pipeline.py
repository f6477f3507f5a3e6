"""The whole pipeline: model → graph IR → passes → kernels → LLVM object → shared object → artifact.

``compile_model`` is what ``compiler.compile`` and the CLI call. Each stage is
timed (``build.timings`` in the manifest, ``tilec compile --time-passes``) and
can report progress; ``dump_ir`` writes the graph and every kernel's loop IR.
``profile=True`` (CPU targets) times every kernel call in the native code; the
runtime then reports per-kernel times (``InferenceSession.kernel_profile``).
``precision="bf16"`` (CPU targets) runs float32 MatMul/Gemm/Conv on bfloat16 operands
after the graph passes (``graph.passes.precision``).
"""

from __future__ import annotations

import os
import pathlib
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import onnx

from compiler import __version__
from compiler.artifact.format import write_artifact
from compiler.codegen.link import link_shared_object
from compiler.codegen.llvm.module import RunLayout, build_kernel_module, build_module, compile_module, kernel_parts
from compiler.codegen.llvm.parallel import run_jobs
from compiler.codegen.target import Target, dot_product_forms, resolve_target
from compiler.dtypes import DType
from compiler.errors import CompileError, TilecWarning
from compiler.frontend import load_graph
from compiler.graph.ir import Graph
from compiler.graph.passes import run_passes
from compiler.graph.passes.precision import PRECISIONS, contractions_in_bf16, half_contractions_in_float32
from compiler.loopir.printer import format_kernel, format_size
from compiler.loopir.sizes import SizeRange
from compiler.loopir.stmt import Kernel
from compiler.lowering.driver import Program, lower_graph
from compiler.ops.registry import lookup
from runtime_stub.signature import native_signature

ModelSource = str | os.PathLike | bytes | onnx.ModelProto


@dataclass
class BuildLog:
    """Stage timings, and progress lines for ``progress``: each stage's name as it starts, and the steps of
    a long stage as ``"<stage> <done>/<total>: <what>"`` (compiler/progress.py prints them)."""

    progress: Callable[[str], None] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.progress:
            self.progress(name)
        start = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def _io_spec(values) -> list[dict[str, Any]]:
    """Name, dtype and shape of each value: a symbolic dim as its size variable's name (an input's) or
    expression text (an output's: the native code computes its value per run). A string tensor's shape is
    ONNX's; its code-point axis, the native buffer's last, is ``chars``."""
    specs = []
    for v in values:
        dims = [format_size(d) if not isinstance(d, int) else d for d in v.shape]
        spec = {"name": v.name, "dtype": v.dtype.value, "shape": dims}
        if v.dtype is DType.STRING:
            spec["shape"], spec["chars"] = dims[:-1], dims[-1]
        specs.append(spec)
    return specs


def _output_spec(program: Program, maps: Mapping[int, Sequence[int | str]]) -> list[dict[str, Any]]:
    """The outputs' entries, each with ``computed_from``: the inputs whose run-time data reaches it through the
    kernels (``Program.output_sources``); ``[]`` marks an output folded into a constant at compile time. A
    ZipMap output (``Graph.output_maps``) has its ``map_keys``."""
    specs = _io_spec(program.outputs)
    for k, (spec, sources) in enumerate(zip(specs, program.output_sources)):
        spec["computed_from"] = [program.inputs[j].name for j in sources]
        if k in maps:
            spec["map_keys"] = list(maps[k])
    return specs


def _dim_entry(name: str, r: SizeRange) -> dict[str, Any]:
    """A size variable as the runtime binds it: from the input shapes, or (``value``) read from an input's data."""
    entry: dict[str, Any] = {"name": name, "min": r.lo, "max": r.hi}
    if r.source is not None:
        entry["value"] = [r.source.input, r.source.index]
    return entry


def _input_spec(program: Program, maps: Mapping[str, tuple[str, str]]) -> list[dict[str, Any]]:
    """The inputs' entries; one the run makes of a dict (``Graph.input_maps``) says which and which part."""
    specs = _io_spec(program.inputs)
    for spec in specs:
        if spec["name"] in maps:
            spec["map"] = list(maps[spec["name"]])
    return specs


def _manifest(program: Program, graph: Graph, target: Target, options: Mapping[str, Any],
              profile: bool) -> dict[str, Any]:
    manifest = {
        "compiler_version": __version__,
        "target": {"kind": target.kind, "triple": target.triple, "arch": target.arch, "cpu": target.cpu,
                   "features": list(target.required_flags)},
        "inputs": _input_spec(program, graph.input_maps),
        "outputs": _output_spec(program, graph.output_maps),
        "workspace_size": program.workspace_size,
        "dims": [_dim_entry(name, r) for name, r in program.sizes.items()],
        "size_constraints": [c.message for c in program.constraints],
        "kernels": [{"name": c.kernel.name, "ops": c.kernel.label, "flops": c.kernel.flops} for c in program.calls],
        # No timings here: compiling the same model twice must give the same bytes.
        "build": {"options": {k: repr(v) for k, v in sorted(options.items())}},
    }
    if program.checks:
        manifest["checks"] = [{"offset": c.offset, "message": c.message} for c in program.checks]
    if profile:
        manifest["profile"] = True
    return manifest


def compile_model(model: ModelSource, output: str | os.PathLike, *, target: str = "host", cpu: str | None = None,
                  input_shapes: Mapping[str, Sequence[int]] | None = None,
                  constant_inputs: Mapping[str, Any] | None = None,
                  dim_bounds: Mapping[str, tuple[int | None, int | None]] | None = None, dump_ir: str | os.PathLike | None = None,
                  progress: Callable[[str], None] | None = None, timings: dict[str, float] | None = None,
                  profile: bool = False, precision: str = "fp32", **options: Any) -> pathlib.Path:
    if options:
        raise CompileError(f"unknown compile option(s): {', '.join(sorted(options))}")
    if precision not in PRECISIONS:
        raise CompileError(f"precision={precision!r} is none of {', '.join(map(repr, PRECISIONS))}")
    log = BuildLog(progress)
    cuda = target.startswith("cuda")
    if cuda and profile:
        raise CompileError("profile=True is for CPU targets; CUDA kernels are profiled with the CUDA tools (nsys)")
    if cuda and precision != "fp32":
        raise CompileError(f"precision={precision!r} is for CPU targets yet; CUDA kernels compute in the model's types")
    with log.stage("target"):
        tgt = _resolve_cuda(target, cpu) if cuda else resolve_target(target, cpu)
    if precision == "bf16" and "bf16" not in dot_product_forms(tgt):
        warnings.warn(f"target {tgt.cpu} has no bfloat16 dot product instruction (x86 AVX512-BF16): "
                      "precision='bf16' rounds the contractions' operands but computes them widened, "
                      "likely slower than fp32", TilecWarning, stacklevel=3)
    graph, program = _lower(model, input_shapes, constant_inputs, dim_bounds, tgt, log, progress, precision)
    if dump_ir is not None:
        _dump(pathlib.Path(dump_ir), graph, program)
    build_options: dict[str, Any] = {"input_shapes": dict(input_shapes or {})}
    if precision != "fp32":
        build_options["precision"] = precision
    if constant_inputs:
        build_options["constant_inputs"] = sorted(constant_inputs)
    if dim_bounds:
        build_options["dim_bounds"] = dict(dim_bounds)
    manifest = _manifest(program, graph, tgt, build_options, profile)
    sections = (_cuda_sections(program, tgt, log, manifest, dump_ir) if cuda
                else _cpu_sections(program, tgt, log, profile, native_signature(manifest, len(program.weights))))
    with log.stage("write artifact"):
        path = write_artifact(output, manifest, {**sections, "weights": program.weights})
    if timings is not None:
        timings.update(log.timings)
    return path


def _lower(model: ModelSource, input_shapes, constant_inputs, dim_bounds, tgt, log: BuildLog,
           progress, precision: str = "fp32") -> tuple[Graph, Program]:
    """The target-independent half: frontend, graph passes, lowering to scheduled kernels."""
    with log.stage("frontend"):
        # CUDA kernels take no dims yet: a shape-setting input must be fixed there (a declared output shape).
        graph = load_graph(model, input_shapes, lambda op, domain: lookup(op, domain) is not None, constant_inputs,
                           dim_bounds, read_values=tgt.kind != "cuda")
    text = [v.name for v in graph.inputs if v.dtype is DType.STRING]
    if tgt.kind == "cuda" and text:
        raise CompileError(f"string input(s) {', '.join(map(repr, text))}: CUDA targets take numeric tensors only; "
                           "compile for the CPU")
    if tgt.kind == "cuda" and graph.sizes:
        raise CompileError(f"symbolic dimensions ({', '.join(graph.sizes)}) are not supported on CUDA targets yet; "
                           "bind them with input_shapes= / --input-shape")
    with log.stage("graph passes"):
        graph = run_passes(graph)
        if precision == "bf16":
            graph = contractions_in_bf16(graph)
        if tgt.kind == "cpu":
            graph = half_contractions_in_float32(graph)
    with log.stage("lowering"):
        program = lower_graph(graph, tgt, progress)
    return graph, program


def _cpu_sections(program: Program, tgt: Target, log: BuildLog, profile: bool, signature: bytes) -> dict[str, bytes]:
    layout = RunLayout(tuple(program.sizes), program.workspace_size, tuple(program.slots),
                       tuple(tuple(v.shape) for v in program.outputs), tuple(program.constraints),
                       tuple(program.conditions.items()), tuple(program.loops))
    parts = kernel_parts(program.calls)
    elsewhere = frozenset(k.name for part in parts[1:] for k in part)

    def run_module() -> tuple[bytes, dict[str, float]]:
        timings: dict[str, float] = {}
        module = build_module(program.calls, tgt, profile=profile, signature=signature, layout=layout,
                              elsewhere=elsewhere)
        return compile_module(module, tgt, timings, hidden=elsewhere), timings

    def kernel_module(part: list[Kernel]) -> Callable[[], tuple[bytes, dict[str, float]]]:
        def job() -> tuple[bytes, dict[str, float]]:
            timings: dict[str, float] = {}
            module = build_kernel_module(part, tgt, layout)
            return compile_module(module, tgt, timings, hidden=frozenset(k.name for k in part)), timings
        return job

    modules = f", {len(parts)} modules" if len(parts) > 1 else ""
    with log.stage(f"llvm codegen ({len(program.calls)} kernels{modules})"):
        finished: list[int] = []

        def done(index: int) -> None:
            finished.append(index)
            if log.progress and len(parts) > 1:
                log.progress(f"llvm codegen {len(finished)}/{len(parts)}: module {index}")

        compiled = run_jobs([run_module] + [kernel_module(part) for part in parts[1:]], done)
        for _, timings in compiled:  # summed over the modules: CPU seconds, not the stage's wall time
            for key, seconds in timings.items():
                log.timings[key] = log.timings.get(key, 0.0) + seconds
    with log.stage("link"):
        return {"native": link_shared_object([obj for obj, _ in compiled], tgt.triple, tgt.cpu)}


def _resolve_cuda(target: str, cpu: str | None):
    from compiler.codegen.cuda.target import resolve_cuda_target

    return resolve_cuda_target(target, cpu)


def _cuda_sections(program: Program, tgt, log: BuildLog, manifest: dict[str, Any],
                   dump_ir: str | os.PathLike | None) -> dict[str, bytes]:
    """CUDA C from the same kernels, compiled by NVRTC (compiler/codegen/cuda; imported only when used)."""
    from compiler.codegen.cuda.artifact import build_cuda_artifact
    from compiler.codegen.cuda.emitter import emit_module

    with log.stage(f"cuda codegen ({len(program.calls)} kernels)"):
        module = emit_module(program.calls, tgt)
    if dump_ir is not None:
        (pathlib.Path(dump_ir) / "model.cu").write_text(module.source)
    with log.stage("nvrtc"):
        fields, sections = build_cuda_artifact(program, tgt, module)
    manifest.update(fields)
    return sections


def _dump(folder: pathlib.Path, graph, program: Program) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "graph.txt").write_text(str(graph) + "\n")
    for k, call in enumerate(program.calls):
        (folder / f"{k:03d}_{call.kernel.name}.loop.txt").write_text(format_kernel(call.kernel) + "\n")
