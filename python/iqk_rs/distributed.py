"""Quantize one model on a Ray cluster: many machines, the same bytes as ``iqk quantize``.

Every node sees the input and output paths (a shared filesystem: NFS, Lustre, CephFS).
The driver reads the headers only and plans everything the local run plans (types, files,
metadata), then, with the writer's own layout (``writer.plan_layout``), every tensor's
offset in its output file. The work is cut into units - row ranges of one matrix (one expert
slice of a MoE tensor) of at most ``max_unit_bytes`` of input - and each unit, a Ray task,
memory-maps its input rows, converts them with ``pipeline.quantize_rows`` (the local
pipeline's function) and writes the result with ``os.pwrite`` at its planned offset in a
pre-sized temporary file beside the output. Only unit descriptions (and the imatrix row of
their matrix) and small results travel through Ray. The driver writes each file's header and,
when all its units are done, fsyncs and renames it into place.

Faults: a unit's write is idempotent (same bytes, same place), so Ray retries the units of a
worker or node that died. Each finished unit is appended to a manifest (JSON lines: unit,
byte range, BLAKE2b of its bytes) beside the temporary file; ``resume`` verifies those
checksums (on the cluster) and redoes only the units that are missing or do not match.

Ray is imported only here and only when a run starts: ``pip install 'iqk-rs[ray]'``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import pipeline as pl
from .gguf.ggml_types import GGMLType, type_by_id
from .gguf.reader import GGUFReader, TensorInfo
from .gguf.split import SplitModel
from .gguf.writer import (
    _fsync_directory,
    check_free_space,
    plan_layout,
    resolve_output,
    take_over_attributes,
)

DEFAULT_UNIT_BYTES = 256 * 10**6
MANIFEST_VERSION = 1
VERIFY_BATCH_BYTES = 4 * 2**30  # input of one checksum-verifying task on resume
_HINT = "pip install 'iqk-rs[ray]'"


@dataclass
class RayOptions:
    """How to run on Ray; the quantization itself takes ``pipeline.QuantizeOptions``."""

    address: str = "auto"  # ray.init's address: "auto" joins the cluster this process runs in
    max_unit_bytes: int = DEFAULT_UNIT_BYTES  # input bytes per work unit (at least one row)
    resume: bool = False  # continue the unfinished run of the same plan, from its manifests
    cpus_per_task: int = 1  # Ray CPUs per unit, and the unit's quantizing threads
    max_retries: int = 3  # Ray retries of a unit whose worker or node died
    init_kwargs: dict[str, Any] = field(default_factory=dict)  # more ray.init arguments
    log: Callable[[str], None] | None = None  # one-line notes (resumed units, stale files)


@dataclass
class NodeStats:
    node: str  # IP and node id prefix
    units: int = 0
    bytes_in: int = 0
    busy_seconds: float = 0.0  # sum over the node's units


@dataclass
class RunStats:
    units: int = 0  # of the files written by this run
    units_done: int = 0  # converted by this run
    units_verified: int = 0  # finished by an earlier run, checksums verified
    bytes_in: int = 0  # converted by this run
    seconds: float = 0.0  # from the first unit submitted to the last file renamed
    nodes: dict[str, NodeStats] = field(default_factory=dict)


@dataclass
class RayReport(pl.Report):
    """The local run's report, plus what the cluster did."""

    run: RunStats = field(default_factory=RunStats)


