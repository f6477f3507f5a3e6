"""DFT, STFT, windows and MelWeightMatrix against onnx's reference.

Tolerance: rtol=1e-4, atol=1e-4 for float32 transforms (sums of up to 32 products of O(1) samples with
O(1) twiddles; the reference's own float32 FFT differs from the exact result by ~1e-6). The long
float32 transforms are compared with the exact (float64) transform instead, within 4e-7 of the largest
bin: tilec sums in float64 and rounds once. Windows and mel weights: rtol=1e-5, atol=1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest

from helpers_onnx import node_model, rand

TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("name,shape,axis,attrs,length", [
    ("real", (2, 8, 3, 1), 1, {}, None),
    ("complex", (2, 3, 9, 2), 2, {}, None),
    ("onesided", (2, 10, 3, 1), 1, {"onesided": 1}, None),
    ("onesided_odd", (3, 7, 1), 1, {"onesided": 1}, None),
    ("inverse", (2, 6, 4, 2), 1, {"inverse": 1}, None),
    ("irfft", (2, 5, 3, 2), 1, {"inverse": 1, "onesided": 1}, None),
    ("irfft_odd_length", (2, 5, 3, 2), 1, {"inverse": 1, "onesided": 1}, 9),
    ("padded", (2, 6, 2), 1, {}, 10),
    ("truncated", (4, 12, 2), 1, {}, 7),
    ("negative_axis", (2, 4, 6, 2), -2, {}, None),
    # A real signal: a one-sided DFT of a complex one is not ONNX (onnx's inference and onnxruntime refuse it).
    ("axis_0", (6, 3, 1), 0, {"onesided": 1}, None),
])
def test_dft(check, opset, name, shape, axis, attrs, length):
    x = rand(shape, seed=len(name))
    feeds, consts, inputs = {"x": x}, {}, ["x", ""]
    if length is not None:
        consts["n"] = np.array(length, dtype=np.int64)
        inputs[1] = "n"
    if opset >= 20:
        consts["axis"] = np.array(axis, dtype=np.int64)
        inputs.append("axis")
        node_attrs = dict(attrs)
    else:
        node_attrs = {**attrs, "axis": axis}
    while inputs[-1] == "":
        inputs.pop()
    check(node_model("DFT", inputs, feeds, consts=consts, attrs=node_attrs, opset=opset), feeds, **TOL)


def _exact_dft(x: np.ndarray, axis: int, inverse: bool, onesided: bool, length: int | None) -> np.ndarray:
    """The transform in float64 of the float32 samples, rounded once to float32 (ONNX's layout)."""
    signal = x[..., 0].astype(np.float64) + (1j * x[..., 1].astype(np.float64) if x.shape[-1] == 2 else 0)
    axis = axis % x.ndim  # the same axis of the complex signal (the last dimension goes)
    if inverse and onesided:
        return np.fft.irfft(signal, n=length, axis=axis)[..., None].astype(np.float32)
    y = (np.fft.ifft if inverse else np.fft.rfft if onesided else np.fft.fft)(
        signal.real if onesided else signal, n=length, axis=axis)
    return np.stack([y.real, y.imag], axis=-1).astype(np.float32)


@pytest.mark.parametrize("name,shape,axis,attrs,length", [
    ("forward", (2, 1000, 2), 1, {}, None),
    ("inverse", (1000, 3, 2), 0, {"inverse": 1}, None),
    ("onesided", (3, 1, 1024, 1), -2, {"onesided": 1}, None),
    ("irfft", (2, 513, 2), 1, {"inverse": 1, "onesided": 1}, None),
    ("padded", (2, 700, 1), 1, {}, 1000),
])
def test_dft_float32_is_rounded_once(check, name, shape, axis, attrs, length):
    """Long float32 transforms against the exact one: within a few rounding errors of the largest bin.
    A float32 sum of 1000 products is ~30 rounding errors off (onnx's reference, numpy's float32 FFT, is
    near-exact but gets 0 as 2e-7 in some bins, so the exact transform is the reference here)."""
    x = rand(shape, seed=len(name))
    feeds, consts, inputs = {"x": x}, {"axis": np.array(axis, dtype=np.int64)}, ["x", "", "axis"]
    if length is not None:
        consts["n"] = np.array(length, dtype=np.int64)
        inputs[1] = "n"
    expected = [_exact_dft(x, axis, bool(attrs.get("inverse")), bool(attrs.get("onesided")), length)]
    model = node_model("DFT", inputs, feeds, consts=consts, attrs=attrs, opset=20, expected=expected)
    check(model, feeds, expected=expected, rtol=0, atol=4e-7 * float(np.abs(expected[0]).max()))


@pytest.mark.parametrize("axis", [0, 1, -2])
def test_dft_runtime_axis(check, axis):
    """The axis fed at run time: both square axes fit the output shape, so the kernel selects."""
    x = rand((5, 5, 2), seed=3)
    feeds = {"x": x, "axis": np.array(axis, dtype=np.int64)}
    check(node_model("DFT", ["x", "", "axis"], feeds, attrs={"inverse": 1}, opset=20), feeds, **TOL)


def test_dft_double(check):
    x = rand((3, 16, 1), seed=4, dtype="float64")
    feeds = {"x": x}
    check(node_model("DFT", ["x"], feeds, attrs={"axis": 1, "onesided": 1}, opset=17), feeds, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name,length,step,window,onesided", [
    ("rect", 16, 4, False, 1),
    ("window", 12, 5, True, 1),
    ("two_sided", 8, 3, True, 0),
    ("complex", 10, 6, False, 0),
])
def test_stft(check, name, length, step, window, onesided):
    signal = rand((2, 64, 2 if name == "complex" else 1), seed=5)
    feeds = {"signal": signal}
    consts = {"step": np.array(step, dtype=np.int64), "length": np.array(length, dtype=np.int64)}
    inputs = ["signal", "step", "", "length"]
    if window:
        feeds["window"] = rand((length,), seed=6, low=0.0, high=1.0)
        inputs[2] = "window"
    check(node_model("STFT", inputs, feeds, consts=consts, attrs={"onesided": onesided}, opset=17), feeds, **TOL)


