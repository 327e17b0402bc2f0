"""Writing: the planned tensors streamed from the input into the output file(s), a chunk of
rows at a time, each file complete or absent (temporary file, fsync, rename)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..gguf.constants import GGUF_DEFAULT_ALIGNMENT, GGUFValueType
from ..gguf.ggml_types import GGMLType
from ..gguf.reader import KV, GGUFError, GGUFReader, TensorInfo
from ..gguf.split import Shard, SplitModel, plan_shards, shard_keys, split_info
from ..gguf.writer import (
    GGUFStreamWriter,
    GGUFWriteError,
    check_free_space,
    encode_kv,
    resolve_output,
)
from .encode import quantize_rows
from .options import ConvertError, SplitOptions
from .plan import TensorPlan

if TYPE_CHECKING:
    from .model import Report

GGML_QNT_VERSION = 2
# Values per row chunk and worker thread (at least one MiB of values per chunk): enough rows
# for every worker, while the f32 working copy and the output stay small enough to be
# recycled by the allocator instead of being faulted in afresh for every chunk.
CHUNK_VALUES_PER_THREAD = 1 << 19
MIN_CHUNK_VALUES = 1 << 20


@dataclass
class OutputFile:
    path: Path
    n_tensors: int
    nbytes: int
    skipped: bool = False  # already there (--partial-requant), not written by this run


class Progress:
    """Progress hooks; the CLI draws a rich bar with them. All no-ops here."""

    def start(self, plans: list[TensorPlan]) -> None: ...

    def tensor_start(self, plan: TensorPlan) -> None: ...

    def advance(self, nbytes_in: int) -> None: ...

    def tensor_done(self, plan: TensorPlan, seconds: float) -> None: ...

    def planned(self, report: Report) -> None:
        """Every type is chosen and every input checked; nothing has been written yet."""

    def units(self, done: int, total: int, nodes: int) -> None:
        """A distributed run: work units finished of all, and the cluster's node count."""


