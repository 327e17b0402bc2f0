"""Whole-model operations behind the ``iqk`` CLI: quantize, dequantize, compare, summarise.

Everything is planned and validated before a byte is written (types available,
imatrix sizes, requantization allowed, paths sane), then tensors are streamed
from the memory-mapped input to a ``GGUFStreamWriter`` in chunks of rows, one
expert slice at a time, so peak memory is a few chunks whatever the model size.
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from glob import escape as glob_escape
from pathlib import Path

import numpy as np

from ..imatrix import Imatrix
from ..mix import (
    TENSOR_TYPE_OPTIONS,
    MixOptions,
    MixPlanner,
    ModelParams,
    fallback,
    parse_custom_q,
)
from ..recipe import RecipeError, check_type, custom_q_type, parse_kv_overrides
from .constants import GGUF_DEFAULT_ALIGNMENT, GGUFValueType
from .ggml_types import (
    FLOAT_TYPES,
    GGMLType,
    encode_rows,
    f32_to_rows,
    rows_to_f32,
    type_by_name,
)
from .reader import KV, GGUFError, GGUFReader, TensorInfo
from .split import (
    Shard,
    SplitModel,
    open_model,
    plan_shards,
    shard_keys,
    split_info,
)
from .writer import (
    GGUFStreamWriter,
    GGUFWriteError,
    check_free_space,
    encode_kv,
    resolve_output,
)

GGML_QNT_VERSION = 2
# Values per row chunk and worker thread (at least one MiB of values per chunk): enough rows
# for every worker, while the f32 working copy and the output stay small enough to be
# recycled by the allocator instead of being faulted in afresh for every chunk.
CHUNK_VALUES_PER_THREAD = 1 << 19
MIN_CHUNK_VALUES = 1 << 20


class ConvertError(RuntimeError):
    """A model cannot be converted as asked; the message names the file/tensor and why."""


@dataclass
class TensorPlan:
    info: TensorInfo
    out_type: GGMLType
    action: str  # "quantize" | "copy" | "keep"
    note: str = ""
    imatrix: np.ndarray | None = None
    out_name: str | None = None  # set for a tensor added to the output (output_extra.weight)

    @property
    def name(self) -> str:
        """The tensor's name in the output."""
        return self.out_name or self.info.name

    @property
    def out_nbytes(self) -> int:
        return self.out_type.nbytes(self.info.ne)


@dataclass
class QuantizeOptions:
    imatrix: Imatrix | None = None
    threads: int | None = None
    pure: bool = False
    custom_q: list[str] = field(default_factory=list)
    output_tensor_type: str | None = None
    token_embedding_type: str | None = None
    leave_output_tensor: bool = False
    allow_requantize: bool = False
    search: str = "ik"
    hide_imatrix: bool = False
    # An imatrix that matches no tensor is an error for the 2-bit targets unless this is set.
    allow_missing_imatrix: bool = False

    # llama-quantize's recipe options: {"--attn-v-type": "q6_K", ...} (mix.TENSOR_TYPE_OPTIONS)
    tensor_types: dict[str, str] = field(default_factory=dict)
    extra_output_type: str | None = None  # --extra-output-tensor
    kv_overrides: list[str] = field(default_factory=list)  # --override-kv KEY=TYPE:VALUE
    # ik's rules refusing very-low-bit types (IQ1_*, IQ2_XXS/XS/S, KT) without an imatrix;
    # none of those can be produced here, so this is accepted for recipes and changes nothing
    ignore_imatrix_rules: bool = False


@dataclass
class SplitOptions:
    """Split output (at most one of the first three) and resuming, as llama-quantize's
    --keep-split / --partial-requant and llama-gguf-split's --split-max-size/-tensors."""

    keep_split: bool = False
    max_size: int | None = None  # bytes of tensor data per file
    max_tensors: int | None = None
    partial_requant: bool = False

    @property
    def splits(self) -> bool:
        return self.keep_split or self.max_size is not None or self.max_tensors is not None

    def check(self) -> None:
        chosen = [
            o
            for o, v in (
                ("--keep-split", self.keep_split),
                ("--split-max-size", self.max_size is not None),
                ("--split-max-tensors", self.max_tensors is not None),
            )
            if v
        ]
        if len(chosen) > 1:
            raise ConvertError(f"{' and '.join(chosen)} exclude each other; give one")
        if self.max_tensors is not None and self.max_tensors < 1:
            raise ConvertError(f"--split-max-tensors must be at least 1, got {self.max_tensors}")
        if self.max_size is not None and self.max_size < 1:
            raise ConvertError(f"--split-max-size must be positive, got {self.max_size}")


