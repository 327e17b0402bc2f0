#!/usr/bin/env python3
"""Distributed quantization on this machine: the numbers behind README's cost model.

Measures, and prints as a table (and as JSON with --json):

1. per-core throughput of each IQK type (F16 rows of 4096, one thread, with an imatrix row),
   in millions of weights per second: the compute term of the cost model;
2. per-unit overhead: a run whose units only copy a few KB (``--custom-q '.*=f16'``, units
   of ``--overhead-unit`` bytes), on 1 and 2 worker nodes: (wall time x task slots) / units is
   what one unit costs beyond its work (Ray scheduling, the task's mmap/pwrite/fdatasync, the
   driver's bookkeeping and manifest line);
3. throughput of one model (synthetic F16, ``--size``) quantized to ``--type``: locally with 1
   and 2 threads, and on Ray with 1 and 2 worker nodes of one CPU each (the head node has no
   CPU: it holds the driver only).

Every Ray process must run in a loopback-only network namespace, so run it through the
tests' wrapper (it refuses to start Ray anywhere else):

    bash scripts/ray_test.sh python benches/bench_distributed.py --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "python"))
# the Ray workers this starts import iqk_rs from the same checkout
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(ROOT / "python"), os.environ.get("PYTHONPATH")])
)

from iqk_rs import distributed as dist  # noqa: E402
from iqk_rs import pipeline as pl  # noqa: E402
from iqk_rs.gguf import KV, GGUFStreamWriter  # noqa: E402
from iqk_rs.gguf.constants import GGUFValueType  # noqa: E402
from iqk_rs.gguf.ggml_types import type_by_name  # noqa: E402
from iqk_rs.pipeline import encode_rows  # noqa: E402

SIX = ["IQ2_K", "IQ3_K", "IQ4_K", "IQ2_KS", "IQ3_KS", "IQ4_KS"]
LOOPBACK = "127.0.0.1"


def in_loopback_namespace() -> bool:
    with open("/proc/net/dev") as f:
        names = {line.split(":")[0].strip() for line in f.readlines()[2:]}
    return os.environ.get("IQK_RAY_NETNS") == "1" and names == {"lo"}


def per_core_throughput(seconds: float) -> dict[str, float]:
    """Mweights/s of one thread, F16 -> type, 4096-wide rows with an imatrix row."""
    rng = np.random.default_rng(0)
    ne0, rows = 4096, 256
    raw = (rng.standard_normal((rows, ne0)) * 0.02).astype(np.float16).view(np.uint8)
    imat = (rng.random(ne0) + 0.1).astype(np.float32)
    f16 = type_by_name("f16")
    got = {}
    for name in SIX:
        dst = type_by_name(name)
        encode_rows(raw[:8], f16, ne0, dst, imat, threads=1)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            encode_rows(raw, f16, ne0, dst, imat, threads=1)
            n += 1
        got[name] = rows * ne0 * n / (time.perf_counter() - t0) / 1e6
    return got


def synthetic_model(path: Path, nbytes: int) -> Path:
    """Dense F16 matrices of 4096 x 1024 (8 MiB each) up to about ``nbytes``."""
    rng = np.random.default_rng(3)
    n = max(1, nbytes // (4096 * 1024 * 2))
    f16 = type_by_name("f16")
    tensors = [(f"blk.{i}.ffn_up.weight", f16, (4096, 1024)) for i in range(n)]
    kv = [
        KV("general.architecture", GGUFValueType.STRING, "llama"),
        KV("llama.block_count", GGUFValueType.UINT32, n),
    ]
    with GGUFStreamWriter(path, kv, tensors) as w:
        for name, _, ne in tensors:
            w.write_tensor(name, (rng.standard_normal(ne[::-1]) * 0.02).astype(np.float16))
        w.commit()
    return path


def predict(
    params: float,
    rate: float,
    nodes: int,
    cores: int = 64,
    fs_gb_s: float = 10.0,
    unit_bytes: float = 0.0,
    unit_ms: float = 3.0,
    driver_ms: float = 1.0,
    bits: float = 4.5,
    start_s: float = 30.0,
) -> dict[str, float]:
    """README's cost model: wall seconds of quantizing ``params`` BF16 weights.

    ``rate``: Mweights/s of one core for the type; ``unit_ms``: a unit's cost beyond its work
    (scheduling, mmap, fdatasync); ``driver_ms``: the driver's CPU per unit (serial);
    ``fs_gb_s``: the shared filesystem's aggregate bandwidth (reads plus writes); ``bits``:
    bits per weight of the output; ``start_s``: joining the cluster, planning, workers.
    """
    slots = nodes * cores
    if unit_bytes <= 0:  # the rule README gives: 256 MB, smaller to keep 4 waves of units
        unit_bytes = min(256e6, 2 * params / (4 * slots))
    units = max(1, round(2 * params / unit_bytes))
    unit_s = unit_bytes / 2 / (rate * 1e6) + unit_ms / 1e3
    compute = -(-units // slots) * unit_s  # waves of units; the last one may be partly idle
    io = (2 * params + params * bits / 8) / (fs_gb_s * 1e9)
    driver = units * driver_ms / 1e3  # serial, but overlapped with the work
    return {
        "unit_mb": unit_bytes / 1e6,
        "units": units,
        "compute_s": compute,
        "io_s": io,
        "driver_s": driver,
        "wall_s": start_s + max(compute, io, driver),
        # per-unit costs, in core-seconds, against the work's core-seconds
        "overhead": units * unit_ms / 1e3 / (params / (rate * 1e6)),
    }


def cost_table(rates: dict[str, float], unit_ms: float, driver_ms: float, fs: float) -> str:
    lines = [
        f"shared FS {fs:g} GB/s, 64 cores per node, {unit_ms:.1f} ms per unit, "
        f"driver {driver_ms:.2f} ms per unit, 30 s start",
        "",
        "| model | type | nodes | unit MB | units | compute | I/O | driver | wall | overhead |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for params, label in ((671e9, "671B"), (1e12, "1T")):
        for t in ("IQ2_KS", "IQ4_KS", "IQ2_K"):
            for nodes in (1, 8, 64):
                p = predict(
                    params,
                    rates[t],
                    nodes,
                    fs_gb_s=fs,
                    unit_bytes=0,
                    unit_ms=unit_ms,
                    driver_ms=driver_ms,
                )
                lines.append(
                    f"| {label} | {t} | {nodes} | {p['unit_mb']:.0f} | {p['units']} | "
                    f"{_clock(p['compute_s'])} | {_clock(p['io_s'])} | {_clock(p['driver_s'])} | "
                    f"{_clock(p['wall_s'])} | {100 * p['overhead']:.2f} % |"
                )
    return "\n".join(lines)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def timed(fn, *args, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    return time.perf_counter() - t0, result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64, help="model size, MiB of F16 (default 64)")
    ap.add_argument("--type", default="IQ4_KS", help="target of the throughput runs")
    ap.add_argument("--unit", type=int, default=8 << 20, help="unit bytes of those runs")
    ap.add_argument("--overhead-unit", type=int, default=4096, help="unit bytes, overhead run")
    ap.add_argument("--seconds", type=float, default=1.0, help="per type, throughput")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--model-only", type=Path, help="print the cost model of a --json file")
    args = ap.parse_args()
    if args.model_only:
        r = json.loads(args.model_only.read_text())
        one = r["ray"]["1"]
        for fs in (10.0, 100.0):
            print(
                cost_table(
                    r["per_core_mweights_s"],
                    one["overhead_ms_per_unit"],
                    one["driver_cpu_ms_per_unit"],
                    fs,
                )
            )
        return 0
    if not in_loopback_namespace():
        print(
            "refusing to start Ray outside a loopback-only network namespace; run: "
            "bash scripts/ray_test.sh python benches/bench_distributed.py",
            file=sys.stderr,
        )
        return 2
    import ray
    from ray.cluster_utils import Cluster

    results: dict = {"cpus": os.cpu_count(), "load": os.getloadavg()[0]}
    results["per_core_mweights_s"] = rates = per_core_throughput(args.seconds)
    for name, r in rates.items():
        print(f"per core  {name:<7} {r:7.2f} Mweights/s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = synthetic_model(tmp / "m.gguf", args.size << 20)
        size = model.stat().st_size
        opts = pl.QuantizeOptions(pure=True)
        local = {}
        for threads in (1, 2):
            o = pl.QuantizeOptions(pure=True, threads=threads)
            local[threads], _ = timed(pl.quantize_model, model, tmp / "l.gguf", args.type, o)
            print(
                f"local     {threads} thread(s): {local[threads]:6.2f} s, "
                f"{size / local[threads] / 2**20:6.1f} MiB/s",
                flush=True,
            )
        want = (tmp / "l.gguf").read_bytes()
        results["local_seconds"] = local

        head = {"num_cpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": False}
        cluster = Cluster(initialize_head=True, head_node_args=head)
        try:
            ray.init(address=cluster.address, _node_ip_address=LOOPBACK, log_to_driver=False)
            runs = {}
            for workers in (1, 2):
                cluster.add_node(num_cpus=1, node_ip_address=LOOPBACK)
                cluster.wait_for_nodes()
                # warm-up: workers started on every node before anything is timed
                dist.quantize_model(
                    model,
                    tmp / "w.gguf",
                    args.type,
                    opts,
                    ray=dist.RayOptions(max_unit_bytes=args.unit),
                )
                copy = pl.QuantizeOptions(custom_q=[".*=f16"])
                ro = dist.RayOptions(max_unit_bytes=args.overhead_unit)
                cpu0 = time.process_time()
                wall, rep = timed(dist.quantize_model, model, tmp / "c.gguf", "IQ4_K", copy, ray=ro)
                driver_ms = (time.process_time() - cpu0) / rep.run.units * 1e3
                per_unit = wall * workers / rep.run.units
                print(
                    f"ray       {workers} worker node(s): {rep.run.units} copy-only units in "
                    f"{wall:.2f} s: {per_unit * 1e3:.2f} ms per unit and slot, driver CPU "
                    f"{driver_ms:.2f} ms per unit",
                    flush=True,
                )
                ro = dist.RayOptions(max_unit_bytes=args.unit)
                wall, rep = timed(
                    dist.quantize_model, model, tmp / "r.gguf", args.type, opts, ray=ro
                )
                assert (tmp / "r.gguf").read_bytes() == want, "not the local run's bytes"
                print(
                    f"ray       {workers} worker node(s): {args.type} {wall:6.2f} s, "
                    f"{size / wall / 2**20:6.1f} MiB/s, {rep.run.units} units, "
                    f"vs local {workers} thread(s): {local[workers] / wall:.2f}x",
                    flush=True,
                )
                runs[workers] = {
                    "seconds": wall,
                    "units": rep.run.units,
                    "overhead_ms_per_unit": per_unit * 1e3,
                    "driver_cpu_ms_per_unit": driver_ms,
                    "nodes": {k: vars(v) for k, v in rep.run.nodes.items()},
                }
            results["ray"] = runs
        finally:
            ray.shutdown()
            cluster.shutdown()
    results.update(model_mib=args.size, type=args.type, unit_bytes=args.unit)
    unit_ms = results["ray"][1]["overhead_ms_per_unit"]
    driver_ms = results["ray"][1]["driver_cpu_ms_per_unit"]
    for fs in (10.0, 100.0):
        print(cost_table(rates, unit_ms, driver_ms, fs))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
