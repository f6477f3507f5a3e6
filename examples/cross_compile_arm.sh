#!/usr/bin/env bash
# Cross-compile the bundled example for 64-bit ARM Linux on an x86 machine, then (optionally)
# run it on an emulated arm64 Python 3.11 + numpy 1.24, exactly as it would run on the device.
#
#   bash examples/cross_compile_arm.sh [model.onnx] [--cpu cortex-a76]
#
# On a real device you only need: the .tilec file, the runtime_stub/ folder, python3 and numpy:
#   python3 -c "import runtime_stub, numpy as np; s = runtime_stub.InferenceSession('model-arm64.tilec'); ..."
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-examples/models/lenet.onnx}
shift || true
.venv/bin/tilec compile "$MODEL" -o build/model-arm64.tilec --target aarch64-linux-gnu "$@"
.venv/bin/tilec inspect build/model-arm64.tilec | head -8
if bash scripts/setup_arm_emulator.sh --check >/dev/null 2>&1 || bash scripts/setup_arm_emulator.sh; then
  .venv/bin/python - <<'PY'
import sys
sys.path.insert(0, "tests")
from arm_emulator import run_arm_python_code
code = """
import numpy as np, platform, runtime_stub
s = runtime_stub.InferenceSession('build/model-arm64.tilec')
feeds = {i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32) for i in s.get_inputs()}
out = s.run(None, feeds)
print(platform.machine(), 'numpy', np.__version__, [o.shape for o in out], 'argmax', int(out[0].argmax()))
"""
result = run_arm_python_code(code, cwd=".")
print(result.stdout or result.stderr)
PY
fi
