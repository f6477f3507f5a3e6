"""Host description and target checks, with a synthetic host so any machine runs them."""

from __future__ import annotations

import pytest

from runtime_stub.errors import IncompatibleArtifactError
from runtime_stub.platform_check import HostInfo, check_target, host_info, normalize_arch, parse_cpuinfo_features

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu sse2 avx avx2 fma
processor\t: 1
flags\t\t: fpu sse2 avx avx2 fma
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes crc32 asimddp
"""
HOST = HostInfo(system="Linux", arch="x86_64", features=frozenset({"sse2", "avx2", "fma"}))


def cpu_target(**changes) -> dict:
    target = {"kind": "cpu", "triple": "x86_64-unknown-linux-gnu", "arch": "x86_64", "cpu": "haswell",
              "features": ["avx2", "fma"]}
    target.update(changes)
    return target


@pytest.mark.parametrize("machine, arch", [("AMD64", "x86_64"), ("x86_64", "x86_64"), ("arm64", "aarch64"),
                                           ("aarch64", "aarch64"), ("armv7l", "arm")])
def test_normalize_arch(machine: str, arch: str) -> None:
    assert normalize_arch(machine) == arch


def test_parse_cpuinfo() -> None:
    assert parse_cpuinfo_features(X86_CPUINFO) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert "asimddp" in parse_cpuinfo_features(ARM_CPUINFO)


def test_host_info_reads_this_machine() -> None:
    info = host_info()
    assert info.arch and info.system
    if info.features is not None and info.arch == "x86_64":
        assert "sse2" in info.features


def test_compatible_target_passes() -> None:
    check_target(cpu_target(), HOST)


def test_arch_mismatch_names_both() -> None:
    with pytest.raises(IncompatibleArtifactError, match="built for aarch64.*this machine is x86_64"):
        check_target(cpu_target(arch="aarch64", triple="aarch64-unknown-linux-gnu"), HOST)


def test_missing_features_are_listed() -> None:
    with pytest.raises(IncompatibleArtifactError, match="haswell.*lacks: avx512bw, avx512f"):
        check_target(cpu_target(features=["avx2", "avx512f", "avx512bw"]), HOST)


def test_non_linux_host() -> None:
    with pytest.raises(IncompatibleArtifactError, match="Linux"):
        check_target(cpu_target(), HostInfo("Darwin", "aarch64", None))


def test_unreadable_cpuinfo_warns() -> None:
    with pytest.warns(RuntimeWarning, match="not checking CPU features"):
        check_target(cpu_target(), HostInfo("Linux", "x86_64", None))
