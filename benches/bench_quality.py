"""Weighted quantization error of search="best" against ik_llama.cpp's bytes (search="ik").

For every tensor of MODEL whose rows are a multiple of 256 long (and whose name matches
--tensors), a deterministic sample of rows is quantized to each IQK type both ways, decoded
with our dequantizer, and scored by Σ w·(x - x̂)² under two weightings: ik's own internal one
(imatrix·sqrt(σ² + x²), or its no-imatrix weighting) and the plain imatrix (1 without one).
Prints, per type and tensor, both errors, the reduction, how many rows "best" made worse
(under ik's weighting; must be 0) and the time each search took.

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
        f"{'red. plain':>10} {'worse':>6} {'t ik':>6} {'t best':>7}"
    )
    for qtype in args.types.split(","):
        print("\n" + head)
        tot = {"ik": 0.0, "best": 0.0, "ikp": 0.0, "bestp": 0.0, "worse": 0, "n": 0}
        tot_t = {"ik": 0.0, "best": 0.0}
        per_tensor = []
        for name, x, im in samples:
            w_ik = ik_weights(qtype, x, im)
            w_plain = np.broadcast_to(im if im is not None else np.ones(x.shape[1]), x.shape)
            err, errp, secs = {}, {}, {}
            for mode in ("ik", "best"):
                t0 = time.perf_counter()
                q = iqk_rs.quantize(x, qtype, im, search=mode, threads=args.threads)
                secs[mode] = time.perf_counter() - t0
                y = iqk_rs.dequantize(q, qtype)
                err[mode] = row_errors(x, y, w_ik)
                errp[mode] = row_errors(x, y, w_plain)
                tot_t[mode] += secs[mode]
            worse = int((err["best"] > err["ik"] * (1 + 1e-9)).sum())
            e_ik, e_b = err["ik"].sum(), err["best"].sum()
            p_ik, p_b = errp["ik"].sum(), errp["best"].sum()
            tot["ik"] += e_ik
            tot["best"] += e_b
            tot["ikp"] += p_ik
            tot["bestp"] += p_b
            tot["worse"] += worse
            tot["n"] += x.shape[0]
            per_tensor.append(100 * (1 - e_b / e_ik))
            print(
                f"{qtype:7} {name[:28]:28} {e_ik:10.4g} {e_b:10.4g} {100 * (1 - e_b / e_ik):8.2f}% "
                f"{100 * (1 - p_b / p_ik):9.2f}% {worse:6d} {secs['ik']:6.2f} {secs['best']:7.2f}"
            )
        print(
            f"{qtype:7} {'ALL':28} {tot['ik']:10.4g} {tot['best']:10.4g} "
            f"{100 * (1 - tot['best'] / tot['ik']):8.2f}% "
            f"{100 * (1 - tot['bestp'] / tot['ikp']):9.2f}% {tot['worse']:6d} "
            f"{tot_t['ik']:6.2f} {tot_t['best']:7.2f}   ({tot['n']} rows)"
        )
        print(
            f"{qtype:7} per tensor (ik weighting): mean {np.mean(per_tensor):.2f} %, median "
            f"{np.median(per_tensor):.2f} %, min {np.min(per_tensor):.2f} %"
        )


if __name__ == "__main__":
    main()
