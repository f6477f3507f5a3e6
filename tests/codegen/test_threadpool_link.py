"""The support library and the linker: partitions, fork/join stress, determinism, cross targets."""

from __future__ import annotations

import ctypes
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np
import pytest

from compiler.codegen.link import find_zig, link_shared_object, zig_target
from compiler.errors import TargetError, ToolchainError
from runtime_stub.signature import ABI_VERSION

# A kernel that bumps counts[i] once per index for `iterations` parallel_for rounds:
# any lost, duplicated or overlapping chunk shows up as a count != iterations.
STRESS_C = """
#include <stdint.h>
void tilec_parallel_for(void *ctx, void (*fn)(void *, int64_t, int64_t), void *closure, int64_t n);
static void bump(void *p, int64_t b, int64_t e) { int32_t *c = (int32_t *)p; for (int64_t i = b; i < e; ++i) c[i]++; }
void stress(void *ctx, int32_t *counts, int64_t n, int32_t iterations) {
    for (int32_t k = 0; k < iterations; ++k) tilec_parallel_for(ctx, bump, counts, n);
}
/* Nested use: each outer index runs an inner parallel_for over its own row of counts. */
typedef struct { void *ctx; int32_t *counts; int64_t row; } nest;
static void outer(void *p, int64_t b, int64_t e) {
    nest *s = (nest *)p;
    for (int64_t i = b; i < e; ++i) tilec_parallel_for(s->ctx, bump, s->counts + i * s->row, s->row);
}
void nested(void *ctx, int32_t *counts, int64_t rows, int64_t row) {
    nest s = {ctx, counts, row};
    tilec_parallel_for(ctx, outer, &s, rows);
}
"""

HOST_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
HOST_TRIPLE = f"{HOST_ARCH}-unknown-linux-gnu"
ELF_MACHINE = {"x86_64": 0x3E, "aarch64": 0xB7}
BODY_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)


def compile_object(source: str, triple: str, tmp: pathlib.Path) -> bytes:
    (tmp / "k.c").write_text(source)
    cmd = find_zig().cc(zig_target(triple), "-c", "-fPIC", "-O2", "-g0", str(tmp / "k.c"), "-o", str(tmp / "k.o"))
    subprocess.run(cmd, check=True, capture_output=True)
    return (tmp / "k.o").read_bytes()


@pytest.fixture(scope="module")
def host_lib(tmp_path_factory: pytest.TempPathFactory) -> ctypes.CDLL:
    if sys.platform != "linux" or HOST_ARCH not in ELF_MACHINE:
        pytest.skip("needs x86_64 or aarch64 Linux")
    tmp = tmp_path_factory.mktemp("host")
    so = link_shared_object([compile_object(STRESS_C, HOST_TRIPLE, tmp)], HOST_TRIPLE, None)
    (tmp / "lib.so").write_bytes(so)
    lib = ctypes.CDLL(str(tmp / "lib.so"))
    lib.tilec_abi_version.restype = ctypes.c_int32
    lib.tilec_create.restype = ctypes.c_void_p
    lib.tilec_create.argtypes = [ctypes.c_int32]
    lib.tilec_destroy.argtypes = [ctypes.c_void_p]
    lib.tilec_num_threads.argtypes = [ctypes.c_void_p]
    lib.tilec_num_threads.restype = ctypes.c_int32
    lib.tilec_parallel_for.argtypes = [ctypes.c_void_p, BODY_FN, ctypes.c_void_p, ctypes.c_int64]
    lib.stress.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32]
    lib.nested.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64]
    return lib


def test_abi_version_and_thread_count(host_lib: ctypes.CDLL) -> None:
    assert host_lib.tilec_abi_version() == ABI_VERSION
    ctx = host_lib.tilec_create(3)
    assert host_lib.tilec_num_threads(ctx) == 3
    host_lib.tilec_destroy(ctx)
    ctx = host_lib.tilec_create(0)  # all online CPUs
    assert host_lib.tilec_num_threads(ctx) >= 1
    host_lib.tilec_destroy(ctx)


@pytest.mark.parametrize("threads, n", [(1, 10), (4, 1), (4, 3), (4, 10), (3, 1000), (8, 7)])
def test_parallel_for_partitions_the_range(host_lib: ctypes.CDLL, threads: int, n: int) -> None:
    chunks: list[tuple[int, int]] = []
    body = BODY_FN(lambda closure, b, e: chunks.append((b, e)))  # list.append is atomic under the GIL
    ctx = host_lib.tilec_create(threads)
    host_lib.tilec_parallel_for(ctx, body, None, n)
    host_lib.tilec_destroy(ctx)
    chunks.sort()
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    assert all(b < e for b, e in chunks)
    assert all(chunks[i][1] == chunks[i + 1][0] for i in range(len(chunks) - 1))
    assert len(chunks) <= min(4 * threads, n)  # TILEC_CHUNKS_PER_THREAD
    if threads == 1 or n == 1:
        assert chunks == [(0, n)]  # direct call


@pytest.mark.parametrize("threads", [2, 4, 9])
def test_fork_join_stress(host_lib: ctypes.CDLL, threads: int) -> None:
    n, iterations = 1001, 500
    counts = np.zeros(n, dtype=np.int32)
    ctx = host_lib.tilec_create(threads)
    host_lib.stress(ctx, counts.ctypes.data, n, iterations)
    host_lib.tilec_destroy(ctx)
    assert (counts == iterations).all()


