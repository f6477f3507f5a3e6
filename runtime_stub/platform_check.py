"""Does this machine run an artifact's native code? (stdlib only)

Contract:

* ``host_info()`` returns this machine's OS, architecture (``platform.machine()``
  normalised: amd64→x86_64, arm64→aarch64, armv7l→arm) and CPU feature flags in
  ``/proc/cpuinfo``'s spelling, which ``target.features`` uses in the manifest: on
  aarch64 from the kernel's hwcaps (``getauxval``), elsewhere from ``/proc/cpuinfo``.
* ``check_target(target)`` raises ``IncompatibleArtifactError`` naming the artifact's
  architecture and this machine's, or listing the CPU features this machine lacks.
  Only ``kind == "cpu"`` targets are checked here; other kinds belong to their executor.

Checking before loading matters: running code that uses a missing instruction set
kills the whole process with SIGILL instead of raising.
"""

from __future__ import annotations

import ctypes
import platform
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

from runtime_stub.errors import IncompatibleArtifactError

_ARCH_ALIASES = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64", "armv8b": "aarch64"}
_CPUINFO = "/proc/cpuinfo"
_FEATURE_KEYS = ("flags", "features")  # x86 spells it 'flags', ARM 'Features'


@dataclass(frozen=True)
class HostInfo:
    """What the runtime knows about this machine. ``features`` is None when unreadable."""

    system: str
    arch: str
    features: frozenset[str] | None


def normalize_arch(machine: str) -> str:
    name = machine.strip().lower()
    if name.startswith("armv") and not name.startswith("armv8b"):
        return "arm"  # armv7l, armv6l, armv8l (32-bit userland on a 64-bit core)
    return _ARCH_ALIASES.get(name, name)


def parse_cpuinfo_features(text: str) -> frozenset[str]:
    """Feature flags of the first processor listed (all cores share one instruction set)."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in _FEATURE_KEYS:
            return frozenset(value.split())
    return frozenset()


# aarch64 Linux hwcaps (asm/hwcap.h), spelled as /proc/cpuinfo spells them.
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_AARCH64_HWCAP = {0: "fp", 1: "asimd", 9: "fphp", 10: "asimdhp", 20: "asimddp", 22: "sve"}
_AARCH64_HWCAP2 = {1: "sve2", 13: "i8mm", 14: "bf16"}


def _aarch64_hwcaps() -> frozenset[str] | None:
    """Features from the kernel's auxiliary vector: authoritative, and what emulators (qemu-user) provide
    even where /proc/cpuinfo describes the host machine instead."""
    try:
        libc = ctypes.CDLL(None)
        getauxval = libc.getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    hwcap, hwcap2 = getauxval(_AT_HWCAP), getauxval(_AT_HWCAP2)
    found = {name for bit, name in _AARCH64_HWCAP.items() if hwcap >> bit & 1}
    found |= {name for bit, name in _AARCH64_HWCAP2.items() if hwcap2 >> bit & 1}
    return frozenset(found)


def host_info() -> HostInfo:
    arch = normalize_arch(platform.machine())
    features = _aarch64_hwcaps() if arch == "aarch64" else None
    if features is None:
        try:
            with open(_CPUINFO, encoding="utf-8", errors="replace") as f:
                features = parse_cpuinfo_features(f.read())
        except OSError:
            features = None
    return HostInfo(system=platform.system(), arch=arch, features=features)


def check_target(target: Mapping[str, Any], host: HostInfo | None = None) -> None:
    """Raise IncompatibleArtifactError unless this machine can run a ``cpu`` artifact for ``target``."""
    host = host or host_info()
    kind = target.get("kind")
    if kind != "cpu":
        raise IncompatibleArtifactError(f"check_target handles 'cpu' artifacts only, not kind {kind!r}")
    if host.system != "Linux":
        raise IncompatibleArtifactError(
            f"this artifact contains Linux native code; this machine runs {host.system}"
        )
    arch = normalize_arch(str(target.get("arch", "")))
    if arch != host.arch:
        raise IncompatibleArtifactError(
            f"this artifact was built for {arch} (triple {target.get('triple')}), "
            f"but this machine is {host.arch}; recompile the model for this machine's target"
        )
    _check_features(target, host)


def _check_features(target: Mapping[str, Any], host: HostInfo) -> None:
    required = sorted(set(target.get("features") or ()))
    if not required:
        return
    if host.features is None:
        # Without /proc/cpuinfo nothing can be verified; loading is still the user's call.
        warnings.warn(f"cannot read {_CPUINFO}; not checking CPU features {required}", RuntimeWarning, stacklevel=3)
        return
    missing = [f for f in required if f not in host.features]
    if missing:
        cpu = target.get("cpu") or "the target CPU"
        raise IncompatibleArtifactError(
            f"this artifact was built for {cpu} and needs CPU features this machine lacks: "
            f"{', '.join(missing)}; recompile for this machine or for a more generic CPU"
        )
