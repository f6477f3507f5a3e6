"""Link generated object code and the C support library into one ELF shared object.

Contract (docs/ARCHITECTURE.md, "Native ABI"):

* ``link_shared_object(objects, triple, cpu)`` takes ELF relocatable objects for an
  LLVM target triple and returns the bytes of a stripped shared object that also
  exports the support library (``codegen/support/threadpool.c``). Linking the same
  inputs twice gives byte-identical output.
* The toolchain is ``zig cc`` from the ``ziglang`` wheel (or a ``zig`` on PATH), so
  cross-linking for aarch64 and arm needs nothing installed on the host.
* The compiled support object is cached per user under
  ``$XDG_CACHE_HOME/tilec/support/`` (default ``~/.cache/tilec/support/``), keyed by
  the hash of its source, target and zig version.
* Every toolchain failure raises ``ToolchainError`` carrying the tool's stderr; an
  unsupported triple raises ``TargetError``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from compiler.errors import TargetError, ToolchainError

SUPPORT_SOURCE = pathlib.Path(__file__).with_name("support") / "threadpool.c"

# Flags that make the output independent of temp paths and of the build machine.
_COMMON_CFLAGS = ("-fPIC", "-O2", "-g0")
# -s and --build-id=none: small, byte-identical output. -Bsymbolic: calls into the support
# library bind inside this .so, never to another artifact loaded in the same process.
# -z defs: an unresolved symbol fails the link here instead of crashing at call time.
_LINK_FLAGS = ("-shared", "-fPIC", "-O2", "-s", "-Wl,--build-id=none", "-Wl,-Bsymbolic", "-Wl,-z,defs",
               "-lpthread", "-lm")
_TOOL_TIMEOUT_S = 300  # the first link per target builds glibc stubs (~10 s); never hang forever


@dataclass(frozen=True)
class Zig:
    """How to invoke zig: the command prefix and its version (part of cache keys)."""

    command: tuple[str, ...]
    version: str

    def cc(self, target: str, *args: str) -> list[str]:
        return [*self.command, "cc", "-target", target, *args]


def find_zig() -> Zig:
    """The ``ziglang`` wheel of this interpreter if installed, else ``zig`` on PATH."""
    if importlib.util.find_spec("ziglang") is not None:
        return Zig((sys.executable, "-m", "ziglang"), importlib.metadata.version("ziglang"))
    exe = shutil.which("zig")
    if exe is not None:
        version = _run([exe, "version"], what="zig version").decode().strip()
        return Zig((exe,), version)
    raise ToolchainError(
        "no zig toolchain found: install the 'ziglang' package (pip install ziglang) or put 'zig' on PATH"
    )


def zig_target(triple: str) -> str:
    """The zig ``-target`` for an LLVM triple, e.g. x86_64-unknown-linux-gnu → x86_64-linux-gnu."""
    arch = triple.split("-", 1)[0]
    if "linux" not in triple:
        raise TargetError(f"cannot link for triple {triple!r}: tilec only produces Linux shared objects")
    if arch in ("x86_64", "amd64"):
        return "x86_64-linux-gnu"
    if arch in ("aarch64", "arm64"):
        return "aarch64-linux-gnu"
    if arch.startswith("arm") or arch.startswith("thumb"):
        return "arm-linux-gnueabihf"
    raise TargetError(f"cannot link for triple {triple!r}: supported architectures are x86_64, aarch64, arm")


def cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "tilec" / "support"


def support_object(zig: Zig, target: str) -> pathlib.Path:
    """Path of the compiled support library for ``target``, compiling it on a cache miss."""
    source = SUPPORT_SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, target.encode(), zig.version.encode(), " ".join(_COMMON_CFLAGS).encode()])
    ).hexdigest()[:32]
    cached = cache_dir() / f"{key}.o"
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    # Compile to a unique name then rename, so concurrent compilers never see half a file.
    fd, tmp_name = tempfile.mkstemp(suffix=".o", dir=cached.parent)
    os.close(fd)
    try:
        _run(zig.cc(target, "-c", *_COMMON_CFLAGS, str(SUPPORT_SOURCE), "-o", tmp_name),
             what=f"compiling the support library for {target}")
        os.replace(tmp_name, cached)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return cached


def link_shared_object(objects: list[bytes], triple: str, cpu: str | None = None) -> bytes:
    """Link ``objects`` (ELF relocatables for ``triple``) plus the support library into a .so.

    ``cpu`` is accepted for symmetry with the code generator but deliberately not used:
    the support library is built for the triple's baseline CPU so it never needs a
    feature the generated code does not already require.
    """
    del cpu
    if not objects:
        raise ToolchainError("link_shared_object needs at least one object file")
    target = zig_target(triple)
    zig = find_zig()
    support = support_object(zig, target)
    with tempfile.TemporaryDirectory(prefix="tilec-link-") as tmp:
        tmpdir = pathlib.Path(tmp)
        # Fixed relative names: nothing about the temp dir can leak into the output.
        names = []
        for i, data in enumerate(objects):
            name = f"obj{i}.o"
            (tmpdir / name).write_bytes(data)
            names.append(name)
        shutil.copyfile(support, tmpdir / "support.o")
        _run(zig.cc(target, *_LINK_FLAGS, *names, "support.o", "-o", "out.so"),
             what=f"linking for {target}", cwd=tmpdir)
        return (tmpdir / "out.so").read_bytes()


def _run(cmd: list[str], what: str, cwd: pathlib.Path | None = None) -> bytes:
    """Run a toolchain command; any failure becomes a ToolchainError with its stderr."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=_TOOL_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolchainError(f"{what} failed: {exc}") from exc
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip()
        raise ToolchainError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{stderr}")
    return proc.stdout
