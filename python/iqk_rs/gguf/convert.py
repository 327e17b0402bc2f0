"""Whole-model operations behind the ``iqk`` CLI: quantize, dequantize, compare, summarise.

Everything is planned and validated before a byte is written (types available,
imatrix sizes, requantization allowed, paths sane), then tensors are streamed
from the memory-mapped input to a ``GGUFStreamWriter`` in chunks of rows, one
expert slice at a time, so peak memory is a few chunks whatever the model size.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from .constants import GGUFValueType
from .ggml_types import (
    FLOAT_TYPES,
    GGMLType,
    encode_rows,
    f32_to_rows,
    rows_to_f32,
    type_by_name,
)
from .reader import KV, GGUFReader, TensorInfo
from .writer import GGUFStreamWriter

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
    iq2ks_search: str = "fast"
    hide_imatrix: bool = False
    # llama-quantize's recipe options: {"--attn-v-type": "q6_K", ...} (mix.TENSOR_TYPE_OPTIONS)
    tensor_types: dict[str, str] = field(default_factory=dict)
    extra_output_type: str | None = None  # --extra-output-tensor
    kv_overrides: list[str] = field(default_factory=list)  # --override-kv KEY=TYPE:VALUE
    # ik's rules refusing very-low-bit types (IQ1_*, IQ2_XXS/XS/S, KT) without an imatrix;
    # none of those can be produced here, so this is accepted for recipes and changes nothing
    ignore_imatrix_rules: bool = False


@dataclass
class Report:
    plans: list[TensorPlan]
    size_in: int
    size_out: int
    n_weights: int
    seconds: float = 0.0
    threads: int | None = None
    out_path: Path | None = None

    @property
    def bpw(self) -> float:
        return 8.0 * self.size_out / max(self.n_weights, 1)

    def count(self, action: str) -> int:
        return sum(p.action == action for p in self.plans)

    @property
    def n_fallback(self) -> int:
        return sum(p.note.startswith("fallback") for p in self.plans)


class Progress:
    """Progress hooks; the CLI draws a rich bar with them. All no-ops here."""

    def start(self, plans: list[TensorPlan]) -> None: ...

    def tensor_start(self, plan: TensorPlan) -> None: ...

    def advance(self, nbytes_in: int) -> None: ...

    def tensor_done(self, plan: TensorPlan, seconds: float) -> None: ...


# -- helpers -------------------------------------------------------------------------


def check_paths(inp: Path, out: Path) -> None:
    """Refuse to clobber the input or write where we cannot, before any work is done."""
    if out.exists():
        if out.is_dir():
            raise ConvertError(f"{out}: output path is a directory")
        if inp.exists() and os.path.samefile(inp, out):
            raise ConvertError(f"{out}: output would overwrite the input file")
    elif out.resolve() == inp.resolve():
        raise ConvertError(f"{out}: output would overwrite the input file")
    parent = out.parent if str(out.parent) else Path(".")
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


def _matrices(reader: GGUFReader, t: TensorInfo) -> Iterator[tuple[int, np.ndarray]]:
    """(expert index, raw rows) for each 2-D matrix of a tensor (one for dense tensors)."""
    rows = reader.raw(t.name)
    per = t.ne[1] if len(t.ne) > 1 else 1
    for e in range(t.nrows // per):
        yield e, rows[e * per : (e + 1) * per]


def _chunk_values(threads: int | None) -> int:
    if threads:
        workers = threads
    elif hasattr(os, "sched_getaffinity"):  # the CPUs this process may use (Linux)
        workers = len(os.sched_getaffinity(0))
    else:
        workers = os.cpu_count() or 1
    return max(MIN_CHUNK_VALUES, workers * CHUNK_VALUES_PER_THREAD)


def _row_chunks(
    rows: np.ndarray, ne0: int, chunk_values: int = MIN_CHUNK_VALUES
) -> Iterator[np.ndarray]:
    step = max(1, chunk_values // max(ne0, 1))
    for i in range(0, rows.shape[0], step):
        yield rows[i : i + step]


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


def _stream(
    reader: GGUFReader,
    plans: list[TensorPlan],
    out: Path,
    kvs: list[KV],
    *,
    threads: int | None,
    iq2ks_search: str,
    progress: Progress,
) -> None:
    tensors = [(p.name, p.out_type, p.info.ne) for p in plans]
    chunk_values = _chunk_values(threads)
    progress.start(plans)
    with GGUFStreamWriter(out, kvs, tensors, reader.alignment) as w:
        for p in plans:
            t0 = time.perf_counter()
            progress.tensor_start(p)
            t = p.info
            if p.action != "quantize":
                for chunk in _row_chunks(reader.raw(t.name), t.ne[0] * 4, chunk_values):
                    w.write_chunk(p.name, chunk)
                    progress.advance(chunk.nbytes)
            else:
                for e, rows in _matrices(reader, t):
                    imat = None
                    if p.imatrix is not None:
                        imat = np.ascontiguousarray(p.imatrix[e * t.ne[0] : (e + 1) * t.ne[0]])
                    for chunk in _row_chunks(rows, t.ne[0], chunk_values):
                        try:
                            q = encode_rows(
                                chunk,
                                t.type,
                                t.ne[0],
                                p.out_type,
                                imat,
                                iq2ks_search=iq2ks_search,
                                threads=threads,
                            )
                        except (ValueError, NotImplementedError) as err:
                            raise ConvertError(
                                f"tensor {t.name!r} ({t.type.name} -> {p.out_type.name}): {err}"
                            ) from err
                        w.write_chunk(p.name, q)
                        progress.advance(chunk.nbytes)
            reader.release(t.name)
            progress.tensor_done(p, time.perf_counter() - t0)
        w.commit()


# -- quantize --------------------------------------------------------------------------


def plan_quantize(
    reader: GGUFReader, target: str, opts: QuantizeOptions, dry_run: bool = False
) -> list[TensorPlan]:
    """Choose every tensor's type (ik's mix) and validate everything up front.

    A dry run, like llama-quantize's, only sizes: it does not insist that quantized
    inputs may be requantized.
    """
    target_t = type_by_name(target)
    imx = opts.imatrix
    mix_opts = check_recipe(opts)
    mix_opts.has_imatrix = bool(imx)
    try:
        overrides = parse_kv_overrides(opts.kv_overrides)
        params = ModelParams.from_gguf(reader.get, reader.tensors, overrides)
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
) -> Report:
    """Quantize a GGUF model with ik_llama.cpp's default mix for ``target``.

    ``out=None`` is a dry run: plan and sizes only, nothing written.
    """
    opts = opts or QuantizeOptions()
    inp = Path(inp)
    if out is not None:
        check_paths(inp, Path(out))
    t0 = time.perf_counter()
    with GGUFReader(inp) as reader:
        if opts.imatrix is not None:
            opts.imatrix.check_finite()
        plans = plan_quantize(reader, target, opts, dry_run=out is None)
        report = Report(
            plans,
            sum(p.info.nbytes for p in plans if p.out_name is None),
            sum(p.out_nbytes for p in plans),
            sum(p.info.n_elements for p in plans),
            threads=opts.threads,
        )
        if out is None:
            return report
        _probe_types({p.out_type for p in plans if p.action == "quantize"})
        # ik applies the user's overrides first, then its own imatrix keys
        extra = parse_kv_overrides(opts.kv_overrides)
        extra += opts.imatrix.metadata(opts.hide_imatrix) if opts.imatrix else []
        kvs = output_metadata(reader, type_by_name(target).llama_ftype, extra)
        _stream(
            reader,
            plans,
            Path(out),
            kvs,
            threads=opts.threads,
            iq2ks_search=opts.iq2ks_search,
            progress=progress or Progress(),
        )
    report.seconds = time.perf_counter() - t0
    report.out_path = Path(out)
    return report


# -- dequantize ---------------------------------------------------------------------


def dequantize_model(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str],
    out_type: str = "f16",
    threads: int | None = None,
    progress: Progress | None = None,
) -> Report:
    """Decode every quantized (and float) weight matrix to f32/f16/bf16; 1-D stays as is."""
    inp, out = Path(inp), Path(out)
    target = type_by_name(out_type)
    if target.id not in FLOAT_TYPES:
        raise ConvertError(f"dequantize writes f32, f16 or bf16, not {target.name}")
    check_paths(inp, out)
    t0 = time.perf_counter()
    with GGUFReader(inp) as reader:
        plans = []
        for t in reader.tensors.values():
            if t.type.id == target.id or not t.type.quantized and t.type.id not in FLOAT_TYPES:
                plans.append(TensorPlan(t, t.type, "copy"))
            elif t.ggml_n_dims < 2 and t.type.id in FLOAT_TYPES:
                plans.append(TensorPlan(t, t.type, "keep"))
            else:
                _check_decodable(reader, t, allow_requantize=True)
                plans.append(TensorPlan(t, target, "quantize"))
        kvs = output_metadata(reader, target.llama_ftype)
        _stream(
            reader,
            plans,
            out,
            kvs,
            threads=threads,
            iq2ks_search="fast",
            progress=progress or Progress(),
        )
    report = Report(
        plans,
        sum(p.info.nbytes for p in plans),
        sum(p.out_nbytes for p in plans),
        sum(p.info.n_elements for p in plans),
        time.perf_counter() - t0,
        threads,
        out,
    )
    return report


# -- compare ----------------------------------------------------------------------


@dataclass
class TensorDiff:
    name: str
    type_a: str
    type_b: str
    n_elements: int
    rel_rmse: float
    cosine: float


def compare_models(
    a: str | os.PathLike[str], b: str | os.PathLike[str], threads: int | None = None
) -> tuple[list[TensorDiff], list[str]]:
    """Per-tensor relative RMSE and cosine similarity of B against reference A.

    Returns the diffs and the names of tensors that could not be paired.
    """
    with GGUFReader(a) as ra, GGUFReader(b) as rb:
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
            for (_, xa), (_, xb) in zip(_matrices(ra, ta), _matrices(rb, tb), strict=True):
                for ca, cb in zip(
                    _row_chunks(xa, ta.ne[0]), _row_chunks(xb, ta.ne[0]), strict=True
                ):
                    try:
                        fa = rows_to_f32(ca, ta.type, ta.ne[0], threads).astype(np.float64)
                        fb = rows_to_f32(cb, tb.type, tb.ne[0], threads).astype(np.float64)
                    except NotImplementedError as e:
                        raise ConvertError(f"tensor {name!r}: {e}") from None
                    num += float(np.sum((fa - fb) ** 2))
                    den += float(np.sum(fa * fa))
                    dot += float(np.sum(fa * fb))
                    nb2 += float(np.sum(fb * fb))
            rel = float(np.sqrt(num / den)) if den > 0 else (0.0 if num == 0 else float("inf"))
            cos = dot / np.sqrt(den * nb2) if den > 0 and nb2 > 0 else float(den == nb2)
            diffs.append(
                TensorDiff(name, ta.type.name, tb.type.name, ta.n_elements, rel, float(cos))
            )
        unpaired += [n for n in rb.tensors if n not in ra.tensors]
    if not diffs:
        raise ConvertError("the two models have no tensors in common (same names and shapes)")
    return diffs, unpaired
