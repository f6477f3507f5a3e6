"""InferenceSession on the fake artifact: numerics, threads, concurrency, input validation."""

from __future__ import annotations

import concurrent.futures
import pathlib
from collections.abc import Mapping

import numpy as np
import pytest
from runtime_fake_model import SHAPE, expected_outputs, random_inputs

from runtime_stub import (
    ExecutionError,
    InferenceSession,
    InvalidInputError,
    InvalidOutputNameError,
)


@pytest.mark.parametrize("threads", [None, 1, 2, 3])
def test_run_matches_numpy(fake_artifact: pathlib.Path, threads: int | None) -> None:
    feed = random_inputs()
    with InferenceSession(fake_artifact, threads=threads) as sess:
        if threads is not None:
            assert sess.num_threads == threads
        total, prod = sess.run(None, feed)
    want_sum, want_prod = expected_outputs(feed["a"], feed["b"])
    np.testing.assert_array_equal(total, want_sum)
    np.testing.assert_array_equal(prod, want_prod)
    assert total.dtype == np.float32 and total.shape == SHAPE


def test_onnxruntime_constructor_arguments(fake_artifact: pathlib.Path) -> None:
    """`ort.InferenceSession(path, opts, providers=[...])` code runs unchanged; threads come from the options."""

    class SessionOptions:  # stands in for onnxruntime.SessionOptions
        intra_op_num_threads = 3

    with InferenceSession(fake_artifact, SessionOptions(), providers=["CPUExecutionProvider"]) as sess:
        assert sess.num_threads == 3
        total, _ = sess.run(None, random_inputs())
    np.testing.assert_array_equal(total, expected_outputs(**random_inputs())[0])
    with InferenceSession(fake_artifact, SessionOptions(), threads=2) as sess:
        assert sess.num_threads == 2  # an explicit thread count wins
    with pytest.raises(ValueError, match="providers must be a list"):
        InferenceSession(fake_artifact, providers="CPUExecutionProvider")
    with pytest.raises(ValueError, match="provider_options has 2 entries for 1 providers"):
        InferenceSession(fake_artifact, providers=["CPUExecutionProvider"], provider_options=[{}, {}])


def test_repeated_runs_are_stable(fake_artifact: pathlib.Path) -> None:
    with InferenceSession(fake_artifact, threads=4) as sess:
        for seed in range(200):  # many fork/joins through the pool
            feed = random_inputs(seed)
            total, prod = sess.run(None, feed)
            want_sum, want_prod = expected_outputs(feed["a"], feed["b"])
            np.testing.assert_array_equal(total, want_sum)
            np.testing.assert_array_equal(prod, want_prod)


def test_concurrent_runs_from_python_threads(fake_artifact: pathlib.Path) -> None:
    sess = InferenceSession(fake_artifact, threads=2)

    def one(seed: int) -> bool:
        feed = random_inputs(seed)
        total, prod = sess.run(["sum", "prod"], feed)
        want_sum, want_prod = expected_outputs(feed["a"], feed["b"])
        return bool(np.array_equal(total, want_sum) and np.array_equal(prod, want_prod))

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, range(64)))
    sess.close()
    assert all(results)


def test_node_args_mirror_onnxruntime(fake_artifact: pathlib.Path) -> None:
    with InferenceSession(fake_artifact) as sess:
        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        assert [i.name for i in inputs] == ["a", "b"]
        assert [o.name for o in outputs] == ["sum", "prod"]
        assert inputs[0].shape == list(SHAPE)
        assert inputs[0].type == "tensor(float)"
        assert sess.manifest["kernels"][0]["name"] == "k0_fake"


def test_output_selection_and_order(fake_artifact: pathlib.Path) -> None:
    feed = random_inputs()
    with InferenceSession(fake_artifact) as sess:
        (prod,) = sess.run(["prod"], feed)
        prod2, total = sess.run(["prod", "sum"], feed)
    np.testing.assert_array_equal(prod, prod2)
    np.testing.assert_array_equal(total, expected_outputs(feed["a"], feed["b"])[0])


