"""Long runs: a session run 10,000 times, and sessions opened and released 300 times, hold their
memory and file descriptors flat; close() and garbage collection release the native code (its
memfd mapping leaves /proc/self/maps).

Measured in a child process (a fresh interpreter, so what the rest of the suite allocated in this
worker does not blur the numbers). Bounds: resident memory may grow by at most 4 MiB over the
10,000 runs (after 500 warm-up runs, so allocator pools and caches are in place), and by at most
8 MiB over the 300 load/close cycles; open descriptors and loaded copies of the native code must
come back to what they were exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import compiler

CHILD = textwrap.dedent("""
    import gc, json, os, sys
    import numpy as np
    import runtime_stub

    def rss_kib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

    def fds():
        return len(os.listdir("/proc/self/fd"))

    def native_maps():
        with open("/proc/self/maps") as f:
            return len({line.split()[-2] if line.rstrip().endswith("(deleted)") else line.split()[-1]
                        for line in f if "tilec-native" in line})

    path = sys.argv[1]
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    out = {"fds_start": fds(), "maps_start": native_maps()}
    session = runtime_stub.InferenceSession(path, threads=2)
    want = session.run(None, {"x": x})[0]
    for _ in range(500):
        session.run(None, {"x": x})
    out["rss_before_runs"] = rss_kib()
    out["fds_before_runs"] = fds()
    for _ in range(10000):
        y = session.run(None, {"x": x})[0]
    out["rss_after_runs"] = rss_kib()
    out["fds_after_runs"] = fds()
    out["same_result"] = bool(np.array_equal(y, want))
    out["maps_open"] = native_maps()
    session.close()
    out["maps_after_close"] = native_maps()
    out["fds_after_close"] = fds()

    def cycle(k):
        s = runtime_stub.InferenceSession(path, threads=2)
        s.run(None, {"x": x})
        if k % 2:
            s.close()       # half released explicitly,
        del s               # half by garbage collection alone
        gc.collect()

    for k in range(20):
        cycle(k)
    out["rss_before_cycles"] = rss_kib()
    for k in range(300):
        cycle(k)
    out["rss_after_cycles"] = rss_kib()
    out["fds_after_cycles"] = fds()
    out["maps_after_cycles"] = native_maps()
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> str:
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((64, 32)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return str(compiler.compile(model, tmp_path_factory.mktemp("long") / "mlp.tilec"))


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_memory_descriptors_and_native_code_stay_flat(artifact: str) -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, artifact], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    assert m["same_result"]
    assert m["maps_open"] == m["maps_start"] + 1
    assert m["fds_after_runs"] == m["fds_before_runs"]
    assert m["rss_after_runs"] - m["rss_before_runs"] <= 4096, m
    assert m["maps_after_close"] == m["maps_start"] and m["fds_after_close"] == m["fds_start"], m
    assert m["rss_after_cycles"] - m["rss_before_cycles"] <= 8192, m
    assert m["maps_after_cycles"] == m["maps_start"] and m["fds_after_cycles"] == m["fds_start"], m