@dataclass
class Unit:
    """Rows [row0, row0 + nrows) of one matrix of a tensor: read, convert, pwrite."""

    id: int  # in plan order over the file
    tensor: TensorInfo
    out_type_id: int
    action: str  # as TensorPlan.action
    src_path: str
    src_offset: int  # absolute offset of row0 in the input file
    row0: int  # counted over the whole tensor (all experts)
    nrows: int
    dst_offset: int  # absolute offset in the output file
    dst_nbytes: int
    imatrix: np.ndarray | None  # this matrix's importance row

    @property
    def src_nbytes(self) -> int:
        return self.nrows * (self.tensor.nbytes // self.tensor.nrows)

    def where(self) -> str:
        return f"tensor {self.tensor.name!r} rows {self.row0}..{self.row0 + self.nrows - 1}"


def parse_unit_size(text: str) -> int:
    """--ray-unit-size: bytes, or a whole number with K, M or G (10^3, 10^6, 10^9)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)\s*", text.upper())
    if not m or int(m.group(1)) <= 0:
        raise pl.ConvertError(
            f"--ray-unit-size {text!r}: give a positive number of bytes, e.g. 256M or 1G"
        )
    return int(m.group(1)) * {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}[m.group(2)]


def _ray():
    try:
        import ray
    except ImportError:
        raise pl.ConvertError(f"--ray needs Ray, which is not installed: {_HINT}") from None
    return ray


# -- planning (driver, headers only) ----------------------------------------------------


def _input_location(reader: GGUFReader | SplitModel, name: str) -> tuple[Path, int]:
    """The file holding tensor ``name`` and the absolute offset of its data there."""
    part = reader.parts[reader.part_index(name)] if isinstance(reader, SplitModel) else reader
    return part.path, part.data_offset + part.tensors[name].offset


def plan_units(
    reader: GGUFReader | SplitModel, spec: pl.FileSpec, max_unit_bytes: int
) -> list[Unit]:
    """The work units of one output file, at the offsets of the writer's layout."""
    layout = plan_layout(spec.kvs, spec.tensors(), spec.alignment)
    units: list[Unit] = []
    for p, offset in zip(spec.plans, layout.offsets, strict=True):
        t = p.info
        if t.nrows == 0 or t.nbytes == 0:
            continue
        src_path, src_offset = _input_location(reader, t.name)
        in_row = t.nbytes // t.nrows
        out_row = p.out_nbytes // t.nrows
        # a quantized tensor goes matrix by matrix (each expert has its own imatrix row)
        per = t.ne[1] if p.action == "quantize" and len(t.ne) > 1 else t.nrows
        step = max(1, max_unit_bytes // in_row)
        for e in range(t.nrows // per):
            imat = None
            if p.action == "quantize" and p.imatrix is not None:
                imat = np.ascontiguousarray(p.imatrix[e * t.ne[0] : (e + 1) * t.ne[0]])
            for r in range(e * per, (e + 1) * per, step):
                n = min(step, (e + 1) * per - r)
                units.append(
                    Unit(
                        len(units),
                        t,
                        p.out_type.id,
                        p.action,
                        str(src_path),
                        src_offset + r * in_row,
                        r,
                        n,
                        offset + r * out_row,
                        n * out_row,
                        imat,
                    )
                )
    return units


def _fingerprint(header: bytes, units: list[Unit], search: str) -> str:
    """What the output bytes depend on; a manifest of another plan is not resumed."""
    from . import __version__

    h = hashlib.blake2b(digest_size=16)
    h.update(f"{__version__}|{search}|".encode())
    h.update(header)
    for u in units:
        key = (u.id, u.tensor.name, u.out_type_id, u.action, u.src_path, u.src_offset, u.nrows)
        h.update(repr((key, u.dst_offset, u.dst_nbytes)).encode())
        if u.imatrix is not None:
            h.update(u.imatrix.tobytes())
    return h.hexdigest()


def _row_chunks(rows: np.ndarray, row_values: int, chunk_values: int) -> Iterator[np.ndarray]:
    """A unit's rows in chunks of about ``chunk_values`` values, as the local writer takes them."""
    step = max(1, chunk_values // max(row_values, 1))
    for i in range(0, rows.shape[0], step):
        yield rows[i : i + step]


def temp_path(path: Path) -> Path:
    """Beside the file the output replaces (a symlink's target), as the local writer's."""
    target = resolve_output(path)
    return target.with_name(f".{target.name}.ray.partial")


def manifest_path(path: Path) -> Path:
    target = resolve_output(path)
    return target.with_name(f".{target.name}.ray.manifest")


# -- work (Ray tasks) -------------------------------------------------------------------


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data.nbytes:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def run_unit(
    unit: Unit, dst: str, threads: int, search: str, version: str
) -> tuple[int, str, int, str, float]:
    """Convert one unit and write it in place: (unit id, node, input bytes, digest, seconds)."""
    from . import __version__

    t0 = time.perf_counter()
    if version != __version__:
        raise pl.ConvertError(
            f"iqk-rs {__version__} on this node, the driver runs {version}: install the same "
            "version on every node (the bytes could differ)"
        )
    t = unit.tensor
    in_row = t.nbytes // t.nrows
    out_type = type_by_id(unit.out_type_id)
    src = np.memmap(unit.src_path, np.uint8, "r", unit.src_offset, (unit.nrows * in_row,))
    rows = src.reshape(unit.nrows, in_row)
    digest = hashlib.blake2b(digest_size=16)
    fd = os.open(dst, os.O_WRONLY)  # no O_CREAT: never recreate a file the driver removed
    try:
        offset = unit.dst_offset
        if unit.action != "quantize":
            chunks = _row_chunks(rows, max(1, in_row), pl.chunk_values_for(threads))
        else:
            chunks = _row_chunks(rows, t.ne[0], pl.chunk_values_for(threads))
        per_matrix = t.ne[1] if len(t.ne) > 1 else 1
        row = unit.row0
        for chunk in chunks:
            if unit.action == "quantize":
                at = (row // per_matrix, row % per_matrix)
                q = pl.quantize_rows(t, out_type, chunk, unit.imatrix, threads, search, at)
                row += len(chunk)
            else:
                q = chunk
            data = memoryview(np.ascontiguousarray(q)).cast("B")
            _pwrite_all(fd, data, offset)
            digest.update(data)
            offset += data.nbytes
        if offset - unit.dst_offset != unit.dst_nbytes:
            raise pl.ConvertError(
                f"{unit.where()}: wrote {offset - unit.dst_offset} bytes, planned {unit.dst_nbytes}"
            )
        os.fdatasync(fd)  # a unit in the manifest is on disk
    finally:
        os.close(fd)
    del rows, src
    return unit.id, _node_name(), unit.src_nbytes, digest.hexdigest(), time.perf_counter() - t0


def verify_units(dst: str, entries: list[tuple[int, int, int, str]]) -> list[int]:
    """The ids of (id, offset, nbytes, digest) entries whose bytes in ``dst`` still match."""
    good = []
    with open(dst, "rb") as f:
        for uid, offset, nbytes, want in entries:
            f.seek(offset)
            h = hashlib.blake2b(digest_size=16)
            left = nbytes
            while left:
                block = f.read(min(left, 1 << 24))
                if not block:
                    break
                h.update(block)
                left -= len(block)
            if not left and h.hexdigest() == want:
                good.append(uid)
    return good


def _node_name() -> str:
    ray = _ray()
    ctx = ray.get_runtime_context()
    return f"{ray.util.get_node_ip_address()}/{ctx.get_node_id()[:8]}"


# -- driver -----------------------------------------------------------------------------


@dataclass
class _File:
    spec: pl.FileSpec
    units: list[Unit]
    header: bytes
    total_bytes: int
    fingerprint: str
    tmp: Path
    manifest: Path
    left: set[int] = field(default_factory=set)  # unit ids not finished
    log: Any = None  # the open manifest


class RayWriter:
    """``pipeline.write_output`` on a Ray cluster (same arguments, same files)."""

    def __init__(self, options: RayOptions):
        self.options = options
        self.stats = RunStats()

    def _note(self, msg: str) -> None:
        if self.options.log is not None:
            self.options.log(msg)

    def __call__(
        self,
        reader: GGUFReader | SplitModel,
        plans: list[pl.TensorPlan],
        out: Path,
        kvs: list,
        split: pl.SplitOptions,
        *,
        threads: int | None,
        search: str,
        progress: pl.Progress,
    ) -> list[pl.OutputFile]:
        opts = self.options
        if opts.max_unit_bytes < 1:
            raise pl.ConvertError(f"the unit size must be positive, got {opts.max_unit_bytes}")
        specs = pl.output_files(reader, plans, out, kvs, split)
        # --resume keeps finished files as --partial-requant does (checked to be this run's)
        keep = replace(split, partial_requant=split.partial_requant or opts.resume)
        kept = set()
        for spec in specs:
            if pl.kept_file(spec, keep):
                kept.add(spec.path)
                for stale in (temp_path(spec.path), manifest_path(spec.path)):
                    stale.unlink(missing_ok=True)
        files = [self._plan_file(reader, s, search) for s in specs if s.path not in kept]
        ray = _ray()
        own = bool(files) and not ray.is_initialized()
        if own:
            self._connect(ray)
        try:
            if files:
                self._run(ray, files, search, progress)
        except pl.ConvertError as e:
            raise pl.ConvertError(
                f"{e}; the finished units are kept in {files[0].tmp.name} (and the like "
                "beside each output file): run again with --resume to convert only the others"
            ) from None
        finally:
            for f in files:
                if f.log is not None:
                    f.log.close()
            if own:
                ray.shutdown()
        return [
            pl.OutputFile(s.path, len(s.plans), s.path.stat().st_size, s.path in kept)
            for s in specs
        ]

    def _connect(self, ray) -> None:
        address = self.options.address
        try:
            ray.init(address=address, log_to_driver=False, **self.options.init_kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise pl.ConvertError(f"--ray {address}: cannot join a Ray cluster: {first}") from None

    def _plan_file(self, reader, spec: pl.FileSpec, search: str) -> _File:
        layout = plan_layout(spec.kvs, spec.tensors(), spec.alignment)
        units = plan_units(reader, spec, self.options.max_unit_bytes)
        fp = _fingerprint(layout.header, units, search)
        f = _File(
            spec,
            units,
            layout.header,
            layout.total_bytes,
            fp,
            temp_path(spec.path),
            manifest_path(spec.path),
            {u.id for u in units},
        )
        return f

    # -- temporary files and manifests ----------------------------------------------------
    def _resumable(self, f: _File) -> dict[int, tuple[int, int, str]]:
        """Finished units recorded by an earlier run of this plan: id -> (offset, n, digest)."""
        if not (self.options.resume and f.tmp.exists() and f.manifest.exists()):
            return {}
        try:
            lines = f.manifest.read_text().splitlines()
            head = json.loads(lines[0]) if lines else {}
        except (OSError, ValueError, UnicodeDecodeError):
            head = {}
        if head.get("plan") != f.fingerprint or f.tmp.stat().st_size != f.total_bytes:
            self._note(f"{f.manifest}: from another plan or damaged; starting {f.spec.path} anew")
            return {}
        by_id = {u.id: u for u in f.units}
        done = {}
        for line in lines[1:]:
            try:
                e = json.loads(line)
                uid, offset, n, digest = e["unit"], e["offset"], e["nbytes"], e["blake2b"]
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the killed driver
            u = by_id.get(uid)
            if u is not None and (u.dst_offset, u.dst_nbytes) == (offset, n):
                done[uid] = (offset, n, digest)
        return done

    def _start_file(self, f: _File, keep_manifest: bool) -> None:
        if not keep_manifest:
            with open(f.tmp, "wb") as fh:
                fh.truncate(f.total_bytes)  # sparse; the padding between tensors stays zero
            with open(f.manifest, "w") as fh:
                fh.write(json.dumps({"version": MANIFEST_VERSION, "plan": f.fingerprint}) + "\n")
        fd = os.open(f.tmp, os.O_WRONLY)
        try:
            _pwrite_all(fd, memoryview(f.header), 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        f.log = open(f.manifest, "a")  # closed by __call__, or when the file is finished

    def _record(self, f: _File, u: Unit, digest: str) -> None:
        entry = {"unit": u.id, "offset": u.dst_offset, "nbytes": u.dst_nbytes, "blake2b": digest}
        f.log.write(json.dumps(entry) + "\n")
        f.log.flush()

    def _finish_file(self, f: _File) -> None:
        f.log.close()
        f.log = None
        fd = os.open(f.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        target = resolve_output(f.spec.path)
        take_over_attributes(f.tmp, target)
        os.replace(f.tmp, target)
        _fsync_directory(target.parent)
        f.manifest.unlink(missing_ok=True)

    # -- the run ---------------------------------------------------------------------------
    def _run(self, ray, files: list[_File], search: str, progress: pl.Progress) -> None:
        from . import __version__

        opts = self.options
        stats = self.stats
        stats.units = sum(len(f.units) for f in files)
        progress.start([p for f in files for p in f.spec.plans])
        n_nodes = len([n for n in ray.nodes() if n.get("Alive")])
        t0 = time.perf_counter()

        verified = self._verify(ray, files)
        fresh = [f for f in files if not verified.get(f.tmp)]
        if fresh:  # all files at once, as the local run, not file by file into the run
            check_free_space(fresh[0].spec.path, sum(f.total_bytes for f in fresh))
        for f in files:
            self._start_file(f, keep_manifest=bool(verified.get(f.tmp)))
            for uid in verified.get(f.tmp, ()):
                f.left.discard(uid)
                progress.advance(f.units[uid].src_nbytes)
        stats.units_verified = sum(len(v) for v in verified.values())
        if stats.units_verified:
            self._note(
                f"resumed: {stats.units_verified} of {stats.units} units finished earlier "
                "(checksums verified), converting the other "
                f"{stats.units - stats.units_verified}"
            )
        for f in files:
            if not f.left:
                self._finish_file(f)

        threads = max(1, opts.cpus_per_task)
        task = ray.remote(run_unit).options(
            num_cpus=threads, max_retries=opts.max_retries, retry_exceptions=[OSError]
        )
        cpus = int(ray.cluster_resources().get("CPU", 1))
        window = max(4, 2 * cpus // threads)
        todo = [(f, u) for f in files for u in f.units if u.id in f.left]
        # per tensor: units left, for tensor_done
        tensor_left: dict[tuple[int, str], int] = defaultdict(int)
        for f, u in todo:
            tensor_left[(id(f), u.tensor.name)] += 1
        plan_of = {(id(f), p.info.name): p for f in files for p in f.spec.plans}
        tensor_secs: dict[tuple[int, str], float] = defaultdict(float)
        pending: dict[Any, tuple[_File, Unit]] = {}
        n_done = stats.units_verified
        progress.units(n_done, stats.units, n_nodes)
        it = iter(todo)
        try:
            while True:
                while len(pending) < window:
                    nxt = next(it, None)
                    if nxt is None:
                        break
                    f, u = nxt
                    ref = task.remote(u, str(f.tmp), threads, search, __version__)
                    pending[ref] = (f, u)
                if not pending:
                    break
                refs = list(pending)
                ray.wait(refs, num_returns=1)
                # then every unit finished meanwhile, in one call: with thousands in flight
                # (64 nodes) the driver's cost per unit stays small
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
                for ref in ready:
                    f, u = pending.pop(ref)
                    uid, node, nbytes, digest, secs = self._result(ray, ref, u)
                    self._record(f, u, digest)
                    f.left.discard(uid)
                    ns = stats.nodes.setdefault(node, NodeStats(node))
                    ns.units += 1
                    ns.bytes_in += nbytes
                    ns.busy_seconds += secs
                    stats.units_done += 1
                    stats.bytes_in += nbytes
                    n_done += 1
                    key = (id(f), u.tensor.name)
                    plan = plan_of[key]
                    progress.tensor_start(plan)
                    progress.advance(nbytes)
                    progress.units(n_done, stats.units, n_nodes)
                    tensor_secs[key] += secs
                    tensor_left[key] -= 1
                    if not tensor_left[key]:
                        progress.tensor_done(plan, tensor_secs[key])
                    if not f.left:
                        self._finish_file(f)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        stats.seconds = time.perf_counter() - t0

    def _result(self, ray, ref, u: Unit) -> tuple[int, str, int, str, float]:
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as e:
            cause = e.cause if isinstance(e.cause, Exception) else e
            if isinstance(cause, pl.ConvertError):
                raise pl.ConvertError(str(cause)) from None
            raise pl.ConvertError(f"{u.where()}: {_first_line(cause)}") from None
        except ray.exceptions.RayError as e:
            raise pl.ConvertError(
                f"{u.where()}: failed after {self.options.max_retries} retries: {_first_line(e)}"
            ) from None

    def _verify(self, ray, files: list[_File]) -> dict[Path, list[int]]:
        """Unit ids per temporary file whose recorded bytes are still there (on the cluster)."""
        batches = []
        for f in files:
            done = self._resumable(f)
            batch: list[tuple[int, int, int, str]] = []
            size = 0
            for uid, (offset, n, digest) in sorted(done.items()):
                batch.append((uid, offset, n, digest))
                size += n
                if size >= VERIFY_BATCH_BYTES:
                    batches.append((f, batch))
                    batch, size = [], 0
            if batch:
                batches.append((f, batch))
        if not batches:
            return {}
        task = ray.remote(verify_units).options(num_cpus=1, max_retries=self.options.max_retries)
        refs = [task.remote(str(f.tmp), b) for f, b in batches]
        good: dict[Path, list[int]] = defaultdict(list)
        for (f, _), ids in zip(batches, ray.get(refs), strict=True):
            good[f.tmp] += ids
        return good


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# -- entry point ------------------------------------------------------------------------


def quantize_model(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    target: str | GGMLType,
    opts: pl.QuantizeOptions | None = None,
    progress: pl.Progress | None = None,
    split: pl.SplitOptions | None = None,
    ray: RayOptions | None = None,
) -> RayReport:
    """``pipeline.quantize_model`` on a Ray cluster: the same options, plan and bytes.

    ``opts.threads`` is ignored: each unit uses ``ray.cpus_per_task`` threads.
    """
    ray_opts = ray or RayOptions()
    _ray()  # a clear error before any planning when Ray is missing
    writer = RayWriter(ray_opts)
    report = pl.quantize_model(inp, out, target, opts, progress, split, write=writer)
    base = {f.name: getattr(report, f.name) for f in fields(pl.Report)}
    base["threads"] = ray_opts.cpus_per_task
    return RayReport(**base, run=writer.stats)


__all__ = [
    "DEFAULT_UNIT_BYTES",
    "NodeStats",
    "RayOptions",
    "RayReport",
    "RayWriter",
    "RunStats",
    "Unit",
    "manifest_path",
    "plan_units",
    "quantize_model",
    "temp_path",
]