def check_paths(inp: Path, out: Path) -> None:
    """Refuse to clobber the input or write where we cannot, before any work is done.

    ``out`` is checked as the file it names: the target of a symlink (see
    ``writer.resolve_output``, which also refuses devices, FIFOs and sockets).
    """
    try:
        target = resolve_output(out)
    except GGUFWriteError as e:
        raise ConvertError(str(e)) from None
    if target.exists():
        if inp.exists() and os.path.samefile(inp, target):
            raise ConvertError(f"{out}: output would overwrite the input file")
    elif target == inp.resolve():
        raise ConvertError(f"{out}: output would overwrite the input file")
    parent = target.parent
    if not parent.is_dir():
        raise ConvertError(f"{out}: output directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConvertError(f"{out}: output directory {parent} is not writable")


def read_chunks(
    reader: GGUFReader, t: TensorInfo, row_values: int, chunk_values: int = 0
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(expert index, first row within the expert's matrix, raw rows) over a whole tensor.

    Each 2-D matrix (one for a dense tensor, one per expert of a 3-D one) comes in chunks of
    about ``chunk_values`` values (rows of ``row_values``), read by ``reader.read_rows`` so that
    an input truncated during the run is an error rather than SIGBUS.
    """
    per = t.ne[1] if len(t.ne) > 1 else 1
    step = max(1, (chunk_values or MIN_CHUNK_VALUES) // max(row_values, 1))
    for e in range(t.nrows // per):
        for r in range(0, per, step):
            yield e, r, reader.read_rows(t.name, e * per + r, e * per + min(r + step, per))


def chunk_values_for(threads: int | None) -> int:
    if threads:
        workers = threads
    elif hasattr(os, "sched_getaffinity"):  # the CPUs this process may use (Linux)
        workers = len(os.sched_getaffinity(0))
    else:
        workers = os.cpu_count() or 1
    return max(MIN_CHUNK_VALUES, workers * CHUNK_VALUES_PER_THREAD)


def _set_kv(kvs: dict[str, KV], kv: KV) -> None:
    kvs[kv.key] = kv  # replaces in place or appends, like gguf_set_val_*


def output_metadata(reader: GGUFReader, file_type: int | None, extra: list[KV] = ()) -> list[KV]:
    """Input metadata as llama-quantize rewrites it (order and types preserved)."""
    kvs = dict(reader.kv)
    _set_kv(kvs, KV("general.quantization_version", GGUFValueType.UINT32, GGML_QNT_VERSION))
    for k in ("split.no", "split.count", "split.tensors.count"):
        kvs.pop(k, None)
    for kv in extra:
        _set_kv(kvs, kv)
    if file_type is not None:
        _set_kv(kvs, KV("general.file_type", GGUFValueType.UINT32, file_type))
    return list(kvs.values())


def _write_file(
    reader: GGUFReader | SplitModel,
    plans: list[TensorPlan],
    out: Path,
    kvs: list[KV],
    alignment: int,
    threads: int | None,
    search: str,
    progress: Progress,
) -> None:
    """One output file, written to a temporary file and renamed into place when complete."""
    tensors = [(p.name, p.out_type, p.info.ne) for p in plans]
    values = chunk_values_for(threads)
    with GGUFStreamWriter(out, kvs, tensors, alignment) as w:
        for p in plans:
            t0 = time.perf_counter()
            progress.tensor_start(p)
            t = p.info
            if p.action != "quantize":
                for _, _, chunk in read_chunks(reader, t, t.ne[0] * 4, values):
                    w.write_chunk(p.name, chunk)
                    progress.advance(chunk.nbytes)
            else:
                for e, r, chunk in read_chunks(reader, t, t.ne[0], values):
                    imat = None
                    if p.imatrix is not None:
                        imat = np.ascontiguousarray(p.imatrix[e * t.ne[0] : (e + 1) * t.ne[0]])
                    q = quantize_rows(t, p.out_type, chunk, imat, threads, search, (e, r))
                    w.write_chunk(p.name, q)
                    progress.advance(chunk.nbytes)
            reader.release(t.name)
            progress.tensor_done(p, time.perf_counter() - t0)
        w.commit()


def plan_files(
    plans: list[TensorPlan], input_parts: list[int], out: Path, split: SplitOptions
) -> list[Shard]:
    """The output files and the tensors of each: OUT alone, or the shards split asks for."""
    if not split.splits:
        return [Shard(out, 0, 1, [p.name for p in plans])]
    return plan_shards(
        out,
        [(p.name, p.out_nbytes) for p in plans],
        keep_split_of=input_parts if split.keep_split else None,
        max_size=split.max_size,
        max_tensors=split.max_tensors,
        alignment=GGUF_DEFAULT_ALIGNMENT,
    )


@dataclass
class FileSpec:
    """One output file as planned: its tensors, metadata, alignment and split numbers."""

    path: Path
    plans: list[TensorPlan]
    kvs: list[KV]
    alignment: int
    split: tuple[int, int, int] | None  # (split.no, split.count, split.tensors.count)

    def tensors(self) -> list[tuple[str, GGMLType, tuple[int, ...]]]:
        """What the writer's layout (writer.plan_layout) takes."""
        return [(p.name, p.out_type, p.info.ne) for p in self.plans]


def output_files(
    reader: GGUFReader | SplitModel,
    plans: list[TensorPlan],
    out: Path,
    kvs: list[KV],
    split: SplitOptions,
) -> list[FileSpec]:
    """Every output file of the run, checked not to overwrite an input."""
    by_name = {p.name: p for p in plans}
    files = []
    for shard in plan_files(plans, input_parts(reader, plans), out, split):
        for path in _input_paths(reader):
            check_paths(path, shard.path)
        if not split.splits:
            files.append(FileSpec(shard.path, plans, kvs, reader.alignment, None))
            continue
        keys = shard_keys(shard, len(plans), single_without_keys=split.keep_split)
        # ggml keeps the model's metadata in the first file only; the other files
        # carry the split keys and use the default alignment
        shard_kvs = kvs + keys if shard.no == 0 else keys
        alignment = reader.alignment if shard.no == 0 else GGUF_DEFAULT_ALIGNMENT
        info = (shard.no, shard.count, len(plans)) if keys else None
        files.append(
            FileSpec(shard.path, [by_name[n] for n in shard.names], shard_kvs, alignment, info)
        )
    return files


def kept_file(spec: FileSpec, split: SplitOptions) -> bool:
    """--partial-requant: the file is there already, checked to be the one this run writes."""
    if split.partial_requant and spec.path.exists():
        _check_existing(spec.path, spec.plans, spec.kvs, spec.split)
        return True
    return False


def write_output(
    reader: GGUFReader | SplitModel,
    plans: list[TensorPlan],
    out: Path,
    kvs: list[KV],
    split: SplitOptions,
    *,
    threads: int | None,
    search: str,
    progress: Progress,
) -> list[OutputFile]:
    """Write the model as one file or as shards; with --partial-requant keep the files
    already there (checked to hold what this run would write) and write only the others.

    Each file is complete or absent whatever happens (temporary file, fsync, rename), so a
    killed run is resumed by running it again with --partial-requant.
    """
    files = output_files(reader, plans, out, kvs, split)
    done = {f.path for f in files if kept_file(f, split)}
    todo = [f for f in files if f.path not in done]
    if todo:  # all files at once, not shard by shard hours into the run
        check_free_space(todo[0].path, sum(p.out_nbytes for f in todo for p in f.plans))
    progress.start([p for f in todo for p in f.plans])
    for f in todo:
        if split.partial_requant:
            _remove_stale_temporaries(f.path)
        _write_file(reader, f.plans, f.path, f.kvs, f.alignment, threads, search, progress)
    return [OutputFile(f.path, len(f.plans), f.path.stat().st_size, f.path in done) for f in files]


def _input_paths(reader: GGUFReader | SplitModel) -> list[Path]:
    return list(reader.paths) if isinstance(reader, SplitModel) else [reader.path]


def input_parts(reader: GGUFReader | SplitModel, plans: list[TensorPlan]) -> list[int]:
    """The input part (0-based) each planned tensor comes from."""
    if isinstance(reader, SplitModel):
        # by the source tensor: --extra-output-tensor's plan has a name of its own
        return [reader.part_index(p.info.name) for p in plans]
    return [0] * len(plans)


def _check_existing(
    path: Path, plans: list[TensorPlan], kvs: list[KV], split: tuple[int, int, int] | None
) -> None:
    """An output file kept by --partial-requant must be the one this run would write: same
    metadata (an --override-kv or imatrix change shows there), tensors, types, split numbers."""
    hint = "delete it to have it written again"
    try:
        with GGUFReader(path) as r:
            have = [(t.name, t.type.id, t.ne) for t in r.tensors.values()]
            have_split = split_info(r)
            same_metadata = [encode_kv(kv) for kv in r.kv.values()] == [encode_kv(kv) for kv in kvs]
    except GGUFError as e:
        raise ConvertError(f"{path}: exists but cannot be kept ({e}); {hint}") from None
    want = [(p.name, p.out_type.id, p.info.ne) for p in plans]
    if have != want or have_split != split:
        raise ConvertError(
            f"{path}: exists but holds other tensors, types or split numbers than this run "
            f"writes there; {hint}"
        )
    if not same_metadata:
        raise ConvertError(
            f"{path}: exists but its metadata differs from what this run writes (another "
            f"imatrix, --override-kv or source model?); {hint}"
        )


def _remove_stale_temporaries(path: Path) -> None:
    """A killed run leaves its half-written file as .NAME.*.partial (GGUFStreamWriter)."""
    parent = path.parent if str(path.parent) else Path(".")
    for tmp in parent.glob(f".{glob_escape(path.name)}.*.partial"):
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
