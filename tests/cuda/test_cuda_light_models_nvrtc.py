"""Every kernel of the nine light models and of the transformer encoder compiles with NVRTC (no GPU needed).

Slow (NVRTC takes seconds per model), so marked ``slow``: it runs in ``make test``
(and CI), not in ``make test-fast``.
"""

from __future__ import annotations

import onnx
import pytest

import compiler
from compiler.codegen.cuda.nvrtc import nvrtc_available
from compiler.models.light import LIGHT_MODELS, light_model
from compiler.models.transformer import encoder
from runtime_stub.artifact import read_artifact

NO_NVRTC = ("NVRTC IS NOT AVAILABLE, so the CUDA codegen is NOT being checked: "
            "pip install -e '.[cuda]' (nvidia-cuda-nvrtc, cuda-bindings)")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not nvrtc_available(), reason=NO_NVRTC)]


def _compiles(model: onnx.ModelProto, path) -> None:
    manifest = read_artifact(compiler.compile(model, path, target="cuda")).manifest
    assert manifest["target"]["kind"] == "cuda"
    plan = manifest["cuda"]
    assert len(plan["launches"]) >= len(manifest["kernels"])
    assert plan["images"]["cubin"]["size"] > 0 and plan["images"]["ptx"]["size"] > 0


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_compiles_with_nvrtc(name: str, tmp_path) -> None:
    _compiles(light_model(name), tmp_path / f"{name}.tilec")


def test_transformer_encoder_compiles_with_nvrtc(tmp_path) -> None:
    _compiles(encoder(), tmp_path / "encoder.tilec")
