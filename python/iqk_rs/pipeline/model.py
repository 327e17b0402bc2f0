"""Whole-model operations behind the ``iqk`` CLI: quantize, dequantize, compare.

Everything is planned and validated before a byte is written (types available,
imatrix sizes, requantization allowed, paths sane), then tensors are streamed
from the memory-mapped input to a ``GGUFStreamWriter`` in chunks of rows, one
expert slice at a time, so peak memory is a few chunks whatever the model size.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..gguf.ggml_types import FLOAT_TYPES, GGMLType, rows_to_f32, type_by_name
from ..gguf.split import open_model
from ..imatrix import Imatrix
from .encode import probe_types
from .options import ConvertError, QuantizeOptions, SplitOptions
from .plan import (
    TensorPlan,
    check_architecture,
    check_decodable,
    imatrix_unused_error,
    plan_quantize,
)
from .write import (
    OutputFile,
    Progress,
    check_paths,
    input_parts,
    output_metadata,
    read_chunks,
    write_output,
)


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
        return sum(self.fallbacks.values())

    @property
    def fallbacks(self) -> Counter[tuple[str, str]]:
        """(wanted type, fallback type) -> tensor count, for rows not a multiple of 256."""
        return Counter(
            (p.fallback_from, p.out_type.name) for p in self.plans if p.fallback_from is not None
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


def target_type(target: str | GGMLType) -> GGMLType:
    """The target type of a quantization run, looked up once (a name such as "IQ4_KS")."""
    if isinstance(target, GGMLType):
        return target
    try:
        return type_by_name(target)
    except ValueError as e:
        raise ConvertError(str(e)) from None


def _check_imatrix_used(report: Report, target: GGMLType, allow_missing: bool) -> None:
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


def quantize_model(
    inp: str | os.PathLike[str],
    out: str | os.PathLike[str] | None,
    target: str | GGMLType,
    opts: QuantizeOptions | None = None,
    progress: Progress | None = None,
    split: SplitOptions | None = None,
    write: Callable[..., list[OutputFile]] | None = None,
) -> Report:
    """Quantize a GGUF model (one file or all parts of a split one) with ik_llama.cpp's
    default mix for ``target`` (a type or its name, e.g. "IQ4_KS").

    ``out=None`` is a dry run: plan and sizes only, nothing written. ``write`` replaces
    ``write_output`` (same arguments), e.g. by the distributed writer of ``iqk_rs.distributed``.
    """
    target = target_type(target)
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
        probe_types({p.out_type for p in plans if p.action == "quantize"}, opts.search)
        # ik applies the user's overrides first, then its own imatrix keys (only when used)
        extra = list(opts.recipe().kv_overrides)
        extra += opts.imatrix.metadata(opts.hide_imatrix) if report.n_with_imatrix else []
        kvs = output_metadata(reader, target.llama_ftype, extra)
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
    target = target_type(out_type)
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
                check_decodable(reader, t, allow_requantize=True)
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
                read_chunks(ra, ta, ta.ne[0]), read_chunks(rb, tb, tb.ne[0]), strict=True
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
