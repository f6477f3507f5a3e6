"""Compile the bundled LeNet example, run it with runtime_stub, and compare with onnxruntime.

    python examples/quickstart.py [model.onnx]

Prints the prediction, the largest difference from onnxruntime and both latencies.
"""

from __future__ import annotations

import pathlib
import sys
import tempfile

import numpy as np

import compiler
import runtime_stub
from compiler.bench import ort_session, random_inputs, time_alternating

HERE = pathlib.Path(__file__).parent


def main() -> None:
    model = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "models" / "lenet.onnx"
    with tempfile.TemporaryDirectory() as tmp:
        artifact = compiler.compile(model, pathlib.Path(tmp) / "model.tilec")
        print(f"compiled {model.name} -> {artifact.name} ({artifact.stat().st_size / 1024:.0f} KiB)")
        session = runtime_stub.InferenceSession(artifact, threads=1)
        feeds = random_inputs(session.get_inputs(), seed=0)
        outputs = session.run(None, feeds)
        ort = ort_session(model, threads=1)
        reference = ort.run(None, feeds)
        for arg, got, want in zip(session.get_outputs(), outputs, reference):
            err = float(np.abs(got - want).max())
            print(f"output {arg.name} {arg.type} {list(got.shape)}: argmax {int(got.reshape(-1).argmax())}, "
                  f"max |tilec - onnxruntime| = {err:.2e}")
        tilec_ms, ort_ms = time_alternating(lambda: session.run(None, feeds), lambda: ort.run(None, feeds),
                                            runs=50, warmup=5)
        t, o = float(np.median(tilec_ms)), float(np.median(ort_ms))
        print(f"latency (1 thread, median of 50): tilec {t:.3f} ms, onnxruntime {o:.3f} ms, ratio {t / o:.2f}")
        session.close()


if __name__ == "__main__":
    main()