def test_loads_from_bytes(fake_artifact: pathlib.Path) -> None:
    feed = random_inputs()
    # An odd offset makes the weights misaligned in memory: the session must realign them.
    data = memoryview(b"x" + fake_artifact.read_bytes())[1:]
    with InferenceSession(data) as sess:
        total, _ = sess.run(None, feed)
    np.testing.assert_array_equal(total, expected_outputs(feed["a"], feed["b"])[0])


def test_non_contiguous_inputs_are_accepted(fake_artifact: pathlib.Path) -> None:
    feed = random_inputs()
    a_fortran = np.asfortranarray(feed["a"])
    with InferenceSession(fake_artifact) as sess:
        total, _ = sess.run(None, {"a": a_fortran, "b": feed["b"]})
    np.testing.assert_array_equal(total, expected_outputs(feed["a"], feed["b"])[0])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.pop("b"), r"missing input\(s\) 'b'.*a \(tensor\(float\), shape \[4, 257\]\)"),
        (lambda f: f.update(c=f["a"]), r"unknown input\(s\) 'c'"),
        (lambda f: f.update(a=f["a"].astype(np.float64)), r"'a' has dtype float64, expected float32"),
        (lambda f: f.update(a=f["a"].astype(">f4")), r"'a' has dtype >f4, expected float32"),
        (lambda f: f.update(a=f["a"][:, :256]), r"'a' has shape \[4, 256\], expected \[4, 257\]"),
        (lambda f: f.update(a=f["a"].tolist()), r"'a' must be a numpy array, got list"),
    ],
)
def test_invalid_inputs(fake_artifact: pathlib.Path, change, message: str) -> None:
    feed = random_inputs()
    change(feed)
    with InferenceSession(fake_artifact) as sess, pytest.raises(InvalidInputError, match=message):
        sess.run(None, feed)


def test_unknown_output_name(fake_artifact: pathlib.Path) -> None:
    with InferenceSession(fake_artifact) as sess, pytest.raises(InvalidOutputNameError, match=r"'nope'.*'sum', 'prod'"):
        sess.run(["nope"], random_inputs())


def test_native_failure_is_execution_error(fake_artifact: pathlib.Path) -> None:
    feed = random_inputs()
    feed["a"][0, 0] = np.nan
    with InferenceSession(fake_artifact) as sess:
        with pytest.raises(ExecutionError, match="status 7"):
            sess.run(None, feed)
        sess.run(None, random_inputs())  # the session survives a failed call


def test_closed_session_refuses_to_run(fake_artifact: pathlib.Path) -> None:
    sess = InferenceSession(fake_artifact)
    sess.close()
    sess.close()  # idempotent
    with pytest.raises(ExecutionError, match="closed"):
        sess.run(None, random_inputs())


def test_many_sessions_load_and_unload(make_artifact) -> None:
    # Distinct artifacts loaded one after another must never resolve to a stale library.
    paths = [make_artifact(f"m{i}.tilec") for i in range(3)]
    feed = random_inputs()
    for _ in range(3):
        sessions = [InferenceSession(p, threads=2) for p in paths]
        for sess in sessions:
            total, _ = sess.run(None, feed)
            np.testing.assert_array_equal(total, expected_outputs(feed["a"], feed["b"])[0])
        del sessions  # garbage collection releases the native code


@pytest.mark.parametrize("output_names, message", [
    (5, r"output_names must be a list of output names or None, got int"),
    ([1], r"output_names holds 1 \(int\), not an output name; the model's outputs are: 'sum', 'prod'"),
    ([None], r"holds None \(NoneType\)"),
    ([["sum"]], r"holds \['sum'\] \(list\)"),  # unhashable: was a TypeError from the name lookup
    (b"sum", r"not the string b'sum'"),
])
def test_output_names_of_wrong_types(fake_artifact: pathlib.Path, output_names, message: str) -> None:
    with InferenceSession(fake_artifact) as sess, pytest.raises(InvalidOutputNameError, match=message):
        sess.run(output_names, random_inputs())


def test_an_output_asked_for_twice_comes_back_as_two_arrays(fake_artifact: pathlib.Path) -> None:
    with InferenceSession(fake_artifact) as sess:
        first, second = sess.run(["sum", "sum"], random_inputs())
    assert first is not second and not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, second)


