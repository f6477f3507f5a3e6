"""A FAKE model for runtime tests, built without the compiler (helpers; fixtures are in conftest.py).

Test modules import from here rather than from ``conftest`` because pytest may hold a
different directory's conftest under that module name.

The fake ``tilec_run`` computes ``sum = a + b + weights`` and ``prod = a * b`` (via the
workspace) over 4x257 float32 tensors, splitting the loop with ``tilec_parallel_for``.
It returns 2 if weights/workspace are not 64-byte aligned and 7 if ``a[0]`` is NaN, so
the tests can exercise the error path of the ABI. Its ``tilec_signature`` declares what
``fake_manifest`` describes, as the compiler's generated code does.
"""

from __future__ import annotations

import pathlib
import platform
import subprocess
from typing import Any

import numpy as np

from compiler.codegen.link import find_zig, zig_target
from runtime_stub.artifact import FORMAT_VERSION
from runtime_stub.signature import native_signature

SHAPE = (4, 257)
N = SHAPE[0] * SHAPE[1]


HOST_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
HOST_TRIPLE = f"{HOST_ARCH}-unknown-linux-gnu"
WEIGHTS = (np.arange(N, dtype=np.float32) * 0.5).reshape(SHAPE)


def compile_c(source: str, triple: str, workdir: pathlib.Path) -> bytes:
    """Compile C source to an ELF relocatable object for ``triple`` with zig."""
    src = workdir / "fake.c"
    src.write_text(source)
    out = workdir / "fake.o"
    cmd = find_zig().cc(zig_target(triple), "-c", "-fPIC", "-O2", "-g0", str(src), "-o", str(out))
    subprocess.run(cmd, check=True, capture_output=True)
    return out.read_bytes()


def _c_string(data: bytes) -> str:
    return '"' + data.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'


def fake_manifest() -> dict[str, Any]:
    tensor = lambda name: {"name": name, "dtype": "float32", "shape": list(SHAPE)}  # noqa: E731
    return {
        "format_version": FORMAT_VERSION,
        "compiler_version": "0.1.0",
        "target": {"kind": "cpu", "triple": HOST_TRIPLE, "arch": HOST_ARCH, "cpu": "generic", "features": []},
        "inputs": [tensor("a"), tensor("b")],
        "outputs": [tensor("sum"), tensor("prod")],
        "workspace_size": N * 4,
        "kernels": [{"name": "k0_fake", "ops": ["Add", "Mul"], "node": "fake"}],
        "build": {"note": "fake model for runtime tests"},
    }


FAKE_MODEL_C = f"""
#include <stdint.h>
void tilec_parallel_for(void *ctx, void (*fn)(void *, int64_t, int64_t), void *closure, int64_t n);

typedef struct {{ const float *a, *b, *w; float *sum, *prod, *scratch; }} job;

static void body(void *p, int64_t begin, int64_t end) {{
    job *j = (job *)p;
    for (int64_t i = begin; i < end; ++i) {{
        j->scratch[i] = j->a[i] * j->b[i];
        j->sum[i] = j->a[i] + j->b[i] + j->w[i];
        j->prod[i] = j->scratch[i];
    }}
}}

int32_t tilec_run(void *ctx, void **inputs, void **outputs, const void *weights, void *workspace,
                  const int64_t *dims) {{
    if (((uintptr_t)weights & 63) || ((uintptr_t)workspace & 63)) return 2;
    const float *a = (const float *)inputs[0];
    if (a[0] != a[0]) return 7;
    job j = {{a, (const float *)inputs[1], (const float *)weights,
             (float *)outputs[0], (float *)outputs[1], (float *)workspace}};
    tilec_parallel_for(ctx, body, &j, {N});
    return 0;
}}

void tilec_sizes(const int64_t *dims, int64_t *out) {{ out[0] = 0; }}

const char *tilec_signature(void) {{ return {_c_string(native_signature(fake_manifest(), WEIGHTS.nbytes))}; }}
"""


def expected_outputs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return a + b + WEIGHTS, a * b


def random_inputs(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(SHAPE).astype(np.float32) for name in ("a", "b")}
