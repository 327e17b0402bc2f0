"""Quantization throughput per type: ours on every SIMD path the CPU has, single- and all-thread,
and, when available, ik_llama.cpp's own quantizer on the same data in the same run.

    python benches/bench_quantize.py [--types six,companions] [--best] [--no-imatrix] [--rows 256]
        [--cols 4096] [--repeat 5]

Types: ``--types`` takes type names (``iq2_ks:fast``, ``iq2_ks:exhaustive``, ``NAME:best`` pick a
search) and groups: ``six`` (IQ2_K..IQ4_KS), ``companions`` (the types ik's mixes put on the
largest tensors, and IQ5_KS), ``best`` (search="best" of the six) and ``all``; the default is
the six and the companions. ``--best`` adds the ``best`` group.

Data: normal(0, 0.02) weights with a chi-square(2) importance matrix (as the speed issue's facts),
or none with ``--no-imatrix`` (what a tensor the imatrix has no entry for gets, e.g. a separate
``output.weight``; the K-quants then run another search).
One column per SIMD path (those ``iqk_rs.simd_info()`` lists as candidates, each but this process's
own timed in a subprocess with IQK_RS_SIMD=<path>): single-thread throughput by the calling thread's
CPU time; ``*`` marks this process's path, which the other columns use, and ``!`` a path whose bytes
differ from it. ``x scalar`` is that path's rate over the scalar one. ``x 1T`` is the thread
scaling: single- over all-thread wall time. ``procs`` is the machine's own scaling: the
single-thread time over that of as many single-thread processes as CPUs, each quantizing its share
of the rows, started together (the slowest counting). The three are timed in turn in every round,
best of ``--repeat`` rounds, so that a change in the machine's load hits them alike; on a shared or
frequency-boosting machine ``procs`` is the reference for ``x 1T``. For ik_llama.cpp, point
IQK_BENCH_IK_LIB at a shared library built from ik_llama.cpp's ggml-quants.c and
iqk/iqk_quantize.cpp that exports its `quantize_<type>(src, dst, nrows, n_per_row, imatrix,
user_data)` functions (its libggml.so does); ``rows same`` then counts the rows both quantize to the
same bytes (``-`` for search="best", whose bytes are meant to differ). Expect all of them only from
a build with ``-ffp-contract=off``, as the golden files were made: a default ``-march=native`` build
fuses a*b+c into FMAs in its scalar code and differs in some rows, mostly of the companion types (we
reproduce the uncontracted arithmetic).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
import zlib

# Single-thread runs are timed by the calling thread's CPU time (both quantizers run on it with
# one thread): the process's would also count other threads spinning idle, numpy's BLAS threads
# after numpy's own work and rayon's after an all-thread round (seen inflating IQ2_K by 1.6x and
# Q8_0 by 2.3x). Nothing here uses BLAS, so it gets one thread; set before numpy starts.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

SIX = ["iq2_k", "iq3_k", "iq4_k", "iq2_ks:fast", "iq2_ks:exhaustive", "iq3_ks", "iq4_ks"]
# The types ik's mixes put on the largest tensors (output, token embedding, attn_v, ffn_down),
# and IQ5_KS.
COMPANIONS = ["q5_K", "q6_K", "iq5_k", "iq6_k", "q8_0", "iq4_nl", "q4_K", "iq5_ks"]
# search="best" (issue 22), compared with ik's default quantizer of the same type.
BEST = [f"{t}:best" for t in ("iq2_k", "iq3_k", "iq4_k", "iq2_ks", "iq3_ks", "iq4_ks")]
GROUPS = {"six": SIX, "companions": COMPANIONS, "best": BEST, "all": SIX + COMPANIONS + BEST}
DEFAULT_TYPES = "six,companions"
SEARCHES = ("", "fast", "exhaustive", "best")
# Slow searches get fewer rows so the run stays short; throughput is per weight either way.
ROW_SHARE = {
    "iq2_k": 4,
    "iq2_ks:exhaustive": 4,
    "iq5_k": 4,
    "iq6_k": 4,
    "iq5_ks": 4,
    **{spec: 8 for spec in BEST},
}
# Widest last: the order of the per-path columns.
PATH_ORDER = ("scalar", "neon", "avx2", "avx512")


def parse_types(text: str, known: list[str]) -> list[str]:
    """The benchmark specs a ``--types`` value names: comma-separated groups (GROUPS) and
    ``type[:search]`` with the type spelled as in ``known`` (any case), in order, each once.
    Raises ValueError naming the first item that is neither."""
    canonical = {name.lower(): name for name in known}
    specs: list[str] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item.lower() in GROUPS:
            found = GROUPS[item.lower()]
        else:
            name, _, search = item.partition(":")
            if name.lower() not in canonical or search.lower() not in SEARCHES:
                raise ValueError(
                    f"--types: {item!r} is neither a group ({', '.join(GROUPS)}) nor a type "
                    f"({', '.join(known)}) with an optional :{'|:'.join(SEARCHES[1:])}"
                )
            found = [canonical[name.lower()] + (f":{search.lower()}" if search else "")]
        specs += [spec for spec in found if spec not in specs]
    if not specs:
        raise ValueError("--types names no type")
    return specs


def simd_paths(info: list[dict], active: str) -> list[str]:
    """The `active` path and every one some kernel of ``iqk_rs.simd_info()`` can run on,
    narrowest first."""
    found = {active, *(path for entry in info for path in entry["candidates"])}
    return sorted(found, key=lambda p: (PATH_ORDER.index(p) if p in PATH_ORDER else 99, p))


def data(rows: int, cols: int, imatrix: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The weights and, unless `imatrix` is false (``--no-imatrix``), the importance matrix."""
    rng = np.random.default_rng(1)
    x = rng.normal(0, 0.02, (rows, cols)).astype(np.float32)
    im = (rng.chisquare(2, cols) + 1e-3).astype(np.float32)
    return x, im if imatrix else None


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

    def __init__(self, spec: str, rows: int, cols: int, parts: int, imatrix: bool = True):
        base = [
            sys.executable,
            __file__,
            "--worker",
            spec,
            "--rows",
            str(rows),
            "--cols",
            str(cols),
            *([] if imatrix else ["--no-imatrix"]),
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


def worker(spec: str, rows: int, cols: int, part: str, imatrix: bool = True) -> None:
    """A `Workers` process: quantizes rows `k/n` of the type's share on each start time read
    from stdin, printing the seconds it took."""
    import iqk_rs

    k, n = map(int, part.split("/"))
    x, im = data(rows, cols, imatrix)
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
    rows: int,
    cols: int,
    repeat: int,
    specs: list[str],
    single_only: bool = False,
    imatrix: bool = True,
) -> dict[str, dict]:
    """Per spec, on this process's SIMD path: Mweights/s single-thread (CPU time, as ik's is
    measured) and a CRC of the bytes; unless `single_only`, also all threads (wall time), the
    thread scaling (single- over all-thread wall time) and the machine's own (see the module
    docstring), timed in turn each round."""
    import iqk_rs

    x, im = data(rows, cols, imatrix)
    cpus = os.cpu_count() or 1
    out = {}
    for spec in specs:
        name, search, xs = type_rows(x, spec)

        def run(threads, xs=xs, name=name, search=search or "fast"):
            return iqk_rs.quantize(xs, name, im, iq2ks_search=search, threads=threads)

        start = time.perf_counter()
        digest = zlib.crc32(run(1).tobytes())  # also the warm-up; bytes never depend on threads
        # Types this fast run as fast as memory, not the quantizer, once the workers' turn has
        # evicted the rows from cache (Q8_0 ran at half speed): they get an untimed run first,
        # as ik's back-to-back runs are warm.
        warm_up = time.perf_counter() - start < 0.05
        workers = None if single_only else Workers(spec, rows, cols, cpus, imatrix)
        one_cpu = one_wall = many = procs = float("inf")
        try:
            for _ in range(repeat):
                if warm_up:
                    run(1)
                cpu, wall = time.thread_time(), time.perf_counter()
                run(1)
                one_cpu = min(one_cpu, time.thread_time() - cpu)
                one_wall = min(one_wall, time.perf_counter() - wall)
                if single_only:
                    continue
                if warm_up:
                    run(None)
                many = min(many, best_time(lambda: run(None), 1))
                procs = min(procs, workers.run())
        finally:
            if workers:
                workers.close()
        out[spec] = {"one": xs.size / one_cpu / 1e6, "digest": digest}
        if not single_only:
            out[spec].update(
                all=xs.size / many / 1e6, scaling=one_wall / many, machine=one_wall / procs
            )
    return out


