"""Every kernel of the nine light models compiles with NVRTC (no GPU needed)."""

from __future__ import annotations

import pytest

import compiler
from compiler.codegen.cuda.nvrtc import nvrtc_available
from compiler.models.light import LIGHT_MODELS, light_model
from runtime_stub.artifact import read_artifact

NO_NVRTC = ("NVRTC IS NOT AVAILABLE, so the CUDA codegen is NOT being checked: "
            "pip install -e '.[cuda]' (nvidia-cuda-nvrtc, cuda-bindings)")


@pytest.mark.slow
@pytest.mark.skipif(not nvrtc_available(), reason=NO_NVRTC)
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_compiles_with_nvrtc(name: str, tmp_path) -> None:
    path = compiler.compile(light_model(name), tmp_path / f"{name}.tilec", target="cuda")
    manifest = read_artifact(path).manifest
    assert manifest["target"]["kind"] == "cuda"
    assert len(manifest["cuda"]["launches"]) >= len(manifest["kernels"])
