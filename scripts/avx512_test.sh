#!/usr/bin/env bash
# AVX-512 kernel tests on a machine without AVX-512: runs tests/simd_kernels.rs (every path the
# CPU has against the scalar twins, on random and golden data) inside Bochs, whose "tigerlake"
# CPU model emulates AVX-512 F/BW/VL/VNNI. qemu's TCG has no AVX-512, Bochs does.
#
# The guest is Debian's kernel with an initramfs holding a static test binary, the golden data
# and a small init (scripts/avx512_vm/init.c) that runs the tests and powers off. It boots from
# an ISO (isolinux) and talks through the emulated serial port. Kernel options work around
# Bochs 2.7 (each one was needed to get Debian's 6.1 kernel to run the tests):
#   clearcpuid=pku,xsaves,xsavec: its XSAVE leaves are wrong for PKRU and for the compacted
#     format, and the kernel then turns XSAVE (and AVX) off; without them it uses the standard
#     layout with the AVX-512 state enabled.
#   clearcpuid=fsrm: with "fast short rep movsb" advertised, the kernel's per-CPU data broke at
#     its first context switch (a page-fault loop). Found by bisecting the model's features.
#   tsc_early_khz=25000: its TSC counts instructions (ips), while the kernel trusts the model's
#     2.4 GHz; unmatched, every kernel delay takes minutes.
#
# Needs (Debian bookworm): bochs bochs-term bochsbios vgabios isolinux syslinux-common
#   genisoimage cpio, a static libc (libc6-dev), and the linux-image-amd64 package file (only
#   unpacked, never installed). Missing packages are installed when running as root (set
#   AVX512_TEST_INSTALL=0 to forbid that; then it fails instead).
# Env: AVX512_TEST_TIMEOUT (seconds, default 900; a run takes about 5 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

work=target/avx512_vm
mkdir -p "$work"
work=$(cd "$work" && pwd)
packages=(bochs bochs-term bochsbios vgabios isolinux syslinux-common genisoimage cpio libc6-dev)

have_all() {
    command -v bochs >/dev/null && command -v genisoimage >/dev/null && command -v cpio >/dev/null \
        && [ -f /usr/lib/ISOLINUX/isolinux.bin ] && [ -f /usr/lib/syslinux/modules/bios/ldlinux.c32 ] \
        && [ -f /usr/share/bochs/BIOS-bochs-latest ] && [ -f /usr/share/vgabios/vgabios.bin ] \
        && [ -d /usr/lib/x86_64-linux-gnu/bochs/plugins ] \
        && ls /usr/lib/x86_64-linux-gnu/bochs/plugins/libbx_term* >/dev/null 2>&1
}