@dataclass
class OutputFile:
    path: Path
    n_tensors: int
    nbytes: int
    skipped: bool = False  # already there (--partial-requant), not written by this run


@dataclass
class Report:
    plans: list[TensorPlan]
    size_in: int
    size_out: int
    n_weights: int
    seconds: float = 0.0
    threads: int | None = None
    out_path: Path | None = None
    imatrix: Imatrix | None = None  # the one given, even if no entry was used
    warnings: list[str] = field(default_factory=list)  # assumptions the plan had to make
    files: list[OutputFile] = field(default_factory=list)
    input_parts: list[int] = field(default_factory=list)  # per plan, for --keep-split

    @property
    def bpw(self) -> float:
        return 8.0 * self.size_out / max(self.n_weights, 1)

    def count(self, action: str) -> int:
        return sum(p.action == action for p in self.plans)

    @property
    def n_fallback(self) -> int:
        return sum(p.note.startswith("fallback") for p in self.plans)

    @property
    def fallbacks(self) -> Counter[tuple[str, str]]:
        """(wanted type, fallback type) -> tensor count, for rows not a multiple of 256."""
        prefix = "fallback from "
        return Counter(
            (p.note[len(prefix) :], p.out_type.name)
            for p in self.plans
            if p.note.startswith(prefix)
        )

    @property
    def without_imatrix(self) -> list[str]:
        """Quantized tensors that got no importance weights although an imatrix was given."""
        if self.imatrix is None:
            return []
        return [p.name for p in self.plans if p.action == "quantize" and p.imatrix is None]

    @property
    def n_with_imatrix(self) -> int:
        return sum(p.imatrix is not None for p in self.plans)

    @property
    def larger_than_input(self) -> bool:
        return self.size_out > self.size_in


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


# -- helpers -------------------------------------------------------------------------


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