def test_stft_float32_is_rounded_once(check):
    """Long windowed frames against the exact transform (as test_dft_float32_is_rounded_once)."""
    signal, window, step = rand((2, 3000, 1), seed=8), rand((1000,), seed=9, low=0.0, high=1.0), 400
    feeds = {"signal": signal, "window": window}
    starts = range(0, 3000 - 1000 + 1, step)
    frames = np.stack([signal[:, s:s + 1000, 0].astype(np.float64) * window.astype(np.float64) for s in starts], 1)
    y = np.fft.rfft(frames, axis=-1)
    expected = [np.stack([y.real, y.imag], axis=-1).astype(np.float32)]
    model = node_model("STFT", ["signal", "step", "window"], feeds, consts={"step": np.array(step, dtype=np.int64)},
                       attrs={"onesided": 1}, opset=17, expected=expected)
    check(model, feeds, expected=expected, rtol=0, atol=4e-7 * float(np.abs(expected[0]).max()))


def test_stft_runtime_step_and_length(check):
    signal = rand((1, 50, 1), seed=7)
    feeds = {"signal": signal, "step": np.array(6, dtype=np.int64), "length": np.array(10, dtype=np.int64)}
    check(node_model("STFT", ["signal", "step", "", "length"], feeds, opset=17), feeds, **TOL)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic,datatype", [(1, 1), (0, 1), (1, 11), (0, 7)])
def test_window(check, op, periodic, datatype):
    feeds = {"size": np.array(12, dtype=np.int64)}  # fed at run time: the declared output shape fixes it
    check(node_model(op, ["size"], feeds, attrs={"periodic": periodic, "output_datatype": datatype}, opset=17),
          feeds, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bins,length,rate,low,high", [(8, 16, 8192, 0.0, 4096.0), (10, 64, 16000, 20.0, 7600.0),
                                                      (5, 31, 22050, 100.0, 11025.0)])
def test_mel_weight_matrix(check, bins, length, rate, low, high):
    feeds = {"bins": np.array(bins, np.int32), "length": np.array(length, np.int32), "rate": np.array(rate, np.int32),
             "low": np.array(low, np.float32), "high": np.array(high, np.float32)}
    check(node_model("MelWeightMatrix", list(feeds), feeds, opset=17), feeds, rtol=1e-5, atol=1e-6)
