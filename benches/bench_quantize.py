"""Quantization throughput per type: ours (best SIMD path and scalar), single- and all-thread,
and, when available, ik_llama.cpp's own quantizer on the same data in the same run.

    python benches/bench_quantize.py [--rows 256] [--cols 4096] [--repeat 5]

Data: normal(0, 0.02) weights with a chi-square(2) importance matrix (as the speed issue's facts).
``x 1T`` is the thread scaling: single- over all-thread wall time. ``procs`` is the machine's
own scaling: the single-thread time over that of as many single-thread processes as CPUs, each
quantizing its share of the rows, started together (the slowest counting). The three are timed
in turn in every round, best of ``--repeat`` rounds, so that a change in the machine's load hits
them alike; on a shared or frequency-boosting machine ``procs`` is the reference for ``x 1T``.
Ratios are against baselines measured in this run: the scalar path (a subprocess with
IQK_RS_SIMD=scalar) and ik_llama.cpp. For the latter, point IQK_BENCH_IK_LIB at a shared library
built from ik_llama.cpp's ggml-quants.c and iqk/iqk_quantize.cpp that exports its
`quantize_<type>(src, dst, nrows, n_per_row, imatrix, user_data)` functions; the benchmark then
also checks that both produce the same bytes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time

import numpy as np

TYPES = ["iq2_k", "iq3_k", "iq4_k", "iq2_ks:fast", "iq2_ks:exhaustive", "iq3_ks", "iq4_ks"]
# With --best: search="best" (issue 22), compared with ik's default quantizer of the same type.
BEST = [f"{t}:best" for t in ("iq2_k", "iq3_k", "iq4_k", "iq2_ks", "iq3_ks", "iq4_ks")]
# Slow searches get fewer rows so the run stays short; throughput is per weight either way.
ROW_SHARE = {"iq2_k": 4, "iq2_ks:exhaustive": 4, **{spec: 8 for spec in BEST}}


def data(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.02, (rows, cols)).astype(np.float32)
    im = (rng.chisquare(2, cols) + 1e-3).astype(np.float32)
    return x, im


def type_rows(x: np.ndarray, spec: str) -> tuple[str, str, np.ndarray]:
    """A benchmark spec's type name, IQ2_KS search ("" when unset) and its rows of `x`."""
    name, _, search = spec.partition(":")
    return name, search, x[: max(1, len(x) // ROW_SHARE.get(spec, 1))]


def best_time(fn, repeat: int, clock=time.perf_counter) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


class Workers:
    """One single-thread worker process per CPU, each holding its share of a type's rows, kept
    alive across rounds so that a round times only the quantization."""

    def __init__(self, spec: str, rows: int, cols: int, parts: int):
        base = [
            sys.executable,
            __file__,
            "--worker",
            spec,
            "--rows",
            str(rows),
            "--cols",
            str(cols),
        ]
        self.procs = [
            subprocess.Popen(
                [*base, "--part", f"{k}/{parts}"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for k in range(parts)
        ]
        for p in self.procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"benchmark worker for {spec} failed")

    def run(self) -> float:
        """Wall time of all workers quantizing their shares together."""
        start_at = time.time() + 0.05
        for p in self.procs:
            p.stdin.write(f"{start_at}\n")
            p.stdin.flush()
        return max(float(p.stdout.readline()) for p in self.procs)

    def close(self) -> None:
        for p in self.procs:
            p.stdin.close()
            p.wait()


def worker(spec: str, rows: int, cols: int, part: str) -> None:
    """A `Workers` process: quantizes rows `k/n` of the type's share on each start time read
    from stdin, printing the seconds it took."""
    import iqk_rs

    k, n = map(int, part.split("/"))
    x, im = data(rows, cols)
    name, search, xs = type_rows(x, spec)
    share = xs[k * len(xs) // n : (k + 1) * len(xs) // n]

    def run():
        iqk_rs.quantize(share, name, im, iq2ks_search=search or "fast", threads=1)

    run()
    print("ready", flush=True)
    for line in sys.stdin:
        start_at = float(line)
        while time.time() < start_at:
            pass
        start = time.perf_counter()
        run()
        print(time.perf_counter() - start, flush=True)


def measure_ours(
    rows: int, cols: int, repeat: int, with_procs: bool, specs: list[str]
) -> dict[str, dict[str, float]]:
    """Mweights/s of this process's SIMD path: single thread (CPU time, as ik's is measured)
    and all threads (wall time); the thread scaling (single- over all-thread wall time) and,
    with `with_procs`, the machine's own (see the module docstring), timed in turn each round."""
    import iqk_rs

    x, im = data(rows, cols)
    cpus = os.cpu_count() or 1
    out = {}
    for spec in specs:
        name, search, xs = type_rows(x, spec)

        def run(threads, xs=xs, name=name, search=search or "fast"):
            return iqk_rs.quantize(xs, name, im, iq2ks_search=search, threads=threads)

        workers = Workers(spec, rows, cols, cpus) if with_procs else None
        one_cpu = one_wall = many = procs = float("inf")
        try:
            for _ in range(repeat):
                cpu, wall = time.process_time(), time.perf_counter()
                run(1)
                one_cpu = min(one_cpu, time.process_time() - cpu)
                one_wall = min(one_wall, time.perf_counter() - wall)
                many = min(many, best_time(lambda: run(None), 1))
                if workers:
                    procs = min(procs, workers.run())
        finally:
            if workers:
                workers.close()
        out[spec] = {
            "one": xs.size / one_cpu / 1e6,
            "all": xs.size / many / 1e6,
            "scaling": one_wall / many,
            "machine": one_wall / procs,
        }
    return out


def measure_ik(
    lib_path: str, rows: int, cols: int, repeat: int, specs: list[str]
) -> dict[str, dict[str, float]]:
    import iqk_rs

    class UserData(ctypes.Structure):
        _fields_ = [("symmetric_q4_0", ctypes.c_bool), ("slow_iq2_ks", ctypes.c_bool)]

    lib = ctypes.CDLL(lib_path)
    x, im = data(rows, cols)
    out = {}
    for spec in specs:
        name, search, xs = type_rows(x, spec)
        xs = np.ascontiguousarray(xs)
        fn = getattr(lib, f"quantize_{name}")
        fn.restype = ctypes.c_size_t
        fn.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        # ik takes its IQ2_KS fast path only when given user data (as llama-quantize does).
        fast = search == "fast" or (search == "best" and name == "iq2_ks")
        user = ctypes.byref(UserData(False, False)) if fast else None
        dst = np.zeros((xs.shape[0], iqk_rs.row_size(name, cols)), np.uint8)

        def run(xs=xs, dst=dst, fn=fn, user=user):
            fn(xs.ctypes.data, dst.ctypes.data, xs.shape[0], cols, im.ctypes.data, user)

        t = best_time(run, repeat, time.process_time)
        ours = iqk_rs.quantize(xs, name, im, iq2ks_search=search or "fast")
        same = "-" if search == "best" else str(bool(np.array_equal(ours, dst)))
        out[spec] = {"one": xs.size / t / 1e6, "same_bytes": same}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--best", action="store_true", help='also time search="best"')
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--part", default="0/1", help=argparse.SUPPRESS)
    args = ap.parse_args()
    specs = TYPES + (BEST if args.best else [])
    if args.child:
        print(json.dumps(measure_ours(args.rows, args.cols, args.repeat, False, specs)))
        return
    if args.worker:
        worker(args.worker, args.rows, args.cols, args.part)
        return

    ours = measure_ours(args.rows, args.cols, args.repeat, True, specs)
    env = dict(os.environ, IQK_RS_SIMD="scalar")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--rows",
        str(args.rows),
        "--cols",
        str(args.cols),
        "--repeat",
        str(args.repeat),
        *(["--best"] if args.best else []),
    ]
    scalar = json.loads(
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    )
    lib = os.environ.get("IQK_BENCH_IK_LIB")
    ik = measure_ik(lib, args.rows, args.cols, args.repeat, specs) if lib else {}

    print(f"quantization, {args.rows} x {args.cols} weights with imatrix, Mweights/s")
    head = (
        f"{'type':18} {'ours 1T':>8} {'scalar 1T':>9} {'x scalar':>8} {'ours allT':>9} {'x 1T':>6}"
        f" {'procs':>6}"
    )
    if ik:
        head += f" {'ik 1T':>7} {'x ik':>6} {'same bytes':>10}"
    print(head)
    for spec in specs:
        o, s = ours[spec], scalar[spec]
        line = (
            f"{spec:18} {o['one']:8.2f} {s['one']:9.2f} {o['one'] / s['one']:8.2f} "
            f"{o['all']:9.2f} {o['scaling']:6.2f} {o['machine']:6.2f}"
        )
        if ik:
            k = ik[spec]
            line += f" {k['one']:7.2f} {o['one'] / k['one']:6.2f} {k['same_bytes']:>10}"
        print(line)


if __name__ == "__main__":
    main()
