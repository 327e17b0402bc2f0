"""The ``iqk`` command line: quantize, dequantize, inspect and compare GGUF models.

Each command parses its options, calls ``iqk_rs.pipeline`` and renders the
result with rich. Errors become one line on stderr and exit status 1; Ctrl-C,
SIGTERM and SIGHUP exit with 128 + the signal number and, like any error, leave no
partial output file. Text from the files (names, keys, values) is shown through
``display.printable`` and never as rich markup. The console script is
``iqk_rs._entry:main``, which also covers Ctrl-C while this module loads.
"""

from __future__ import annotations

import functools
import io
import os
import re
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
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
from rich.text import Text

from . import pipeline as pl
from ._core import __version__
from .api import search_mode
from .display import printable
from .errors import IqkError
from .gguf import split as gsplit
from .gguf.ftypes import ftype_name
from .imatrix import load_imatrix
from .mix import TARGETS
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

# Everything the package raises on purpose, and what the system or a builtin parser may raise.
_ERRORS = (IqkError, OSError, ValueError)


def _print_version(value: bool) -> None:
    if value:
        out.print(f"iqk {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    # Options that come before the command; --version acts in its callback.
    # A terminal or pipe that cannot encode some character (LANG=C, PYTHONIOENCODING=ascii)
    # gets a backslash escape for it instead of a UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


# The target types of `iqk quantize`: those ik's mixes are defined for (mix.TARGETS).
Target = Enum("Target", {t.upper(): t.upper() for t in TARGETS}, type=str)


class FloatType(str, Enum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"


class Search(str, Enum):
    fast = "fast"
    exhaustive = "exhaustive"


class SearchMode(str, Enum):
    ik = "ik"
    ik_exhaustive = "ik-exhaustive"
    best = "best"
    best_plain = "best-plain"
    best_ik_weights = "best-ik-weights"


def _fail(msg: str, code: int = 1) -> typer.Exit:
    try:
        err.print(Text.assemble(("error:", "bold red"), " ", printable(msg)))
    except OSError:
        pass  # stderr is gone (SIGHUP: the terminal closed); the exit status still tells
    return typer.Exit(code)


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived; unwinds like Ctrl-C so the partial output is removed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, _frame) -> None:
    raise _Terminated(signum)


@contextmanager
def _termination_unwinds():
    """While inside, SIGTERM and SIGHUP raise ``_Terminated`` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


# What a stopped run leaves: nothing half-written (finished split files stay, for
# --partial-requant, so "no output" would not be true).
_STOPPED = "no partial file left behind"


def _run(fn, *args, **kwargs):
    """Call into the library, turning its errors and signals into clean CLI exits."""
    try:
        # numpy's floating-point RuntimeWarnings are noise on the way to a clean error
        with _termination_unwinds(), np.errstate(all="ignore"):
            return fn(*args, **kwargs)
    except KeyboardInterrupt:
        raise _fail(f"interrupted; {_STOPPED}", 128 + signal.SIGINT) from None
    except _Terminated as e:
        name = signal.Signals(e.signum).name
        raise _fail(f"terminated by {name}; {_STOPPED}", 128 + e.signum) from None
    except _ERRORS as e:
        raise _fail(str(e)) from None


def _interruptible(command):
    """Ctrl-C anywhere in a command (also while printing): one line and exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            raise _fail("interrupted", 130) from None

    return wrapper


def _mb(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _shape(ne) -> str:
    return "[" + ", ".join(str(d) for d in ne) + "]"


class _CliProgress(pl.Progress):
    """What both progress displays share: the options, the plan notes, the counts."""

    def __init__(self, verbose: bool, quiet: bool):
        self.verbose = verbose
        self.quiet = quiet
        self._i = self._n = 0  # tensors done, of all to write
        self._total = 0  # input bytes of all tensors to write

    def planned(self, report):
        _plan_notes(report, self.verbose, self.quiet)

    def start(self, plans):
        self._n = len(plans)
        self._total = sum(p.info.nbytes for p in plans)

    def tensor_done(self, plan, seconds):
        self._i += 1

    def stop(self):
        pass


class _RichProgress(_CliProgress):
    """A bar over bytes of input plus a tensor counter; optional per-tensor lines."""

    def start(self, plans):
        super().start(plans)
        self.progress = Progress(
            TextColumn("{task.description:<36.36}", markup=False),
            BarColumn(),
            DownloadColumn(binary_units=True),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
            disable=self.quiet,
            transient=True,
        )
        self.task = self.progress.add_task("starting", total=self._total)
        self.progress.start()

    def tensor_start(self, plan):
        self.progress.update(self.task, description=printable(plan.name))

    def units(self, done, total, nodes):
        self.progress.update(self.task, description=f"units {done}/{total} on {nodes} nodes")

    def advance(self, nbytes_in):
        self.progress.advance(self.task, nbytes_in)

    def tensor_done(self, plan, seconds):
        super().tensor_done(plan, seconds)
        if self.verbose:
            self.progress.console.print(_plan_line(plan, self._i, self._n, seconds), markup=False)

    def stop(self):
        if hasattr(self, "progress"):
            self.progress.stop()


# Seconds between progress lines inside a long tensor when stderr is not a terminal.
PLAIN_PROGRESS_INTERVAL = 30.0


class _PlainProgress(_CliProgress):
    """Progress for logs (nohup, CI, batch jobs), where a live bar shows nothing: a line
    per tensor, and one every PLAIN_PROGRESS_INTERVAL seconds inside a long tensor,
    each with the bytes done, the rate and the time left."""

    def __init__(self, verbose: bool, quiet: bool):
        super().__init__(verbose, quiet)
        self._done = 0
        self._t0 = self._last = 0.0
        self._current = ""
        self._units = ""  # a --ray run's count of work units

    def start(self, plans):
        super().start(plans)
        self._t0 = self._last = time.monotonic()

    def tensor_start(self, plan):
        self._current = plan.name

    def units(self, done, total, nodes):
        self._units = f"units {done}/{total} on {nodes} nodes, "

    def advance(self, nbytes_in):
        self._done += nbytes_in
        now = time.monotonic()
        if now - self._last >= PLAIN_PROGRESS_INTERVAL:
            w = len(str(self._n))
            name = printable(self._current)
            self._print(f"[{self._i + 1:>{w}}/{self._n}] {name} (in progress)", now)

    def tensor_done(self, plan, seconds):
        super().tensor_done(plan, seconds)
        self._print(_plan_line(plan, self._i, self._n, seconds), time.monotonic())

    def _print(self, what: str, now: float) -> None:
        self._last = now
        if self.quiet:
            return
        elapsed = max(now - self._t0, 1e-9)
        rate = self._done / elapsed
        eta = (self._total - self._done) / rate if rate > 0 else 0.0
        pct = 100.0 * self._done / max(self._total, 1)
        err.print(
            f"{what} | {self._units}{pct:3.0f}% of {_mb(self._total)}, {rate / 2**20:.1f} MiB/s, "
            f"ETA {_clock(eta)}",
            markup=False,
        )


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _progress(verbose: bool, quiet: bool) -> _RichProgress | _PlainProgress:
    """The live bar on a terminal; plain lines where stderr goes to a file or a pipe."""
    return (_RichProgress if err.is_terminal else _PlainProgress)(verbose, quiet)


def _plan_notes(report: pl.Report, verbose: bool, quiet: bool) -> None:
    """What the plan means for the output, said before the work starts."""
    for w in report.warnings:
        err.print(printable(f"warning: {w}"), markup=False)
    n_quant = report.count("quantize")
    imx = report.imatrix
    if imx is not None and n_quant:
        missing = report.without_imatrix
        if not report.n_with_imatrix:
            err.print(
                printable(f"warning: no entry of {imx.path} matches a tensor to quantize; ")
                + "quantizing without importance weights (and not recording the imatrix in the "
                "output)",
                markup=False,
            )
        elif missing:
            if verbose:
                for name in missing:
                    err.print(
                        printable(f"no importance weights for {name} (no imatrix entry)"),
                        markup=False,
                    )
            shown = ", ".join(printable(m) for m in missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            err.print(
                f"imatrix: importance weights for {n_quant - len(missing)} of {n_quant} "
                f"tensors to quantize; without: {shown}" + ("" if verbose else " (-v lists them)"),
                markup=False,
            )
        elif not quiet:
            err.print(f"imatrix: importance weights for all {n_quant} tensors to quantize")
    fallbacks = report.fallbacks
    if fallbacks:
        kinds = ", ".join(
            f"{k} x {to} instead of {wanted}" for (wanted, to), k in sorted(fallbacks.items())
        )
        err.print(
            f"warning: {sum(fallbacks.values())} of {n_quant} tensors to quantize have rows that "
            f"are not a multiple of 256 and get fallback types: {kinds}",
            markup=False,
        )
    if report.larger_than_input:
        err.print(
            f"warning: the output ({_mb(report.size_out)}) will be larger than the input "
            f"({_mb(report.size_in)})",
            markup=False,
        )


def _plan_line(p: pl.TensorPlan, i: int, n: int, seconds: float | None = None) -> str:
    w = len(str(n))
    arrow = (
        f"{p.info.type.name:>6} -> {p.out_type.name:<7}"
        if p.action == "quantize"
        else (f"{p.info.type.name:>6} ({p.action})".ljust(17))
    )
    line = (
        f"[{i:>{w}}/{n}] {printable(p.name):<36} {_shape(p.info.ne):<18} {arrow} "
        f"{_mb(p.info.nbytes):>11} -> {_mb(p.out_nbytes):>11}"
    )
    if seconds is not None:
        line += f"  {seconds:6.2f} s"
    if p.note:
        line += f"  ({p.note})"
    return line


def _type_summary(plans: list[pl.TensorPlan], title: str) -> Table:
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


# -- split output (quantize, dequantize) -------------------------------------------------

_SPLIT_HELP = "Split output"
KeepSplit = Annotated[
    bool,
    typer.Option(
        help="Write the same shards as the split input: OUT-0000i-of-0000N.gguf "
        "(OUT without .gguf, as llama-quantize).",
        rich_help_panel=_SPLIT_HELP,
    ),
]
SplitMaxSize = Annotated[
    str | None,
    typer.Option(
        metavar="SIZE",
        help="Split the output into files of at most SIZE tensor data (500M, 48G; "
        "10^6/10^9 bytes, as llama-gguf-split).",
        rich_help_panel=_SPLIT_HELP,
    ),
]
SplitMaxTensors = Annotated[
    int | None,
    typer.Option(
        metavar="N", help="Split the output every N tensors.", rich_help_panel=_SPLIT_HELP
    ),
]
PartialRequant = Annotated[
    bool,
    typer.Option(
        help="Resume: keep output files already there (checked to match) and write only "
        "the missing ones.",
        rich_help_panel=_SPLIT_HELP,
    ),
]

_RAY_HELP = "Distributed run (Ray)"
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="ADDRESS",
        help="Run on a Ray cluster: 'auto' (the cluster this runs in; also a bare --ray) or "
        "its address. Needs pip install 'iqk-rs[ray]' and IN/OUT on a filesystem every node "
        "sees; --threads is then the threads of each work unit (default 1).",
        rich_help_panel=_RAY_HELP,
    ),
]
Resume = Annotated[
    bool,
    typer.Option(
        help="With --ray: continue a killed run from the manifests beside its temporary "
        "files (finished units checked, the rest redone).",
        rich_help_panel=_RAY_HELP,
    ),
]
RayUnitSize = Annotated[
    str,
    typer.Option(
        metavar="SIZE",
        help="With --ray: input bytes per work unit (K, M or G: 10^3, 10^6, 10^9).",
        rich_help_panel=_RAY_HELP,
    ),
]


def _split_options(
    keep_split: bool, max_size: str | None, max_tensors: int | None, partial_requant: bool
) -> pl.SplitOptions:
    size = None if max_size is None else _run(gsplit.parse_size, max_size)
    split = pl.SplitOptions(keep_split, size, max_tensors, partial_requant)
    _run(split.check)  # before the imatrix is read, and for a dry run too
    return split


def _files_summary(report: pl.Report) -> None:
    """One line per output file: what a person checks before uploading or loading it."""
    for f in report.files:
        state = "kept, already there" if f.skipped else "written"
        out.print(
            printable(f"  file    : {f.path}  {f.n_tensors} tensors, {_mb(f.nbytes)} ({state})"),
            markup=False,
        )


def _shards_preview(report: pl.Report, output: Path, split: pl.SplitOptions) -> None:
    sizes = {p.name: p.out_nbytes for p in report.plans}
    for shard in pl.plan_files(report.plans, report.input_parts, output, split):
        data = sum(sizes[n] for n in shard.names)
        out.print(
            printable(
                f"  would write {shard.path}: {len(shard.names)} tensors, {_mb(data)} of tensor "
                "data"
            ),
            markup=False,
        )


# -- quantize ------------------------------------------------------------------------


def _target_named(name: str) -> Target | None:
    return next((t for t in Target if t.value.lower() == name.lower()), None)


def default_output(inp: Path, qtype: Target) -> Path:
    """llama-quantize's name when OUT is omitted: ggml-model-<TYPE>.gguf beside the input."""
    return inp.parent / f"ggml-model-{qtype.value}.gguf"


@app.command(epilog=type_listing([t.upper() for t in TARGETS]))
@_interruptible
def quantize(
    inp: Annotated[
        Path, typer.Argument(metavar="IN", help="Input GGUF (F32, F16 or BF16 weights).")
    ],
    output: Annotated[
        Path | None,
        typer.Argument(
            metavar="OUT",
            help="Output GGUF (not written with --dry-run); without it, as llama-quantize: "
            "ggml-model-TYPE.gguf beside IN.",
            show_default=False,
        ),
    ] = None,
    qtype: Annotated[
        str | None,
        typer.Argument(
            metavar="TYPE",
            help=" ".join(t.value for t in Target),
            show_default=False,
        ),
    ] = None,
    nthreads: Annotated[
        str | None,
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
    allow_missing_imatrix: Annotated[
        bool,
        typer.Option(
            help="Quantize IQ2_K/IQ2_KS even when no imatrix entry matches a tensor "
            "(otherwise an error: likely the imatrix of another model)."
        ),
    ] = False,
    threads: Annotated[
        int | None,
        typer.Option("--threads", "-t", min=1, help="Worker threads (default: all cores)."),
    ] = None,
    pure: Annotated[
        bool,
        typer.Option(
            help="Every weight matrix gets TYPE (then the row-size fallback): no mix and no "
            "--custom-q or --attn-*/--ffn-* rules; the embedding, output and router type "
            "options still apply."
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
    search: Annotated[
        SearchMode | None,
        typer.Option(
            case_sensitive=False,
            help="ik: ik_llama.cpp's bytes (default); ik-exhaustive: the same with IQ2_KS's "
            "exhaustive search; best: same formats and size, lower weighted error "
            "(IQ2_K..IQ4_KS; best-plain, best-ik-weights: with that weighting for every type).",
        ),
    ] = None,
    iq2ks_search: Annotated[
        Search | None,
        typer.Option(
            case_sensitive=False,
            help="Older name of --search: fast = ik, exhaustive = ik-exhaustive.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="One line per tensor.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    keep_split: KeepSplit = False,
    split_max_size: SplitMaxSize = None,
    split_max_tensors: SplitMaxTensors = None,
    partial_requant: PartialRequant = False,
    ray: RayAddress = None,
    resume: Resume = False,
    ray_unit_size: RayUnitSize = "256M",
) -> None:
    """Quantize a model with ik_llama.cpp's default tensor-type mix for TYPE.

    Arguments: IN [OUT] TYPE [NTHREADS], as llama-quantize takes them.

    IN may be any part of a split model (NAME-00001-of-00003.gguf): all parts are read.
    """
    split = _split_options(keep_split, split_max_size, split_max_tensors, partial_requant)
    output, target, nthreads = _positionals(output, qtype, nthreads)
    if output is None:  # a dry run lists the files it would write under this name too
        output = default_output(inp, target)
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
    opts = pl.QuantizeOptions(
        threads=threads,
        pure=pure,
        custom_q=custom_q or [],
        output_tensor_type=output_tensor_type,
        token_embedding_type=token_embedding_type,
        leave_output_tensor=leave_output_tensor,
        allow_requantize=allow_requantize,
        search=_run(search_mode, search and search.value, iq2ks_search and iq2ks_search.value),
        hide_imatrix=hide_imatrix,
        allow_missing_imatrix=allow_missing_imatrix,
        tensor_types={k: v for k, v in per_tensor.items() if v is not None},
        extra_output_type=extra_output_tensor,
        kv_overrides=override_kv or [],
        ignore_imatrix_rules=ignore_imatrix_rules,
    )
    target_t = _run(pl.target_type, target.value)
    _run(pl.check_recipe, opts)  # a bad recipe fails before the imatrix is even read
    for msg in recipe_warnings(target.value, opts):
        err.print(printable(f"warning: {msg}"), markup=False)
    imx = None
    if imatrix is not None:
        imx = _run(load_imatrix, imatrix)
        if not quiet:
            err.print(
                printable(
                    f"imatrix: loaded {len(imx)} entries from {imatrix}"
                    + (f", computed on {imx.chunks} chunks" if imx.chunks else "")
                    + (f" of {imx.dataset}" if imx.dataset else "")
                ),
                markup=False,
            )
        n_loaded = len(imx)
        imx = _run(imx.filtered, include_weights, exclude_weights)
        if not len(imx):
            why = f"no imatrix entries left after filtering {imatrix}"
            e = None if allow_missing_imatrix else pl.imatrix_unused_error(target_t, why)
            if e is not None:
                raise _fail(str(e))
            err.print(printable(f"warning: {why}; quantizing without"), markup=False)
            imx = None
        elif len(imx) != n_loaded and not quiet:
            err.print(f"imatrix: {len(imx)} of {n_loaded} entries selected", markup=False)
    elif include_weights or exclude_weights:
        raise _fail("--include-weights/--exclude-weights need --imatrix")
    opts.imatrix = imx
    if dry_run:
        report = _run(pl.quantize_model, inp, None, target_t, opts)
        _plan_notes(report, verbose, quiet)
        n = len(report.plans)
        for i, p in enumerate(report.plans, 1):
            out.print(_plan_line(p, i, n), markup=False)
        _extra_output_note(report, opts)
        out.print(_type_summary(report.plans, f"{target.value} mix (dry run, nothing written)"))
        out.print(
            f"size {_mb(report.size_in)} -> {_mb(report.size_out)}, "
            f"{report.bpw:.3f} bits per weight" + _larger(report)
        )
        if split.splits and output is not None:
            _shards_preview(report, output, split)
        return
    if resume and ray is None:
        raise _fail("--resume continues a --ray run; a local run resumes with --partial-requant")
    prog = _progress(verbose, quiet)
    try:
        if ray is None:
            report = _run(pl.quantize_model, inp, output, target_t, opts, prog, split)
        else:
            ray_args = (ray, resume, ray_unit_size, quiet)
            report = _run(_quantize_on_ray, inp, output, target_t, opts, prog, split, *ray_args)
    finally:
        prog.stop()
    _extra_output_note(report, opts)
    _summary(report, f"quantized {inp} -> {report.out_path} ({target.value})", note_larger=True)
    if ray is not None:
        _ray_summary(report)


def _quantize_on_ray(inp, output, target, opts, prog, split, address, resume, unit_size, quiet):
    from . import distributed  # imports Ray only now

    ray_opts = distributed.RayOptions(
        address=address,
        max_unit_bytes=distributed.parse_unit_size(unit_size),
        resume=resume,
        cpus_per_task=opts.threads or 1,
        log=None if quiet else lambda msg: err.print(msg, markup=False),
    )
    return distributed.quantize_model(inp, output, target, opts, prog, split, ray_opts)


def _ray_summary(report) -> None:
    """Per node: its share of the work and its throughput over the run."""
    run = report.run
    out.print(
        f"  cluster : {run.units_done} of {run.units} units converted"
        + (f", {run.units_verified} finished earlier" if run.units_verified else "")
        + f", {_mb(run.bytes_in)} in {run.seconds:.2f} s "
        f"({run.bytes_in / 2**20 / max(run.seconds, 1e-9):.1f} MiB/s)",
        markup=False,
    )
    for ns in sorted(run.nodes.values(), key=lambda n: n.node):
        out.print(
            f"  node    : {ns.node}  {ns.units} units, {_mb(ns.bytes_in)}, "
            f"{ns.bytes_in / 2**20 / max(run.seconds, 1e-9):.1f} MiB/s",
            markup=False,
        )


def _positionals(
    output: Path | None, qtype: str | None, nthreads: str | None
) -> tuple[Path | None, Target, int | None]:
    """IN [OUT] TYPE [NTHREADS]: OUT is left out when the word after IN names a type."""
    words = [str(w) for w in (output, qtype, nthreads) if w is not None]
    if words and _target_named(words[0]) is not None:
        words.insert(0, "")  # no OUT
    if len(words) < 2 or _target_named(words[1]) is None:
        what = f"unknown TYPE {words[1]!r}" if len(words) >= 2 else "missing TYPE"
        raise typer.BadParameter(
            what + ": one of " + ", ".join(t.value for t in Target), param_hint="TYPE"
        )
    if len(words) > 3:
        raise typer.BadParameter(f"unexpected extra argument {words[3]!r}")
    n = None
    if len(words) == 3:
        try:
            n = int(words[2])
        except ValueError:
            raise typer.BadParameter(
                f"NTHREADS must be an integer, not {words[2]!r}", param_hint="NTHREADS"
            ) from None
    return (Path(words[0]) if words[0] else None), _target_named(words[1]), n


def _threads(option: int | None, positional: int | None) -> int | None:
    """--threads or llama-quantize's positional NTHREADS (<= 0: all cores)."""
    if positional is None:
        return option
    positional = positional if positional > 0 else None
    if option is not None and positional != option:
        raise _fail(f"--threads {option} and NTHREADS {positional or 0} disagree; give one")
    return positional


def _extra_output_note(report: pl.Report, opts: pl.QuantizeOptions) -> None:
    if opts.extra_output_type and not any(p.out_name for p in report.plans):
        err.print(
            f"warning: --extra-output-tensor {opts.extra_output_type}: not added, it would not "
            "be smaller than the output tensor (llama-quantize skips it too)"
        )


def _larger(report: pl.Report) -> str:
    return "; larger than the input" if report.larger_than_input else ""


def _summary(report: pl.Report, title: str, note_larger: bool = False) -> None:
    n_thr = report.threads or os.cpu_count()
    out.print(printable(title), markup=False)
    out.print(
        f"  tensors : {len(report.plans)} ({report.count('quantize')} converted, "
        f"{report.count('copy')} copied, {report.count('keep')} kept"
        + (f", {report.n_fallback} with fallback type" if report.n_fallback else "")
        + ")"
    )
    out.print(
        f"  size    : {_mb(report.size_in)} -> {_mb(report.size_out)} "
        f"({report.bpw:.3f} bits per weight, {report.n_weights:,} weights)"
        + (_larger(report) if note_larger else "")
    )
    out.print(
        f"  time    : {report.seconds:.2f} s, {n_thr} thread(s)"
        + ("" if report.threads else " (auto)")
    )
    _files_summary(report)


# -- dequantize ----------------------------------------------------------------------


@app.command()
@_interruptible
def dequantize(
    inp: Annotated[Path, typer.Argument(metavar="IN", help="Input GGUF.")],
    output: Annotated[Path, typer.Argument(metavar="OUT", help="Output GGUF.")],
    type_: Annotated[
        FloatType,
        typer.Option("--type", case_sensitive=False, help="Type of the decoded weights."),
    ] = FloatType.f16,
    convert_float: Annotated[
        bool,
        typer.Option(
            help="Also convert unquantized matrices (e.g. f32 MoE routers, ffn_gate_inp) to "
            "--type; by default they stay as they are. 1-D tensors always do."
        ),
    ] = False,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=1)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
    keep_split: KeepSplit = False,
    split_max_size: SplitMaxSize = None,
    split_max_tensors: SplitMaxTensors = None,
    partial_requant: PartialRequant = False,
) -> None:
    """Decode every quantized weight back to f32, f16 or bf16; other tensors stay as they are."""
    split = _split_options(keep_split, split_max_size, split_max_tensors, partial_requant)
    prog = _progress(False, quiet)
    try:
        report = _run(
            pl.dequantize_model, inp, output, type_.value, threads, prog, convert_float, split
        )
    finally:
        prog.stop()
    _summary(report, f"dequantized {inp} -> {report.out_path} ({type_.value})")


# -- info ------------------------------------------------------------------------------


def _kv_text(kv) -> str:
    v = kv.value
    if kv.key == "general.file_type" and isinstance(v, int):
        return f"{v} ({ftype_name(v)})"
    if kv.vtype.name == "ARRAY":
        n = len(v)
        sub = kv.sub_type.name.lower() if kv.sub_type is not None else "?"
        if n <= 8 and sub != "array":
            return "[" + ", ".join(repr(x) if isinstance(x, str) else str(x) for x in list(v)) + "]"
        return f"[{sub} x {n}]"
    if kv.vtype.name == "FLOAT32":
        return f"{v:.7g}"
    s = repr(v[:100]) if isinstance(v, str) else str(v)
    return s if len(s) <= 80 else s[:77] + "..."


def _columns(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]], right: str) -> None:
    """A plain aligned listing: one line per row, linear in time and memory.

    rich's Table measures and renders every cell as a renderable (about a millisecond per
    row), which made ``info`` on a file of 10^5 tensors take minutes; file text is escaped
    by the caller. ``right`` flags the right-aligned columns ("l"/"r" per column).
    """
    cap = 60  # a very long name pushes its own line out instead of every line's columns
    widths = [min(cap, max([len(h)] + [len(r[i]) for r in rows])) for i, h in enumerate(header)]

    def line(cells: tuple[str, ...]) -> str:
        parts = [
            c.rjust(w) if a == "r" else c.ljust(w)
            for c, w, a in zip(cells, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    text = [title, line(header)] + [line(r) for r in rows]
    out.file.write("\n".join(text) + "\n")


@app.command()
@_interruptible
def info(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A GGUF file.")],
    metadata: Annotated[bool, typer.Option(help="Show metadata.")] = True,
    tensors: Annotated[bool, typer.Option(help="Show the tensor list.")] = True,
) -> None:
    """Metadata, tensors (shape, type, size) and bits per weight by type."""
    r = _run(gsplit.open_model, file)
    with r:
        ftype = r.get("general.file_type")
        parts = f"{len(r.parts)} parts, " if isinstance(r, gsplit.SplitModel) else ""
        out.print(
            printable(
                f"{file}: GGUF v{r.version}, {parts}{len(r.kv)} metadata keys, "
                f"{len(r.tensors)} tensors, alignment {r.alignment}, {_mb(r.file_size)}"
                + (f", file type {ftype_name(ftype)}" if isinstance(ftype, int) else "")
            ),
            markup=False,
        )
        if isinstance(r, gsplit.SplitModel):
            for part in r.parts:
                out.print(
                    printable(f"  part {part.path}: {len(part.tensors)} tensors"), markup=False
                )
        if metadata:
            rows = [
                (printable(kv.key), kv.vtype.name.lower(), printable(_kv_text(kv)))
                for kv in r.kv.values()
            ]
            _columns("metadata", ("key", "type", "value"), rows, "lll")
        plans = [pl.TensorPlan(ti, ti.type, "keep") for ti in r.tensors.values()]
        if tensors:
            rows = [
                (
                    str(i),
                    printable(ti.name),
                    _shape(ti.ne),
                    ti.type.name,
                    _mb(ti.nbytes),
                    f"{8 * ti.nbytes / ti.n_elements:.3f}",
                )
                for i, ti in enumerate(r.tensors.values())
            ]
            _columns("tensors", ("#", "name", "shape", "type", "size", "bpw"), rows, "rllrrr")
        out.print(_type_summary(plans, "by type"))
        total = sum(ti.nbytes for ti in r.tensors.values())
        n = sum(ti.n_elements for ti in r.tensors.values())
        out.print(
            f"total: {n:,} weights, {_mb(total)}, {8 * total / max(n, 1):.3f} bits per weight"
        )


# -- compare -----------------------------------------------------------------------------


_LAYER = re.compile(r"^blk\.(\d+)\.(.+)$")


@app.command()
@_interruptible
def compare(
    a: Annotated[Path, typer.Argument(metavar="A", help="Reference model (e.g. F16).")],
    b: Annotated[Path, typer.Argument(metavar="B", help="Model to compare (e.g. a quantization).")],
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Draw the error per layer and tensor kind to an image (PNG, or SVG/PDF by "
            "the file's suffix; needs matplotlib)."
        ),
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", "-t", min=1)] = None,
    all_tensors: Annotated[
        bool, typer.Option("--all", help="List every tensor, not just by kind.")
    ] = False,
) -> None:
    """Relative RMSE and cosine similarity of B's tensors against A's."""
    if plot is not None:
        _check_plot_path(plot, a, b)
    diffs, unpaired = _run(pl.compare_models, a, b, threads)
    if all_tensors:
        t = Table(title=f"{b} vs {a}", title_justify="left")
        for c in ("name", "A", "B", "rel. RMSE", "cosine"):
            t.add_column(
                c,
                justify="right" if c in ("rel. RMSE", "cosine") else "left",
                overflow="fold",  # whole names, never cut short
            )
        for d in diffs:
            t.add_row(
                Text(printable(d.name)), d.type_a, d.type_b, f"{d.rel_rmse:.5f}", f"{d.cosine:.6f}"
            )
        out.print(t)
    kinds: dict[str, list[pl.TensorDiff]] = {}
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
            Text(printable(kind)),
            str(len(ds)),
            ",".join(sorted({d.type_b for d in ds})),
            f"{rms:.5f}",
            f"{max(d.rel_rmse for d in ds):.5f}",
            f"{min(d.cosine for d in ds):.6f}",
        )
    out.print(t)
    # NaN/Inf first (their rel. RMSE is inf), then by error; ties keep the file order
    worst = max(diffs, key=lambda d: (not d.finite, d.nonfinite_b + d.nonfinite_a, d.rel_rmse))
    how = (
        f"rel. RMSE {worst.rel_rmse:.5f}"
        if worst.finite
        else f"{worst.nonfinite_a} NaN/Inf value(s) in A, {worst.nonfinite_b} in B"
    )
    out.print(
        printable(f"{len(diffs)} tensors compared; worst: {worst.name} ({how})"), markup=False
    )
    if unpaired:
        names = ", ".join(printable(n) for n in unpaired)
        out.print(f"not compared (missing or different shape): {names}", markup=False)
    if plot is not None:
        _run(_plot, diffs, plot, f"{b.name} vs {a.name}")
        out.print(printable(f"plot written to {plot}"), markup=False)
    broken = [d for d in diffs if not d.finite]
    if broken:
        which = ", ".join(
            f"{d.name!r} ({d.nonfinite_a} in A, {d.nonfinite_b} in B)" for d in broken[:5]
        )
        more = f" and {len(broken) - 5} more" if len(broken) > 5 else ""
        raise _fail(f"{len(broken)} tensor(s) hold NaN/Inf values: {which}{more}")


def _check_plot_path(plot: Path, a: Path, b: Path) -> None:
    """Fail before the comparison, not after it, if the picture cannot be written."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise _fail(
            "--plot needs matplotlib, which is not installed (pip install matplotlib)"
        ) from None
    for model in (a, b):
        _run(pl.check_paths, model, plot)
    suffix = plot.suffix.lower().lstrip(".")
    formats = FigureCanvasBase.get_supported_filetypes()
    if suffix and suffix not in formats:
        raise _fail(
            f"{plot}: cannot draw a '.{suffix}' image; use one of "
            + ", ".join(f".{f}" for f in sorted(formats))
        )


def _plot(diffs: list[pl.TensorDiff], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = _plot_figure(diffs, title)
    fmt = path.suffix.lower().lstrip(".") or "png"
    # a temporary file renamed into place: an interrupted run leaves no broken image
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


def _plain_log_labels(ax, values: list[float]) -> None:
    """Label a log axis 0.02, 0.05, 0.1 (the numbers people quote, not 2x10^-2), with
    fewer labels between the powers of ten the more decades it spans."""
    import math

    from matplotlib.ticker import FuncFormatter, NullFormatter

    span = math.log10(max(values) / min(values)) if values else 0.0
    if span < 0.7:
        keep: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9)
    else:
        keep = (1, 2, 3, 5) if span < 1.5 else (1, 2, 5) if span < 2.5 else (1,)

    def label(y: float, _pos: int) -> str:
        mantissa = round(y / 10 ** math.floor(math.log10(y) + 1e-9))
        return f"{y:g}" if mantissa in keep else ""

    ax.yaxis.set_major_formatter(FuncFormatter(label))
    ax.yaxis.set_minor_formatter(FuncFormatter(label) if len(keep) > 1 else NullFormatter())


def _plot_figure(diffs: list[pl.TensorDiff], title: str):
    """Relative RMSE per layer, one line per tensor kind, for a model card.

    Kinds whose error is zero everywhere (tensors left as they were) cannot be drawn on a
    log scale; they are named under the plot instead. Tensors outside the layers
    (token_embd, output) are dashed horizontal lines.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    per_layer: dict[str, list[pl.TensorDiff]] = {}
    single: list[tuple[str, pl.TensorDiff]] = []
    for d in diffs:
        m = _LAYER.match(d.name)
        if not d.finite:
            continue  # NaN/Inf: reported as an error, nothing to draw
        if m:
            per_layer.setdefault(m.group(2), []).append(d)
        else:
            single.append((d.name, d))
    exact = sorted(k for k, ds in per_layer.items() if all(d.rel_rmse == 0 for d in ds))
    exact += sorted(name for name, d in single if d.rel_rmse == 0)
    series = {k: ds for k, ds in per_layer.items() if k not in exact}
    lines = [(name, d) for name, d in single if name not in exact]

    def kind_label(kind: str, ds: list[pl.TensorDiff]) -> str:
        return f"{kind.removesuffix('.weight')} ({', '.join(sorted({d.type_b for d in ds}))})"

    def mean_err(ds: list[pl.TensorDiff]) -> float:
        return sum(d.rel_rmse for d in ds) / len(ds)

    fig, ax = plt.subplots(figsize=(10, 5.2))
    n_series = len(series) + len(lines)
    cmap = plt.get_cmap("tab10" if n_series <= 10 else "tab20")
    markers = "osD^vP*Xhp<>"
    # worst first, so that the legend reads from the top curve down
    ordered = sorted(series.items(), key=lambda kv: -mean_err(kv[1]))
    for i, (kind, ds) in enumerate(ordered):
        pts = sorted((int(_LAYER.match(d.name).group(1)), d.rel_rmse) for d in ds)
        ax.plot(
            [x for x, _ in pts],
            [y for _, y in pts],
            marker=markers[i % len(markers)],
            markersize=4,
            linewidth=1.5,
            color=cmap(i % cmap.N),
            label=kind_label(kind, ds),
        )
    for j, (name, d) in enumerate(sorted(lines, key=lambda nd: -nd[1].rel_rmse)):
        ax.axhline(
            d.rel_rmse,
            linestyle="--",
            linewidth=1.2,
            color=cmap((len(ordered) + j) % cmap.N),
            label=kind_label(name, [d]),
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    layers = [int(_LAYER.match(d.name).group(1)) for ds in series.values() for d in ds]
    if layers:
        ax.set_xlim(min(layers) - 0.5, max(layers) + 0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("relative RMSE (log scale)")
    n = sum(d.n_elements for d in diffs)
    overall = (sum(d.rel_rmse**2 * d.n_elements for d in diffs) / max(n, 1)) ** 0.5
    ax.set_title(
        f"{title}\nsize-weighted relative RMSE over all {len(diffs)} tensors: {overall:.4f}",
        fontsize="medium",
    )
    if n_series:
        ax.set_yscale("log")
        _plain_log_labels(ax, [d.rel_rmse for d in diffs if d.rel_rmse > 0])
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", axis="y", alpha=0.12)
        ax.legend(
            title="tensor (type in B)",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
            frameon=False,
            fontsize="small",
        )
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "all tensors identical", ha="center", va="center", transform=ax.transAxes)
    if exact and n_series:
        fig.text(
            0.01,
            -0.01,
            "unchanged (error 0, not drawn): "
            + ", ".join(e.removesuffix(".weight") for e in exact),
            fontsize="small",
            color="0.35",
            va="top",
            wrap=True,
        )
    fig.tight_layout()
    return fig


if __name__ == "__main__":  # pragma: no cover
    app()
