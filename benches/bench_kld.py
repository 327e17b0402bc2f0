"""Model-level check of search="best": KL divergence from the unquantized model, ours vs ik's.

Needs a local ik_llama.cpp build (kept outside this repository) with llama-quantize,
llama-imatrix and llama-perplexity. For each type: ik's llama-quantize and `iqk quantize
--search best` quantize MODEL (F16) with the same imatrix (made by llama-imatrix on --calib
text); llama-perplexity scores both against the F16 model's logits on --eval text
(--kl-divergence-base once, then --kl-divergence per file). Prints size, quantization time,
PPL, mean KLD and 99th-percentile KLD per file.

    python benches/bench_kld.py MODEL-F16.gguf --ik-bin DIR --calib C.txt --eval E.txt \
        [--types IQ4_K,...] [--chunks 40] [--ctx 512] [--workdir DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

TYPES = ["IQ4_K", "IQ4_KS", "IQ3_K", "IQ3_KS", "IQ2_K", "IQ2_KS"]


def run(cmd: list[str], log: Path) -> float:
    """Run a command, its output to `log`; returns the wall time. Fails loudly."""
    start = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}; see {log}")
    return time.perf_counter() - start


def kld_stats(log: Path) -> dict[str, float]:
    text = log.read_text(errors="replace")

    def grab(pattern: str) -> float:
        m = re.search(pattern, text)
        return float(m.group(1)) if m else float("nan")

    return {
        "ppl": grab(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)"),
        "kld": grab(r"Mean\s+KLD:\s*([0-9.]+)"),
        "kld99": grab(r"99\.0%\s+KLD:\s*([0-9.]+)"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--ik-bin", required=True, help="directory with ik's llama-* binaries")
    ap.add_argument("--calib", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--types", default=",".join(TYPES))
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--workdir", default="kld-work")
    args = ap.parse_args()

    ik = Path(args.ik_bin)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    threads = str(args.threads)
    common = ["-c", str(args.ctx), "--chunks", str(args.chunks), "-t", threads]
    imatrix = work / "imatrix.dat"
    if not imatrix.exists():
        cmd = [str(ik / "llama-imatrix"), "-m", args.model, "-f", args.calib, "-o", str(imatrix)]
        run([*cmd, *common], work / "imatrix.log")
    base = work / "base.kld"
    if not base.exists():
        cmd = [str(ik / "llama-perplexity"), "-m", args.model, "-f", args.eval]
        run([*cmd, "--kl-divergence-base", str(base), *common], work / "base.log")

    print(f"{args.model}: {args.chunks} chunks of {args.ctx} tokens of {args.eval}")
    print(
        f"{'type':7} {'quantizer':10} {'MiB':>8} {'time s':>7} {'PPL':>9} {'mean KLD':>9} "
        f"{'99% KLD':>9}"
    )
    iqk = [sys.executable, "-m", "iqk_rs.cli", "quantize"]
    for qtype in args.types.split(","):
        files = {
            "ik": (
                work / f"{qtype}-ik.gguf",
                [str(ik / "llama-quantize"), "--imatrix", str(imatrix), args.model],
            ),
            "iqk best": (
                work / f"{qtype}-best.gguf",
                [*iqk, "--imatrix", str(imatrix), "--search", "best", "-q", args.model],
            ),
        }
        for who, (path, cmd) in files.items():
            secs = run([*cmd, str(path), qtype, threads], work / f"{path.stem}.quantize.log")
            log = work / f"{path.stem}.kld.log"
            kcmd = [str(ik / "llama-perplexity"), "-m", str(path), "--kl-divergence-base"]
            run([*kcmd, str(base), "--kl-divergence", *common], log)
            s = kld_stats(log)
            mib = path.stat().st_size / 2**20
            print(
                f"{qtype:7} {who:10} {mib:8.2f} {secs:7.1f} {s['ppl']:9.4f} {s['kld']:9.5f} "
                f"{s['kld99']:9.5f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
