"""CUDA artifacts on a real GPU against onnxruntime on the CPU (``make gpu-test``; skipped without a GPU).

Each model is compiled with ``--target cuda``, run twice (same answer: weights
are uploaded once) and compared with onnxruntime within ``1e-3`` of the
largest reference magnitude. Latency (median of timed runs after warm-up,
host → device → host copies included) is printed next to PyTorch eager
running the same ONNX graph node by node (``torch_reference.py``) when torch
is importable.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import numpy as np
import onnx
import pytest

import compiler
import runtime_stub
from cuda_gpu import gpu_reason
from compiler.models.light import LIGHT_MODELS, light_model, random_input
from compiler.models.transformer import encoder, encoder_inputs

ort = pytest.importorskip("onnxruntime")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(gpu_reason() is not None, reason=f"no usable NVIDIA GPU: {gpu_reason()}")]

WARMUP, TIMED = 3, 20


def _median_ms(fn: Callable[[], object]) -> float:
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(TIMED):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _torch_ms(model: onnx.ModelProto, feeds) -> str:
    try:
        import torch

        from torch_reference import TorchGraph

        graph = TorchGraph(model)

        def run() -> None:
            graph(feeds)
            torch.cuda.synchronize()

        return f"{_median_ms(run):.3f} ms"
    except Exception as exc:  # noqa: BLE001 - the baseline is a report, not the test
        return f"n/a ({type(exc).__name__}: {str(exc)[:80]})"


def _compare(model: onnx.ModelProto, feeds, tmp_path, name: str, capsys, bar: float = 1e-3) -> None:
    artifact = compiler.compile(model, tmp_path / f"{name}.tilec", target="cuda")
    with runtime_stub.InferenceSession(artifact) as session:
        got = session.run(None, feeds)
        again = session.run(None, feeds)  # weights uploaded once; a second run gives the same answer
        tilec_ms = _median_ms(lambda: session.run(None, feeds))
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for g, a, w in zip(got, again, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, a)
        scale = max(float(np.abs(w).max()), 1e-6)
        err = float(np.abs(g - w).max())
        assert err <= bar * scale, f"{name}: max error {err:.3g} vs max |ort| {scale:.3g}"
    with capsys.disabled():
        print(f"\n[latency] {name}: tilec cuda {tilec_ms:.3f} ms, PyTorch eager {_torch_ms(model, feeds)}")


def test_lenet_on_gpu(tmp_path, capsys) -> None:
    model = onnx.load("examples/models/lenet.onnx")
    _compare(model, random_input(model), tmp_path, "lenet", capsys)


@pytest.mark.parametrize("layers,hidden,heads,seq", [(2, 64, 4, 16), (4, 256, 4, 128)])
def test_transformer_encoder_on_gpu(layers: int, hidden: int, heads: int, seq: int, tmp_path, capsys) -> None:
    model = encoder(layers, hidden, heads, seq)
    _compare(model, encoder_inputs(model), tmp_path, f"encoder_l{layers}_h{hidden}_s{seq}", capsys)


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_on_gpu(name: str, tmp_path, capsys) -> None:
    model = light_model(name)
    _compare(model, random_input(model), tmp_path, name, capsys)


class _DLPackOnly:
    """A GPU tensor reachable by DLPack alone (no __cuda_array_interface__), as JAX-style producers are."""

    def __init__(self, tensor) -> None:
        self._tensor = tensor

    def __dlpack__(self, stream=None):
        return self._tensor.__dlpack__(stream=stream)

    def __dlpack_device__(self):
        return self._tensor.__dlpack_device__()


@pytest.mark.parametrize("library", ["torch", "torch-dlpack", "cupy"])
def test_device_arrays_in_and_out(library: str, tmp_path) -> None:
    """Inputs read in place from another library's GPU tensors; outputs left on the GPU and taken back by it."""
    lib = pytest.importorskip(library.partition("-")[0])
    model = onnx.load("examples/models/lenet.onnx")
    feeds = random_input(model)
    if library.startswith("torch"):
        on_gpu = {k: lib.from_numpy(v).cuda() for k, v in feeds.items()}
        if library == "torch-dlpack":
            on_gpu = {k: _DLPackOnly(v) for k, v in on_gpu.items()}
        adopt, to_host = (lambda a: lib.as_tensor(a, device="cuda")), (lambda t: t.cpu().numpy())
    else:
        on_gpu = {k: lib.asarray(v) for k, v in feeds.items()}
        adopt, to_host = lib.asarray, lib.asnumpy
    artifact = compiler.compile(model, tmp_path / "lenet.tilec", target="cuda")
    with runtime_stub.InferenceSession(artifact) as session:
        want = session.run(None, feeds)
        outputs = session.run_on_device(None, on_gpu)
    for out, w in zip(outputs, want, strict=True):
        np.testing.assert_array_equal(out.numpy(), w)
        adopted = adopt(out)  # zero copy: the other library reads tilec's device memory
        np.testing.assert_array_equal(to_host(adopted), w)
