#!/usr/bin/env python3
"""Whole-model benchmark of ``iqk quantize``: wall time and peak memory per target type.

Each run is a fresh ``python -m iqk_rs.cli quantize`` child process; its peak resident
set comes from ``os.wait4`` (this child only). The baseline is the RSS of ``iqk info`` on
the same model (interpreter, numpy, the core, rich, the parsed header), so
``peak - baseline`` is what quantizing added; it is reported
against the largest tensor (f32 working copy included) and the sum of tensor sizes.

    python benches/bench_model.py                      # the bundled tiny model, six types
    python benches/bench_model.py MODEL.gguf -t IQ4_K -t IQ2_KS --threads 2 --json out.json
    python benches/bench_model.py SmolLM2-135M-Instruct.Q4_1.gguf -- --allow-requantize
    python benches/bench_model.py smol-f16.gguf --imatrix smol.imatrix.dat --threads 2 \
        --ik-quantize ik_llama.cpp/build/bin/llama-quantize

``--imatrix`` goes to both tools. With ``--ik-quantize``, ik_llama.cpp's llama-quantize runs
on the same model, type, imatrix and thread count right after ours, and each row adds its
wall time, peak memory and our time as a fraction of it (``x ik``). ``--repeat N`` runs each
tool N times, alternating, and reports the fastest wall time (and the largest peak) of each:
on a shared or noisy machine single runs vary by 10-30 %. Arguments after ``--``
are passed to ``iqk quantize`` only (e.g. --custom-q).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_args import split_passthrough

ROOT = Path(__file__).resolve().parent.parent
SIX = ["IQ2_K", "IQ3_K", "IQ4_K", "IQ2_KS", "IQ3_KS", "IQ4_KS"]


def run_child(args: list[str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS bytes, exit status) of one child process."""
    # stderr goes to a file, not a pipe: a chatty child (llama-quantize logs every tensor)
    # would otherwise block on a full pipe that is only read after it exits.
    with tempfile.TemporaryFile() as err_file:
        t0 = time.perf_counter()
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err_file)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode:
            err_file.seek(0)
            sys.stderr.write(err_file.read().decode(errors="replace")[-4000:])
    return wall, usage.ru_maxrss * 1024, p.returncode  # ru_maxrss is KiB on Linux


class Runs:
    """Repeated runs of one command: the fastest wall time, the largest peak, any failure."""

    def __init__(self) -> None:
        self.wall, self.peak, self.rc = float("inf"), 0, 0

    def add(self, wall: float, peak: int, rc: int) -> None:
        self.wall, self.peak = min(self.wall, wall), max(self.peak, peak)
        self.rc = self.rc or rc


def model_sizes(path: Path) -> tuple[int, int, int]:
    from iqk_rs.gguf import GGUFReader

    with GGUFReader(path) as r:
        ts = list(r.tensors.values())
        total = sum(t.nbytes for t in ts)
        largest = max(ts, key=lambda t: t.n_elements)
        return total, largest.nbytes, largest.n_elements * 4


def main() -> int:
    argv, extra = split_passthrough(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", nargs="?", default=str(ROOT / "tests/data/tiny-llama-f16.gguf"))
    ap.add_argument("-t", "--type", action="append", dest="types", help="target (repeatable)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--imatrix", type=Path, help="importance matrix for both tools")
    ap.add_argument("--ik-quantize", type=Path, help="ik_llama.cpp's llama-quantize binary")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the fastest counts")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args(argv)
    model = Path(a.model)
    total, largest, largest_f32 = model_sizes(model)
    py = sys.executable
    _, base_rss, _ = run_child([py, "-m", "iqk_rs.cli", "info", str(model), "--no-metadata"])
    print(f"model {model.name}: {total / 2**20:.1f} MiB of tensors; largest tensor "
          f"{largest / 2**20:.1f} MiB ({largest_f32 / 2**20:.1f} MiB as f32); "
          f"baseline RSS {base_rss / 2**20:.0f} MiB; {os.cpu_count()} CPUs")  # fmt: skip
    ik_head = f" {'ik wall s':>10} {'ik peak MiB':>12} {'x ik':>6}" if a.ik_quantize else ""
    print(f"{'type':8} {'wall s':>8} {'MiB/s':>8} {'peak MiB':>9} {'+MiB':>8} "
          f"{'+/largest f32':>14} {'out MiB':>8}{ik_head}")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in a.types or SIX:
            out = Path(tmp) / f"{t}.gguf"
            cmd = [py, "-m", "iqk_rs.cli", "quantize", str(model), str(out), t, "-q", *extra]
            if a.imatrix:
                cmd += ["--imatrix", str(a.imatrix)]
            if a.threads:
                cmd += ["--threads", str(a.threads)]
            ik_cmd = None
            if a.ik_quantize:
                ik_cmd = [str(a.ik_quantize)]
                if a.imatrix:
                    ik_cmd += ["--imatrix", str(a.imatrix)]
                ik_cmd += [str(model), str(out), t, str(a.threads or os.cpu_count())]
            ours, ik = Runs(), Runs()
            for _ in range(max(a.repeat, 1)):
                ours.add(*run_child(cmd))
                if ours.rc:
                    break
                size = out.stat().st_size
                out.unlink()
                if ik_cmd:
                    ik.add(*run_child(ik_cmd))
                    out.unlink(missing_ok=True)
            if ours.rc:
                print(f"{t:8} failed (exit {ours.rc})")
                continue
            wall, peak = ours.wall, ours.peak
            added = max(peak - base_rss, 0)
            row = dict(type=t, wall_s=wall, peak_rss=peak, added_rss=added, out_bytes=size)
            ik_cols = ""
            if ik_cmd and ik.rc:
                print(f"{t:8} ik_llama.cpp failed (exit {ik.rc})")
            elif ik_cmd:
                row.update(ik_wall_s=ik.wall, ik_peak_rss=ik.peak)
                ik_cols = f" {ik.wall:10.2f} {ik.peak / 2**20:12.0f} {wall / ik.wall:6.2f}"
            rows.append(row)
            print(f"{t:8} {wall:8.2f} {total / 2**20 / wall:8.1f} {peak / 2**20:9.0f} "
                  f"{added / 2**20:8.0f} {added / largest_f32:14.2f} "
                  f"{size / 2**20:8.1f}{ik_cols}", flush=True)  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(
            dict(model=str(model), tensor_bytes=total, largest_tensor_bytes=largest,
                 baseline_rss=base_rss, threads=a.threads, cpus=os.cpu_count(),
                 repeat=a.repeat, runs=rows),
            indent=1))  # fmt: skip
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
