#!/usr/bin/env bash
# NEON kernel tests on an x86-64 machine: builds rust/src/simd/neon_harness.rs (which
# #[path]-includes the dependency-free kernel files scalar.rs, neon.rs, testgen.rs) for
# aarch64 with Debian's rustc 1.63 and runs it under qemu-user, twice:
#   -cpu max         NEON and NEON+dotprod (sdot) kernels
#   -cpu cortex-a53  a core without dotprod: plain NEON only (detection fallback)
# Both must report every kernel bit-identical to the scalar twins (random + golden data).
#
# Needs (Debian bookworm): dpkg --add-architecture arm64; apt-get install rustc
#   libstd-rust-dev:arm64 gcc-aarch64-linux-gnu qemu-user. Missing packages are installed
#   when running as root (set NEON_TEST_INSTALL=0 to forbid that; then it fails instead).
# Env: NEON_RUSTC (default /usr/bin/rustc), GOLDEN_DIR (default tests/data/golden).
set -euo pipefail
cd "$(dirname "$0")/.."

RUSTC=${NEON_RUSTC:-/usr/bin/rustc}
SYSROOT_LIB=/usr/lib/rustlib/aarch64-unknown-linux-gnu/lib

have_all() {
    [ -x "$RUSTC" ] && [ -d "$SYSROOT_LIB" ] && command -v aarch64-linux-gnu-gcc >/dev/null \
        && command -v qemu-aarch64 >/dev/null
}

if ! have_all; then
    if [ "${NEON_TEST_INSTALL:-1}" != "0" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "neon_test: installing rustc, libstd-rust-dev:arm64, gcc-aarch64-linux-gnu, qemu-user" >&2
        dpkg --add-architecture arm64
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
            rustc libstd-rust-dev:arm64 gcc-aarch64-linux-gnu qemu-user >/dev/null
    fi
    have_all || { echo "neon_test: toolchain missing (see the header of $0)" >&2; exit 2; }
fi

out=target/neon
mkdir -p "$out"
echo "neon_test: $("$RUSTC" --version) -> aarch64-unknown-linux-gnu" >&2
"$RUSTC" --edition 2021 --target aarch64-unknown-linux-gnu -C linker=aarch64-linux-gnu-gcc \
    -C opt-level=2 --test rust/src/simd/neon_harness.rs -o "$out/neon_harness"

# libtest's worker threads hang under qemu-user 7.2: run the tests on one thread.
for cpu in max cortex-a53; do
    echo "neon_test: qemu-aarch64 -cpu $cpu" >&2
    qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu "$cpu" "$out/neon_harness" --test-threads=1
done
