"""CUDA artifacts through runtime_stub, end to end, on an emulated driver (no GPU needed).

``InferenceSession`` loads a real ``--target cuda`` artifact and runs it through
runtime_stub/cuda_executor.py against emulated_driver.py, whose kernels are the
same generated CUDA C compiled for the CPU. So the launch plan, weight upload,
arena offsets, copies, zero-copy device inputs (``__cuda_array_interface__``,
DLPack) and device-resident outputs are all checked by their numbers against
onnx's reference evaluator (tolerance: float32 ``RTOL``/``ATOL`` of helpers_onnx).
"""

from __future__ import annotations

import ctypes
import gc
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

import compiler
import runtime_stub
from compiler.codegen.cuda.nvrtc import nvrtc_available
from cuda_emulation import CXX
from emulated_driver import install
from helpers_onnx import ATOL, RTOL, compiled, graph_model, rand, reference
from runtime_stub.device_arrays import _capsule_pointer, _DLManagedTensor

pytestmark = pytest.mark.skipif(not nvrtc_available() or CXX is None,
                                reason="needs NVRTC (to build CUDA artifacts) and g++ (to emulate their kernels)")

LENET = "examples/models/lenet.onnx"


def _two_in_two_out() -> onnx.ModelProto:
    """y = Relu(x @ w + b) [tiled contraction], s = ReduceSum(x, 1) [row reduction], i = ArgMax(y, 1) [int64]."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Relu", ["a"], ["y"]),
             helper.make_node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
             helper.make_node("ArgMax", ["y"], ["i"], axis=1, keepdims=0)]
    return graph_model(nodes, {"x": rand([64, 96]), "w": rand([96, 80], seed=1)}, ["y", "s", "i"],
                       {"b": rand([80], seed=2), "axes": np.array([1], dtype=np.int64)})


def _scale_relu() -> onnx.ModelProto:
    """z = Relu(x) * 2 over [64, 80]: its output feeds its input for chaining device arrays."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "two"], ["z"])]
    return graph_model(nodes, {"x": rand([64, 80])}, ["z"], {"two": np.array(2.0, dtype=np.float32)})


def _feeds(model: onnx.ModelProto, seed: int = 7) -> dict[str, np.ndarray]:
    feeds = {}
    for k, value in enumerate(model.graph.input):
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = rand(shape, seed=seed + k)
    return feeds


def _session(model: onnx.ModelProto, tmp_path) -> runtime_stub.InferenceSession:
    return runtime_stub.InferenceSession(compiled(model, tmp_path, target="cuda"))


def _check(model: onnx.ModelProto, got, feeds) -> None:
    for g, want in zip(got, reference(model, feeds), strict=True):
        np.testing.assert_allclose(np.asarray(g), want, rtol=RTOL, atol=ATOL)


class CaiTensor:
    """A tensor in the fake GPU's memory that describes itself by ``__cuda_array_interface__``."""

    def __init__(self, array: np.ndarray, stream: int | None = None, strides: tuple[int, ...] | None = None,
                 pointer: int | None = None) -> None:
        self.array, self.stream, self.strides = array, stream, strides
        self.pointer = array.ctypes.data if pointer is None else pointer

    @property
    def __cuda_array_interface__(self) -> dict:
        return {"shape": self.array.shape, "typestr": self.array.dtype.str, "data": (self.pointer, False),
                "strides": self.strides, "version": 3, "stream": self.stream}


class DLPackTensor:
    """A tensor in the fake GPU's memory exported by DLPack (numpy's capsule, its device set to CUDA)."""

    def __init__(self, array: np.ndarray, device: int = 0) -> None:
        self.array, self.device, self.streams = array, device, []

    def __dlpack_device__(self) -> tuple[int, int]:
        return 2, self.device

    def __dlpack__(self, stream=None):
        self.streams.append(stream)
        capsule = self.array.__dlpack__()
        managed = _DLManagedTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
        managed.dl_tensor.device.device_type, managed.dl_tensor.device.device_id = 2, self.device
        return capsule


@pytest.mark.parametrize("model", [pytest.param(lambda: onnx.load(LENET), id="lenet"),
                                   pytest.param(_two_in_two_out, id="matmul_reduce_argmax")])
