"""How much quantized weights shrink: per tensor kind, the norm ratio |q|/|w| and the gain
<w, q>/<w, w> of quantized files against the unquantized model (tensors of the target type
only, unweighted), and the relative squared error |w - q|²/|w|².

    python benches/bench_gain.py MODEL_F16.gguf QUANTIZED.gguf [QUANTIZED.gguf ...] [--type IQ2_K]

A least-squares fit shrinks: its error is orthogonal to what it keeps, so the gain is below 1
by about the relative error. ik_llama.cpp offsets that for IQ2_K and IQ3_K with a factor on the
stored scale (1.03, 1.01); the README's "Lower error" section compares the gains of its files
and of search="best".
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from iqk_rs.gguf import GGUFReader


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", help="the unquantized (F16/BF16/F32) model")
    ap.add_argument("quantized", nargs="+")
    ap.add_argument("--type", help="only tensors of this type in every file (default: any)")
    args = ap.parse_args()

    base = GGUFReader(args.model)
    files = {path: GGUFReader(path) for path in args.quantized}
    want = args.type.lower() if args.type else None
    # per file, per tensor kind: Σw², Σq², Σ(w-q)², Σw·q
    sums: dict[str, dict[str, np.ndarray]] = {p: defaultdict(lambda: np.zeros(4)) for p in files}
    for name in base.tensors:
        if not name.endswith(".weight") or not name.startswith("blk."):
            continue
        types = {f.tensor(name).type.name.lower() for f in files.values()}
        if len(types) != 1 or (want and want not in types):
            continue
        w = base.to_f32(name).astype(np.float64)
        kind = name.split(".")[2]
        for path, f in files.items():
            q = f.to_f32(name).astype(np.float64)
            sums[path][kind] += [(w * w).sum(), (q * q).sum(), ((w - q) ** 2).sum(), (w * q).sum()]
    print(f"{'file':40s} {'tensor':14s} {'|q|/|w|':>8s} {'gain':>8s} {'rel err':>8s}")
    for path in files:
        for kind, (ww, qq, ee, wq) in sorted(sums[path].items()):
            norm, gain, err = np.sqrt(qq / ww), wq / ww, ee / ww
            print(f"{path[-40:]:40s} {kind:14s} {norm:8.4f} {gain:8.4f} {err:8.4f}")


if __name__ == "__main__":
    main()
