"""runtime_stub/cuda_executor.py against a recording stand-in for the CUDA driver (no GPU needed).

Checks the plumbing a GPU run depends on: the module image handed to the
driver, one device allocation per buffer, input and output copies, and that
every launch receives the grid, block and device pointers the launch plan
says (inputs, outputs, weights + offset, workspace + offset), in plan order.
"""

from __future__ import annotations

import ctypes
import enum
import sys
import types

import numpy as np
import pytest

import compiler
from compiler.codegen.cuda.nvrtc import nvrtc_available
from runtime_stub.artifact import read_artifact

LENET = "examples/models/lenet.onnx"


class _Result(enum.Enum):
    CUDA_SUCCESS = 0


class FakeDriver:
    """The cuda.bindings.driver calls the executor makes, returning (CUresult, value...) tuples."""

    CUresult = _Result

    def __init__(self) -> None:
        self.next_ptr = 1 << 32
        self.allocations: dict[int, int] = {}
        self.launches: list[tuple] = []
        self.copies_in: list[tuple[int, int]] = []
        self.copies_out: list[tuple[int, int]] = []
        self.image = b""

    def _ok(self, *values):
        return (_Result.CUDA_SUCCESS, *values)

    def cuInit(self, flags):
        return self._ok()

    def cuDeviceGet(self, ordinal):
        return self._ok("device0")

    def cuDevicePrimaryCtxRetain(self, device):
        return self._ok("context0")

    def cuDevicePrimaryCtxRelease(self, device):
        return self._ok()

    def cuCtxSetCurrent(self, context):
        return self._ok()

    def cuModuleLoadData(self, address):
        self.image = ctypes.string_at(address, 4)
        return self._ok("module0")

    def cuModuleGetFunction(self, module, name):
        return self._ok(name.decode())

    def cuModuleUnload(self, module):
        return self._ok()

    def cuMemAlloc(self, nbytes):
        ptr = self.next_ptr
        self.allocations[ptr] = nbytes
        self.next_ptr += (nbytes + 0xFFFF) & ~0xFFFF
        return self._ok(ptr)

    def cuMemFree(self, ptr):
        return self._ok()

    def cuMemcpyHtoD(self, dst, src, nbytes):
        self.copies_in.append((dst, nbytes))
        return self._ok()

    def cuMemcpyDtoH(self, dst, src, nbytes):
        self.copies_out.append((src, nbytes))
        return self._ok()

    def cuLaunchKernel(self, fn, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        count = len(self.plan_args[fn])
        slots = (ctypes.c_uint64 * count).from_address(params) if count else []
        pointers = [ctypes.c_uint64.from_address(slot).value for slot in slots]
        self.launches.append((fn, (gx, gy, gz), (bx, by, bz), shared, pointers))
        return self._ok()

    def cuCtxSynchronize(self):
        return self._ok()


@pytest.mark.skipif(not nvrtc_available(), reason="NVRTC is not installed: no CUDA artifact to run")
def test_launches_follow_the_plan(tmp_path, monkeypatch) -> None:
    from runtime_stub.cuda_executor import CudaExecutor

    artifact = read_artifact(compiler.compile(LENET, tmp_path / "lenet.tilec", target="cuda"))
    plan = artifact.manifest["cuda"]
    fake = FakeDriver()
    fake.plan_args = {launch["name"]: launch["args"] for launch in plan["launches"]}
    bindings = types.ModuleType("cuda.bindings")
    bindings.driver = fake
    monkeypatch.setitem(sys.modules, "cuda", types.ModuleType("cuda"))
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)

    executor = CudaExecutor(artifact)
    assert fake.image == b"\x7fELF"  # the CUBIN first
    inputs = [np.zeros(e["shape"], np.float32) for e in artifact.manifest["inputs"]]
    outputs = [np.zeros(e["shape"], np.float32) for e in artifact.manifest["outputs"]]
    fake.copies_in.clear()
    executor.run(inputs, outputs)
    executor.close()

    assert [n for _, n in fake.copies_in] == [a.nbytes for a in inputs]
    assert [n for _, n in fake.copies_out] == [a.nbytes for a in outputs]
    input_ptrs = [dst for dst, _ in fake.copies_in]
    output_ptrs = [src for src, _ in fake.copies_out]
    weights = next(p for p, n in fake.allocations.items() if n == max(1, len(artifact.weights)))
    assert [l[0] for l in fake.launches] == [launch["name"] for launch in plan["launches"]]
    for (_, grid, block, shared, pointers), launch in zip(fake.launches, plan["launches"]):
        assert list(grid) == launch["grid"] and list(block) == launch["block"] and shared == launch["shared_mem"]
        for ptr, arg in zip(pointers, launch["args"], strict=True):
            if arg["kind"] == "input":
                assert ptr == input_ptrs[arg["index"]]
            elif arg["kind"] == "output":
                assert ptr == output_ptrs[arg["index"]]
            elif arg["kind"] == "weights":
                assert ptr == weights + arg["offset"]
            else:
                base = ptr - arg["offset"]
                assert fake.allocations[base] == max(1, artifact.manifest["workspace_size"])
