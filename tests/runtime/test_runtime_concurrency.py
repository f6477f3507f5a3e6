"""Concurrent run() on one session: calls from several Python threads run in parallel, each on a
native context and workspace of its own, and give the serial results bit for bit.

The model keeps intermediate tensors in its workspace (two MatMuls, a Softmax) and has a
run-time check, so two calls sharing a workspace would corrupt each other's results or flags.
"""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler
from runtime_stub import ExecutionError, InferenceSession, InvalidInputError


# Rows per run: enough work (25 MFLOP, 0.1-0.3 ms) that a call releases the GIL on any host
# (runtime_stub/native.py keeps it for calls under HOLD_GIL_BELOW_NS), so calls can overlap at all.
ROWS = 512


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> str:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((128, 128)).astype(np.float32) * 0.1, "w1"),
             numpy_helper.from_array(rng.standard_normal((128, 64)).astype(np.float32) * 0.1, "w2"),
             numpy_helper.from_array(rng.standard_normal((50, 128)).astype(np.float32), "table")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("Add", ["x", "e"], ["xe"]),
             helper.make_node("MatMul", ["xe", "w1"], ["h"]), helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("MatMul", ["t", "w2"], ["l"]), helper.make_node("Softmax", ["l"], ["y"], axis=-1)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [ROWS, 128]),
                                             helper.make_tensor_value_info("ids", TensorProto.INT64, [ROWS])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [ROWS, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return str(compiler.compile(model, tmp_path_factory.mktemp("concurrency") / "mlp.tilec"))


def _feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((ROWS, 128)).astype(np.float32), "ids": rng.integers(0, 50, ROWS).astype(np.int64)}


@pytest.mark.parametrize("threads", [1, 2])
def test_concurrent_runs_give_the_serial_results(artifact: str, threads: int) -> None:
    seeds = range(24)
    with InferenceSession(artifact, threads=threads) as session:
        serial = {s: session.run(None, _feeds(s))[0] for s in seeds}
        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            for _ in range(3):  # 4 threads x 72 runs, each input several times
                results = list(pool.map(lambda s: (s, session.run(None, _feeds(s))[0]), list(seeds) * 3))
                for s, y in results:
                    np.testing.assert_array_equal(y, serial[s])


def test_a_failing_check_stays_with_its_own_call(artifact: str) -> None:
    """One thread's out-of-range index fails that call alone; the others' results are right."""
    bad = _feeds(0)
    bad["ids"][3] = 999
    with InferenceSession(artifact, threads=1) as session:
        want = session.run(None, _feeds(1))[0]

        def good() -> bool:
            return bool(np.array_equal(session.run(None, _feeds(1))[0], want))

        def failing() -> str:
            with pytest.raises(InvalidInputError, match="out of range") as info:
                session.run(None, bad)
            return str(info.value)

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(good if k % 2 else failing) for k in range(40)]
            outcomes = [f.result() for f in futures]
    assert all(o is True for o in outcomes[1::2])


def test_calls_overlap(artifact: str) -> None:
    """Two threads are inside the native code at once (the calls do not queue behind one lock)."""
    with InferenceSession(artifact, threads=1) as session:
        executor = session._executor
        inside, most = 0, 0
        guard = threading.Lock()
        native_run = executor._native.run

        def counting_run(*args, **kwargs):
            nonlocal inside, most
            with guard:
                inside += 1
                most = max(most, inside)
            try:
                return native_run(*args, **kwargs)
            finally:
                with guard:
                    inside -= 1

        executor._native.run = counting_run
        barrier = threading.Barrier(3)

        def worker() -> None:
            barrier.wait()
            for _ in range(200):
                session.run(None, _feeds(2))

        workers = [threading.Thread(target=worker) for _ in range(3)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert most >= 2


def test_close_waits_for_running_calls_then_refuses(artifact: str) -> None:
    session = InferenceSession(artifact, threads=1)
    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(session.run, None, _feeds(k)) for k in range(30)]
        session.close()
        for f in futures:
            try:
                assert f.result()[0].shape == (ROWS, 64)
            except ExecutionError as exc:  # started after close(): refused cleanly
                assert "closed" in str(exc)
    with pytest.raises(ExecutionError, match="closed"):
        session.run(None, _feeds(0))


def test_short_calls_keep_the_gil_and_long_ones_release_it(tmp_path) -> None:
    """A model whose native call takes microseconds keeps the GIL for it (handing it to another request
    thread and back would cost more than the call); one that takes milliseconds lets other Python threads
    run meanwhile. Both give the same results either way."""
    from runtime_stub import native

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])])
    tiny = compiler.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
                            tmp_path / "tiny.tilec")
    x = np.linspace(-1, 1, 8, dtype=np.float32)
    with InferenceSession(str(tiny), threads=1) as session:
        for _ in range(40):
            np.testing.assert_array_equal(session.run(None, {"x": x})[0], np.maximum(x, 0))
        assert session._executor._native._typical_ns < native.HOLD_GIL_BELOW_NS
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.standard_normal((512, 512)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [512, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512, 512])], [weights])
    big = compiler.compile(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.tilec")
    with InferenceSession(str(big), threads=1) as session:
        x = rng.standard_normal((512, 512)).astype(np.float32)
        for _ in range(3):
            session.run(None, {"x": x})
        assert session._executor._native._typical_ns >= native.HOLD_GIL_BELOW_NS  # 268 MFLOP: milliseconds