def test_nested_parallel_for_runs_serially_instead_of_deadlocking(host_lib: ctypes.CDLL) -> None:
    counts = np.zeros((13, 50), dtype=np.int32)
    ctx = host_lib.tilec_create(4)
    host_lib.nested(ctx, counts.ctypes.data, 13, 50)
    host_lib.tilec_destroy(ctx)
    assert (counts == 1).all()


def test_idle_workers_sleep(host_lib: ctypes.CDLL) -> None:
    counts = np.zeros(64, dtype=np.int32)
    ctx = host_lib.tilec_create(2)
    host_lib.stress(ctx, counts.ctypes.data, 64, 10)
    time.sleep(0.05)  # past the bounded spin
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    time.sleep(0.3)
    busy = (time.process_time() - cpu_before) / (time.perf_counter() - wall_before)
    host_lib.tilec_destroy(ctx)
    assert busy < 0.2, f"idle pool burns {busy:.0%} of a CPU"


def test_link_is_deterministic(tmp_path: pathlib.Path) -> None:
    obj = compile_object(STRESS_C, "x86_64-unknown-linux-gnu", tmp_path)
    first = link_shared_object([obj], "x86_64-unknown-linux-gnu", None)
    second = link_shared_object([obj], "x86_64-unknown-linux-gnu", "znver4")
    assert first == second
    assert first[:4] == b"\x7fELF"


@pytest.mark.parametrize("triple", ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"])
def test_cross_link_sets_elf_machine(tmp_path: pathlib.Path, triple: str) -> None:
    obj = compile_object(STRESS_C, triple, tmp_path)
    so = link_shared_object([obj], triple, None)
    assert so[:4] == b"\x7fELF"
    assert so[16] == 3  # ET_DYN: a shared object
    assert int.from_bytes(so[18:20], "little") == ELF_MACHINE[triple.split("-")[0]]


@pytest.mark.parametrize(
    "triple, target",
    [("x86_64-unknown-linux-gnu", "x86_64-linux-gnu"), ("aarch64-unknown-linux-gnu", "aarch64-linux-gnu"),
     ("armv7-unknown-linux-gnueabihf", "arm-linux-gnueabihf"), ("arm-linux-gnueabihf", "arm-linux-gnueabihf")],
)
def test_zig_target(triple: str, target: str) -> None:
    assert zig_target(triple) == target


@pytest.mark.parametrize("triple", ["x86_64-apple-darwin", "riscv64-unknown-linux-gnu"])
def test_unsupported_triple(triple: str) -> None:
    with pytest.raises(TargetError, match=triple):
        zig_target(triple)


def test_link_failure_is_toolchain_error() -> None:
    with pytest.raises(ToolchainError, match="linking for x86_64-linux-gnu failed"):
        link_shared_object([b"this is not an object file"], "x86_64-unknown-linux-gnu", None)


def test_undefined_symbol_is_toolchain_error(tmp_path: pathlib.Path) -> None:
    # Without -z defs this would link and only crash when the artifact calls the missing function.
    obj = compile_object("int missing_fn(void); int g(void) { return missing_fn(); }", "x86_64-unknown-linux-gnu", tmp_path)
    with pytest.raises(ToolchainError, match="missing_fn"):
        link_shared_object([obj], "x86_64-unknown-linux-gnu", None)


def test_libm_is_linked(tmp_path: pathlib.Path) -> None:
    obj = compile_object("#include <math.h>\nfloat g(float x) { return expf(x) + tanhf(x); }",
                         "aarch64-unknown-linux-gnu", tmp_path)
    assert link_shared_object([obj], "aarch64-unknown-linux-gnu", None)[:4] == b"\x7fELF"


# The pool on a weakly ordered CPU: a static aarch64 (musl) program runs the stress loop
# under qemu user emulation, where each guest thread is a host thread.
AARCH64_MAIN_C = STRESS_C + """
#include <stdio.h>
void *tilec_create(int32_t); void tilec_destroy(void *);
int main(void) {
    static int32_t counts[1001];
    for (int32_t threads = 1; threads <= 4; ++threads) {
        void *ctx = tilec_create(threads);
        for (int i = 0; i < 1001; ++i) counts[i] = 0;
        stress(ctx, counts, 1001, 300);
        tilec_destroy(ctx);
        for (int i = 0; i < 1001; ++i) if (counts[i] != 300) { printf("bad %d %d\\n", threads, i); return 1; }
    }
    printf("ok\\n");
    return 0;
}
"""


@pytest.mark.arm
def test_pool_under_qemu_aarch64(tmp_path: pathlib.Path) -> None:
    import shutil

    from compiler.codegen.link import SUPPORT_SOURCE

    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if qemu is None:
        pytest.skip("qemu-aarch64 is not installed")
    (tmp_path / "main.c").write_text(AARCH64_MAIN_C)
    exe = tmp_path / "stress"
    cmd = find_zig().cc("aarch64-linux-musl", "-static", "-O2", str(tmp_path / "main.c"), str(SUPPORT_SOURCE),
                        "-o", str(exe))
    subprocess.run(cmd, check=True, capture_output=True)
    proc = subprocess.run([qemu, str(exe)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
