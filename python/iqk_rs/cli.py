"""The ``iqk`` command line: quantize, dequantize, inspect and compare GGUF models.

Each command parses its options, calls ``iqk_rs.gguf.convert`` and renders the
result with rich. Errors become one line on stderr and exit status 1; Ctrl-C
exits with 130 and, like any error, leaves no partial output file.
"""

from __future__ import annotations

import os
import re
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .gguf import GGUFError, GGUFReader, GGUFWriteError
from .gguf import convert as cv
from .imatrix import ImatrixError, load_imatrix
from .mix import TARGETS, MixError
from .recipe import recipe_warnings, type_listing

app = typer.Typer(
    name="iqk",
    help="Quantize GGUF models to ik_llama.cpp's IQK formats (IQ2_K ... IQ4_KS).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_ERRORS = (GGUFError, GGUFWriteError, ImatrixError, MixError, cv.ConvertError, OSError, ValueError)


class Target(str, Enum):
    IQ2_K = "IQ2_K"
    IQ3_K = "IQ3_K"
    IQ4_K = "IQ4_K"
    IQ2_KS = "IQ2_KS"
    IQ3_KS = "IQ3_KS"
    IQ4_KS = "IQ4_KS"


class FloatType(str, Enum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"


class Search(str, Enum):
    fast = "fast"
    exhaustive = "exhaustive"


def _fail(msg: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(msg)}")
    return typer.Exit(code)


def _run(fn, *args, **kwargs):
    """Call into the library, turning its errors into clean CLI exits."""
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise _fail("interrupted; no output was written", 130) from None
    except _ERRORS as e:
        raise _fail(str(e)) from None


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _shape(ne) -> str:
    return "[" + ", ".join(str(d) for d in ne) + "]"


class _RichProgress(cv.Progress):
    """A bar over bytes of input plus a tensor counter; optional per-tensor lines."""

    def __init__(self, verbose: bool, quiet: bool):
        self.verbose = verbose
        self.quiet = quiet
        self._i = 0
        self._n = 0

    def start(self, plans):
        self._n = len(plans)
        self.progress = Progress(
            TextColumn("{task.description:<36.36}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=self.quiet,
            transient=True,
        )
        self.task = self.progress.add_task("starting", total=sum(p.info.nbytes for p in plans))
        self.progress.start()

    def tensor_start(self, plan):
        self.progress.update(self.task, description=plan.name)

    def advance(self, nbytes_in):
        self.progress.advance(self.task, nbytes_in)

    def tensor_done(self, plan, seconds):
        self._i += 1
        if self.verbose:
            self.progress.console.print(_plan_line(plan, self._i, self._n, seconds), markup=False)

    def stop(self):
        if hasattr(self, "progress"):
            self.progress.stop()


def _plan_line(p: cv.TensorPlan, i: int, n: int, seconds: float | None = None) -> str:
    w = len(str(n))
    arrow = (
        f"{p.info.type.name:>6} -> {p.out_type.name:<7}"
        if p.action == "quantize"
        else (f"{p.info.type.name:>6} ({p.action})".ljust(17))
    )
    line = (
        f"[{i:>{w}}/{n}] {p.name:<36} {_shape(p.info.ne):<18} {arrow} "
        f"{_mb(p.info.nbytes):>11} -> {_mb(p.out_nbytes):>11}"
    )
    if seconds is not None:
        line += f"  {seconds:6.2f} s"
    if p.note:
        line += f"  ({p.note})"
    return line


def _type_summary(plans: list[cv.TensorPlan], title: str) -> Table:
    rows: dict[str, list[int]] = {}
    for p in plans:
        r = rows.setdefault(p.out_type.name, [0, 0, 0])
        r[0] += 1
        r[1] += p.info.n_elements
        r[2] += p.out_nbytes
    t = Table(title=title, title_justify="left")
    for c in ("type", "tensors", "weights", "size", "bpw"):
        t.add_column(c, justify="left" if c == "type" else "right")
    for name, (k, n, b) in sorted(rows.items(), key=lambda kv: -kv[1][2]):
        t.add_row(name, str(k), f"{n:,}", _mb(b), f"{8 * b / n:.3f}")
    return t


# -- quantize ------------------------------------------------------------------------


@app.command(epilog=type_listing([t.upper() for t in TARGETS]))
def quantize(
    inp: Annotated[
        Path, typer.Argument(metavar="IN", help="Input GGUF (F32, F16 or BF16 weights).")
    ],
    output: Annotated[
        Path, typer.Argument(metavar="OUT", help="Output GGUF (not written with --dry-run).")
    ],
    qtype: Annotated[
        Target,
        typer.Argument(
            metavar="TYPE", case_sensitive=False, help="IQ2_K IQ3_K IQ4_K IQ2_KS IQ3_KS IQ4_KS"
        ),
    ],
    nthreads: Annotated[
        int | None,
        typer.Argument(
            metavar="NTHREADS",
            help="Worker threads, as llama-quantize's positional nthreads (<= 0: all cores).",
            show_default=False,
        ),
    ] = None,
    imatrix: Annotated[
        Path | None, typer.Option(help="Importance matrix: legacy .dat or GGUF imatrix.")
    ] = None,
    include_weights: Annotated[
        list[str] | None,
        typer.Option(help="Use imatrix entries whose name contains this (repeatable)."),
    ] = None,
    exclude_weights: Annotated[
        list[str] | None,
        typer.Option(help="Ignore imatrix entries whose name contains this (repeatable)."),
    ] = None,
    hide_imatrix: Annotated[
        bool, typer.Option(help="Store 'top_secret' instead of imatrix details.")
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option("--threads", "-t", min=1, help="Worker threads (default: all cores)."),
    ] = None,
    pure: Annotated[
        bool,
        typer.Option(
            help="Every tensor gets TYPE (then the row-size fallback); no mix, no --custom-q."
        ),
    ] = False,
    custom_q: Annotated[
        list[str] | None,
        typer.Option(
            "--custom-q", help="'regex=type,...' rules; the first matching rule wins (repeatable)."
        ),
    ] = None,
    output_tensor_type: Annotated[str | None, typer.Option(help="Type for output.weight.")] = None,
    token_embedding_type: Annotated[
        str | None, typer.Option(help="Type for token_embd.weight.")
    ] = None,
    leave_output_tensor: Annotated[bool, typer.Option(help="Keep output.weight as it is.")] = False,
    attn_q_type: Annotated[str | None, typer.Option(help="attn_q* tensors.")] = None,
    attn_k_type: Annotated[str | None, typer.Option(help="attn_k* tensors.")] = None,
    attn_v_type: Annotated[str | None, typer.Option(help="attn_v tensors.")] = None,
    attn_qkv_type: Annotated[
        str | None, typer.Option(help="attn_qkv (ik matches those as attn_q first).")
    ] = None,
    attn_output_type: Annotated[str | None, typer.Option(help="attn_output tensors.")] = None,
    ffn_gate_type: Annotated[str | None, typer.Option(help="ffn_gate* tensors.")] = None,
    ffn_down_type: Annotated[str | None, typer.Option(help="ffn_down* tensors.")] = None,
    ffn_up_type: Annotated[str | None, typer.Option(help="ffn_up* tensors.")] = None,
    ffn_gate_inp_type: Annotated[
        str | None, typer.Option(help="MoE routers (ffn_gate_inp), otherwise kept as they are.")
    ] = None,
    per_layer_token_embedding_type: Annotated[
        str | None, typer.Option(help="per_layer_token_embd.weight.")
    ] = None,
    extra_output_tensor: Annotated[
        str | None,
        typer.Option(
            metavar="TYPE",
            help="Also write output.weight (or the tied token_embd) in TYPE as "
            "output_extra.weight, if that is smaller.",
        ),
    ] = None,
    override_kv: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=TYPE:VALUE",
            help="Set metadata in the output (TYPE int, float, bool or str; repeatable).",
        ),
    ] = None,
    ignore_imatrix_rules: Annotated[
        bool,
        typer.Option(
            help="Accepted for llama-quantize recipes; its imatrix rules concern only types "
            "we do not produce."
        ),
    ] = False,
    allow_requantize: Annotated[
        bool, typer.Option(help="Accept quantized inputs (dequantized first).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option(help="Print the types and sizes; write nothing.")
    ] = False,
    iq2ks_search: Annotated[
        Search,
        typer.Option(
            case_sensitive=False, help="IQ2_KS scale search: ik's fast path or the exhaustive one."
        ),
    ] = Search.fast,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="One line per tensor.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Quantize a model with ik_llama.cpp's default tensor-type mix for TYPE."""
    threads = _threads(threads, nthreads)
    per_tensor = {
        "--attn-q-type": attn_q_type,
        "--attn-k-type": attn_k_type,
        "--attn-v-type": attn_v_type,
        "--attn-qkv-type": attn_qkv_type,
        "--attn-output-type": attn_output_type,
        "--ffn-gate-type": ffn_gate_type,
        "--ffn-down-type": ffn_down_type,
        "--ffn-up-type": ffn_up_type,
        "--ffn-gate-inp-type": ffn_gate_inp_type,
        "--per-layer-token-embedding-type": per_layer_token_embedding_type,
    }
    opts = cv.QuantizeOptions(
        threads=threads,
        pure=pure,
        custom_q=custom_q or [],
        output_tensor_type=output_tensor_type,
        token_embedding_type=token_embedding_type,
        leave_output_tensor=leave_output_tensor,
        allow_requantize=allow_requantize,
        iq2ks_search=iq2ks_search.value,
        hide_imatrix=hide_imatrix,
        tensor_types={k: v for k, v in per_tensor.items() if v is not None},
        extra_output_type=extra_output_tensor,
        kv_overrides=override_kv or [],
        ignore_imatrix_rules=ignore_imatrix_rules,
    )
    _run(cv.check_recipe, opts)  # a bad recipe fails before the imatrix is even read
    for msg in recipe_warnings(qtype.value, opts):
        err.print(f"warning: {msg}")
    imx = None
    if imatrix is not None:
        imx = _run(load_imatrix, imatrix)
        imx = _run(imx.filtered, include_weights, exclude_weights)
        if not len(imx):
            err.print(
                f"warning: no imatrix entries left after filtering {imatrix}; quantizing without"
            )
            imx = None
    elif include_weights or exclude_weights:
        raise _fail("--include-weights/--exclude-weights need --imatrix")
    opts.imatrix = imx
    if dry_run:
        report = _run(cv.quantize_model, inp, None, qtype.value, opts)
        n = len(report.plans)
        for i, p in enumerate(report.plans, 1):
            out.print(_plan_line(p, i, n), markup=False)
        _extra_output_note(report, opts)
        out.print(_type_summary(report.plans, f"{qtype.value} mix (dry run, nothing written)"))
        out.print(
            f"size {_mb(report.size_in)} -> {_mb(report.size_out)}, "
            f"{report.bpw:.3f} bits per weight"
        )
        return
    prog = _RichProgress(verbose, quiet)
    try:
        report = _run(cv.quantize_model, inp, output, qtype.value, opts, prog)
    finally:
        prog.stop()
    _extra_output_note(report, opts)
    _summary(report, f"quantized {inp} -> {output} ({qtype.value})")


def _threads(option: int | None, positional: int | None) -> int | None:
    """--threads or llama-quantize's positional NTHREADS (<= 0: all cores)."""
    if positional is None:
        return option
    positional = positional if positional > 0 else None
    if option is not None and positional != option:
        raise _fail(f"--threads {option} and NTHREADS {positional or 0} disagree; give one")
    return positional


def _extra_output_note(report: cv.Report, opts: cv.QuantizeOptions) -> None:
    if opts.extra_output_type and not any(p.out_name for p in report.plans):
        err.print(
            f"warning: --extra-output-tensor {opts.extra_output_type}: not added, it would not "
            "be smaller than the output tensor (llama-quantize skips it too)"
        )


def _summary(report: cv.Report, title: str) -> None:
    n_thr = report.threads or os.cpu_count()
    out.print(title)
    out.print(
        f"  tensors : {len(report.plans)} ({report.count('quantize')} converted, "
        f"{report.count('copy')} copied, {report.count('keep')} kept"
        + (f", {report.n_fallback} with fallback type" if report.n_fallback else "")
        + ")"
    )
    out.print(
        f"  size    : {_mb(report.size_in)} -> {_mb(report.size_out)} "
        f"({report.bpw:.3f} bits per weight, {report.n_weights:,} weights)"
    )
    out.print(
        f"  time    : {report.seconds:.2f} s, {n_thr} thread(s)"
        + ("" if report.threads else " (auto)")
    )


# -- dequantize ----------------------------------------------------------------------


@app.command()
def dequantize(
    inp: Annotated[Path, typer.Argument(metavar="IN", help="Input GGUF.")],
    output: Annotated[Path, typer.Argument(metavar="OUT", help="Output GGUF.")],
    type_: Annotated[
        FloatType, typer.Option("--type", case_sensitive=False, help="Output weight type.")
    ] = FloatType.f16,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=1)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
) -> None:
    """Decode every quantized weight back to f32, f16 or bf16."""
    prog = _RichProgress(False, quiet)
    try:
        report = _run(cv.dequantize_model, inp, output, type_.value, threads, prog)
    finally:
        prog.stop()
    _summary(report, f"dequantized {inp} -> {output} ({type_.value})")


# -- info ------------------------------------------------------------------------------


def _kv_text(kv) -> str:
    v = kv.value
    if kv.vtype.name == "ARRAY":
        n = len(v)
        sub = kv.sub_type.name.lower() if kv.sub_type is not None else "?"
        if n <= 8 and sub != "array":
            return "[" + ", ".join(repr(x) if isinstance(x, str) else str(x) for x in list(v)) + "]"
        return f"[{sub} x {n}]"
    if kv.vtype.name == "FLOAT32":
        return f"{v:.7g}"
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= 80 else s[:77] + "..."


@app.command()
def info(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A GGUF file.")],
    metadata: Annotated[bool, typer.Option(help="Show metadata.")] = True,
    tensors: Annotated[bool, typer.Option(help="Show the tensor list.")] = True,
) -> None:
    """Metadata, tensors (shape, type, size) and bits per weight by type."""
    r = _run(GGUFReader, file)
    with r:
        out.print(
            f"{file}: GGUF v{r.version}, {len(r.kv)} metadata keys, {len(r.tensors)} tensors, "
            f"alignment {r.alignment}, {_mb(r.file_size)}"
        )
        if metadata:
            t = Table(title="metadata", title_justify="left")
            t.add_column("key")
            t.add_column("type")
            t.add_column("value", overflow="fold")
            for kv in r.kv.values():
                t.add_row(escape(kv.key), kv.vtype.name.lower(), escape(_kv_text(kv)))
            out.print(t)
        plans = [cv.TensorPlan(ti, ti.type, "keep") for ti in r.tensors.values()]
        if tensors:
            t = Table(title="tensors", title_justify="left")
            for c in ("#", "name", "shape", "type", "size", "bpw"):
                t.add_column(c, justify="right" if c in ("#", "size", "bpw") else "left")
            for i, ti in enumerate(r.tensors.values()):
                t.add_row(
                    str(i),
                    escape(ti.name),
                    _shape(ti.ne),
                    ti.type.name,
                    _mb(ti.nbytes),
                    f"{8 * ti.nbytes / ti.n_elements:.3f}",
                )
            out.print(t)
        out.print(_type_summary(plans, "by type"))
        total = sum(ti.nbytes for ti in r.tensors.values())
        n = sum(ti.n_elements for ti in r.tensors.values())
        out.print(
            f"total: {n:,} weights, {_mb(total)}, {8 * total / max(n, 1):.3f} bits per weight"
        )


# -- compare -----------------------------------------------------------------------------


_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(metavar="A", help="Reference model (e.g. F16).")],
    b: Annotated[Path, typer.Argument(metavar="B", help="Model to compare (e.g. a quantization).")],
    plot: Annotated[
        Path | None,
        typer.Option(help="Draw error per layer and tensor kind to a PNG (needs matplotlib)."),
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=1)] = None,
    all_tensors: Annotated[
        bool, typer.Option("--all", help="List every tensor, not just by kind.")
    ] = False,
) -> None:
    """Relative RMSE and cosine similarity of B's tensors against A's."""
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise _fail(
                "--plot needs matplotlib, which is not installed (pip install matplotlib)"
            ) from None
    diffs, unpaired = _run(cv.compare_models, a, b, threads)
    if all_tensors:
        t = Table(title=f"{b} vs {a}", title_justify="left")
        for c in ("name", "A", "B", "rel. RMSE", "cosine"):
            t.add_column(c, justify="right" if c in ("rel. RMSE", "cosine") else "left")
        for d in diffs:
            t.add_row(d.name, d.type_a, d.type_b, f"{d.rel_rmse:.5f}", f"{d.cosine:.6f}")
        out.print(t)
    kinds: dict[str, list[cv.TensorDiff]] = {}
    for d in diffs:
        m = _LAYER.match(d.name)
        kinds.setdefault(m.group(2) if m else d.name, []).append(d)
    t = Table(title="by tensor kind (weighted by size)", title_justify="left")
    for c in ("kind", "tensors", "types B", "rel. RMSE", "worst", "min cosine"):
        t.add_column(c, justify="left" if c in ("kind", "types B") else "right")
    for kind, ds in kinds.items():
        n = sum(d.n_elements for d in ds)
        rms = (sum(d.rel_rmse**2 * d.n_elements for d in ds) / n) ** 0.5
        t.add_row(
            kind,
            str(len(ds)),
            ",".join(sorted({d.type_b for d in ds})),
            f"{rms:.5f}",
            f"{max(d.rel_rmse for d in ds):.5f}",
            f"{min(d.cosine for d in ds):.6f}",
        )
    out.print(t)
    worst = max(diffs, key=lambda d: d.rel_rmse)
    out.print(
        f"{len(diffs)} tensors compared; worst: {worst.name} (rel. RMSE {worst.rel_rmse:.5f})"
    )
    if unpaired:
        out.print(f"not compared (missing or different shape): {', '.join(unpaired)}")
    if plot is not None:
        _run(_plot, diffs, plot, f"{b.name} vs {a.name}")
        out.print(f"plot written to {plot}")


def _plot(diffs: list[cv.TensorDiff], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[int, float]]] = {}
    for d in diffs:
        m = _LAYER.match(d.name)
        if m:
            series.setdefault(m.group(2), []).append((int(m.group(1)), d.rel_rmse))
    fig, ax = plt.subplots(figsize=(9, 5))
    for kind, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=kind)
    ax.set_xlabel("layer")
    ax.set_ylabel("relative RMSE")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":  # pragma: no cover
    app()
