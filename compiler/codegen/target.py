"""Targets: what the code is built for, and the facts schedules need about it.

``resolve_target("host")`` describes this machine (LLVM's view of its CPU);
``resolve_target("aarch64-linux-gnu", cpu="cortex-a76")`` a cross target.
Schedules read ``vector_bits`` and ``vector_registers`` from here, never from
the build machine. ``required_flags`` are the features in the spelling of
Linux ``/proc/cpuinfo``, which is what runtime_stub checks at load time.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import llvmlite.binding as llvm

from compiler.errors import TargetError

# Vector loads whose lanes are at most this many elements apart are emitted as two contiguous
# loads and a shuffle (a stride-2 pool); the schedules vectorize such loops. Wider strides
# would load more than they use and become per-lane gathers.
MAX_SHUFFLED_LOAD_STRIDE = 4

# The widest masked vector part started on its own: two AVX-512 registers of float32.
MAX_MASKED_WIDTH = 32


def vector_parts(extent: int, masked: bool = True) -> list[tuple[int, int]]:
    """How a vectorized loop of ``extent`` runs: ``(vector width, active lanes)`` per part.

    Power-of-two vectors (LLVM legalizes odd ones like <23 x float> lane by lane): 24 → 16 + 8.
    With ``masked``, a remainder that would take two or more further parts runs as one vector
    whose last lanes are masked off: 23 → one 32-wide part with 23 active lanes, 7 → 8 with 7
    active, 55 → 32 + 32 with 23 active (not 32 + 16 + 4 + 2 + 1: a register tile's tail row
    then needs two registers, not four).
    """
    parts: list[tuple[int, int]] = []
    rest = extent
    while rest:
        whole = 1 << (rest.bit_length() - 1)
        left = rest - whole
        # ``left`` not a power of two would take two or more further parts. The masked vector is
        # at most as wide as the first part or 32 lanes (55 → 32 + 32 with 23 active, not 64).
        if masked and left & (left - 1) and 2 * whole <= max(MAX_MASKED_WIDTH, parts[0][0] if parts else 0):
            parts.append((2 * whole, rest))
            break
        parts.append((whole, whole))
        rest = left
    return parts


def padded_extent(extent: int) -> int:
    """The row length a local buffer gets so that masked vector parts stay inside their row."""
    return sum(width for width, _ in vector_parts(extent))


# LLVM feature name → /proc/cpuinfo flag, for the features generated code may rely on.
_X86_FLAGS = {
    "sse4.1": "sse4_1", "sse4.2": "sse4_2", "ssse3": "ssse3", "popcnt": "popcnt", "avx": "avx", "avx2": "avx2",
    "fma": "fma", "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2", "avx512f": "avx512f", "avx512bw": "avx512bw",
    "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512cd": "avx512cd", "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16",
}
_AARCH64_FLAGS = {
    "neon": "asimd", "fp-armv8": "fp", "dotprod": "asimddp", "i8mm": "i8mm", "sve": "sve", "sve2": "sve2",
    "fullfp16": "asimdhp", "bf16": "bf16",
}
# Features implied by named CPUs we cross-compile for (LLVM knows them too; we need them
# to fill the manifest and pick vector widths without a machine of that kind at hand).
_X86_V2 = ("sse4.1", "sse4.2", "ssse3", "popcnt")
_X86_V3 = _X86_V2 + ("avx", "avx2", "fma", "f16c", "bmi", "bmi2")
_X86_V4 = _X86_V3 + ("avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd")
_KNOWN_CPUS = {
    "x86_64": {
        "x86-64": (), "x86-64-v2": _X86_V2, "x86-64-v3": _X86_V3, "haswell": _X86_V3, "x86-64-v4": _X86_V4,
        "skylake-avx512": _X86_V4, "znver4": _X86_V4 + ("avx512vnni", "avx512bf16"),
    },
    "aarch64": {
        "generic": ("neon", "fp-armv8"), "cortex-a53": ("neon", "fp-armv8"), "cortex-a72": ("neon", "fp-armv8"),
        "cortex-a76": ("neon", "fp-armv8", "dotprod", "fullfp16"),
        "neoverse-n1": ("neon", "fp-armv8", "dotprod", "fullfp16"),
        "neoverse-v1": ("neon", "fp-armv8", "dotprod", "fullfp16", "i8mm", "bf16", "sve"),
    },
}
_TRIPLES = {"x86_64": "x86_64-unknown-linux-gnu", "aarch64": "aarch64-unknown-linux-gnu"}
_DEFAULT_CPU = {"x86_64": "x86-64-v2", "aarch64": "generic"}


@dataclass(frozen=True)
class Target:
    kind: str  # "cpu" (the CUDA backend has its own target type)
    arch: str  # as platform.machine() spells it: x86_64, aarch64
    triple: str
    cpu: str
    features: tuple[str, ...]  # LLVM feature names enabled, without '+'

    @property
    def llvm_features(self) -> str:
        return ",".join(f"+{f}" for f in self.features)

    @property
    def vector_bits(self) -> int:
        if self.arch == "x86_64":
            return 512 if "avx512f" in self.features else 256 if "avx" in self.features else 128
        return 128

    @property
    def vector_registers(self) -> int:
        return 32 if self.arch == "aarch64" or "avx512f" in self.features else 16

    @property
    def has_fma(self) -> bool:
        return self.arch == "aarch64" or "fma" in self.features

    @property
    def required_flags(self) -> tuple[str, ...]:
        table = _X86_FLAGS if self.arch == "x86_64" else _AARCH64_FLAGS
        return tuple(sorted({table[f] for f in self.features if f in table}))

    def vector_lanes(self, itemsize: int) -> int:
        return max(1, self.vector_bits // (8 * itemsize))


def _arch_of(name: str) -> str:
    arch = name.split("-")[0].lower()
    return {"amd64": "x86_64", "arm64": "aarch64", "x86-64": "x86_64"}.get(arch, arch)


def host_target() -> Target:
    arch = _arch_of(platform.machine())
    if arch not in _TRIPLES:
        raise TargetError(f"this machine's architecture {platform.machine()!r} is not supported (x86_64, aarch64)")
    features = llvm.get_host_cpu_features()
    enabled = tuple(sorted(name for name, on in features.items() if on))
    return Target("cpu", arch, _TRIPLES[arch], llvm.get_host_cpu_name(), enabled)


def resolve_target(target: str = "host", cpu: str | None = None) -> Target:
    """Parse ``target`` (``host``, ``x86_64-linux-gnu``, ``aarch64-linux-gnu``) and ``cpu`` (a name, ``+feat`` suffixes)."""
    if target == "host" and cpu is None:
        return host_target()
    arch = host_target().arch if target == "host" else _arch_of(target)
    if arch not in _TRIPLES:
        raise TargetError(f"unknown target {target!r}; known: host, x86_64-linux-gnu, aarch64-linux-gnu")
    name, *extra = (cpu or _DEFAULT_CPU[arch]).split("+")
    name = name or _DEFAULT_CPU[arch]
    known = _KNOWN_CPUS[arch]
    if name not in known:
        raise TargetError(f"unknown CPU {name!r} for {arch}; known: {', '.join(sorted(known))}")
    features = set(known[name]) | {f.strip() for f in extra if f.strip()}
    unknown = [f for f in features if f not in (_X86_FLAGS if arch == "x86_64" else _AARCH64_FLAGS)]
    if unknown:
        raise TargetError(f"unknown CPU feature(s) {', '.join(sorted(unknown))} for {arch}")
    return Target("cpu", arch, _TRIPLES[arch], name, tuple(sorted(features)))


# (form, LLVM feature) of each ``WordDot`` form an instruction runs (``loopir.expr.WORD_DOT_PARTS``).
WORD_DOT_FEATURES = {
    "x86_64": (("u8s8", "avx512vnni"), ("bf16", "avx512bf16")),
    "aarch64": (("s8s8", "dotprod"), ("u8s8", "i8mm"), ("bf16", "bf16")),
}


def dot_product_forms(target: object) -> frozenset[str]:
    """The ``WordDot`` forms ``target`` has an instruction for: ``u8s8`` (x86 VNNI ``vpdpbusd``, aarch64
    I8MM ``usdot``), ``s8s8`` (aarch64 dot product ``sdot``), ``bf16`` (x86 AVX512-BF16 ``vdpbf16ps``,
    aarch64 BF16 ``bfdot``). None for targets other than CPUs (CUDA schedules its own)."""
    if not isinstance(target, Target):
        return frozenset()
    return frozenset(form for form, feature in WORD_DOT_FEATURES.get(target.arch, ()) if feature in target.features)

