"""Large outputs come from memory recycled once the caller has dropped every array on it
(runtime_stub/output_memory.py): never under an array the caller still holds or feeds back in,
bounded in what it keeps, and safe under concurrent runs."""

from __future__ import annotations

import concurrent.futures

import numpy as np
import pytest
from onnx import TensorProto, helper

import compiler
from runtime_stub import InferenceSession
from runtime_stub.output_memory import MIN_BYTES, TRACKED_RUNS, OutputMemory


@pytest.fixture(scope="module")
def cache_artifact(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A KV-cache append (present = past + one row) and a large elementwise output beside it."""
    nodes = [helper.make_node("Concat", ["past", "new"], ["present"], axis=2),
             helper.make_node("Relu", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "cache", [
        helper.make_tensor_value_info("past", TensorProto.FLOAT, [1, 2, "past_len", 64]),
        helper.make_tensor_value_info("new", TensorProto.FLOAT, [1, 2, 1, 64]),
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 256])],
        [helper.make_tensor_value_info("present", TensorProto.FLOAT, [1, 2, "total_len", 64]),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 256])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return str(compiler.compile(model, tmp_path_factory.mktemp("output_memory") / "cache.tilec"))


def test_presents_fed_back_as_pasts_stay_right_and_held_outputs_are_never_written(cache_artifact: str) -> None:
    rng = np.random.default_rng(0)
    past = rng.standard_normal((1, 2, 200, 64)).astype(np.float32)  # 100 KiB: recycled
    assert past.nbytes >= MIN_BYTES
    held: list[tuple[np.ndarray, np.ndarray]] = []  # every 5th step's outputs, kept with a copy
    with InferenceSession(cache_artifact, threads=1) as session:
        for step in range(40):
            new = rng.standard_normal((1, 2, 1, 64)).astype(np.float32)
            x = rng.standard_normal((256, 256)).astype(np.float32)
            present, y = session.run(None, {"past": past, "new": new, "x": x})
            np.testing.assert_array_equal(present, np.concatenate([past, new], axis=2))
            np.testing.assert_array_equal(y, np.maximum(x, 0))
            if step % 5 == 0:
                held.append((y, y.copy()))
            past = present
        for array, copy in held:
            np.testing.assert_array_equal(array, copy)


def test_dropped_outputs_are_reused_and_held_ones_are_not(cache_artifact: str) -> None:
    feeds = {"past": np.ones((1, 2, 300, 64), np.float32), "new": np.zeros((1, 2, 1, 64), np.float32),
             "x": np.full((256, 256), -1.0, np.float32)}
    with InferenceSession(cache_artifact, threads=1) as session:
        first = session.run(["y"], feeds)[0]
        held_address = first.ctypes.data
        second = session.run(["y"], feeds)[0]
        assert second.ctypes.data != held_address  # ``first`` is still alive
        second_address = second.ctypes.data
        del second
        third = session.run(["y"], feeds)[0]
        assert third.ctypes.data == second_address  # dropped: its memory served the next run
        np.testing.assert_array_equal(first, np.zeros((256, 256), np.float32))
        assert third.flags.c_contiguous and third.flags.writeable and third.ctypes.data % 64 == 0


def test_concurrent_runs_never_share_an_output(cache_artifact: str) -> None:
    with InferenceSession(cache_artifact, threads=1) as session:
        def run(seed: int) -> bool:
            rng = np.random.default_rng(seed)
            feeds = {"past": rng.standard_normal((1, 2, 256 + seed % 7, 64)).astype(np.float32),
                     "new": rng.standard_normal((1, 2, 1, 64)).astype(np.float32),
                     "x": rng.standard_normal((256, 256)).astype(np.float32)}
            present, y = session.run(None, feeds)
            return bool(np.array_equal(present, np.concatenate([feeds["past"], feeds["new"]], axis=2))
                        and np.array_equal(y, np.maximum(feeds["x"], 0)))

        with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
            assert all(pool.map(run, range(64)))


def test_the_pool_keeps_at_most_one_run_idle_and_three_runs_tracked() -> None:
    memory = OutputMemory()
    run_bytes = 4 * MIN_BYTES
    kept = [memory.take(MIN_BYTES) for _ in range(40)]  # ten runs of four outputs, all held by the caller
    for _ in range(10):
        memory.end_run(run_bytes)
    tracked = sum(b.size for b in memory._blocks)
    assert tracked <= TRACKED_RUNS * run_bytes * 1.25
    del kept
    memory.end_run(run_bytes)  # everything idle now: one run's worth stays
    assert sum(b.size for b in memory._blocks) <= run_bytes * 1.25
    again = [memory.take(MIN_BYTES) for _ in range(3)]
    assert len({a.ctypes.data for a in again}) == 3  # three live arrays, three blocks
    assert all(a.size == MIN_BYTES for a in again)