if ! have_all; then
    if [ "${AVX512_TEST_INSTALL:-1}" != "0" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "avx512_test: installing ${packages[*]}" >&2
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${packages[@]}" >/dev/null
    fi
    have_all || { echo "avx512_test: tools missing (see the header of $0)" >&2; exit 2; }
fi

# The kernel: the package linux-image-amd64 currently points at, unpacked into $work.
if [ ! -f "$work/vmlinuz" ]; then
    resolve() {
        apt-cache depends linux-image-amd64 2>/dev/null \
            | awk '/Depends: linux-image-[0-9]/ && !found {print $2; found = 1}'
    }
    image=$(resolve)
    if [ -z "$image" ] && [ "$(id -u)" = 0 ]; then
        apt-get update -q >/dev/null
        image=$(resolve)
    fi
    [ -n "$image" ] || { echo "avx512_test: cannot resolve linux-image-amd64" >&2; exit 2; }
    echo "avx512_test: kernel $image" >&2
    rm -rf "$work/kernel" && mkdir -p "$work/kernel"
    (cd "$work/kernel" && apt-get download -q "$image" >/dev/null 2>&1 && dpkg-deb -x ./*.deb unpacked)
    cp "$work"/kernel/unpacked/boot/vmlinuz-* "$work/vmlinuz"
fi

# The test binary, static so the initramfs needs nothing else. An explicit --target keeps
# RUSTFLAGS off the host build (and its artifacts apart from it).
echo "avx512_test: building tests/simd_kernels.rs (static)" >&2
test_bin=$(RUSTFLAGS="-C target-feature=+crt-static" cargo test --release --test simd_kernels \
    --no-run --target x86_64-unknown-linux-gnu --message-format=json \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "simd_kernels":
        print(m["executable"])')
[ -x "$test_bin" ] || { echo "avx512_test: test build failed" >&2; exit 1; }

root="$work/initramfs"
rm -rf "$root" && mkdir -p "$root"
gcc -O2 -static scripts/avx512_vm/init.c -o "$root/init"
cp "$test_bin" "$root/simd_kernels"
# The tests read the golden data from the path they were built in.
mkdir -p "$root$PWD/tests/data"
cp -r tests/data/golden "$root$PWD/tests/data/"

iso="$work/iso"
rm -rf "$iso" && mkdir -p "$iso/isolinux"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$iso/initrd.gz"
cp "$work/vmlinuz" "$iso/vmlinuz"
cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 "$iso/isolinux/"
cat >"$iso/isolinux/isolinux.cfg" <<'EOF'
DEFAULT test
PROMPT 0
TIMEOUT 0
LABEL test
  KERNEL /vmlinuz
  APPEND initrd=/initrd.gz console=ttyS0 loglevel=4 nokaslr mitigations=off clearcpuid=pku,xsaves,xsavec,fsrm tsc=reliable tsc_early_khz=25000 lpj=1000000
EOF
genisoimage -quiet -o "$work/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
    -no-emul-boot -boot-load-size 4 -boot-info-table "$iso"

cat >"$work/bochsrc" <<EOF
cpu: model=tigerlake, ips=25000000
memory: guest=1024, host=1024
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=/usr/share/vgabios/vgabios.bin
display_library: term
ata0-master: type=cdrom, path=$work/boot.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=$work/serial.txt
speaker: enabled=0
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
log: $work/bochs.log
panic: action=fatal
error: action=ignore
info: action=ignore
EOF
# Debian's bochs has its debugger built in and stops at the first instruction: "c" continues.
echo c >"$work/debugger.rc"

rm -f "$work/serial.txt"
echo "avx512_test: booting the emulated AVX-512 machine (several minutes)" >&2
# The term display needs a terminal: `script` gives it one.
# Its own session, so that the whole tree (script, shell, bochs) is stopped at the end.
TERM=xterm setsid script -qec "bochs -q -f $work/bochsrc -rc $work/debugger.rc" /dev/null \
    >"$work/bochs.out" 2>&1 &
bochs_pid=$!
trap 'kill -- -$bochs_pid 2>/dev/null || true' EXIT

deadline=$((SECONDS + ${AVX512_TEST_TIMEOUT:-900}))
status=""
while [ $SECONDS -lt $deadline ]; do
    if [ -f "$work/serial.txt" ]; then
        status=$(sed -n 's/^avx512_vm: exit status \([0-9]*\).*/\1/p' "$work/serial.txt" | head -n1)
        [ -n "$status" ] && break
    fi
    kill -0 $bochs_pid 2>/dev/null || break
    sleep 5
done

# The guest's own report: CPU flags and the test output.
sed -n '/^avx512_vm:/,$p' "$work/serial.txt" 2>/dev/null | tr -d '\r' || true
if [ -z "$status" ]; then
    echo "avx512_test: no result from the guest (timeout or crash); tail of its console:" >&2
    tail -n 30 "$work/serial.txt" 2>/dev/null | tr -d '\r' >&2 || true
    exit 1
fi
grep -q '^avx512_vm: avx512f=1 avx512bw=1 avx512vl=1 avx512vnni=1' "$work/serial.txt" \
    || { echo "avx512_test: the guest CPU lacks AVX-512 F/BW/VL/VNNI" >&2; exit 1; }
grep -q 'checking paths \[Avx2, Avx512\]' "$work/serial.txt" \
    || { echo "avx512_test: the tests did not run the avx512 path" >&2; exit 1; }
[ "$status" = 0 ] || { echo "avx512_test: tests failed in the guest (exit $status)" >&2; exit 1; }
echo "avx512_test: AVX-512 kernels pass under Bochs" >&2
