#!/usr/bin/env bash
# CI step: the release artifacts install and work where users put them.
#
# 1. scripts/build_wheels.sh builds and verifies the manylinux2014 wheel and the sdist (dist/).
# 2. The wheel goes into a fresh venv with no cargo or rustc on PATH (binary-only install);
#    from a temporary directory, so that `import iqk_rs` can only find site-packages,
#    scripts/smoke_installed.py runs the Quickstart's job (`iqk quantize` on the bundled model),
#    then a subset of the tests runs, copied out of the source tree, with one added test that
#    asserts the import came from site-packages.
# 3. The sdist goes into another fresh venv (this build needs Rust; cargo reuses target/release/,
#    where `pip install .` builds); the installed package must hold the same files as the wheel's
#    (stubs, py.typed, licenses), the sdist every tracked file, and its `iqk quantize` must write
#    the wheel's bytes.
# 4. The release workflow passes a GitHub Actions schema check.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
started=$SECONDS

bash scripts/build_wheels.sh dist
wheel=$(echo "$repo"/dist/iqk_rs-*.whl)
sdist=$(echo "$repo"/dist/iqk_rs-*.tar.gz)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
venvs=$work/venvs
unset PYTHONPATH VIRTUAL_ENV
# Rust hidden for the wheel's install: cargo, rustc and rustup shadowed by stand-ins that
# fail (dropping the directories that hold them from PATH could drop /usr/bin, where
# Debian's rustc may live, and with it the shell's own tools).
no_rust=$work/no-rust
mkdir -p "$no_rust"
for tool in cargo rustc rustup; do
    printf '#!/bin/sh\necho "%s: hidden (the wheel must install without Rust)" >&2\nexit 127\n' \
        "$tool" >"$no_rust/$tool"
    chmod +x "$no_rust/$tool"
done

# The package's installed modules, stubs and data, and its license files, relative to
# site-packages (bytecode caches left out).
installed_files() {
    "$1/bin/python" - <<'EOF'
import importlib.metadata

files = importlib.metadata.distribution("iqk-rs").files
for path in sorted(str(f) for f in files if "__pycache__" not in f.parts):
    if path.startswith("iqk_rs/") or ".dist-info/licenses/" in path:
        print(path)
EOF
}

echo "== [$((SECONDS - started)) s] wheel: fresh venv, no Rust on PATH"
python3 -m venv "$venvs/wheel"
(
    export PATH="$venvs/wheel/bin:$no_rust:$PATH"
    if cargo --version 2>/dev/null || rustc --version 2>/dev/null; then
        echo "error: Rust is still usable" >&2
        exit 1
    fi
    cd "$work"
    python -m pip install --quiet --only-binary=:all: "$wheel" pytest
    python "$repo/scripts/smoke_installed.py" --out "$work/tiny-IQ4_K.gguf" \
        "$repo/tests/data/tiny-llama-f16.gguf"
    iqk info --no-tensors --no-metadata "$work/tiny-IQ4_K.gguf"

    mkdir "$work/tests"
    cp -r "$repo"/tests/*.py "$repo/tests/data" "$work/tests/"
    cat >"$work/tests/test_installed_wheel.py" <<'EOF'
import sysconfig
from pathlib import Path

import iqk_rs


def test_iqk_rs_is_imported_from_site_packages():
    site = Path(sysconfig.get_paths()["platlib"]).resolve()
    assert Path(iqk_rs.__file__).resolve().is_relative_to(site), iqk_rs.__file__
EOF
    echo "== [$((SECONDS - started)) s] tests against the installed wheel"
    # The golden, API (every SIMD path this CPU has against scalar) and version tests.
    python -m pytest -q -p no:cacheprovider tests/test_installed_wheel.py tests/test_golden.py \
        tests/test_api.py tests/test_companion.py tests/test_packaging.py
)
installed_files "$venvs/wheel" >"$work/wheel-files.txt"

echo "== [$((SECONDS - started)) s] sdist: fresh venv, built with Rust"
python3 -m venv "$venvs/sdist"
# Only the dependencies are reused: an sdist's files carry its build time, older than an
# earlier build's artifacts of this crate, which cargo would then take as up to date.
cargo clean --quiet --release -p iqk-rs --target-dir "$repo/target"
CARGO_TARGET_DIR="$repo/target" "$venvs/sdist/bin/python" -m pip install --quiet "$sdist"
installed_files "$venvs/sdist" >"$work/sdist-files.txt"
diff -u "$work/wheel-files.txt" "$work/sdist-files.txt" || {
    echo "error: the sdist installs other files than the wheel" >&2
    exit 1
}
for pattern in iqk_rs/py.typed iqk_rs/_core.pyi iqk_rs/types.pyi 'iqk_rs/_core\..*so' \
    '.*\.dist-info/licenses/LICENSE' '.*\.dist-info/licenses/NOTICE'; do
    grep -qx "$pattern" "$work/sdist-files.txt" || {
        echo "error: nothing installed from the sdist matches $pattern" >&2
        exit 1
    }
done
if git rev-parse --git-dir >/dev/null 2>&1; then
    tar -tzf "$sdist" | sed 's|^[^/]*/||' | sort >"$work/sdist-tar.txt"
    missing=$(git ls-files | sort | comm -23 - "$work/sdist-tar.txt")
    [[ -z $missing ]] || {
        echo "error: the sdist lacks tracked files: $missing" >&2
        exit 1
    }
fi
(
    cd "$work"
    "$venvs/sdist/bin/python" "$repo/scripts/smoke_installed.py" \
        --out "$work/tiny-IQ4_K-sdist.gguf" "$repo/tests/data/tiny-llama-f16.gguf"
    cmp "$work/tiny-IQ4_K.gguf" "$work/tiny-IQ4_K-sdist.gguf"
)

echo "== [$((SECONDS - started)) s] release workflow: GitHub Actions schema"
target/wheel-tools/bin/python -m pip install --quiet "check-jsonschema>=0.28"
target/wheel-tools/bin/check-jsonschema --builtin-schema vendor.github-workflows \
    .github/workflows/release.yml

echo "== wheel smoke OK: $(wc -l <"$work/wheel-files.txt") installed files, same from the sdist," \
    "quantized model identical; $((SECONDS - started)) s"
