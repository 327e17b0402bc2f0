#!/usr/bin/env bash
# Build the sdist and the Linux x86-64 wheel into dist/ and verify the wheel.
#
# The wheel is abi3 (one file for CPython 3.10+) and manylinux2014 (glibc 2.17+): zig, from PyPI's
# `ziglang`, links it against glibc 2.17's symbols, so no manylinux container is needed. The
# verification fails the script unless the wheel is tagged cp310-abi3 / manylinux2014_x86_64,
# `auditwheel show` agrees with that tag, and the extension needs nothing beyond glibc 2.17
# (libc, libm, libpthread, libdl, libgcc_s, the dynamic loader) and the Python C API.
#
# Tools (maturin, ziglang, auditwheel, twine) live in their own venv under target/, kept between
# runs like cargo's cache; so does the wheel's cargo build (target/x86_64-unknown-linux-gnu/).
# Usage: bash scripts/build_wheels.sh [OUT_DIR]      build into OUT_DIR (default: dist/), verify
#        bash scripts/build_wheels.sh --check WHEEL  only verify WHEEL
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/wheel-tools
target=x86_64-unknown-linux-gnu
glibc_max=2.17
allowed_needed='^(libc\.so\.6|libm\.so\.6|libpthread\.so\.0|libdl\.so\.2|libgcc_s\.so\.1|ld-linux-x86-64\.so\.2)$'

if [[ ! -x $tools/bin/maturin ]]; then
    echo "== build tools into $tools"
    python3 -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet --upgrade pip
fi
"$tools/bin/python" -m pip install --quiet "maturin>=1.9.3,<2" "ziglang>=0.13" "auditwheel>=6" "twine>=6"
export PATH="$PWD/$tools/bin:$PATH"

verify_wheel() {
    local wheel=$1
    fail() {
        echo "error: $wheel: $*" >&2
        exit 1
    }
    echo "== verify $wheel"
    [[ $(basename "$wheel") == iqk_rs-*-cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl ]] ||
        fail "file name lacks the tags cp310-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64"
    unzip -p "$wheel" '*.dist-info/WHEEL' | grep -qx 'Tag: cp310-abi3-manylinux2014_x86_64' ||
        fail "its WHEEL file lacks 'Tag: cp310-abi3-manylinux2014_x86_64'"

    local report
    report=$(auditwheel show "$wheel")
    echo "$report"
    tr -s ' \n' ' ' <<<"$report" |
        grep -q 'is consistent with the following platform tag: "manylinux_2_17_x86_64"' ||
        fail "auditwheel does not place it at manylinux_2_17_x86_64"

    local unpacked so
    unpacked=$(mktemp -d)
    unzip -q "$wheel" 'iqk_rs/_core*' -d "$unpacked"
    so=$(echo "$unpacked"/iqk_rs/_core*.so)
    [[ -f $so ]] || fail "no iqk_rs/_core*.so in the wheel"
    local needed dynsyms
    needed=$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    dynsyms=$(readelf --dyn-syms --wide "$so" | awk '$7 == "UND" && $8 != ""')
    rm -rf "$unpacked"

    local bad_needed newest_glibc other non_glibc
    bad_needed=$(grep -Ev "$allowed_needed" <<<"$needed" || true)
    [[ -z $bad_needed ]] || fail "links libraries outside glibc: $bad_needed"
    newest_glibc=$(grep -o 'GLIBC_[0-9.]*' <<<"$dynsyms" | sed 's/GLIBC_//' | sort -uV | tail -1)
    [[ $(printf '%s\n%s\n' "$newest_glibc" "$glibc_max" | sort -V | tail -1) == "$glibc_max" ]] ||
        fail "needs glibc $newest_glibc (> $glibc_max): $(grep -F "GLIBC_$newest_glibc" <<<"$dynsyms")"
    # Unversioned imports must be the Python C API, or weak (optional: Rust's std probes newer
    # glibc functions such as statx and getrandom at run time).
    other=$(awk '$8 !~ /@/ && $5 != "WEAK" && $8 !~ /^_?Py/ {print $8}' <<<"$dynsyms")
    [[ -z $other ]] || fail "imports symbols from neither glibc nor Python: $other"
    non_glibc=$(grep -o '@[A-Za-z_]*' <<<"$dynsyms" | grep -v '^@GLIBC_$' | sort -u || true)
    [[ -z $non_glibc ]] || fail "imports symbol versions outside glibc: $non_glibc"

    echo "== OK: $(basename "$wheel") ($(du -k "$wheel" | cut -f1) KiB)"
    echo "   needs: $(tr '\n' ' ' <<<"$needed")"
    echo "   newest glibc symbol version: $newest_glibc (limit $glibc_max);" \
        "Python C API imports: $(awk '$8 ~ /^_?Py/' <<<"$dynsyms" | wc -l)"
}

if [[ ${1:-} == --check ]]; then
    verify_wheel "$2"
    exit 0
fi

out=${1:-dist}
mkdir -p "$out"
rm -f "$out"/iqk_rs-*.whl "$out"/iqk_rs-*.tar.gz
echo "== sdist"
maturin sdist --out "$out"
echo "== wheel (zig, manylinux2014, $target)"
maturin build --release --zig --compatibility manylinux2014 --target "$target" --out "$out"

shopt -s nullglob
wheels=("$out"/iqk_rs-*.whl)
sdists=("$out"/iqk_rs-*.tar.gz)
if [[ ${#wheels[@]} -ne 1 || ${#sdists[@]} -ne 1 ]]; then
    echo "error: expected one wheel and one sdist in $out, found: ${wheels[*]} ${sdists[*]}" >&2
    exit 1
fi
echo "== twine check (metadata and README render)"
twine check --strict "${wheels[0]}" "${sdists[0]}"
verify_wheel "${wheels[0]}"
echo "   sdist: $(basename "${sdists[0]}") ($(du -k "${sdists[0]}" | cut -f1) KiB)"