def measure_path(
    path: str, rows: int, cols: int, repeat: int, specs: list[str], imatrix: bool = True
) -> dict | None:
    """`measure_ours(single_only=True)` in a subprocess forced onto `path` (IQK_RS_SIMD); None,
    with a note on stderr, when the subprocess runs on another path (the CPU lacks it)."""
    cmd = [sys.executable, __file__, "--child", "--types", ",".join(specs)]
    cmd += ["--rows", str(rows), "--cols", str(cols), "--repeat", str(repeat)]
    cmd += [] if imatrix else ["--no-imatrix"]
    env = dict(os.environ, IQK_RS_SIMD=path)
    child = json.loads(
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    )
    if child["path"] != path:
        print(f"IQK_RS_SIMD={path} ran on {child['path']}; column left out", file=sys.stderr)
        return None
    return child["results"]


def measure_ik(
    lib_path: str, rows: int, cols: int, repeat: int, specs: list[str], imatrix: bool = True
) -> dict[str, dict[str, float]]:
    import iqk_rs

    class UserData(ctypes.Structure):
        _fields_ = [("symmetric_q4_0", ctypes.c_bool), ("slow_iq2_ks", ctypes.c_bool)]

    lib = ctypes.CDLL(lib_path)
    x, im = data(rows, cols, imatrix)
    im_ptr = None if im is None else im.ctypes.data
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
        # ik takes its IQ2_KS fast path (ours by default) only when given user data (as
        # llama-quantize does).
        fast = name == "iq2_ks" and search != "exhaustive"
        user = ctypes.byref(UserData(False, False)) if fast else None
        dst = np.zeros((xs.shape[0], iqk_rs.row_size(name, cols)), np.uint8)

        def run(xs=xs, dst=dst, fn=fn, user=user):
            fn(xs.ctypes.data, dst.ctypes.data, xs.shape[0], cols, im_ptr, user)

        t = best_time(run, repeat, time.thread_time)
        ours = iqk_rs.quantize(xs, name, im, iq2ks_search=search or "fast")
        same = "-" if search == "best" else f"{(ours == dst).all(axis=1).sum()}/{len(xs)}"
        out[spec] = {"one": xs.size / t / 1e6, "rows_same": same}
    return out


