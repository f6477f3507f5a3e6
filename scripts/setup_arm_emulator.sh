#!/usr/bin/env bash
# Set up arm64 user-mode emulation so tests can run tilec's runtime on "ARM"
# from an x86_64 Debian 12 (bookworm) host:
#
#   * qemu-aarch64-static (package qemu-user-static), and
#   * a Debian arm64 sysroot holding python3.11 + numpy 1.24 (and the shared
#     libraries they need), unpacked with `dpkg -x` -- nothing is installed
#     into the host's dpkg database except the foreign architecture itself.
#
# Idempotent and cached: a marker file in the sysroot records what was built;
# reruns only re-check that the sysroot still starts python + numpy (~1-2 s).
#
# Usage:
#   scripts/setup_arm_emulator.sh            # ensure everything (installs if needed)
#   scripts/setup_arm_emulator.sh --check    # only check; exit 0 if ready, 1 if not
#   scripts/setup_arm_emulator.sh --force    # rebuild the sysroot from scratch
#
# Environment:
#   TILEC_ARM_SYSROOT  sysroot folder (default: $HOME/.cache/tilec/arm64-sysroot)
#
# Needs root (or password-less sudo) only for the apt-get install of
# qemu-user-static and for `dpkg --add-architecture arm64` + `apt-get update`.
# tests/arm_emulator.py is the Python side that finds and runs this setup.
set -euo pipefail

SYSROOT="${TILEC_ARM_SYSROOT:-${HOME:-/root}/.cache/tilec/arm64-sysroot}"
MARKER_NAME=".tilec-arm64-sysroot.ok"

# Bump SPEC_VERSION whenever the layout/fixups below change; the marker stores a
# hash of it plus the package list, so a changed spec triggers a rebuild.
SPEC_VERSION=1
PACKAGES=(
    # interpreter + stdlib
    python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
    # numpy 1.24 (Debian 12) and its BLAS/LAPACK (reference netlib implementations)
    python3-numpy libblas3 liblapack3 libgfortran5 gcc-12-base
    # C/C++ runtime
    libc6 libgcc-s1 libstdc++6
    # libraries of stdlib extension modules
    libexpat1 zlib1g libffi8 libssl3 libbz2-1.0 liblzma5 libsqlite3-0
    libncursesw6 libtinfo6 libreadline8 libuuid1 libcrypt1 libdb5.3
    libnsl2 libtirpc3
    # libtirpc3 -> libgssapi-krb5-2 closure (needed by _crypt/nis-style modules)
    libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1
)

MODE=ensure
for arg in "$@"; do
    case "$arg" in
        --check) MODE=check ;;
        --force) MODE=force ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "setup_arm_emulator: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

log() { echo "[setup_arm_emulator] $*"; }
die() { echo "[setup_arm_emulator] ERROR: $*" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive

# --- privilege helper -----------------------------------------------------------
as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n env DEBIAN_FRONTEND=noninteractive "$@"
    else
        die "need root (or password-less sudo) to run: $*"
    fi
}

APT_UPDATED=0
apt_update() {
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        log "apt-get update ..."
        as_root apt-get update -q >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
}

# "yes" if apt knows an installable candidate version for $1
apt_has_candidate() {
    local cand
    cand="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2; exit}')"
    [[ -n "$cand" && "$cand" != "(none)" ]]
}

# --- (a) qemu-user ------------------------------------------------------------------
find_qemu() {
    local q
    for q in qemu-aarch64-static qemu-aarch64; do
        if command -v "$q" >/dev/null 2>&1; then command -v "$q"; return 0; fi
    done
    return 1
}

spec_hash() {
    printf '%s\n' "spec=$SPEC_VERSION" "${PACKAGES[@]}" | sha256sum | cut -d' ' -f1
}

# Quick functional check of a sysroot: arm64 python starts, numpy 1.24 imports,
# LAPACK-backed numpy.linalg works, stdlib extension modules load.
verify_sysroot() {
    local root="$1" qemu="$2"
    [[ -x "$root/usr/bin/python3.11" ]] || return 1
    env -i PATH=/usr/bin:/bin HOME="${HOME:-/root}" \
        "$qemu" -L "$root" \
        -E LD_LIBRARY_PATH=/usr/lib/aarch64-linux-gnu/blas:/usr/lib/aarch64-linux-gnu/lapack \
        -E PYTHONPATH="$root/usr/lib/python3/dist-packages" \
        -E PYTHONNOUSERSITE=1 \
        "$root/usr/bin/python3.11" -c '
import platform, sys
assert platform.machine() == "aarch64", platform.machine()
import ctypes, ssl, hashlib, sqlite3, lzma, bz2, zlib, decimal, uuid, json, threading
import numpy as np
assert np.__version__.startswith("1.24"), np.__version__
a = np.arange(9, dtype=np.float64).reshape(3, 3) + np.eye(3)
x = np.linalg.solve(a, np.ones(3))
assert np.allclose(a @ x, 1.0)
print("python", platform.python_version(), platform.machine(), "numpy", np.__version__)
'
}

check_only() {
    local qemu
    qemu="$(find_qemu)" || { log "not ready: qemu-aarch64(-static) not found"; exit 1; }
    [[ -f "$SYSROOT/$MARKER_NAME" && "$(cat "$SYSROOT/$MARKER_NAME")" == "$(spec_hash)" ]] \
        || { log "not ready: no complete sysroot at $SYSROOT"; exit 1; }
    verify_sysroot "$SYSROOT" "$qemu" >/dev/null 2>&1 \
        || { log "not ready: sysroot at $SYSROOT fails its check"; exit 1; }
    log "ready: qemu=$qemu sysroot=$SYSROOT"
    exit 0
}

[[ "$MODE" == check ]] && check_only