def test_numpy_in_numpy_out_matches_the_reference(model, tmp_path, monkeypatch) -> None:
    model = model()
    driver = install(monkeypatch, model)
    feeds = _feeds(model)
    with _session(model, tmp_path) as session:
        assert driver.image == b"\x7fELF"  # the CUBIN is tried first
        first = session.run(None, feeds)
        _check(model, first, feeds)
        plan = session.manifest["cuda"]["launches"]
        assert [name for name, _ in driver.launches] == [launch["name"] for launch in plan]
        # Weights are uploaded once: a second run reads the same device copy.
        again = session.run(None, feeds)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    gc.collect()
    assert driver.allocated == 0 and driver.context_retains == 0


def test_device_inputs_are_read_in_place(tmp_path, monkeypatch) -> None:
    model = _two_in_two_out()
    driver = install(monkeypatch, model)
    feeds = _feeds(model)
    on_gpu = driver.device_array(feeds["x"])
    with _session(model, tmp_path) as session:
        loaded = len(driver.copies_in)
        got = session.run(None, {"x": CaiTensor(on_gpu), "w": feeds["w"]})
    _check(model, got, feeds)
    assert [n for _, n in driver.copies_in[loaded:]] == [feeds["w"].nbytes]  # w copied, x read in place
    assert any(on_gpu.ctypes.data in pointers for _, pointers in driver.launches)


def test_dlpack_input_is_read_in_place_and_handed_back(tmp_path, monkeypatch) -> None:
    model = _two_in_two_out()
    driver = install(monkeypatch, model)
    feeds = _feeds(model)
    tensor = DLPackTensor(driver.device_array(feeds["x"]))
    references = sys.getrefcount(tensor.array)
    with _session(model, tmp_path) as session:
        loaded = len(driver.copies_in)
        got = session.run(None, {"x": tensor, "w": feeds["w"]})
    _check(model, got, feeds)
    assert tensor.streams == [1]  # the producer is asked to order its writes before the legacy default stream
    assert [n for _, n in driver.copies_in[loaded:]] == [feeds["w"].nbytes]
    after = sys.getrefcount(tensor.array)  # outside the assert: pytest's rewriting holds temporaries
    assert after == references  # the DLPack deleter ran exactly once


@pytest.mark.parametrize("stream, waited", [(None, []), (1, []), (2, []), (0x5EED, [0x5EED])])
def test_a_producer_stream_is_waited_for(stream, waited, tmp_path, monkeypatch) -> None:
    model = _scale_relu()
    driver = install(monkeypatch, model)
    feeds = _feeds(model)
    with _session(model, tmp_path) as session:
        _check(model, session.run(None, {"x": CaiTensor(driver.device_array(feeds["x"]), stream=stream)}), feeds)
    assert driver.stream_waits == waited


def test_outputs_left_on_the_device_chain_and_outlive_the_session(tmp_path, monkeypatch) -> None:
    model = _scale_relu()
    driver = install(monkeypatch, model)
    feeds = _feeds(model)
    with _session(model, tmp_path) as session:
        (first,) = session.run_on_device(None, feeds)
        (second,) = session.run_on_device(["z"], {"x": first})  # a CudaArray is an input too, read in place
        copies_back = len(driver.copies_out)
    assert copies_back == 0
    assert isinstance(second, runtime_stub.CudaArray) and second.shape == (64, 80) and second.dtype == np.float32
    assert driver.owner(second.device_ptr, second.nbytes) == 0
    assert second.__cuda_array_interface__["data"] == (second.device_ptr, False)
    want = reference(model, {"x": reference(model, feeds)[0]})[0]
    np.testing.assert_allclose(second.numpy(), want, rtol=RTOL, atol=ATOL)  # after the session closed
    np.testing.assert_allclose(np.asarray(first), reference(model, feeds)[0], rtol=RTOL, atol=ATOL)
    del first, second
    gc.collect()
    assert driver.allocated == 0 and driver.context_retains == 0


