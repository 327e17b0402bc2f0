"""pytest-benchmark of the Python API's dot products: ``matvec`` (single thread and all
threads) and ``matmul`` for the six IQK types, on a cache-resident 256 x 4096 and a
memory-resident 4096 x 16384 matrix.

    pip install pytest-benchmark
    pytest benches/test_bench_api.py --benchmark-only

Each benchmark records Gweights/s and GB/s of weight bytes in ``extra_info``. At the end a
table gives, per case, the ratio to two baselines measured in the same run: streaming the same
bytes with numpy (``x-bw``) and the scalar kernels (``x-scalar``: the same call timed in a child
process started with ``IQK_RS_SIMD=scalar``, cache-resident cases only, to keep the run short).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest

iqk_rs = pytest.importorskip("iqk_rs")
pytest.importorskip("pytest_benchmark")

TYPES = ["iq2_k", "iq3_k", "iq4_k", "iq2_ks", "iq3_ks", "iq4_ks"]
SHAPES = {"cache": (256, 4096), "memory": (4096, 16384)}
RESULTS: dict[tuple[str, str, str], float] = {}  # (type, shape, call) -> seconds
BYTES: dict[tuple[str, str], int] = {}


def random_rows(qtype: str, nrows: int, ncols: int) -> np.ndarray:
    """Random block bytes with sane scales (fp16 1/16 per block or per row), as the kernel
    benchmark in benches/kernels.rs builds them: every bit pattern is a valid block."""
    info = next(t for t in iqk_rs.type_table() if t["name"] == qtype)
    meta, block = int(info["row_meta_size"]), int(info["type_size"])
    nb = ncols // 256
    rng = np.random.default_rng(zlib.crc32(qtype.encode()))
    rows = rng.integers(0, 256, (nrows, meta + nb * block), dtype=np.uint8)
    if meta == 4:
        rows[:, :4] = np.frombuffer(np.float32(0.0625).tobytes(), np.uint8)
    elif meta == 2:
        rows[:, :2] = np.frombuffer(np.float16(0.0625).tobytes(), np.uint8)
    else:
        blocks = rows.reshape(nrows, nb, block)
        blocks[:, :, :2] = np.frombuffer(np.float16(0.0625).tobytes(), np.uint8)
    return rows


_DATA: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def data(qtype: str, shape: str) -> tuple[np.ndarray, np.ndarray]:
    if (qtype, shape) not in _DATA:
        nrows, ncols = SHAPES[shape]
        _DATA.clear()  # keep one memory-resident matrix alive at a time
        x = np.random.default_rng(7).normal(0, 1, ncols).astype(np.float32)
        _DATA[(qtype, shape)] = (random_rows(qtype, nrows, ncols), x)
    return _DATA[(qtype, shape)]


def record(benchmark, key: tuple[str, str, str], q: np.ndarray) -> None:
    seconds = benchmark.stats.stats.min
    RESULTS[key] = seconds
    BYTES[key[:2]] = q.nbytes
    nrows, ncols = SHAPES[key[1]]
    benchmark.extra_info["simd_path"] = iqk_rs.simd_path()
    benchmark.extra_info["gweights_per_s"] = nrows * ncols / seconds / 1e9
    benchmark.extra_info["gbytes_per_s"] = q.nbytes / seconds / 1e9


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("qtype", TYPES)
@pytest.mark.parametrize("threads", [1, None], ids=["1T", "allT"])
def test_matvec(benchmark, qtype: str, shape: str, threads: int | None) -> None:
    q, x = data(qtype, shape)
    out = benchmark(iqk_rs.matvec, q, qtype, x, threads=threads)
    assert out.shape == (q.shape[0],) and np.isfinite(out).all()
    record(benchmark, (qtype, shape, f"matvec-{'1T' if threads == 1 else 'allT'}"), q)


@pytest.mark.parametrize("qtype", TYPES)
def test_matmul_batch8(benchmark, qtype: str) -> None:
    q, x = data(qtype, "cache")
    xs = np.tile(x, (8, 1))
    out = benchmark(iqk_rs.matmul, q, qtype, xs)
    # Every row of the batch is the same activation, so every output row must agree.
    assert out.shape == (8, q.shape[0]) and (out == out[0]).all()
    RESULTS[(qtype, "cache", "matmul8-allT")] = benchmark.stats.stats.min / 8


def test_bandwidth_baseline(benchmark) -> None:
    """numpy reading every byte of the largest matrix once (u64 sum): the memory baseline."""
    q, _ = data("iq4_k", "memory")
    words = q.reshape(-1).view(np.uint64)
    benchmark(np.add.reduce, words)
    RESULTS[("stream", "memory", "numpy")] = benchmark.stats.stats.min
    BYTES[("stream", "memory")] = q.nbytes


_SCALAR_CHILD = """
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import test_bench_api as b, iqk_rs
assert iqk_rs.simd_path() == "scalar"
out = {}
for t in b.TYPES:
    q, x = b.data(t, "cache")
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        iqk_rs.matvec(q, t, x, threads=1)
        best = min(best, time.perf_counter() - start)
    out[t] = best
print(json.dumps(out))
"""


def scalar_times() -> dict[str, float]:
    env = dict(os.environ, IQK_RS_SIMD="scalar")
    here = os.path.dirname(os.path.abspath(__file__))
    child = subprocess.run(
        [sys.executable, "-c", _SCALAR_CHILD, here],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_zz_summary(benchmark, capsys) -> None:
    """Prints the ratio table (runs last: pytest keeps file order)."""
    benchmark.pedantic(time.sleep, args=(0,), rounds=1)  # keeps --benchmark-only from skipping
    if not RESULTS:
        pytest.skip("no benchmark ran")
    scalar = scalar_times()
    stream = RESULTS.get(("stream", "memory", "numpy"))
    stream_bw = BYTES[("stream", "memory")] / stream if stream else None
    lines = [
        f"simd path {iqk_rs.simd_path()}; x-bw = GB/s over numpy streaming "
        f"({stream_bw / 1e9:.1f} GB/s); x-scalar = vs IQK_RS_SIMD=scalar, same call"
        if stream_bw
        else f"simd path {iqk_rs.simd_path()}",
        f"{'type':<7} {'shape':<7} {'call':<13} {'Gw/s':>7} {'GB/s':>7} {'x-bw':>6} "
        f"{'x-scalar':>9}",
    ]
    for (qtype, shape, call), seconds in sorted(RESULTS.items()):
        if qtype == "stream":
            continue
        nrows, ncols = SHAPES[shape]
        gbs = BYTES[(qtype, shape)] / seconds
        x_bw = f"{gbs / stream_bw:6.2f}" if stream_bw and shape == "memory" else f"{'':>6}"
        x_scalar = (
            f"{scalar[qtype] / seconds:9.1f}" if shape == "cache" and call == "matvec-1T" else ""
        )
        lines.append(
            f"{qtype:<7} {shape:<7} {call:<13} {nrows * ncols / seconds / 1e9:7.2f} "
            f"{gbs / 1e9:7.2f} {x_bw} {x_scalar:>9}"
        )
    with capsys.disabled():
        print("\n" + "\n".join(lines))
