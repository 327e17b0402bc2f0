"""Static throughput of the dot-product kernels' hot loops, by llvm-mca.

For machines without AVX-512: compiles this crate to assembly, finds each kernel's hot loop
(the largest innermost loop of its function without a call), and has `llvm-mca-19` estimate
its cycles per iteration on Zen 3 (AVX2 only), Zen 4 and Sapphire Rapids. The work of an
iteration is counted from its byte-product instructions (`vpmaddubsw`, `vpdpbusd`: 16, 32 or 64
products each by register width), so every kernel is reported in cycles per 256 weights times
activation rows, whatever it unrolls.

Kernels: `row` is the single-row / multi-row kernel (one activation row; on AVX2 the multi-row
loop, four superblocks per iteration), `tile` the batched kernel on several activation rows
(AVX2's `group::<N, true>`, for activations without -128; AVX-512's tile_<type>). AVX2's
tile inlines its variants for 1..8 activation rows into `tile_<type>`, and the larger ones
compile to nested loops (no single loop body for llvm-mca), so the innermost loop with the most
products stands in (`prod/it` / 256 activation rows, 3 to 7). AVX-512's tile loops over its 8
activation rows at run time inside the superblock loop (one loop for the rows' sums; their f64
folds are one vector): its figure is (superblock loop, with the row loop's body once, + 7 × the
row loop) / 8.

With `--ik SRC` (an ik_llama.cpp checkout), ik's kernels for the same types are compiled the
same way into a temporary directory (g++ -O3; `-march=znver3` for its AVX2 build,
`-march=icelake-server -mtune=znver3` for its AVX-512 one, as GCC 12 has no `znver4`) and
reported next to ours: `mul_mat_*<Dequantizer, 1>` (or `_AVX512_1`) for `row`, and for `tile`
`<Dequantizer, N>` with as many activation rows as our measured tile loop (ik's loops nest at
times too: `prod/it` says what was measured).

llvm-mca models one core with warm caches and perfect branch prediction, and nothing of the
loop's set-up: compare kernels with it, not absolute speeds, and check on hardware. Measured on
a Sapphire Rapids machine (cargo bench --bench kernels), it got the AVX-512 kernels wrong both
ways: it puts the lane-major tile (four dependent `vpdpbusd` and a `vpmulld` per activation row)
at 2.5-3.4x the AVX2 tile's cycles, where it takes 0.70-0.85x the AVX2 tile's time, and the
single-row kernel at 0.8-1.0x, where it takes 1.1-1.3x; a long dependency chain inside a short
loop body seems to be what it models worst.

Usage: python3 benches/mca.py [--ik /work/ik/src] [--asm FILE.s] [--types iq2_k,iq4_ks]
Needs: cargo, llvm-mca-19 and llvm-cxxfilt-19 (Debian: apt-get install llvm-19), g++ for --ik.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TYPES = ["iq2_k", "iq3_k", "iq4_k", "iq2_ks", "iq3_ks", "iq4_ks", "iq5_ks"]
CPUS = ["znver3", "znver4", "sapphirerapids"]
AVX512_CPUS = {"znver4", "sapphirerapids"}
MCA = "llvm-mca-19"
CXXFILT = "llvm-cxxfilt-19"
ITERATIONS = 200
# Byte products per instruction, by register width.
PRODUCT_OPS = re.compile(r"^\s*(vpmaddubsw|vpdpbusds?)\b")
WIDTH = {"zmm": 64, "ymm": 32, "xmm": 16}


@dataclass
class Loop:
    lines: list[str]  # instructions only
    products: int  # byte products per iteration
    # The smallest loop around it, when that is where a decoded superblock is shared by the
    # activation rows this loop runs over (AVX-512's tile): see `cycles_per_256`.
    parent: list[str] | None = None
    # The bodies of every innermost loop inside `parent` (this one among them).
    siblings: list[list[str]] | None = None


def build_our_asm(target_dir: Path) -> Path:
    """The crate's release assembly (one codegen unit), v0-mangled so that const generics
    (`group::<8, true>`) show in the names."""
    env = dict(os.environ, CARGO_TARGET_DIR=str(target_dir))
    cmd = ["cargo", "rustc", "--release", "--lib", "--crate-type", "rlib", "--"]
    cmd += ["--emit", "asm", "-C", "symbol-mangling-version=v0"]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    found = sorted(glob.glob(str(target_dir / "release/deps/iqk_rs-*.s")), key=os.path.getmtime)
    if not found:
        sys.exit("error: cargo rustc produced no iqk_rs-*.s")
    return Path(found[-1])


def build_ik_asm(src: Path, out: Path, flags: list[str]) -> Path:
    iqk = src / "ggml/src/iqk"
    cmd = ["g++", "-std=c++17", "-O3", *flags, "-S", str(iqk / "iqk_gemm_iqk_quants.cpp")]
    cmd += ["-I", str(src / "ggml/include"), "-I", str(src / "ggml/src"), "-I", str(iqk)]
    subprocess.run([*cmd, "-o", str(out)], check=True)
    return out


def split_functions(asm: str) -> dict[str, list[str]]:
    """Mangled name -> its lines, for every global function (`_R…` Rust v0, `_Z…` C++)."""
    funcs: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in asm.splitlines():
        m = re.match(r"^(_[RZ]\w+):", line)
        if m:
            current = funcs.setdefault(m.group(1), [])
            continue
        if current is not None:
            if line.startswith(".Lfunc_end") or re.match(r"^\s*\.cfi_endproc", line):
                current = None
            else:
                current.append(line)
    return funcs


def demangle(names: list[str]) -> dict[str, str]:
    run = subprocess.run(
        [CXXFILT], input="\n".join(names), capture_output=True, text=True, check=True
    )
    # Rust v0 names carry crate disambiguators (`iqk_rs[1a2b]::`); they are noise here.
    out = [re.sub(r"\[[0-9a-f]+\]", "", d) for d in run.stdout.splitlines()]
    return dict(zip(names, out, strict=True))


def is_instruction(line: str) -> bool:
    s = line.strip()
    return bool(s) and not s.startswith((".", "#", "//", ";")) and not s.endswith(":")


def count_products(lines: list[str]) -> int:
    """Byte products of these instructions (by register width)."""
    products = 0
    for x in lines:
        if PRODUCT_OPS.match(x.strip()):
            regs = re.findall(r"%(zmm|ymm|xmm)\d+", x)
            products += WIDTH[regs[-1]] if regs else 0
    return products


def loop_edges(lines: list[str]) -> list[tuple[int, int]]:
    """Every loop of a function as (first line, backward jump's line): a jump to a label above."""
    labels = {}
    for i, line in enumerate(lines):
        m = re.match(r"^(\.?L\w+):", line)
        if m:
            labels[m.group(1)] = i
    edges = []
    for j, line in enumerate(lines):
        m = re.match(r"^\s*j\w+\s+(\.?L\w+)\s*$", line)
        if m and labels.get(m.group(1), j + 1) <= j:
            edges.append((labels[m.group(1)], j))
    return edges


def innermost_loops(lines: list[str], edges: list[tuple[int, int]]):
    """(first line, last line, instructions) of each loop in `edges` with no other loop inside
    and no call."""
    for i, j in edges:
        if any((i2, j2) != (i, j) and i <= i2 and j2 <= j for i2, j2 in edges):
            continue  # not innermost
        body = [x.strip() for x in lines[i : j + 1] if is_instruction(x)]
        if not any(x.startswith("call") for x in body):
            yield i, j, body


def hot_loop(lines: list[str]) -> Loop | None:
    """The innermost loop without a call (a backward jump to a label, with no other backward
    jump inside its range) that does the most byte products per iteration, and of those the
    one with the fewest instructions (AVX2's tile inlines its variants for 1..8 activation rows
    with and without -128 in them; Q8_K as `quantize_row` makes it has none, the cheaper
    variant)."""
    edges = loop_edges(lines)
    best: Loop | None = None
    for i, j, body in innermost_loops(lines, edges):
        products = count_products(body)
        if best is None or (products, -len(body)) > (best.products, -len(best.lines)):
            around = [(i2, j2) for i2, j2 in edges if i2 <= i and j <= j2 and (i2, j2) != (i, j)]
            parent = siblings = None
            if around:
                i2, j2 = min(around, key=lambda e: e[1] - e[0])
                inner = [
                    (a, b)
                    for a, b in edges
                    if i2 <= a
                    and b <= j2
                    and (a, b) != (i2, j2)
                    and not any((c, e) != (a, b) and a <= c and e <= b for c, e in edges)
                ]
                # Other loops with products are variants of this one that the same superblock
                # does not run (AVX-512's tile: with and without -128 in the activations).
                variants = [
                    (a, b)
                    for a, b in inner
                    if (a, b) != (i, j) and count_products(lines[a : b + 1])
                ]
                kept = [
                    x.strip()
                    for n, x in enumerate(lines[i2 : j2 + 1], start=i2)
                    if is_instruction(x) and not any(a <= n <= b for a, b in variants)
                ]
                parent = kept
                siblings = [
                    [x.strip() for x in lines[a : b + 1] if is_instruction(x)]
                    for a, b in inner
                    if (a, b) not in variants
                ]
            best = Loop(body, products, parent, siblings)
    return best


def cycles_per_256(loop: Loop, cpu: str, scratch: Path, shared_by: int) -> float | None:
    """Cycles per 256 products. With `shared_by` > 1 the loop runs over that many activation
    rows inside its parent, the superblock loop, as do the other innermost loops there (the
    per-row folds): llvm-mca times the parent's body, which holds each of them once, and each
    of them, so one superblock costs parent + (n - 1) · Σ inner loops, for n · `products`."""
    c = cycles_per_iteration(loop.lines, cpu, scratch)
    if c is None or not loop.products:
        return None
    if shared_by > 1:
        if loop.parent is None or not loop.siblings:
            return None
        parts = [cycles_per_iteration(b, cpu, scratch) for b in [loop.parent, *loop.siblings]]
        if any(p is None for p in parts):
            return None
        c = (parts[0] + (shared_by - 1) * sum(parts[1:])) / shared_by
    return c * 256 / loop.products


def cycles_per_iteration(lines: list[str], cpu: str, scratch: Path) -> float | None:
    path = scratch / "loop.s"
    path.write_text("\n".join(lines) + "\n")
    run = subprocess.run(
        [MCA, f"-mcpu={cpu}", f"-iterations={ITERATIONS}", str(path)],
        capture_output=True,
        text=True,
    )
    m = re.search(r"Total Cycles:\s+(\d+)", run.stdout)
    if run.returncode != 0 or not m:
        return None  # e.g. an instruction the model lacks
    return int(m.group(1)) / ITERATIONS


def find(demangled: dict[str, str], *patterns: str) -> str | None:
    """The mangled name of the first pattern any function matches."""
    for pattern in patterns:
        for mangled, name in demangled.items():
            if re.search(pattern, name):
                return mangled
    return None


def our_kernels(t: str) -> dict[tuple[str, str], list[str]]:
    rt = t.replace("_", "")
    kind = rt.capitalize()  # the AVX2 kernels are generic over a kind type (Iq4ks, ...)
    return {
        ("row", "avx2"): [rf"simd::avx2::rows::<\S*::{kind}>$"],
        ("row", "avx512"): [rf"simd::avx512::rows_{rt}$"],
        ("tile", "avx2"): [rf"simd::avx2::tile::<\S*::{kind}>$"],
        ("tile", "avx512"): [rf"simd::avx512::tile_{rt}$"],
    }


def ik_kernels(t: str, tile_rows: int) -> dict[tuple[str, str], list[str]]:
    deq = r"\(anonymous namespace\)::Dequantizer" + t.upper().replace("_", "")
    return {
        ("row", ""): [rf"mul_mat_\w+_1<{deq}>\(", rf"mul_mat_\w+<{deq}, 1>\("],
        ("tile", ""): [rf"mul_mat_\w+<{deq}, {tile_rows}>\("],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ik", type=Path, help="ik_llama.cpp source tree, to compare with")
    parser.add_argument("--asm", type=Path, help="use this assembly of the crate, no build")
    parser.add_argument("--types", default=",".join(TYPES), help="comma-separated types")
    args = parser.parse_args()
    for tool in [MCA, CXXFILT] + (["g++"] if args.ik else []):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not found (Debian: apt-get install llvm-19 g++)")
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    unknown = sorted(set(types) - set(TYPES))
    if unknown:
        sys.exit(f"error: unknown types {unknown}; known: {', '.join(TYPES)}")

    with tempfile.TemporaryDirectory(prefix="iqk-mca-") as tmp:
        scratch = Path(tmp)
        ours_asm = args.asm or build_our_asm(ROOT / "target/mca")
        sources = {"ours": split_functions(ours_asm.read_text())}
        if args.ik:
            for path, flags in [
                ("avx2", ["-march=znver3"]),
                ("avx512", ["-march=icelake-server", "-mtune=znver3"]),
            ]:
                asm = build_ik_asm(args.ik, scratch / f"ik_{path}.s", flags)
                sources[f"ik-{path}"] = split_functions(asm.read_text())
        names = demangle(sorted({n for funcs in sources.values() for n in funcs}))

        header = f"{'type':7} {'kernel':5} {'path':11} {'instr':>5} {'prod/it':>7}"
        header += "".join(f" {cpu:>14}" for cpu in CPUS)
        print(f"cycles per 256 weights x activation rows (llvm-mca-19, {ITERATIONS} iterations)")
        print(header)
        ratios: list[str] = []
        for t in types:
            rows: list[tuple[str, str, Loop | None]] = []
            for (kernel, path), pats in our_kernels(t).items():
                funcs = sources["ours"]
                mangled = find({n: names[n] for n in funcs}, *pats)
                rows.append((kernel, f"ours-{path}", hot_loop(funcs[mangled]) if mangled else None))
            # ik's tile with as many activation rows as the loop of ours that was measured.
            ours_tile = next((r[2] for r in rows if r[:2] == ("tile", "ours-avx2")), None)
            tile_rows = ours_tile.products // 256 if ours_tile and ours_tile.products else 8
            for src in [s for s in sources if s.startswith("ik-")]:
                for (kernel, _), pats in ik_kernels(t, tile_rows).items():
                    funcs = sources[src]
                    mangled = find({n: names[n] for n in funcs}, *pats)
                    rows.append((kernel, src, hot_loop(funcs[mangled]) if mangled else None))
            per256: dict[tuple[str, str, str], float] = {}
            for kernel, path, loop in sorted(rows, key=lambda r: (r[0], r[1])):
                # Our AVX-512 tile loops over its (up to 8) activation rows at run time.
                shared_by = 8 if (kernel, path) == ("tile", "ours-avx512") else 1
                cells = []
                for cpu in CPUS:
                    value = None
                    if loop is not None and ("avx512" not in path or cpu in AVX512_CPUS):
                        value = cycles_per_256(loop, cpu, scratch, shared_by)
                    if value is not None:
                        per256[(kernel, path, cpu)] = value
                    cells.append(f" {value:14.1f}" if value is not None else f" {'-':>14}")
                n_instr = str(len(loop.lines)) if loop else "none"
                prods = str(loop.products * shared_by) if loop else ""
                print(f"{t:7} {kernel:5} {path:11} {n_instr:>5} {prods:>7}" + "".join(cells))
            for kernel in ["row", "tile"]:
                for cpu in sorted(AVX512_CPUS):
                    a512 = per256.get((kernel, "ours-avx512", cpu))
                    a2 = per256.get((kernel, "ours-avx2", cpu))
                    if a512 and a2:
                        msg = f"{t} {kernel} {cpu}: ours avx512/avx2 = {a512 / a2:.2f}"
                        ik = per256.get((kernel, "ik-avx512", cpu))
                        if ik:
                            msg += f", ik-avx512/ours-best = {ik / min(a512, a2):.2f}"
                        ratios.append(msg)
        print()
        print("ratios of cycles (below 1: the first is faster)")
        for line in ratios:
            print("  " + line)


if __name__ == "__main__":
    main()
