"""Program → the CUDA parts of an artifact: a 'cuda' section and the launch plan.

Contract: ``build_cuda_artifact(program, target)`` emits CUDA C for every
kernel (``emitter.emit_module``), compiles it with NVRTC and returns
``(manifest_fields, sections)``:

* ``sections["cuda"]``: the CUBIN for ``target.arch``, then (256-aligned) the
  PTX, which a newer GPU's driver can JIT when the CUBIN does not fit it;
* ``manifest_fields["cuda"]``: ``{"arch", "images": {"cubin": {offset, size},
  "ptx": {offset, size}}, "launches": [{name, grid, block, shared_mem,
  threads, kernel, args: [{kind, index, offset}]}], "nvrtc": "13.5"}``, where
  image offsets are relative to the section, and each arg is a pointer to
  ``inputs[index]`` / ``outputs[index]`` or ``weights`` / ``workspace`` +
  ``offset`` (bytes). Launches run in order on one stream.
"""

from __future__ import annotations

from typing import Any

from compiler.codegen.cuda.emitter import CudaModule, emit_module
from compiler.codegen.cuda.nvrtc import compile_cuda, nvrtc_version
from compiler.codegen.cuda.target import CudaTarget

SECTION = "cuda"
IMAGE_ALIGNMENT = 256


def build_cuda_artifact(program, target: CudaTarget, module: CudaModule | None = None
                        ) -> tuple[dict[str, Any], dict[str, bytes]]:
    module = module or emit_module(program.calls, target)
    ptx, cubin = compile_cuda(module.source, target.arch)
    ptx_offset = -(-len(cubin) // IMAGE_ALIGNMENT) * IMAGE_ALIGNMENT
    blob = cubin + bytes(ptx_offset - len(cubin)) + ptx
    major, minor = nvrtc_version()
    fields = {
        "cuda": {
            "arch": target.arch,
            "images": {"cubin": {"offset": 0, "size": len(cubin)}, "ptx": {"offset": ptx_offset, "size": len(ptx)}},
            "launches": [launch.to_json() for launch in module.launches],
            "nvrtc": f"{major}.{minor}",
        }
    }
    return fields, {SECTION: blob}
