"""Quantize a bundled weight matrix (32 x 4096, with its importance matrix) to the six IQK types.

Prints, per type: bits per weight, relative RMSE of the round trip, the error of a
matrix-vector product against float32, and the time taken.
"""

from __future__ import annotations

import time
from pathlib import Path

import iqk_rs
import numpy as np

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "golden" / "gauss"


def main() -> None:
    x = np.fromfile(DATA / "x.f32", dtype=np.float32).reshape(32, 4096)
    imatrix = np.fromfile(DATA / "imatrix.f32", dtype=np.float32)
    act = np.fromfile(DATA / "act.f32", dtype=np.float32)
    exact = x.astype(np.float64) @ act.astype(np.float64)
    print(f"weights {x.shape[0]} x {x.shape[1]} from {DATA}")
    print(f"{'type':8} {'bpw':>6} {'rel. RMSE':>10} {'matvec rel. err':>16} {'time':>9}")
    for qtype in iqk_rs.QuantType:
        if not qtype.is_iqk:
            continue
        start = time.perf_counter()
        q = iqk_rs.quantize(x, qtype, imatrix)
        elapsed = time.perf_counter() - start
        y = iqk_rs.dequantize(q, qtype)
        rel_rmse = np.sqrt(np.mean((y - x) ** 2) / np.mean(x**2))
        mv = iqk_rs.matvec(q, qtype, act)
        mv_err = np.linalg.norm(mv - exact) / np.linalg.norm(exact)
        bpw = 8 * q.nbytes / x.size
        print(
            f"{qtype.type_name:8} {bpw:6.3f} {rel_rmse:10.4f} {mv_err:16.4f} {elapsed * 1e3:7.1f}ms"
        )


if __name__ == "__main__":
    main()
