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
from runtime_stub.output_memory import MIN_BYTES, TRACKED, OutputMemory


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


def test_each_output_tracks_at_most_three_blocks_and_drops_idle_ones_first() -> None:
    memory = OutputMemory(2)
    kept = [memory.take(0, MIN_BYTES) for _ in range(10)]  # ten runs' outputs, all held by the caller
    assert len(memory._blocks[0]) == TRACKED and not memory._blocks[1]
    del kept
    grown = memory.take(0, 3 * MIN_BYTES)  # the old blocks are idle but too small: one of them goes
    assert len(memory._blocks[0]) == TRACKED and memory._blocks[0][-1][0].size >= grown.size
    small = memory.take(0, MIN_BYTES)
    again = memory.take(0, MIN_BYTES)
    assert len({a.ctypes.data for a in (grown, small, again)}) == 3  # three live arrays, three blocks
    assert all(a.ctypes.data % 64 == 0 for a in (grown, small, again))
