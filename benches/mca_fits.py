"""Static throughput of the quantizers' batched grid fits (`iqk::fit`), AVX2 against AVX-512,
by llvm-mca (for machines without AVX-512; see benches/mca.py, whose helpers this uses).

The fits dominate the IQ3/IQ4 searches (IQ4_K: about two thirds of its quantization time on
AVX2). Each fit function's hot loop takes one block value against every candidate scale (32
candidates, both signs, as the IQK searches call it); the table gives llvm-mca's cycles per
value·32 candidates for each grid size on Zen 3 (AVX2 only), Zen 4 and Sapphire Rapids.

llvm-mca models one core with warm caches and perfect branch prediction: compare the two
paths with it, not absolute speeds. `fit_path` times both at run time and keeps the faster.

Usage: python3 benches/mca_fits.py [--asm FILE.s]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mca  # noqa: E402  (the sibling script's helpers)

GRIDS = {4: "IQ2 (4 values)", 8: "IQ3 (8 values)", 16: "IQ4 (16 values)"}
# Candidate groups per call for 32 candidates: 8 lanes per group on AVX2, 16 on AVX-512.
PATHS = {"avx2": 4, "avx512": 2}


def fit_loop(funcs: dict[str, list[str]], names: dict[str, str], path: str, n: int):
    pattern = rf"iqk::fit::{path}::fit_many_n::<{n}, true, {PATHS[path]}>$"
    mangled = mca.find(names, pattern)
    if mangled is None:
        return None
    return element_loop(funcs[mangled])


def element_loop(lines: list[str]) -> list[str] | None:
    """The innermost call-free loop with the most packed-float instructions: the loop over
    block values (the others copy candidates in and results out)."""
    best = None
    for _, _, body in mca.innermost_loops(lines, mca.loop_edges(lines)):
        floats = sum(1 for x in body if re.match(r"v\w+ps\b", x))
        if best is None or floats > best[0]:
            best = (floats, body)
    return best[1] if best else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--asm", type=Path, help="use this assembly of the crate, no build")
    args = parser.parse_args()
    for tool in [mca.MCA, mca.CXXFILT]:
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not found (Debian: apt-get install llvm-19)")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        asm = args.asm or mca.build_our_asm(mca.ROOT / "target/mca")
        funcs = mca.split_functions(asm.read_text())
        names = mca.demangle(list(funcs))
        print("cycles per block value x 32 candidate scales (both signs), llvm-mca-19")
        print(f"{'grid':16} {'path':7} {'insns':>6}" + "".join(f" {c:>15}" for c in mca.CPUS))
        for n, grid in GRIDS.items():
            per_cpu: dict[str, dict[str, float | None]] = {}
            for path in PATHS:
                lines = fit_loop(funcs, names, path, n)
                if lines is None:
                    print(f"{grid:16} {path:7} (loop not found)")
                    continue
                row = f"{grid:16} {path:7} {len(lines):6}"
                for cpu in mca.CPUS:
                    c = None
                    if path != "avx512" or cpu in mca.AVX512_CPUS:
                        c = mca.cycles_per_iteration(lines, cpu, scratch)
                    per_cpu.setdefault(cpu, {})[path] = c
                    row += f" {c:15.1f}" if c is not None else f" {'-':>15}"
                print(row)
            ratios = [
                f"{cpu} {v['avx2'] / v['avx512']:.2f}x"
                for cpu, v in per_cpu.items()
                if v.get("avx2") and v.get("avx512")
            ]
            if ratios:
                print(f"{'':16} avx512 speed-up: {', '.join(ratios)}")


if __name__ == "__main__":
    main()