def test_masked_arrays(fake_artifact: pathlib.Path) -> None:
    """The native code reads every element, so masked elements would be used silently: refused."""
    feed = random_inputs()
    mask = np.zeros(SHAPE, dtype=bool)
    with InferenceSession(fake_artifact) as sess:
        total, _ = sess.run(None, {"a": np.ma.masked_array(feed["a"], mask=mask), "b": feed["b"]})
        np.testing.assert_array_equal(total, expected_outputs(feed["a"], feed["b"])[0])
        mask[1, 2] = True
        with pytest.raises(InvalidInputError, match=r"input 'a' is a masked array with 1 masked element"):
            sess.run(None, {"a": np.ma.masked_array(feed["a"], mask=mask), "b": feed["b"]})


def test_feed_keys_that_are_not_strings(fake_artifact: pathlib.Path) -> None:
    class Feed(Mapping):  # a Mapping may yield unhashable keys: they were a TypeError from the name lookup
        def __init__(self, items):
            self._items = items

        def __getitem__(self, key):
            return dict(self._items)[key]

        def __iter__(self):
            return iter(k for k, _ in [*self._items, (["a"], None)])

        def __len__(self):
            return len(self._items) + 1

    feed = random_inputs()
    with InferenceSession(fake_artifact) as sess:
        with pytest.raises(InvalidInputError, match=r"unknown input\(s\) \['a'\]"):
            sess.run(None, Feed(list(feed.items())))
        with pytest.raises(InvalidInputError, match=r"unknown input\(s\) 1, None"):
            sess.run(None, {**feed, 1: feed["a"], None: feed["a"]})


class _CudaArrayInterface:
    def __init__(self, **fields):
        self.__cuda_array_interface__ = {"shape": SHAPE, "typestr": "<f4", "data": (4096, False), "version": 3,
                                         **fields}


class _DLPackRaising:
    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA

    def __dlpack__(self, stream=None):
        raise RuntimeError("the producer failed")


@pytest.mark.parametrize("value, message", [
    # stream and pointer were converted with int() outside the interface's validation: ValueError escaped
    (_CudaArrayInterface(stream="abc"), r"input 'a': a malformed __cuda_array_interface__"),
    (_CudaArrayInterface(data=("abc", False)), r"input 'a': a malformed __cuda_array_interface__"),
    (_CudaArrayInterface(data=(4096.5, False)), r"input 'a': a malformed __cuda_array_interface__"),
    (_CudaArrayInterface(typestr=5), r"input 'a': a malformed __cuda_array_interface__"),
    (_DLPackRaising(), r"input 'a': _DLPackRaising.__dlpack__ failed: the producer failed"),
    (_CudaArrayInterface(), r"input 'a' is in GPU memory \(__cuda_array_interface__\); this artifact runs on the CPU"),
])
def test_malformed_gpu_tensors_name_the_input(fake_artifact: pathlib.Path, value, message: str) -> None:
    feed = random_inputs()
    feed["a"] = value
    with InferenceSession(fake_artifact) as sess, pytest.raises(InvalidInputError, match=message):
        sess.run(None, feed)


def test_allocation_failures_are_execution_errors(fake_artifact: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A legitimately huge model (a fuzzed 2^31 batch compiled to a 32 GiB workspace) made numpy's MemoryError
    escape from InferenceSession(); the workspace and the outputs are named instead."""
    real_empty = np.empty

    def empty_below(limit: int):
        def empty(shape, dtype=float, *args, **kwargs):
            if int(np.prod(shape)) * np.dtype(dtype).itemsize >= limit:
                raise MemoryError(f"Unable to allocate {shape}")
            return real_empty(shape, dtype, *args, **kwargs)
        return empty

    feed = random_inputs()
    with InferenceSession(fake_artifact) as sess:
        monkeypatch.setattr(np, "empty", empty_below(4 * 257 * 4))
        with pytest.raises(ExecutionError, match=r"cannot allocate output 'sum' of 4112 bytes"):
            sess.run(None, feed)
        monkeypatch.setattr(np, "empty", real_empty)
        sess.run(None, feed)  # the session is still usable
    monkeypatch.setattr(np, "empty", empty_below(1))
    with pytest.raises(ExecutionError, match=r"cannot allocate the workspace of \d+ bytes"):
        InferenceSession(fake_artifact)
