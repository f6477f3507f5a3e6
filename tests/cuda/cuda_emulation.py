"""Run tilec's generated CUDA C on the CPU: g++ + tests/cuda/emulation.h + a generated launcher.

``emulate(model, feeds)`` lowers the model for a CUDA target exactly as the
pipeline does (frontend, passes, driver, CUDA emitter; no NVRTC), compiles the
module and a launcher that follows the launch plan (the same plan the GPU
executor follows) into a shared object, and runs it through ctypes. Shared
objects are cached in the temp directory by the SHA-256 of their source (and
of emulation.h), so a rerun of unchanged cases compiles nothing; g++ takes
about 0.2-0.4 s of CPU per model.

``check_emulated`` is ``helpers_onnx.check_model`` for this path: the
``check`` fixture's ``cuda-emu`` cases call it (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import pathlib
import shutil
import subprocess
import tempfile
from typing import Iterator, Mapping, Sequence

import numpy as np
import onnx

from compiler.codegen.cuda import row_reduce, tiling
from compiler.codegen.cuda.emitter import CudaModule, Launch, emit_module
from compiler.codegen.cuda.target import CudaTarget
from compiler.lowering.driver import Program
from compiler.pipeline import BuildLog
from compiler.pipeline import _lower as pipeline_lower
from helpers_onnx import RTOL, ATOL, compare_outputs, reference

HERE = pathlib.Path(__file__).resolve().parent
CXX = shutil.which("g++") or shutil.which("c++")
_CACHE = pathlib.Path(tempfile.gettempdir()) / "tilec-cuda-emulation"


def lower_for_cuda(model: onnx.ModelProto, target: CudaTarget | None = None) -> tuple[Program, CudaModule]:
    """What ``compiler.compile(model, target="cuda")`` builds, up to (not including) NVRTC."""
    target = target or CudaTarget()
    _, program = pipeline_lower(model, None, None, None, target, BuildLog(), None)
    return program, emit_module(program.calls, target)


def _arg(ref) -> str:
    if ref.kind == "input":
        return f"tl_arg{{inputs[{ref.index}]}}"
    if ref.kind == "output":
        return f"tl_arg{{outputs[{ref.index}]}}"
    base = "weights" if ref.kind == "weights" else "workspace"
    return f"tl_arg{{{base} + {ref.offset}}}"


def launcher(launches: list[Launch]) -> str:
    lines = ['extern "C" void tilec_emu_run(void **inputs, void **outputs, char *weights, char *workspace) {']
    for launch in launches:
        (gx, _, _), (bx, _, _) = launch.grid, launch.block
        args = ", ".join(_arg(a) for a in launch.args)
        cooperative = "true" if launch.cooperative else "false"
        lines.append(f"  tl_emu_launch({gx}u, {bx}u, {cooperative}, [&] {{ {launch.name}({args}); }});")
    lines.append("}")
    return "\n".join(lines) + "\n"


def entry_points(launches: list[Launch]) -> str:
    """One ``tl_emu_call_<kernel>(grid, block, kernelParams)`` per kernel, as ``cuLaunchKernel`` would call it
    (each kernelParams entry points at a device pointer): what emulated_driver.py launches."""
    lines, seen = [], set()
    for launch in launches:
        if launch.name in seen:
            continue
        seen.add(launch.name)
        args = ", ".join(f"tl_arg{{*static_cast<void **>(params[{k}])}}" for k in range(len(launch.args)))
        cooperative = "true" if launch.cooperative else "false"
        lines.append(f'extern "C" void tl_emu_call_{launch.name}(unsigned grid, unsigned block, void **params) {{\n'
                     f"  tl_emu_launch(grid, block, {cooperative}, [&] {{ {launch.name}({args}); }});\n}}")
    return "\n".join(lines) + "\n"


def build_shared_object(module: CudaModule) -> pathlib.Path:
    if CXX is None:
        raise RuntimeError("no host C++ compiler (g++) to emulate CUDA kernels with")
    text = module.source + "\n" + launcher(module.launches) + entry_points(module.launches)
    key = hashlib.sha256(text.encode() + (HERE / "emulation.h").read_bytes()).hexdigest()[:20]
    _CACHE.mkdir(parents=True, exist_ok=True)
    so = _CACHE / f"{key}.so"
    if so.exists():
        return so
    # Per-process names, then an atomic rename: xdist workers may build the same module at once.
    src = _CACHE / f"{key}.{os.getpid()}.cpp"
    src.write_text(text)
    tmp = _CACHE / f"{key}.{os.getpid()}.tmp.so"
    cmd = [CXX, "-std=c++17", "-O1", "-fPIC", "-shared", "-pthread", "-ffp-contract=off", "-Wno-unknown-pragmas",
           "-include", str(HERE / "emulation.h"), str(src), "-o", str(tmp), "-lm"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"the generated CUDA C ({src}) does not compile under emulation:\n{result.stderr[-6000:]}")
    tmp.replace(so)
    src.unlink()
    return so


def run_program(program: Program, module: CudaModule, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    lib = ctypes.CDLL(str(build_shared_object(module)))
    inputs = [np.ascontiguousarray(feeds[v.name], dtype=v.dtype.numpy) for v in program.inputs]
    outputs = [np.empty(v.shape, dtype=v.dtype.numpy) for v in program.outputs]
    for out in outputs:
        out.reshape(-1).view(np.uint8).fill(0xFF)  # poison (NaN for floats): every element must be written
    weights = np.frombuffer(program.weights, dtype=np.uint8).copy() if program.weights else np.zeros(1, np.uint8)
    # Poison the arena: a kernel that reads before anyone writes shows up as a mismatch.
    workspace = np.full(max(program.workspace_size, 1), 0xFF, dtype=np.uint8)
    in_ptrs = (ctypes.c_void_p * max(1, len(inputs)))(*[a.ctypes.data for a in inputs])
    out_ptrs = (ctypes.c_void_p * max(1, len(outputs)))(*[a.ctypes.data for a in outputs])
    lib.tilec_emu_run.argtypes = [ctypes.c_void_p] * 4
    lib.tilec_emu_run(in_ptrs, out_ptrs, weights.ctypes.data, workspace.ctypes.data)
    return outputs


def emulate(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], target: CudaTarget | None = None
            ) -> list[np.ndarray]:
    program, module = lower_for_cuda(model, target)
    return run_program(program, module, feeds)


def check_emulated(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], rtol: float = RTOL, atol: float = ATOL,
                   threads: object = None, cache_dir: object = None,
                   expected: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """``helpers_onnx.check_model``'s contract through the emulated CUDA path (``threads``, ``cache_dir`` unused).

    Op tests use small shapes, whose contractions and reductions mostly fall below the thresholds of
    the GPU schedules: those models also run with every contraction tiled and every contiguous
    reduction cooperative (``tiling_everything``), so those kernels meet every op family.
    """
    expected = reference(model, feeds) if expected is None else [np.asarray(e) for e in expected]
    program, module = lower_for_cuda(model)
    compare_outputs(model, run_program(program, module, feeds), expected, rtol, atol, "CUDA C under emulation")
    with tiling_everything():
        tiled_program, tiled = lower_for_cuda(model)
    if tiled.source != module.source:
        compare_outputs(model, run_program(tiled_program, tiled, feeds), expected, rtol, atol,
                        "CUDA C with every contraction tiled and every row reduction cooperative, under emulation")
    return expected


@contextlib.contextmanager
def tiling_everything() -> Iterator[None]:
    """Within: the tiling thresholds are 1, so every contraction gets a shared-memory tiled kernel, and
    reductions over contiguous rows get a warp per row (rows under 64 terms) or a block per row."""
    saved = tiling.MIN_ROWS, tiling.MIN_COLS, tiling.MIN_REDUCTION, row_reduce.WARP_ROW_MIN, row_reduce.BLOCK_ROW_MIN
    tiling.MIN_ROWS = tiling.MIN_COLS = tiling.MIN_REDUCTION = row_reduce.WARP_ROW_MIN = 1
    row_reduce.BLOCK_ROW_MIN = 64
    try:
        yield
    finally:
        tiling.MIN_ROWS, tiling.MIN_COLS, tiling.MIN_REDUCTION, row_reduce.WARP_ROW_MIN, row_reduce.BLOCK_ROW_MIN = saved
