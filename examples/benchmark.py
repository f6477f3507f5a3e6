"""The benchmark suite: every built-in model, tilec vs onnxruntime, as in docs/PERFORMANCE.md.

    python examples/benchmark.py [--threads 1,2] [--runs 20] [--models resnet50,mlp] [--out DIR]
                                 [--peak-gflops GFLOPS|measure]

The same as ``tilec bench --suite ...`` (see ``tilec bench --help``); ``--out`` defaults to
``benchmark-results/``. The models are built by compiler.models (random weights).
"""

from __future__ import annotations

import pathlib
import sys

# Run this checkout's compiler, whichever tilec is installed.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from compiler import cli  # noqa: E402 - needs the path above


def main(argv: list[str]) -> int:
    if not any(arg == "--out" or arg.startswith("--out=") for arg in argv):
        argv = [*argv, "--out", "benchmark-results"]
    return cli.main(["bench", "--suite", *argv])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
