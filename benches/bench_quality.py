"""Weighted quantization error of search="best" against ik_llama.cpp's bytes (search="ik").

For every tensor of MODEL whose rows are a multiple of 256 long (and whose name matches
--tensors), a deterministic sample of rows is quantized to each IQK type both ways, decoded
with our dequantizer, and scored by Σ w·(x - x̂)² under three weightings: ik's own internal one
(imatrix·sqrt(σ² + x²), or its no-imatrix weighting), the plain imatrix (1 without one) and
their geometric mean.
Prints, per type and tensor, the errors, the reduction under each of the three weightings
"best" may minimise (ik's, the plain imatrix, their geometric mean; README says which type uses
which), how many rows "best" made worse under each (0 under the objective --search minimises)
and the time each search took.

    python benches/bench_quality.py MODEL.gguf [--imatrix FILE] [--tensors REGEX] [--rows N]
"""

from __future__ import annotations

import argparse
import re
import time

import iqk_rs
import numpy as np
from iqk_rs.gguf.ggml_types import rows_to_f32
from iqk_rs.gguf.reader import GGUFReader
from iqk_rs.imatrix import load_imatrix

TYPES = ["IQ4_K", "IQ4_KS", "IQ3_K", "IQ3_KS", "IQ2_K", "IQ2_KS"]
# ik's σ² factor per 256-weight super-block and whether its no-imatrix weight adds σ²/4.
BROAD = {"IQ2_K", "IQ2_KS", "IQ3_K"}


def ik_weights(qtype: str, x: np.ndarray, imatrix: np.ndarray | None) -> np.ndarray:
    """ik's internal importance of every weight (iqk/common.rs: Weighting)."""
    blocks = x.reshape(x.shape[0], -1, 256).astype(np.float64)
    sumx2 = (blocks**2).sum(axis=2, keepdims=True)
    sigma2 = 1.5 * sumx2 / 256 if qtype in BROAD else sumx2 * (2 / 256)
    if imatrix is not None:
        w = imatrix.reshape(1, -1, 256) * np.sqrt(sigma2 + blocks**2)
    elif qtype in BROAD:
        w = 0.25 * sigma2 + blocks**2
    else:
        w = blocks**2 + 0 * sigma2
    return w.reshape(x.shape)


def row_errors(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (w * (x.astype(np.float64) - y) ** 2).sum(axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--imatrix", help="imatrix file (.dat or GGUF); without it: no imatrix")
    ap.add_argument("--tensors", default=r"blk\.", help="regex the tensor names must match")
    ap.add_argument("--rows", type=int, default=64, help="rows sampled per tensor")
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--search", default="best", help="best, best-plain or best-ik-weights")
    args = ap.parse_args()

    reader = GGUFReader(args.model)
    imatrix = load_imatrix(args.imatrix) if args.imatrix else None
    rng = np.random.default_rng(22)
    samples = []
    for name, t in reader.tensors.items():
        if t.ne[0] % 256 or len(t.ne) < 2 or not re.search(args.tensors, name):
            continue
        im = None
        if imatrix is not None:
            im = imatrix.for_tensor(name, t.ne[0], 1)
            if im is None:
                continue
            im = np.asarray(im, dtype=np.float32)
        raw = reader.raw(name).reshape(t.nrows, -1)
        pick = np.sort(rng.choice(t.nrows, size=min(args.rows, t.nrows), replace=False))
        x = rows_to_f32(raw[pick], t.type, t.ne[0])
        samples.append((name, x, im))
    if not samples:
        raise SystemExit("no tensor with rows a multiple of 256 matches")

    print(f"{args.model}: {len(samples)} tensors, {args.rows} rows each, imatrix: {args.imatrix}")
    head = (
        f"{'type':7} {'tensor':28} {'ik err':>10} {'best err':>10} {'red. ik-w':>9} "
        f"{'red. plain':>10} {'red. geo':>9} {'worse i/p/g':>12} {'t ik':>6} {'t best':>7}"
    )
    kinds = ("ik", "plain", "geo")
    for qtype in args.types.split(","):
        print("\n" + head)
        tot = {(k, m): 0.0 for k in kinds for m in ("ik", "best")}
        worse_tot = dict.fromkeys(kinds, 0)
        tot_t = {"ik": 0.0, "best": 0.0}
        rows = 0
        per_tensor = {k: [] for k in kinds}
        for name, x, im in samples:
            w_ik = ik_weights(qtype, x, im)
            w_plain = np.broadcast_to(im if im is not None else np.ones(x.shape[1]), x.shape)
            weights = {"ik": w_ik, "plain": w_plain, "geo": np.sqrt(w_ik * w_plain)}
            err, secs = {}, {}
            for mode in ("ik", args.search):
                key = "ik" if mode == "ik" else "best"
                t0 = time.perf_counter()
                q = iqk_rs.quantize(x, qtype, im, search=mode, threads=args.threads)
                secs[key] = time.perf_counter() - t0
                y = iqk_rs.dequantize(q, qtype)
                for k in kinds:
                    err[k, key] = row_errors(x, y, weights[k])
                tot_t[key] += secs[key]
            red = {}
            for k in kinds:
                e_ik, e_b = err[k, "ik"].sum(), err[k, "best"].sum()
                tot[k, "ik"] += e_ik
                tot[k, "best"] += e_b
                red[k] = 100 * (1 - e_b / e_ik)
                per_tensor[k].append(red[k])
            worse = {k: int((err[k, "best"] > err[k, "ik"] * (1 + 1e-9)).sum()) for k in kinds}
            for k in kinds:
                worse_tot[k] += worse[k]
            rows += x.shape[0]
            print(
                f"{qtype:7} {name[:28]:28} {err['ik', 'ik'].sum():10.4g} "
                f"{err['ik', 'best'].sum():10.4g} {red['ik']:8.2f}% {red['plain']:9.2f}% "
                f"{red['geo']:8.2f}% {'/'.join(str(worse[k]) for k in kinds):>12} "
                f"{secs['ik']:6.2f} {secs['best']:7.2f}"
            )
        red = {k: 100 * (1 - tot[k, "best"] / tot[k, "ik"]) for k in kinds}
        print(
            f"{qtype:7} {'ALL':28} {tot['ik', 'ik']:10.4g} {tot['ik', 'best']:10.4g} "
            f"{red['ik']:8.2f}% {red['plain']:9.2f}% {red['geo']:8.2f}% "
            f"{'/'.join(str(worse_tot[k]) for k in kinds):>12} "
            f"{tot_t['ik']:6.2f} {tot_t['best']:7.2f}   ({rows} rows)"
        )
        for k in kinds:
            v = per_tensor[k]
            print(
                f"{qtype:7} per tensor ({k} weighting): mean {np.mean(v):.2f} %, median "
                f"{np.median(v):.2f} %, min {np.min(v):.2f} %, max {np.max(v):.2f} %"
            )


if __name__ == "__main__":
    main()