def test_run_on_device_returns_only_the_asked_outputs(tmp_path, monkeypatch) -> None:
    model = _two_in_two_out()
    install(monkeypatch, model)
    feeds = _feeds(model)
    with _session(model, tmp_path) as session:
        outputs = session.run_on_device(["i", "s"], feeds)
    assert [o.name for o in outputs] == ["i", "s"] and outputs[0].dtype == np.int64
    want = reference(model, feeds)
    np.testing.assert_array_equal(outputs[0].numpy(), want[2])
    np.testing.assert_allclose(outputs[1].numpy(), want[1], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("make, message", [
    (lambda d, x: CaiTensor(d.device_array(x.astype(np.float64))), "dtype float64"),
    (lambda d, x: CaiTensor(d.device_array(x[:32])), "shape [32, 80]"),
    (lambda d, x: CaiTensor(d.device_array(x), strides=(4, 256)), "not C-contiguous"),
    (lambda d, x: CaiTensor(x), "is not CUDA memory"),  # a host pointer
    (lambda d, x: DLPackTensor(d.device_array(x, device=1), device=1), "cuda:1"),
    (lambda d, x: CaiTensor(d.device_array(x), pointer=d.device_array(x).ctypes.data + 2), "not aligned"),
], ids=["dtype", "shape", "strides", "host-pointer", "other-gpu", "misaligned"])
def test_unusable_device_inputs_are_named(make, message, tmp_path, monkeypatch) -> None:
    model = _scale_relu()
    driver = install(monkeypatch, model)
    x = _feeds(model)["x"]
    with _session(model, tmp_path) as session:
        with pytest.raises(runtime_stub.InvalidInputError, match="'x'") as error:
            session.run(None, {"x": make(driver, x)})
    assert message in str(error.value)


def test_onnxruntime_session_arguments_pick_the_gpu(tmp_path, monkeypatch) -> None:
    """Code written for onnxruntime runs unchanged; the CUDA provider's device_id picks the GPU."""
    model = _scale_relu()
    driver = install(monkeypatch, model)
    feeds = _feeds(model)

    class SessionOptions:
        intra_op_num_threads = 1

    artifact = compiled(model, tmp_path, target="cuda")
    with runtime_stub.InferenceSession(artifact, SessionOptions(), providers=[("CUDAExecutionProvider", {"device_id": 1}),
                                                                           "CPUExecutionProvider"]) as session:
        _check(model, session.run(None, {"x": CaiTensor(driver.device_array(feeds["x"], device=1))}), feeds)
        (out,) = session.run_on_device(None, feeds)
        assert out.device == 1 and driver.owner(out.device_ptr) == 1
        with pytest.raises(runtime_stub.InvalidInputError, match="'x' is on cuda:0; this session runs on cuda:1"):
            session.run(None, {"x": CaiTensor(driver.device_array(feeds["x"], device=0))})
    with pytest.raises(ValueError, match="device_id"):
        runtime_stub.InferenceSession(artifact, providers=["CUDAExecutionProvider"],
                                      provider_options=[{"device_id": "first"}])


def test_run_time_checks_fail_the_run(tmp_path, monkeypatch) -> None:
    """An index out of range sets the check's flag in the device arena; the run raises and the next one runs."""
    x = rand([5, 4])
    model = graph_model([helper.make_node("Gather", ["x", "i"], ["y"], axis=0)],
                        {"x": x, "i": np.array([0, 1, 2], np.int64)}, ["y"])
    install(monkeypatch, model)
    with _session(model, tmp_path) as session:
        with pytest.raises(runtime_stub.InvalidInputError, match=r"Gather .*out of range \[-5, 5\)"):
            session.run(None, {"x": x, "i": np.array([0, 7, 1], np.int64)})
        (y,) = session.run(None, {"x": x, "i": np.array([0, -1, 1], np.int64)})
    np.testing.assert_array_equal(y, x[[0, -1, 1]])


def test_a_cpu_artifact_refuses_device_arrays(tmp_path, monkeypatch) -> None:
    model = _scale_relu()
    driver = install(monkeypatch, model)
    x = _feeds(model)["x"]
    with runtime_stub.InferenceSession(compiled(model, tmp_path)) as session:
        with pytest.raises(runtime_stub.InvalidInputError, match="'x' is in GPU memory"):
            session.run(None, {"x": CaiTensor(driver.device_array(x))})
        with pytest.raises(runtime_stub.ExecutionError, match="run_on_device needs a CUDA artifact"):
            session.run_on_device(None, {"x": x})


def test_the_kernels_never_see_a_host_pointer(tmp_path, monkeypatch) -> None:
    """The emulated driver refuses kernel arguments outside device memory, as a GPU faults on them."""
    model = _scale_relu()
    driver = install(monkeypatch, model)
    driver.arity["probe"] = 1
    host = np.zeros(4, np.float32)
    value = np.array([host.ctypes.data], dtype=np.uint64)
    params = np.array([value.ctypes.data], dtype=np.uint64)
    (err,) = driver.cuLaunchKernel(("probe", None), 1, 1, 1, 32, 1, 1, 0, 0, params.ctypes.data, 0)
    assert err == driver.CUresult.CUDA_ERROR_INVALID_VALUE
