"""runtime_stub deploys with numpy alone: it must never import the compiler or its dependencies."""

from __future__ import annotations

import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import sys

    BLOCKED = ("compiler", "onnx", "llvmlite", "jinja2", "ziglang")

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"runtime_stub must not import {name}")
            return None

    sys.meta_path.insert(0, Blocker())

    import numpy as np
    import runtime_stub

    sess = runtime_stub.InferenceSession(sys.argv[1], threads=2)
    shape = sess.get_inputs()[0].shape
    a = np.full(shape, 1.5, np.float32)
    b = np.full(shape, 2.0, np.float32)
    total, prod = sess.run(None, {"a": a, "b": b})
    weights = np.arange(a.size, dtype=np.float32).reshape(shape) * 0.5
    assert np.array_equal(total, a + b + weights), "wrong sum"
    assert np.array_equal(prod, a * b), "wrong product"
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not leaked, leaked
    print("ok")
    """
)


def test_runtime_needs_only_numpy(fake_artifact: pathlib.Path) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(fake_artifact)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
