"""CUDA target parsing, NVRTC compilation, the artifact's launch plan, and the executor's refusal without a GPU."""

from __future__ import annotations

import builtins
import json

import numpy as np
import onnx
import pytest

import compiler
import runtime_stub
from compiler.codegen.cuda.emitter import MAX_GRID
from compiler.codegen.cuda.nvrtc import INSTALL_HINT, compile_cuda, nvrtc_available
from compiler.codegen.cuda.target import CudaTarget, resolve_cuda_target
from compiler.errors import TargetError, ToolchainError
from cuda_emulation import lower_for_cuda
from runtime_stub.artifact import read_artifact
from runtime_stub.errors import IncompatibleArtifactError

LENET = "examples/models/lenet.onnx"
NO_NVRTC = "NVRTC IS NOT AVAILABLE: pip install -e '.[cuda]' (nvidia-cuda-nvrtc, cuda-bindings) to run this test"
needs_nvrtc = pytest.mark.skipif(not nvrtc_available(), reason=NO_NVRTC)


def test_target_parsing():
    assert resolve_cuda_target("cuda") == CudaTarget("sm_80")
    assert resolve_cuda_target("cuda:sm_90").arch == "sm_90"
    assert resolve_cuda_target("cuda:SM_86").compute_capability == (8, 6)
    with pytest.raises(TargetError, match="unknown CUDA architecture 'sm_75'"):
        resolve_cuda_target("cuda:sm_75")
    with pytest.raises(TargetError, match="does not apply"):
        resolve_cuda_target("cuda", cpu="znver4")


def test_one_launch_per_top_level_nest():
    program, module = lower_for_cuda(onnx.load(LENET))
    from compiler.codegen.cuda.schedule import top_level

    assert len(module.launches) == sum(len(top_level(c.kernel.body)) for c in program.calls)
    for launch in module.launches:
        assert launch.block[0] % 32 == 0
        if launch.cooperative:  # a tiled nest: exactly one block per tile
            assert launch.grid[0] * launch.block[0] == launch.total
        else:  # a flat nest: a grid-stride loop over `total` elements
            assert launch.grid[0] == min(-(-launch.total // launch.block[0]), MAX_GRID)
    assert module.source.count("__global__ void") == len(module.launches)


@needs_nvrtc
def test_nvrtc_compiles_ptx_and_cubin():
    ptx, cubin = compile_cuda('extern "C" __global__ void f(float *x) { x[threadIdx.x] = expf(x[threadIdx.x]); }',
                              "sm_80")
    assert b".target sm_80" in ptx and b".entry f" in ptx
    assert cubin[:4] == b"\x7fELF"


@needs_nvrtc
def test_nvrtc_compiles_16_bit_floats_and_tiles():
    """The device-only parts of the prelude (PTX conversions) and a tiled float16 product."""
    from helpers_onnx import graph_model, rand
    from onnx import helper

    a, b = rand([40, 30], dtype="float16"), rand([30, 20], seed=1, dtype="float16")
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"]), helper.make_node("Cast", ["y"], ["h"], to=16),
             helper.make_node("Cast", ["h"], ["z"], to=1)]
    _, module = lower_for_cuda(graph_model(nodes, {"a": a, "b": b}, ["y", "z"]))
    assert "__syncthreads" in module.source and "tl_f2bf" in module.source
    ptx, _ = compile_cuda(module.source, "sm_80")
    assert b"cvt.rn.f16.f32" in ptx and b"cvt.rn.bf16.f32" in ptx


@needs_nvrtc
def test_nvrtc_error_carries_the_log():
    with pytest.raises(ToolchainError, match="identifier \"undefined_thing\" is undefined"):
        compile_cuda('extern "C" __global__ void f(float *x) { x[0] = undefined_thing; }', "sm_80")


def test_missing_nvrtc_says_how_to_install(monkeypatch):
    from compiler.codegen.cuda import nvrtc

    nvrtc._nvrtc.cache_clear()
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("cuda"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)  # as if the wheels were not installed
    try:
        with pytest.raises(ToolchainError, match=r"pip install 'tilec\[cuda\]'"):
            compile_cuda("", "sm_80")
        assert "tilec[cuda]" in INSTALL_HINT
    finally:
        monkeypatch.undo()
        nvrtc._nvrtc.cache_clear()


@needs_nvrtc
@pytest.mark.parametrize("target,arch", [("cuda", "sm_80"), ("cuda:sm_90", "sm_90")])
def test_compile_lenet_artifact(tmp_path, target, arch):
    path = compiler.compile(LENET, tmp_path / "lenet.tilec", target=target, dump_ir=tmp_path / "dump")
    artifact = read_artifact(path)
    m = artifact.manifest
    assert m["target"]["kind"] == "cuda" and m["target"]["arch"] == arch
    plan = m["cuda"]
    section = artifact.sections["cuda"]
    cubin = plan["images"]["cubin"]
    ptx = plan["images"]["ptx"]
    assert section[cubin["offset"]:cubin["offset"] + 4].tobytes() == b"\x7fELF"
    assert f".target {arch}".encode() in section[ptx["offset"]:ptx["offset"] + ptx["size"]].tobytes()
    assert plan["launches"] and all(set(l) >= {"name", "grid", "block", "shared_mem", "args"} for l in plan["launches"])
    kinds = {a["kind"] for l in plan["launches"] for a in l["args"]}
    assert {"input", "output", "weights"} <= kinds
    assert (tmp_path / "dump" / "model.cu").read_text().count("__global__") == len(plan["launches"])
    json.dumps(m)  # the plan is plain JSON
    # Same model, same bytes.
    again = compiler.compile(LENET, tmp_path / "again.tilec", target=target)
    assert again.read_bytes() == path.read_bytes()


@needs_nvrtc
def test_session_without_gpu_is_refused_clearly(tmp_path):
    from cuda_gpu import gpu_available

    if gpu_available():
        pytest.skip("this machine has a GPU: tests/cuda/test_cuda_gpu.py runs the artifact")
    path = compiler.compile(LENET, tmp_path / "lenet.tilec", target="cuda")
    with pytest.raises(IncompatibleArtifactError, match="needs an NVIDIA GPU and driver"):
        runtime_stub.InferenceSession(path)


def test_cpu_targets_unaffected(tmp_path):
    x = np.ones((1, 4), np.float32)
    from helpers_onnx import node_model

    path = compiler.compile(node_model("Relu", ["x"], {"x": x}), tmp_path / "relu.tilec")
    assert read_artifact(path).manifest["target"]["kind"] == "cpu"
