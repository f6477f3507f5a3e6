"""Smoke test of the arm64 emulation setup (scripts/setup_arm_emulator.sh).

Checks that arm64 python3.11 + numpy 1.24 start under qemu-user, and that a
zig-cross-compiled aarch64 shared object (NEON + pthreads) loads through ctypes
both from a file and the way tilec's runtime loads native code: from an
anonymous memfd via /proc/self/fd/N.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import textwrap

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # tests/ for arm_emulator
import arm_emulator  # noqa: E402

pytestmark = pytest.mark.arm

C_SOURCE = r"""
#include <pthread.h>
#include <stddef.h>
#if defined(__ARM_NEON)
#include <arm_neon.h>
#endif

/* 1 when built for aarch64 with NEON, so the test can tell it ran the right code. */
int smoke_has_neon(void) {
#if defined(__aarch64__) && defined(__ARM_NEON)
    return 1;
#else
    return 0;
#endif
}

typedef struct { const float *a, *b; long n; float result; } chunk_t;

static float dot(const float *a, const float *b, long n) {
    long i = 0;
    float acc = 0.0f;
#if defined(__ARM_NEON)
    float32x4_t v = vdupq_n_f32(0.0f);
    for (; i + 4 <= n; i += 4)
        v = vfmaq_f32(v, vld1q_f32(a + i), vld1q_f32(b + i));
    acc = vaddvq_f32(v);
#endif
    for (; i < n; ++i) acc += a[i] * b[i];
    return acc;
}

static void *worker(void *arg) {
    chunk_t *c = (chunk_t *)arg;
    c->result = dot(c->a, c->b, c->n);
    return NULL;
}

/* Dot product of a and b split over nthreads pthreads (<= 16); returns -1 on error. */
int smoke_threaded_dot(const float *a, const float *b, long n, int nthreads, float *out) {
    pthread_t tid[16];
    chunk_t chunk[16];
    if (nthreads < 1 || nthreads > 16) return -1;
    long per = (n + nthreads - 1) / nthreads;
    for (int t = 0; t < nthreads; ++t) {
        long lo = t * per, hi = lo + per < n ? lo + per : n;
        if (lo > hi) lo = hi;
        chunk[t] = (chunk_t){a + lo, b + lo, hi - lo, 0.0f};
        if (pthread_create(&tid[t], NULL, worker, &chunk[t]) != 0) return -1;
    }
    float total = 0.0f;
    for (int t = 0; t < nthreads; ++t) {
        pthread_join(tid[t], NULL);
        total += chunk[t].result;
    }
    *out = total;
    return 0;
}
"""

GUEST_SCRIPT = textwrap.dedent(
    r"""
    import ctypes, json, os, platform, sys
    import numpy as np

    so_path = sys.argv[1]
    report = {"machine": platform.machine(), "numpy": np.__version__,
              "python": platform.python_version()}

    def exercise(lib):
        fn = lib.smoke_threaded_dot
        fp = ctypes.POINTER(ctypes.c_float)
        fn.argtypes = [fp, fp, ctypes.c_long, ctypes.c_int, fp]
        fn.restype = ctypes.c_int
        n = 1003
        a = np.linspace(-1.0, 1.0, n, dtype=np.float32)
        b = np.cos(np.arange(n, dtype=np.float32))
        out = ctypes.c_float()
        rc = fn(a.ctypes.data_as(fp), b.ctypes.data_as(fp), n, 4, ctypes.byref(out))
        expected = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
        return {"rc": rc, "value": out.value, "expected": expected,
                "neon": lib.smoke_has_neon()}

    report["file"] = exercise(ctypes.CDLL(so_path))

    # How tilec's runtime loads native code: anonymous memfd + /proc/self/fd/N.
    try:
        with open(so_path, "rb") as f:
            blob = f.read()
        fd = os.memfd_create("tilec-smoke", 0)
        os.write(fd, blob)
        report["memfd"] = exercise(ctypes.CDLL(f"/proc/self/fd/{fd}"))
    except Exception as exc:  # reported, asserted on the host side
        report["memfd"] = {"error": f"{type(exc).__name__}: {exc}"}

    print("SMOKE-REPORT " + json.dumps(report))
    """
)


@pytest.fixture(scope="module")
def emulator():
    return arm_emulator.require_emulator()


def test_arm_python_and_numpy(emulator):
    proc = arm_emulator.run_arm_python_code(
        "import platform, numpy, runtime_stub; print(platform.machine(), numpy.__version__)",
        emulator=emulator,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    machine, numpy_version = proc.stdout.split()
    assert machine == "aarch64"
    assert numpy_version.startswith("1.24"), numpy_version


def _zig_cc_aarch64(src: pathlib.Path, out: pathlib.Path) -> None:
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-gnu",
           "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-lpthread"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"zig cc failed:\n{proc.stderr}"


def test_zig_aarch64_shared_object_loads_under_qemu(emulator, tmp_path):
    src = tmp_path / "smoke.c"
    src.write_text(C_SOURCE)
    so = tmp_path / "libsmoke.so"
    _zig_cc_aarch64(src, so)
    assert so.read_bytes()[18:20] == (183).to_bytes(2, "little"), "not an EM_AARCH64 ELF"

    script = tmp_path / "guest.py"
    script.write_text(GUEST_SCRIPT)
    proc = arm_emulator.run_arm_python(script, args=[so], cwd=tmp_path, timeout=300,
                                       emulator=emulator)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    line = next(l for l in proc.stdout.splitlines() if l.startswith("SMOKE-REPORT "))
    report = json.loads(line[len("SMOKE-REPORT "):])

    assert report["machine"] == "aarch64"
    assert report["numpy"].startswith("1.24")
    for how in ("file", "memfd"):
        r = report[how]
        assert "error" not in r, f"loading via {how} failed under qemu: {r['error']}"
        assert r["rc"] == 0
        assert r["neon"] == 1
        assert r["value"] == pytest.approx(r["expected"], rel=1e-4, abs=1e-3), how