def _probe_types(types: set[GGMLType]) -> None:
    """Fail early, not after an hour, if the core cannot produce a planned type."""
    for t in sorted(types, key=lambda t: t.id):
        if t.id in FLOAT_TYPES:
            continue
        try:
            f32_to_rows(np.zeros((1, t.block_size * (256 // t.block_size or 1)), np.float32), t)
        except (NotImplementedError, ValueError) as e:
            raise ConvertError(
                f"tensor type {t.name} is needed by this mix but not available in this build ({e})"
            ) from None


def check_recipe(opts: QuantizeOptions) -> MixOptions:
    """Parse and check every recipe option (types we can produce, --override-kv syntax)
    before any work; the MixOptions for them (has_imatrix is left to the caller)."""
    try:
        parse_kv_overrides(opts.kv_overrides)
        tensor_types = {}
        for option, t in opts.tensor_types.items():
            if option not in TENSOR_TYPE_OPTIONS:
                raise RecipeError(f"unknown per-tensor type option {option}")
            tensor_types[TENSOR_TYPE_OPTIONS[option]] = check_type(t, option)
        if opts.extra_output_type:
            check_type(opts.extra_output_type, "--extra-output-tensor")
        return MixOptions(
            pure=opts.pure,
            custom=parse_custom_q(opts.custom_q, custom_q_type),
            output_tensor_type=_opt_type(opts.output_tensor_type, "--output-tensor-type"),
            token_embedding_type=_opt_type(opts.token_embedding_type, "--token-embedding-type"),
            leave_output_tensor=opts.leave_output_tensor,
            tensor_types=tensor_types,
        )
    except ValueError as e:
        raise ConvertError(str(e)) from None


def _chunks(
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


_ROW = re.compile(r"\brow (\d+)")


def _tensor_row_message(message: str, t: TensorInfo, expert: int, first_row: int) -> str:
    """A core error about row k of a chunk, told as the tensor's own row (and expert)."""
    where = f"expert {expert}, " if len(t.ne) > 2 else ""
    return _ROW.sub(lambda m: f"{where}row {first_row + int(m.group(1))}", message, count=1)


def _chunk_values(threads: int | None) -> int:
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


def quantize_rows(
    t: TensorInfo,
    out_type: GGMLType,
    rows: np.ndarray,
    imatrix: np.ndarray | None,
    threads: int | None,
    search: str,
    at: tuple[int, int],
) -> np.ndarray:
    """Rows of tensor ``t`` (raw, one matrix's) in ``out_type``: the one place of the
    conversion, for the local writer and the distributed one alike. ``at`` is (expert, row
    of the matrix) of the first row, so that errors name the tensor's own row."""
    try:
        return encode_rows(rows, t.type, t.ne[0], out_type, imatrix, search=search, threads=threads)
    except (ValueError, NotImplementedError) as err:
        raise ConvertError(
            f"tensor {t.name!r} ({t.type.name} -> {out_type.name}): "
            + _tensor_row_message(str(err), t, *at)
        ) from err


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
    chunk_values = _chunk_values(threads)
    with GGUFStreamWriter(out, kvs, tensors, alignment) as w:
        for p in plans:
            t0 = time.perf_counter()
            progress.tensor_start(p)
            t = p.info
            if p.action != "quantize":
                for _, _, chunk in _chunks(reader, t, t.ne[0] * 4, chunk_values):
                    w.write_chunk(p.name, chunk)
                    progress.advance(chunk.nbytes)
            else:
                for e, r, chunk in _chunks(reader, t, t.ne[0], chunk_values):
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


# -- quantize --------------------------------------------------------------------------


def plan_quantize(
    reader: GGUFReader,
    target: str,
    opts: QuantizeOptions,
    dry_run: bool = False,
    params: ModelParams | None = None,
) -> list[TensorPlan]:
    """Choose every tensor's type (ik's mix) and validate everything up front.

    A dry run, like llama-quantize's, only sizes: it does not insist that quantized
    inputs may be requantized. ``params`` replaces the hyper-parameters read from the file.
    """
    target_t = type_by_name(target)
    imx = opts.imatrix
    mix_opts = check_recipe(opts)
    mix_opts.has_imatrix = bool(imx)
    try:
        overrides = parse_kv_overrides(opts.kv_overrides)
        params = params or ModelParams.from_gguf(reader.get, reader.tensors, overrides)
    except ValueError as e:
        raise ConvertError(f"{reader.path}: {e}") from None
    try:
        planner = MixPlanner(target_t.name, params, mix_opts)
    except ValueError as e:
        raise ConvertError(str(e)) from None
    extra = _extra_output_plan(reader, opts.extra_output_type)

    plans = []
    for t in reader.tensors.values():
        always = extra is not None and t is extra.info
        try:
            c = planner.choose(t.name, t.ne, t.type.name, always=always)
            out_t = type_by_name(c.type)
        except ValueError as e:
            raise ConvertError(f"{reader.path}: tensor {t.name!r}: {e}") from None
        plan = TensorPlan(t, out_t if c.action == "quantize" else t.type, c.action, c.note)
        group = [plan, extra] if always else [plan]
        for p in group:
            if p.action == "quantize":
                if not dry_run:
                    _check_decodable(reader, t, opts.allow_requantize)
                if imx is not None:
                    n_mat = t.nrows // t.ne[1] if len(t.ne) > 1 else 1
                    try:
                        p.imatrix = imx.for_tensor(t.name, t.ne[0], n_mat)
                    except ValueError as e:
                        raise ConvertError(str(e)) from None
        plans += group
    return plans


# Contrasting hyper-parameters: each threshold ik's rules test (GQA 2 and 4; 2, 4 and 8
# experts; the 70B detection; falcon; the first n_layer/8 ffn_down) falls on both sides.
_PROBE_ARCHS = ("", "llama", "falcon")
_PROBE_EXPERTS = (0, 2, 4, 8)
_PROBE_HEADS = ((8, 8), (8, 4), (8, 2))  # (n_head, n_head_kv): GQA 1, 2, 4
_PROBE_LAYERS = (0, 80, 1024)


def check_architecture(reader: GGUFReader, target: str, opts: QuantizeOptions) -> list[str]:
    """Refuse a model of unknown architecture when its type mix would depend on it.

    ik's rules read the layer, head and expert counts from ``<arch>.*`` keys; without a
    known architecture (no ``general.architecture``, or no ``<arch>.block_count``, which
    every architecture llama.cpp loads has) they would all be 0 and silently change the
    mix, so llama-quantize refuses such files. Here the plan is made under contrasting
    hyper-parameters instead: if no tensor's type changes (``--pure``, ``--custom-q``
    rules covering those tensors, or no tensor the rules look at), the run goes on and
    the returned warning says what was assumed.
    """
    arch = reader.architecture
    if isinstance(arch, str) and arch and reader.get(f"{arch}.block_count") is not None:
        return []
    what = (
        f"general.architecture {arch!r} has no {arch}.block_count"
        if isinstance(arch, str) and arch
        else "no general.architecture"
    )
    assumed = ModelParams.from_gguf(
        reader.get, reader.tensors, parse_kv_overrides(opts.kv_overrides)
    )

    def types(params: ModelParams) -> list[str] | None:
        try:
            plans = plan_quantize(reader, target, opts, dry_run=True, params=params)
        except ConvertError:
            return None  # e.g. a layer outside n_layer: the result depends on it
        return [p.out_type.name for p in plans]

    base = types(assumed)
    for arch_, n_exp, (n_head, n_kv), n_layer in itertools.product(
        _PROBE_ARCHS, _PROBE_EXPERTS, _PROBE_HEADS, _PROBE_LAYERS
    ):
        probe = replace(
            assumed, arch=arch_, n_expert=n_exp, n_head=n_head, n_head_kv=n_kv, n_layer=n_layer
        )
        got = types(probe)
        if got != base:
            names = list(reader.tensors)
            first = next(
                (n for n, a, b in zip(names, base or [], got or [], strict=False) if a != b), None
            )
            which = f" (e.g. {first!r})" if first else ""
            raise ConvertError(
                f"{reader.path}: {what}; ik's type mix needs the architecture's layer, head and "
                f"expert counts for this model's tensors{which}, so llama-quantize refuses it "
                "too; set the architecture's metadata, or choose the types with --pure or "
                "--custom-q"
            )
    return [
        f"{reader.path}: {what}; assumed no layers, heads or experts (no tensor's type "
        "depends on them here)"
    ]


EXTRA_OUTPUT_NAME = "output_extra.weight"


def _extra_output_plan(reader: GGUFReader, type_name: str | None) -> TensorPlan | None:
    """--extra-output-tensor: a copy of output.weight (else token_embd.weight) in another
    type, written right after it as output_extra.weight. As in ik, only if it is smaller
    than the original; None otherwise (the caller may say so)."""
    if not type_name:
        return None
    src = reader.tensors.get("output.weight") or reader.tensors.get("token_embd.weight")
    if src is None:
        raise ConvertError(
            f"{reader.path}: --extra-output-tensor needs output.weight or token_embd.weight"
        )
    name = check_type(type_name, "--extra-output-tensor")
    fitted = fallback(name, src.ne[0])
    out_t = type_by_name(fitted)
    if out_t.nbytes(src.ne) >= src.nbytes:
        return None
    note = "--extra-output-tensor" + (f", fallback from {name}" if fitted != name else "")
    return TensorPlan(src, out_t, "quantize", note, out_name=EXTRA_OUTPUT_NAME)


def _opt_type(name: str | None, option: str) -> str | None:
    return check_type(name, option) if name else None


# ik refuses to make its 2-bit i-quants (IQ2_XXS/XS/S, IQ1_S/M) without an imatrix; it
# lets IQ2_K and IQ2_KS through, but they lose much of their quality without one, so an
# imatrix given for them that matches no tensor at all (a wrong file) is an error here.
NEEDS_IMATRIX = frozenset({"iq2_k", "iq2_ks"})


def imatrix_unused_error(target: str, why: str) -> ConvertError | None:
    """The error for an imatrix that weights no tensor, or None where that is allowed."""
    if type_by_name(target).name not in NEEDS_IMATRIX:
        return None
    return ConvertError(
        f"{why}; {type_by_name(target).name.upper()} loses much quality without importance "
        "weights - check that the imatrix belongs to this model, or pass "
        "--allow-missing-imatrix to quantize without it"
    )


def _check_imatrix_used(report: Report, target: str, allow_missing: bool) -> None:
    imx = report.imatrix
    if imx is None or report.n_with_imatrix or not report.count("quantize") or allow_missing:
        return
    err = imatrix_unused_error(
        target,
        f"{imx.path}: none of its {len(imx)} entries matches a tensor to quantize "
        f"(e.g. {report.without_imatrix[0]!r})",
    )
    if err is not None:
        raise err


def _check_decodable(reader: GGUFReader, t: TensorInfo, allow_requantize: bool) -> None:
    if t.type.id in FLOAT_TYPES:
        return
    if not t.type.quantized:
        raise ConvertError(
            f"{reader.path}: tensor {t.name!r} has type {t.type.name}; cannot quantize it"
        )
    if not allow_requantize:
        raise ConvertError(
            f"{reader.path}: tensor {t.name!r} is already quantized ({t.type.name}); requantizing "
            "is disabled - pass --allow-requantize to dequantize it first"
        )
    try:
        rows_to_f32(reader.raw(t.name)[:1], t.type, t.ne[0])
    except NotImplementedError:
        raise ConvertError(
            f"{reader.path}: tensor {t.name!r}: cannot dequantize type {t.type.name} "
            "to requantize it"
        ) from None


def quantize_model(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    target: str,
    opts: QuantizeOptions | None = None,
    progress: Progress | None = None,
    split: SplitOptions | None = None,
    write: Callable[..., list[OutputFile]] | None = None,
) -> Report:
    """Quantize a GGUF model (one file or all parts of a split one) with ik_llama.cpp's
    default mix for ``target``.

    ``out=None`` is a dry run: plan and sizes only, nothing written. ``write`` replaces
    ``write_output`` (same arguments), e.g. by the distributed writer of ``iqk_rs.distributed``.
    """
    opts = opts or QuantizeOptions()
    split = split or SplitOptions()
    split.check()
    inp = Path(inp)
    if out is not None and not split.splits:
        check_paths(inp, Path(out))
    t0 = time.perf_counter()
    with open_model(inp) as reader:
        if opts.imatrix is not None:
            opts.imatrix.check_values()
        warnings = check_architecture(reader, target, opts)
        plans = plan_quantize(reader, target, opts, dry_run=out is None)
        report = Report(
            plans,
            sum(p.info.nbytes for p in plans if p.out_name is None),
            sum(p.out_nbytes for p in plans),
            sum(p.info.n_elements for p in plans),
            threads=opts.threads,
            imatrix=opts.imatrix,
            warnings=warnings,
            input_parts=input_parts(reader, plans),
        )
        _check_imatrix_used(report, target, opts.allow_missing_imatrix)
        if progress is not None:
            progress.planned(report)
        if out is None:
            return report
        _probe_types({p.out_type for p in plans if p.action == "quantize"})
        # ik applies the user's overrides first, then its own imatrix keys (only when used)
        extra = parse_kv_overrides(opts.kv_overrides)
        extra += opts.imatrix.metadata(opts.hide_imatrix) if report.n_with_imatrix else []
        kvs = output_metadata(reader, type_by_name(target).llama_ftype, extra)
        report.files = (write or write_output)(
            reader,
            plans,
            Path(out),
            kvs,
            split,
            threads=opts.threads,
            search=opts.search,
            progress=progress or Progress(),
        )
    report.seconds = time.perf_counter() - t0
    report.out_path = report.files[0].path
    return report


# -- dequantize ---------------------------------------------------------------------


def dequantize_model(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    out_type: str = "f16",
    threads: int | None = None,
    progress: Progress | None = None,
    convert_float: bool = False,
    split: SplitOptions | None = None,
) -> Report:
    """Decode every quantized weight matrix to f32/f16/bf16.

    Unquantized tensors keep their type (f32 MoE routers stay f32, as llama-quantize
    leaves them); ``convert_float`` also converts float matrices of another type (2-D and
    up; 1-D tensors such as norms always stay as they are).
    """
    inp, out = Path(inp), Path(out)
    split = split or SplitOptions()
    split.check()
    target = type_by_name(out_type)
    if target.id not in FLOAT_TYPES:
        raise ConvertError(f"dequantize writes f32, f16 or bf16, not {target.name}")
    if not split.splits:
        check_paths(inp, out)
    t0 = time.perf_counter()
    with open_model(inp) as reader:
        plans = []
        for t in reader.tensors.values():
            if t.type.id == target.id or not t.type.quantized and t.type.id not in FLOAT_TYPES:
                plans.append(TensorPlan(t, t.type, "copy"))
            elif t.type.id in FLOAT_TYPES and (t.ggml_n_dims < 2 or not convert_float):
                plans.append(TensorPlan(t, t.type, "keep"))
            else:
                _check_decodable(reader, t, allow_requantize=True)
                plans.append(TensorPlan(t, target, "quantize"))
        kvs = output_metadata(reader, target.llama_ftype)
        files = write_output(
            reader,
            plans,
            out,
            kvs,
            split,
            threads=threads,
            search="ik",
            progress=progress or Progress(),
        )
    report = Report(
        plans,
        sum(p.info.nbytes for p in plans),
        sum(p.out_nbytes for p in plans),
        sum(p.info.n_elements for p in plans),
        seconds=time.perf_counter() - t0,
        threads=threads,
        out_path=files[0].path,
        files=files,
    )
    return report


# -- compare ----------------------------------------------------------------------


@dataclass
class TensorDiff:
    name: str
    type_a: str
    type_b: str
    n_elements: int
    rel_rmse: float  # inf when either tensor holds NaN or Inf
    cosine: float  # nan then
    nonfinite_a: int = 0  # NaN/Inf values in A's tensor
    nonfinite_b: int = 0

    @property
    def finite(self) -> bool:
        return not (self.nonfinite_a or self.nonfinite_b)


def compare_models(
    a: str | os.PathLike[str], b: str | os.PathLike[str], threads: int | None = None
) -> tuple[list[TensorDiff], list[str]]:
    """Per-tensor relative RMSE and cosine similarity of B against reference A.

    Returns the diffs and the names of tensors that could not be paired.
    """
    with open_model(a) as ra, open_model(b) as rb:
        if ra.architecture != rb.architecture:
            raise ConvertError(
                f"models differ in architecture: {ra.architecture!r} vs {rb.architecture!r}"
            )
        diffs, unpaired = [], []
        for name, ta in ra.tensors.items():
            tb = rb.tensors.get(name)
            if tb is None or tb.ne != ta.ne:
                unpaired.append(name)
                continue
            num = den = dot = nb2 = 0.0
            bad_a = bad_b = 0
            for (_, _, ca), (_, _, cb) in zip(
                _chunks(ra, ta, ta.ne[0]), _chunks(rb, tb, tb.ne[0]), strict=True
            ):
                try:
                    fa = rows_to_f32(ca, ta.type, ta.ne[0], threads).astype(np.float64)
                    fb = rows_to_f32(cb, tb.type, tb.ne[0], threads).astype(np.float64)
                except NotImplementedError as e:
                    raise ConvertError(f"tensor {name!r}: {e}") from None
                with np.errstate(all="ignore"):
                    a2, b2 = float(np.sum(fa * fa)), float(np.sum(fb * fb))
                    # squares of f32 values cannot overflow f64: a non-finite sum means
                    # a NaN or Inf value, which must make this tensor the worst, not vanish
                    if not np.isfinite(a2):
                        bad_a += int(np.count_nonzero(~np.isfinite(fa)))
                    if not np.isfinite(b2):
                        bad_b += int(np.count_nonzero(~np.isfinite(fb)))
                    num += float(np.sum((fa - fb) ** 2))
                    den += a2
                    dot += float(np.sum(fa * fb))
                    nb2 += b2
            if bad_a or bad_b:
                rel, cos = float("inf"), float("nan")
            else:
                rel = float(np.sqrt(num / den)) if den > 0 else (0.0 if num == 0 else float("inf"))
                cos = dot / np.sqrt(den * nb2) if den > 0 and nb2 > 0 else float(den == nb2)
            diffs.append(
                TensorDiff(
                    name, ta.type.name, tb.type.name, ta.n_elements, rel, float(cos), bad_a, bad_b
                )
            )
        unpaired += [n for n in rb.tensors if n not in ra.tensors]
    if not diffs:
        raise ConvertError("the two models have no tensors in common (same names and shapes)")
    return diffs, unpaired
