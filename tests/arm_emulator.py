"""Run arm64 (aarch64) Python 3.11 + numpy 1.24 under qemu user-mode emulation.

Helper for tests (not a test module). The emulator and the arm64 Debian sysroot
are provided by ``scripts/setup_arm_emulator.sh``; this module only finds them
and runs scripts with them::

    from arm_emulator import require_emulator, run_arm_python

    emu = require_emulator()          # skips loudly without one; fails instead under CI
    proc = run_arm_python(path_to_script, args=["x"], timeout=120)

How the run works: ``qemu-aarch64-static -L SYSROOT ... SYSROOT/usr/bin/python3.11``.
With ``-L``, every *absolute* path the emulated program opens is looked up in
SYSROOT first and then on the host, so host paths (the repository, tmp dirs,
/proc/self/fd/N) stay reachable -- but a host path that also exists inside the
sysroot (e.g. /usr/lib/...) resolves to the sysroot copy.

Environment variables:
    TILEC_ARM_SYSROOT  sysroot folder (default ~/.cache/tilec/arm64-sysroot),
                       the same variable the setup script reads.
    TILEC_QEMU_AARCH64 explicit qemu-aarch64 binary (default: PATH lookup of
                       qemu-aarch64-static, then qemu-aarch64).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
from typing import Iterable, Mapping

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SETUP_SCRIPT = REPO_ROOT / "scripts" / "setup_arm_emulator.sh"
MARKER_NAME = ".tilec-arm64-sysroot.ok"  # written by the setup script when complete

# Guest-side library path: Debian selects libblas.so.3/liblapack.so.3 through
# update-alternatives + ldconfig, neither of which ran in the sysroot. (The
# setup script also symlinks them into the multiarch dir; this is belt and braces.)
GUEST_LD_LIBRARY_PATH = "/usr/lib/aarch64-linux-gnu/blas:/usr/lib/aarch64-linux-gnu/lapack"

DEFAULT_TIMEOUT = 300.0

# Host variables that must not leak into the emulated python.
_STRIP_PREFIXES = ("PYTHON", "LD_", "QEMU_")
_STRIP_NAMES = {"VIRTUAL_ENV", "CONDA_PREFIX", "__PYVENV_LAUNCHER__"}


@dataclasses.dataclass(frozen=True)
class EmulatorInfo:
    qemu: pathlib.Path      # qemu-aarch64(-static) binary on the host
    sysroot: pathlib.Path   # arm64 Debian sysroot (qemu -L)
    python: pathlib.Path    # SYSROOT/usr/bin/python3.11 (host path, run through qemu)
    reason: str = "available"

    @property
    def pythonpath(self) -> str:
        """PYTHONPATH for the guest: repo root (runtime_stub, compiler) + Debian dist-packages."""
        return os.pathsep.join(
            [str(REPO_ROOT), str(self.sysroot / "usr" / "lib" / "python3" / "dist-packages")]
        )

    def command(self, *python_args: str) -> list[str]:
        """The full host command line that runs the arm64 python with ``python_args``."""
        return [
            str(self.qemu),
            "-L", str(self.sysroot),
            "-E", f"LD_LIBRARY_PATH={GUEST_LD_LIBRARY_PATH}",
            "-E", f"PYTHONPATH={self.pythonpath}",
            "-E", "PYTHONNOUSERSITE=1",
            str(self.python),
            *python_args,
        ]


_last_reason = "find_emulator() has not been called"


def default_sysroot() -> pathlib.Path:
    env = os.environ.get("TILEC_ARM_SYSROOT")
    if env:
        return pathlib.Path(env).expanduser()
    return pathlib.Path.home() / ".cache" / "tilec" / "arm64-sysroot"


def _find_qemu() -> pathlib.Path | None:
    explicit = os.environ.get("TILEC_QEMU_AARCH64")
    if explicit:
        p = pathlib.Path(explicit)
        return p if p.is_file() and os.access(p, os.X_OK) else None
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        found = shutil.which(name)
        if found:
            return pathlib.Path(found)
    return None


def find_emulator() -> EmulatorInfo | None:
    """Locate qemu-aarch64 and a complete arm64 sysroot; None if either is missing.

    Cheap (no emulated process is started). When it returns None,
    ``unavailable_reason()`` says why and how to fix it.
    """
    global _last_reason
    hint = f"run `{SETUP_SCRIPT.relative_to(REPO_ROOT)}` (needs root for apt-get)"
    qemu = _find_qemu()
    if qemu is None:
        if os.environ.get("TILEC_QEMU_AARCH64"):
            _last_reason = f"TILEC_QEMU_AARCH64={os.environ['TILEC_QEMU_AARCH64']} is not an executable file"
        else:
            _last_reason = f"ARM EMULATOR UNAVAILABLE: no qemu-aarch64-static / qemu-aarch64 on PATH; {hint}"
        return None
    sysroot = default_sysroot()
    python = sysroot / "usr" / "bin" / "python3.11"
    if not (sysroot / MARKER_NAME).is_file() or not python.is_file():
        _last_reason = (
            f"ARM EMULATOR UNAVAILABLE: no complete arm64 sysroot at {sysroot} "
            f"(marker {MARKER_NAME} or usr/bin/python3.11 missing); {hint}"
        )
        return None
    _last_reason = "available"
    return EmulatorInfo(qemu=qemu, sysroot=sysroot, python=python)


def unavailable_reason() -> str:
    """Why the last find_emulator() call returned None ("available" if it did not)."""
    return _last_reason


def require_emulator() -> EmulatorInfo:
    """The emulator, or the end of the calling test: under CI (``CI`` set) a failure, since a
    skipped ARM suite would pass for a tested one; elsewhere a skip, announced on stderr."""
    emulator = find_emulator()
    if emulator is not None:
        return emulator
    reason = f"*** {unavailable_reason()} ***"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI={os.environ['CI']}: the ARM suite must run in CI)", pytrace=False)
    print(f"\n{reason}", file=sys.stderr)
    pytest.skip(reason)


def setup_emulator(timeout: float = 1800.0) -> EmulatorInfo | None:
    """Run scripts/setup_arm_emulator.sh (installs with apt-get), then find_emulator()."""
    global _last_reason
    proc = subprocess.run(
        ["bash", str(SETUP_SCRIPT)], capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        _last_reason = (
            f"ARM EMULATOR UNAVAILABLE: {SETUP_SCRIPT.name} exited {proc.returncode}: "
            + (proc.stderr.strip() or proc.stdout.strip())[-2000:]
        )
        return None
    return find_emulator()


def guest_env(env_extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Host environment for the qemu process (qemu passes it on to the guest),
    with host Python/loader variables removed and ``env_extra`` applied."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_STRIP_PREFIXES) and k not in _STRIP_NAMES
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # don't drop __pycache__ into the repo from the guest
    if env_extra:
        env.update({str(k): str(v) for k, v in env_extra.items()})
    return env


def _require(emulator: EmulatorInfo | None) -> EmulatorInfo:
    emu = emulator or find_emulator()
    if emu is None:
        raise RuntimeError(unavailable_reason())
    return emu


def run_arm_python(
    script: str | os.PathLike[str],
    args: Iterable[str | os.PathLike[str]] = (),
    cwd: str | os.PathLike[str] | None = None,
    env_extra: Mapping[str, str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    *,
    check: bool = False,
    input: str | None = None,
    emulator: EmulatorInfo | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the Python file ``script`` with arm64 python3.11 under qemu.

    Returns the CompletedProcess (text mode, stdout/stderr captured). ``env_extra``
    is applied on top of the (sanitised) host environment; PYTHONPATH in it is
    *prepended* to the repo root + numpy path rather than replacing them.
    Raises RuntimeError when the emulator is unavailable.
    """
    emu = _require(emulator)
    script_path = pathlib.Path(script)
    # Make it absolute against cwd so the guest sees the same file whatever cwd is.
    if not script_path.is_absolute():
        script_path = pathlib.Path(cwd or os.getcwd()) / script_path
    return _run(emu, [str(script_path), *map(str, args)], cwd, env_extra, timeout, check, input)


def run_arm_python_code(
    code: str,
    args: Iterable[str | os.PathLike[str]] = (),
    cwd: str | os.PathLike[str] | None = None,
    env_extra: Mapping[str, str] | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    *,
    check: bool = False,
    input: str | None = None,
    emulator: EmulatorInfo | None = None,
) -> subprocess.CompletedProcess[str]:
    """Like run_arm_python, but runs the source string ``code`` (python -c)."""
    emu = _require(emulator)
    return _run(emu, ["-c", code, *map(str, args)], cwd, env_extra, timeout, check, input)


def _run(emu, python_args, cwd, env_extra, timeout, check, input):
    extra = dict(env_extra or {})
    cmd = emu.command(*python_args)
    if "PYTHONPATH" in extra:  # merge instead of clobbering the repo/numpy entries
        pp = f"{extra.pop('PYTHONPATH')}{os.pathsep}{emu.pythonpath}"
        cmd[cmd.index(f"PYTHONPATH={emu.pythonpath}")] = f"PYTHONPATH={pp}"
    return subprocess.run(
        cmd,
        cwd=None if cwd is None else str(cwd),
        env=guest_env(extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        input=input,
    )
