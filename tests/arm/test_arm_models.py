"""Cross-compiled aarch64 artifacts run on (emulated) arm64 Python 3.11 + numpy 1.24 and match onnxruntime.

The artifact is built here on x86 with ``--target aarch64-linux-gnu``; runtime_stub
runs it under qemu-aarch64 with Debian's arm64 python and numpy (see
scripts/setup_arm_emulator.sh). Tolerance: max |arm - ort| <= 1e-3 * max |ort|.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest
from onnx import numpy_helper

import compiler

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from arm_emulator import require_emulator, run_arm_python  # noqa: E402
from helpers_onnx import assert_close_to_max  # noqa: E402
from compiler.models.light import light_model, random_input  # noqa: E402

ort = pytest.importorskip("onnxruntime")
REPO = pathlib.Path(__file__).resolve().parents[2]

RUNNER = """
import sys, numpy as np, platform, runtime_stub
assert platform.machine() == "aarch64", platform.machine()
session = runtime_stub.InferenceSession(sys.argv[1], threads=2)
feeds = dict(np.load(sys.argv[2]))
outputs = session.run(None, feeds)
np.savez(sys.argv[3], *outputs)
print("numpy", np.__version__)
"""


def _run_on_arm(model, feeds: dict[str, np.ndarray], tmp: pathlib.Path, **options) -> list[np.ndarray]:
    require_emulator()
    artifact = compiler.compile(model, tmp / "model.tilec", target="aarch64-linux-gnu", **options)
    np.savez(tmp / "in.npz", **feeds)
    script = tmp / "run.py"
    script.write_text(RUNNER)
    result = run_arm_python(script, args=(str(artifact), str(tmp / "in.npz"), str(tmp / "out.npz")), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "numpy 1.24" in result.stdout
    with np.load(tmp / "out.npz") as data:
        return [data[f"arr_{k}"] for k in range(len(data.files))]


def _assert_close(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert_close_to_max(got, want, 1e-3, "arm64")


@pytest.mark.arm
def test_lenet_example_on_arm(tmp_path: pathlib.Path) -> None:
    model = REPO / "examples" / "models" / "lenet.onnx"
    feeds = {"image": np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)}
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)
    _assert_close(_run_on_arm(model, feeds, tmp_path), want)


@pytest.mark.arm
@pytest.mark.slow
@pytest.mark.parametrize("name", ["squeezenet", "inception_v1", "resnet50"])
def test_light_model_on_arm(name: str, tmp_path: pathlib.Path) -> None:
    model = light_model(name)
    feeds = random_input(model)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    _assert_close(_run_on_arm(model, feeds, tmp_path), want)


@pytest.mark.arm
def test_transformer_encoder_on_arm(tmp_path: pathlib.Path) -> None:
    from compiler.models.transformer import encoder, encoder_inputs

    model = encoder(layers=2, hidden=64, heads=4, seq=16)
    feeds = encoder_inputs(model)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    _assert_close(_run_on_arm(model, feeds, tmp_path), want)


DYNAMIC_RUNNER = """
import sys, numpy as np, platform, runtime_stub
assert platform.machine() == "aarch64", platform.machine()
session = runtime_stub.InferenceSession(sys.argv[1], threads=2)
for k, path in enumerate(sys.argv[2:]):
    (y,) = session.run(None, dict(np.load(path)))
    np.save(path + ".out.npy", y)
print("dims", session.get_inputs()[0].shape)
"""


@pytest.mark.arm
def test_dynamic_attention_block_on_arm(tmp_path: pathlib.Path) -> None:
    """One aarch64 artifact with a symbolic batch and sequence, run at several shapes in one process."""
    from compiler.models.exported import attention_model

    require_emulator()
    model = attention_model()
    artifact = compiler.compile(model, tmp_path / "attention.tilec", target="aarch64-linux-gnu")
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(4)
    feeds = []
    for k, shape in enumerate([(1, 1, 32), (2, 7, 32), (3, 17, 32)]):
        feeds.append({"x": rng.standard_normal(shape).astype(np.float32)})
        np.savez(tmp_path / f"in{k}.npz", **feeds[-1])
    script = tmp_path / "run.py"
    script.write_text(DYNAMIC_RUNNER)
    paths = [str(tmp_path / f"in{k}.npz") for k in range(len(feeds))]
    result = run_arm_python(script, args=(str(artifact), *paths), timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "dims ['batch', 'sequence', 32]" in result.stdout
    for path, feed in zip(paths, feeds):
        _assert_close([np.load(path + ".out.npy")], reference.run(None, feed))


@pytest.mark.arm
@pytest.mark.parametrize("cpu", ["neoverse-n1", "neoverse-v1"])
def test_int8_qdq_cnn_on_arm(cpu: str, tmp_path: pathlib.Path) -> None:
    """A quantize_static (QDQ) model within one output step: its integer contractions on sdot (the
    activations moved to int8) for neoverse-n1, on usdot for neoverse-v1."""
    pytest.importorskip("sympy")  # quant_pre_process's symbolic shape inference
    from compiler.models import quantized, synthetic

    fp32 = synthetic.residual_cnn()
    model = quantized.quantize_static_qdq(fp32, quantized.random_calibration(fp32))
    feeds = random_input(model)
    (want,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    (got,) = _run_on_arm(model, feeds, tmp_path, cpu=cpu)
    last = next(n for n in model.graph.node if n.output[0] == model.graph.output[0].name)
    step = float(next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == last.input[1]))
    assert np.max(np.abs(got - want)) <= 1.0001 * step


@pytest.mark.arm
def test_bf16_encoder_on_neoverse_v1(tmp_path: pathlib.Path) -> None:
    """precision='bf16' for a BF16 arm64 core: bfdot kernels, within bfloat16's error of float32."""
    from compiler.models.transformer import encoder, encoder_inputs

    model = encoder(layers=2, hidden=64, heads=4, seq=16)
    feeds = encoder_inputs(model)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert_close_to_max(_run_on_arm(model, feeds, tmp_path, cpu="neoverse-v1", precision="bf16"), want, 2e-2, "arm64 bf16")
