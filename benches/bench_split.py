#!/usr/bin/env python3
"""Whole-model benchmark on a split input: throughput against the I/O floor, memory bound.

For each target type, one ``python -m iqk_rs.cli quantize`` child quantizes every part of a
split model into split output (``--split-max-size``, the input's part size). Measured in the
same run, right after it:

- the I/O floor: reading every input part to /dev/null plus writing (and fsyncing) as many
  bytes as that type's output, one after the other as the pipeline does them;
- wall time, the child's CPU time (user + system, from ``os.wait4``), and its peak RssAnon
  (anonymous memory, not the page cache of the mapped input), sampled every 20 ms from
  /proc/PID/status.

Reported: input GB/s, ``x floor`` (wall / floor: 1.0 means I/O bound), and ``cores per GB/s``
(CPU seconds per GB of input: the cores needed to quantize 1 GB/s of input, i.e. where the
work would become I/O bound on a machine with that many cores).

    python benches/bench_split.py --synth 1G                      # generate, then six types
    python benches/bench_split.py --synth 8G --dtype bf16 -t IQ4_K -- --custom-q '.*=q8_0'
    python benches/bench_split.py MODEL-00001-of-00004.gguf -t IQ2_KS --threads 2

``--synth SIZE`` writes a synthetic llama-style MoE model of about SIZE (M/G as gguf-split
reads them) with the project's own writer, split into parts of ``--part-size``, into
``--dir`` (default: a temporary directory, deleted afterwards unless ``--keep``). Arguments
after ``--`` go to ``iqk quantize``. Without root the page cache cannot be dropped, so a
freshly generated input is read from cache by both the floor and the run (a fair
comparison, but not a cold-disk figure).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from bench_args import split_passthrough

ROOT = Path(__file__).resolve().parent.parent
SIX = ["IQ2_K", "IQ3_K", "IQ4_K", "IQ2_KS", "IQ3_KS", "IQ4_KS"]
BLOCK = 16 << 20  # I/O buffer of the floor measurement


def synth_model(prefix: Path, size: int, part_size: int, dtype: str) -> Path:
    """A llama MoE of about ``size`` bytes of ``dtype`` weights in gguf-split parts; the
    first part's path. Weights repeat one random block: quantizing costs the same, and
    generating them costs only the writing."""
    from iqk_rs.gguf import KV, GGUFStreamWriter, type_by_name
    from iqk_rs.gguf.constants import GGUFValueType as V
    from iqk_rs.gguf.split import plan_shards, shard_keys

    d, n_ff, n_exp, vocab = 2048, 1024, 16, 32000
    wt, f32 = type_by_name(dtype), type_by_name("f32")
    per_layer = (4 * d * d + 3 * n_exp * d * n_ff) * 2
    n_layer = max(1, round((size - 2 * vocab * d * 2) / per_layer))
    tensors = [("token_embd.weight", wt, (d, vocab))]
    for i in range(n_layer):
        b = f"blk.{i}."
        tensors += [(b + "attn_norm.weight", f32, (d,))]
        tensors += [(b + f"attn_{k}.weight", wt, (d, d)) for k in ("q", "k", "v", "output")]
        tensors += [
            (b + "ffn_norm.weight", f32, (d,)),
            (b + "ffn_gate_inp.weight", f32, (d, n_exp)),
        ]
        tensors += [(b + "ffn_gate_exps.weight", wt, (d, n_ff, n_exp))]
        tensors += [(b + "ffn_down_exps.weight", wt, (n_ff, d, n_exp))]
        tensors += [(b + "ffn_up_exps.weight", wt, (d, n_ff, n_exp))]
    tensors += [("output_norm.weight", f32, (d,)), ("output.weight", wt, (d, vocab))]
    meta = [
        KV("general.architecture", V.STRING, "llama"),
        KV("general.name", V.STRING, f"iqk-rs synthetic split benchmark ({dtype})"),
        KV("general.file_type", V.UINT32, 1 if dtype == "f16" else 32),
        KV("llama.block_count", V.UINT32, n_layer),
        KV("llama.embedding_length", V.UINT32, d),
        KV("llama.feed_forward_length", V.UINT32, n_ff),
        KV("llama.attention.head_count", V.UINT32, 16),
        KV("llama.attention.head_count_kv", V.UINT32, 16),
        KV("llama.expert_count", V.UINT32, n_exp),
        KV("llama.expert_used_count", V.UINT32, 2),
    ]
    rng = np.random.default_rng(0)
    block = rng.normal(0, 0.02, BLOCK // 4).astype(np.float32)
    pattern = {
        "f32": block,
        "f16": block.astype(np.float16),
        "bf16": (block.view(np.uint32) >> 16).astype(np.uint16),
    }
    shards = plan_shards(prefix, [(n, t.nbytes(ne)) for n, t, ne in tensors], max_size=part_size)
    info = {n: (t, ne) for n, t, ne in tensors}
    for shard in shards:
        kvs = (meta if shard.no == 0 else []) + shard_keys(shard, len(tensors))
        with GGUFStreamWriter(shard.path, kvs, [(n, *info[n]) for n in shard.names]) as w:
            for name in shard.names:
                t, ne = info[name]
                left = t.nbytes(ne)
                src = pattern[t.name.lower()].view(np.uint8)
                while left:
                    n = min(left, src.nbytes)
                    w.write_chunk(name, src[:n])
                    left -= n
            w.commit()
    return shards[0].path


def parse_size(text: str) -> int:
    from iqk_rs.gguf.split import parse_size as gguf_split_size

    return gguf_split_size(text)


def read_floor(paths: list[Path]) -> float:
    buf = bytearray(BLOCK)
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.perf_counter() - t0


def write_floor(directory: Path, nbytes: int) -> float:
    buf = bytes(BLOCK)
    path = directory / ".bench-write-floor"
    t0 = time.perf_counter()
    with open(path, "wb", buffering=0) as f:
        left = nbytes
        while left:
            left -= f.write(memoryview(buf)[: min(left, BLOCK)])
        os.fsync(f.fileno())
    seconds = time.perf_counter() - t0
    path.unlink()
    return seconds


def run_sampled(cmd: list[str]) -> tuple[float, float, int, int]:
    """(wall s, CPU s, peak RssAnon bytes, exit status) of one child."""
    peak = [0]
    with tempfile.TemporaryFile() as err_file:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file)
        done = threading.Event()

        def sample() -> None:
            status = f"/proc/{p.pid}/status"
            while not done.is_set():
                try:
                    for line in open(status):
                        if line.startswith("RssAnon:"):
                            peak[0] = max(peak[0], int(line.split()[1]) * 1024)
                except (OSError, ValueError):
                    pass
                done.wait(0.02)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        done.set()
        th.join()
        rc = os.waitstatus_to_exitcode(status)
        if rc:
            err_file.seek(0)
            sys.stderr.write(err_file.read().decode(errors="replace")[-4000:])
    return wall, usage.ru_utime + usage.ru_stime, peak[0], rc


def main() -> int:
    argv, extra = split_passthrough(sys.argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("model", nargs="?", help="any part of a split model")
    ap.add_argument("--synth", metavar="SIZE", help="generate a synthetic model of SIZE (1G)")
    ap.add_argument("--dtype", choices=["f16", "bf16", "f32"], default="f16")
    ap.add_argument("--part-size", default="1G", help="input (and output) part size")
    ap.add_argument("--dir", type=Path, help="where to put the synthetic model and the outputs")
    ap.add_argument("--keep", action="store_true", help="keep the synthetic model")
    ap.add_argument("-t", "--type", action="append", dest="types", help="target (repeatable)")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if bool(a.model) == bool(a.synth):
        ap.error("give a model or --synth SIZE")
    sys.path.insert(0, str(ROOT / "python"))
    from iqk_rs.gguf.split import open_model

    work = Path(tempfile.mkdtemp(prefix="iqk-bench-split-", dir=a.dir))
    try:
        if a.synth:
            t0 = time.perf_counter()
            model = synth_model(
                work / "synth", parse_size(a.synth), parse_size(a.part_size), a.dtype
            )
            print(f"generated {model.name} in {time.perf_counter() - t0:.1f} s", flush=True)
        else:
            model = Path(a.model)
        with open_model(model) as m:
            paths = list(getattr(m, "paths", [m.path]))
            size_in = sum(p.stat().st_size for p in paths)
            largest = max(t.n_elements for t in m.tensors.values())
        print(f"model {model.name}: {len(paths)} parts, {size_in / 1e9:.2f} GB; largest tensor "
              f"{largest * 4 / 2**20:.0f} MiB as f32; {os.cpu_count()} CPUs, threads "
              f"{a.threads or 'all'}; extra args {extra or 'none'}")  # fmt: skip
        print(f"{'type':8} {'out GB':>7} {'wall s':>8} {'GB/s':>6} {'floor s':>8} {'x floor':>8} "
              f"{'CPU s':>8} {'cores per GB/s':>15} {'RssAnon MiB':>12}")  # fmt: skip
        for t in a.types or SIX:
            out_dir = work / f"out-{t}"
            out_dir.mkdir()
            cmd = [sys.executable, "-m", "iqk_rs.cli", "quantize", str(model), str(out_dir / "q"),
                   t, "-q", "--split-max-size", a.part_size, *extra]  # fmt: skip
            if a.threads:
                cmd += ["--threads", str(a.threads)]
            env_path = os.environ.get("PYTHONPATH")
            os.environ["PYTHONPATH"] = str(ROOT / "python") + (f":{env_path}" if env_path else "")
            wall, cpu, peak, rc = run_sampled(cmd)
            if rc:
                print(f"{t:8} failed (exit {rc})")
                shutil.rmtree(out_dir)
                continue
            size_out = sum(p.stat().st_size for p in out_dir.iterdir())
            shutil.rmtree(out_dir)
            floor = read_floor(paths) + write_floor(work, size_out)
            gb = size_in / 1e9
            print(f"{t:8} {size_out / 1e9:7.2f} {wall:8.1f} {gb / wall:6.3f} {floor:8.1f} "
                  f"{wall / floor:8.1f} {cpu:8.1f} {cpu / gb:15.1f} {peak / 2**20:12.0f}",
                  flush=True)  # fmt: skip
    finally:
        if a.synth and a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