def table(
    specs: list[str],
    active: str,
    ours: dict[str, dict],
    paths: dict[str, dict],
    ik: dict[str, dict],
) -> list[str]:
    """The report's lines: per spec, single-thread Mweights/s on each path in `paths` (this
    process's `active` one from `ours`), then `ours`'s other columns and, if measured, ik's."""
    head = f"{'type':18}"
    for path in paths:
        head += f" {path + ('*' if path == active else ' '):>8}"
    head += f" {'x scalar':>8} {'ours allT':>9} {'x 1T':>6} {'procs':>6}"
    if ik:
        head += f" {'ik 1T':>7} {'x ik':>6} {'rows same':>9}"
    lines = [head]
    differ = False
    for spec in specs:
        o = ours[spec]
        line = f"{spec:18}"
        for path, results in paths.items():
            r = results[spec]
            mark = "*" if path == active else "!" if r["digest"] != o["digest"] else " "
            differ |= mark == "!"
            line += f" {r['one']:7.2f}{mark}"
        x_scalar = f"{o['one'] / paths['scalar'][spec]['one']:8.2f}" if "scalar" in paths else ""
        line += f" {x_scalar:>8} {o['all']:9.2f} {o['scaling']:6.2f} {o['machine']:6.2f}"
        if ik:
            k = ik[spec]
            line += f" {k['one']:7.2f} {o['one'] / k['one']:6.2f} {k['rows_same']:>9}"
        lines.append(line)
    if differ:
        lines.append(f"! bytes differ from the {active} path's")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--types",
        default=DEFAULT_TYPES,
        help=f"comma-separated types (NAME or NAME:fast|exhaustive|best) and groups "
        f"({', '.join(GROUPS)}); default {DEFAULT_TYPES}",
    )
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--best", action="store_true", help='also time search="best" (group best)')
    ap.add_argument(
        "--no-imatrix",
        dest="imatrix",
        action="store_false",
        help="quantize without an importance matrix (both tools; the K-quants then take their "
        "other search, as for tensors an imatrix has no entry for)",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--part", default="0/1", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.rows, args.cols, args.part, args.imatrix)
        return

    import iqk_rs

    try:
        known = [t["name"] for t in iqk_rs.type_table()]
        specs = parse_types(args.types + (",best" if args.best else ""), known)
    except ValueError as e:
        ap.error(str(e))
    active = iqk_rs.simd_path()
    if args.child:
        results = measure_ours(
            args.rows, args.cols, args.repeat, specs, single_only=True, imatrix=args.imatrix
        )
        print(json.dumps({"path": active, "results": results}))
        return

    ours = measure_ours(args.rows, args.cols, args.repeat, specs, imatrix=args.imatrix)
    paths = {}
    for path in simd_paths(iqk_rs.simd_info(), active):
        results = (
            ours
            if path == active
            else measure_path(path, args.rows, args.cols, args.repeat, specs, args.imatrix)
        )
        if results is not None:
            paths[path] = results
    lib = os.environ.get("IQK_BENCH_IK_LIB")
    ik = measure_ik(lib, args.rows, args.cols, args.repeat, specs, args.imatrix) if lib else {}

    with_imatrix = "with imatrix" if args.imatrix else "without imatrix"
    print(f"quantization, {args.rows} x {args.cols} weights {with_imatrix}, Mweights/s")
    print("per SIMD path: single thread (* this process's path, which the other columns use)")
    print("\n".join(table(specs, active, ours, paths, ik)))


if __name__ == "__main__":
    main()
