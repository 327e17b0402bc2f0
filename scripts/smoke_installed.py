"""Smoke-test an installed iqk-rs: the import, the version, the SIMD path, the Quickstart's job.

Usage: python scripts/smoke_installed.py [--simd "avx2 avx512"] [--out OUT.gguf] MODEL.gguf

Fails unless `iqk_rs` is imported from this interpreter's site-packages (not from a source tree),
`iqk_rs.__version__` is the installed distribution's version and `iqk --version` prints it,
`simd_path()` is one of --simd's paths when given, and `iqk quantize MODEL out IQ4_K` succeeds.
Runs on every platform the release workflow builds for (plain Python, no shell).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an F16 GGUF model to quantize")
    parser.add_argument("--simd", default="", help="space-separated paths simd_path() may return")
    parser.add_argument("--out", type=Path, help="keep the quantized model here")
    args = parser.parse_args()

    import iqk_rs

    site_dirs = {Path(sysconfig.get_path(key)).resolve() for key in ("platlib", "purelib")}
    location = Path(iqk_rs.__file__).resolve()
    if not any(location.is_relative_to(site) for site in site_dirs):
        sys.exit(f"error: iqk_rs is imported from {location}, not from site-packages")
    installed = importlib.metadata.version("iqk-rs")
    if iqk_rs.__version__ != installed:
        sys.exit(f"error: iqk_rs.__version__ is {iqk_rs.__version__}, metadata says {installed}")
    simd = iqk_rs.simd_path()
    print(f"iqk_rs {installed} from {location.parent}; simd_path() = {simd}")
    if args.simd and simd not in args.simd.split():
        sys.exit(f"error: simd_path() is {simd}, expected one of: {args.simd}")

    iqk = shutil.which("iqk", path=sysconfig.get_path("scripts"))
    if iqk is None:
        sys.exit(f"error: no iqk command in {sysconfig.get_path('scripts')}")
    version = subprocess.run([iqk, "--version"], capture_output=True, text=True, check=True)
    if version.stdout.strip() != f"iqk {installed}":
        sys.exit(f"error: iqk --version printed {version.stdout.strip()!r}")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "tiny-IQ4_K.gguf"
        subprocess.run([iqk, "quantize", str(args.model.resolve()), str(out), "IQ4_K"], check=True)
        print(f"iqk quantize {args.model.name} {out.name} IQ4_K: {out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