[[ "$(uname -m)" == x86_64 || "$(uname -m)" == aarch64 ]] || log "warning: untested host architecture $(uname -m)"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script supports Debian/Ubuntu hosts only"

if QEMU="$(find_qemu)"; then
    log "qemu: $QEMU (already installed)"
else
    log "qemu-aarch64 not found; installing qemu-user-static via apt-get"
    apt_has_candidate qemu-user-static || apt_update
    as_root apt-get install -y -q --no-install-recommends qemu-user-static >/dev/null \
        || { apt_update; as_root apt-get install -y -q --no-install-recommends qemu-user-static >/dev/null; } \
        || die "could not install qemu-user-static with apt-get"
    QEMU="$(find_qemu)" || die "qemu-user-static installed but no qemu-aarch64(-static) on PATH"
    log "qemu: $QEMU (installed)"
fi

# --- (b) arm64 sysroot -------------------------------------------------------------
HASH="$(spec_hash)"
# Serialise concurrent runs (parallel CI jobs sharing one cache).
mkdir -p "$(dirname "$SYSROOT")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$(dirname "$SYSROOT")/.$(basename "$SYSROOT").lock"
    flock 9
fi
if [[ "$MODE" != force && -f "$SYSROOT/$MARKER_NAME" ]]; then
    if [[ "$(cat "$SYSROOT/$MARKER_NAME")" == "$HASH" ]]; then
        if out="$(verify_sysroot "$SYSROOT" "$QEMU" 2>&1)"; then
            log "sysroot: $SYSROOT (cached; $out)"
            log "done"
            exit 0
        fi
        log "cached sysroot at $SYSROOT fails its check, rebuilding:"
        printf '%s\n' "$out" | sed 's/^/    /' | tail -n 15
    else
        log "cached sysroot at $SYSROOT was built from another package list, rebuilding"
    fi
fi

if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    log "dpkg --add-architecture arm64"
    as_root dpkg --add-architecture arm64 || die "dpkg --add-architecture arm64 failed"
    apt_update
elif ! apt_has_candidate libc6:arm64 || ! apt_has_candidate python3-numpy:arm64; then
    apt_update
fi
apt_has_candidate python3-numpy:arm64 \
    || die "apt has no python3-numpy:arm64 candidate (are Debian bookworm 'main' sources configured for arm64?)"

WORK="$(dirname "$SYSROOT")/.arm64-sysroot-build.$$"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$WORK/debs" "$WORK/root"

ARM_PKGS=()
for p in "${PACKAGES[@]}"; do ARM_PKGS+=("$p:arm64"); done
APT_DL_OPTS=(-q)
# root's $HOME is not readable by the _apt sandbox user; download as root quietly
[[ "$(id -u)" -eq 0 ]] && APT_DL_OPTS+=(-o APT::Sandbox::User=root)

log "downloading ${#ARM_PKGS[@]} arm64 packages ..."
download() { (cd "$WORK/debs" && apt-get download "${APT_DL_OPTS[@]}" "${ARM_PKGS[@]}" >/dev/null); }
if ! download; then
    # stale package lists give 404s: refresh once and retry
    log "download failed; refreshing package lists and retrying"
    APT_UPDATED=0
    apt_update
    download || die "apt-get download of the arm64 packages failed (see messages above)"
fi

log "unpacking into $SYSROOT ..."
for deb in "$WORK"/debs/*.deb; do
    dpkg -x "$deb" "$WORK/root" || die "dpkg -x $deb failed"
done

# Fixups a real install would do through maintainer scripts:
#  * libblas.so.3 / liblapack.so.3 are provided through update-alternatives;
#    point the plain multiarch names at the reference implementations.
LIBDIR="$WORK/root/usr/lib/aarch64-linux-gnu"
ln -sfn blas/libblas.so.3 "$LIBDIR/libblas.so.3"
ln -sfn lapack/liblapack.so.3 "$LIBDIR/liblapack.so.3"
# * /usr/bin/python3 for scripts that use that name inside the emulator
[[ -e "$WORK/root/usr/bin/python3" ]] || ln -s python3.11 "$WORK/root/usr/bin/python3"

( cd "$WORK/debs" && ls -1 *.deb ) > "$WORK/root/.tilec-arm64-packages.txt"

log "checking the new sysroot ..."
out="$(verify_sysroot "$WORK/root" "$QEMU" 2>&1)" || {
    printf '%s\n' "$out" | sed 's/^/    /' | tail -n 30 >&2
    die "the freshly built arm64 sysroot does not run python3.11 + numpy (output above)"
}

# The check ran with the staging path; the sysroot is position independent, so swap it in.
mkdir -p "$(dirname "$SYSROOT")"
rm -rf "$SYSROOT.old"
[[ -e "$SYSROOT" ]] && mv "$SYSROOT" "$SYSROOT.old"
mv "$WORK/root" "$SYSROOT"
rm -rf "$SYSROOT.old"

# Debian packages ship no .pyc (postinst normally byte-compiles). Compile once
# with the arm64 interpreter itself so every later emulated start is fast
# (~0.8 s instead of ~2.5 s for python + numpy) and tests never write into the
# shared sysroot concurrently.
log "byte-compiling the sysroot's python modules under emulation ..."
"$QEMU" -L "$SYSROOT" "$SYSROOT/usr/bin/python3.11" -m compileall -q -j0 \
    -x '/(tests?|idlelib|lib2to3)/' \
    "$SYSROOT/usr/lib/python3.11" "$SYSROOT/usr/lib/python3/dist-packages" >/dev/null 2>&1 \
    || log "warning: byte-compiling some modules failed (harmless; they compile on first import)"

echo "$HASH" > "$SYSROOT/$MARKER_NAME"
log "sysroot: $SYSROOT ($out)"
log "done"
