"""The ``iqk`` CLI in daily use (issue 20): what it says before and while it works, what it
checks up front, default names, progress in logs, plots, interrupts.

Each test here failed on the CLI before these changes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from iqk_rs import cli
from iqk_rs import pipeline as pl
from iqk_rs.cli import app
from iqk_rs.gguf import GGUFReader, GGUFStreamWriter
from iqk_rs.gguf.ggml_types import all_types
from typer.testing import CliRunner

ROOT = Path(__file__).parent.parent
TINY = Path(__file__).parent / "data" / "tiny-llama-f16.gguf"
# keeps the tiny model's mix on the six IQK types (ffn_down rows are 128 wide: f16)
IQK_ONLY = ["--custom-q", r"ffn_down=f16,output\.weight={t},attn_v={t}"]


def iqk_only(t: str) -> list[str]:
    return [IQK_ONLY[0], IQK_ONLY[1].format(t=t)]


def run(*args: object, expect: int = 0):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == expect, f"exit {r.exit_code}:\n{r.output}\n{r.exception!r}"
    return r


def write_dat(path: Path, entries: dict[str, np.ndarray]) -> Path:
    """A legacy imatrix (ncall 1, so the values are the weights)."""
    blob = bytearray(struct.pack("<i", len(entries)))
    for name, values in entries.items():
        blob += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", 1, values.size)
        blob += values.astype("<f4").tobytes()
    path.write_bytes(bytes(blob))
    return path


def rewrite_metadata(src: Path, dst: Path, drop: set[str] = frozenset(), **set_str: str) -> Path:
    """A copy of ``src`` with metadata keys dropped or set (string values), tensors as they are."""
    from iqk_rs.gguf import KV
    from iqk_rs.gguf.constants import GGUFValueType

    with GGUFReader(src) as r:
        kvs = [kv for k, kv in r.kv.items() if k not in drop and k not in set_str]
        kvs += [KV(k, GGUFValueType.STRING, v) for k, v in set_str.items()]
        tensors = [(t.name, t.type, t.ne) for t in r.tensors.values()]
        with GGUFStreamWriter(dst, kvs, tensors, r.alignment) as w:
            for t in r.tensors.values():
                w.write_chunk(t.name, r.raw(t.name))
            w.commit()
    return dst


@pytest.fixture
def count_encodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls into the quantizers (0 means: refused before any work)."""
    calls: list[int] = []
    real = pl.encode_rows

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(pl.encode, "encode_rows", counting)
    return calls


# -- 1. what the imatrix did -----------------------------------------------------------------


def test_imatrix_coverage_is_reported(tmp_path: Path) -> None:
    dat = write_dat(tmp_path / "im.dat", {"blk.0.attn_q.weight": np.full(256, 2.0)})
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "-q", *iqk_only("IQ4_K"),
            "--imatrix", dat)  # fmt: skip
    assert "loaded 1 entries from" not in r.output  # -q: no info lines
    assert "importance weights for 1 of 26 tensors to quantize" in r.output
    assert "(-v lists them)" in r.output
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "-v", *iqk_only("IQ4_K"),
            "--imatrix", dat)  # fmt: skip
    assert f"imatrix: loaded 1 entries from {dat}" in r.output
    assert "no importance weights for blk.1.attn_q.weight" in r.output
    assert "no importance weights for blk.0.attn_q.weight" not in r.output
    with GGUFReader(tmp_path / "o.gguf") as g:
        assert g.get("quantize.imatrix.entries_count") == 1


def test_imatrix_matching_nothing(tmp_path: Path) -> None:
    dat = write_dat(tmp_path / "im.dat", {"model.layers.0.q_proj": np.full(256, 2.0)})
    for t in ("IQ2_K", "IQ2_KS"):  # the 2-bit types: an error
        r = run("quantize", TINY, tmp_path / "o.gguf", t, "--imatrix", dat, expect=1)
        assert "none of its 1 entries matches a tensor to quantize" in r.output
        assert "--allow-missing-imatrix" in r.output and str(dat) in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["im.dat"]
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ2_K", "--imatrix", dat,
            "--include-weights", "nothing", expect=1)  # fmt: skip
    assert "no imatrix entries left after filtering" in r.output
    for t, extra in (("IQ2_K", ["--allow-missing-imatrix"]), ("IQ4_K", [])):
        out = tmp_path / f"{t}.gguf"
        r = run("quantize", TINY, out, t, "-q", "--imatrix", dat, *extra)
        assert "warning: no entry of" in r.output
        with GGUFReader(out) as g:  # nothing used, nothing recorded
            assert not [k for k in g.kv if k.startswith("quantize.imatrix")]


def test_imatrix_negative_values_refused_before_any_work(
    tmp_path: Path, count_encodes: list[int]
) -> None:
    late = np.full(512, 1.0)
    late[300] = -0.5  # the second expert of a tensor near the end of the file
    dat = write_dat(
        tmp_path / "im.dat",
        {"blk.0.attn_q.weight": np.full(256, 1.0), "blk.3.ffn_up_exps.weight": late},
    )
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "--imatrix", dat, expect=1)
    assert "'blk.3.ffn_up_exps.weight' has 1 negative value(s)" in r.output
    assert "column 300" in r.output
    assert count_encodes == [] and sorted(p.name for p in tmp_path.iterdir()) == ["im.dat"]


# -- 2. free space and I/O errors ------------------------------------------------------------


def test_free_space_checked_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count_encodes: list[int]
) -> None:
    real = os.statvfs

    class Full:
        def __init__(self, st):
            self.f_frsize, self.f_bavail = st.f_frsize, 10  # ten blocks left

    monkeypatch.setattr(os, "statvfs", lambda p: Full(real(p)))
    out = tmp_path / "o.gguf"
    r = run("quantize", TINY, out, "IQ4_K", expect=1)
    assert f"{out}: not enough free space" in r.output and str(tmp_path) in r.output
    assert count_encodes == [] and list(tmp_path.iterdir()) == []


def test_write_errors_name_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that fills up while writing: the message says which file, nothing is left."""
    real_fdopen = os.fdopen

    class FillsUp:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, data):
            self.n += len(data)
            if self.n > 200_000:
                raise OSError(28, "No space left on device")
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(os, "fdopen", lambda *a, **kw: FillsUp(real_fdopen(*a, **kw)))
    out = tmp_path / "o.gguf"
    r = run("quantize", TINY, out, "IQ4_K", expect=1)
    assert "[Errno 28] No space left on device" in r.output and str(out) in r.output
    assert list(tmp_path.iterdir()) == []


# -- 3. unknown architecture -----------------------------------------------------------------


def test_unknown_architecture(tmp_path: Path) -> None:
    no_arch = rewrite_metadata(TINY, tmp_path / "noarch.gguf", drop={"general.architecture"})
    r = run("quantize", no_arch, tmp_path / "o.gguf", "IQ4_K", expect=1)
    assert "no general.architecture" in r.output and "--pure" in r.output
    # an architecture whose hyper-parameters are missing is just as unknown
    foo = rewrite_metadata(TINY, tmp_path / "foo.gguf", **{"general.architecture": "foo"})
    r = run("quantize", foo, tmp_path / "o.gguf", "IQ4_K", "--dry-run", expect=1)
    assert "'foo' has no foo.block_count" in r.output
    assert not (tmp_path / "o.gguf").exists()
    # --pure does not use the mix: go on, saying what was assumed
    r = run("quantize", no_arch, tmp_path / "p.gguf", "IQ4_K", "--pure", "-q")
    assert "warning:" in r.output and "assumed no layers, heads or experts" in r.output
    with GGUFReader(tmp_path / "p.gguf") as g, GGUFReader(TINY) as ref:
        pure = pl.quantize_model(TINY, None, "IQ4_K", pl.QuantizeOptions(pure=True))
        assert {n: t.type.name for n, t in g.tensors.items()} == {
            p.name: p.out_type.name for p in pure.plans
        }
        assert len(g.tensors) == len(ref.tensors)


# -- 4. warnings a user must see -------------------------------------------------------------


def test_fallback_counts_are_data_not_notes() -> None:
    """The plan carries the type a fallback replaced; the counts do not parse the notes."""
    report = pl.quantize_model(TINY, None, "IQ4_K")
    want = report.fallbacks
    assert want == {("iq4_k", "q5_0"): 4}
    for p in report.plans:
        p.note = ""
    assert report.fallbacks == want and report.n_fallback == 4


def test_fallback_and_larger_output_warnings(tmp_path: Path) -> None:
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "--dry-run")
    assert (
        "warning: 4 of 30 tensors to quantize have rows that are not a multiple of 256 and get "
        "fallback types: 4 x q5_0 instead of iq4_k"
    ) in r.output
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ3_KS", "--dry-run", "--pure")
    assert "get fallback types: 4 x iq4_nl instead of iq3_ks" in r.output  # --pure too
    small = tmp_path / "iq2ks.gguf"
    run("quantize", TINY, small, "IQ2_KS", "-q")
    r = run("quantize", small, tmp_path / "big.gguf", "IQ4_K", "-q", "--allow-requantize")
    assert "warning: the output" in r.output and "will be larger than the input" in r.output
    assert re.search(r"size +: .*; larger than the input", r.output)


def test_readme_examples_do_not_combine_pure_and_custom_q() -> None:
    """--pure ignores --custom-q (as llama-quantize; the CLI warns): no example does both."""
    lines = [ln for ln in (ROOT / "README.md").read_text().splitlines() if "iqk quantize" in ln]
    assert lines
    for ln in lines:
        assert not ("--pure" in ln and "--custom-q" in ln), ln


# -- 5. default output name ------------------------------------------------------------------


def test_default_output_name(tmp_path: Path) -> None:
    model = tmp_path / "model-f16.gguf"
    shutil.copy(TINY, model)
    r = run("quantize", model, "iq4_ks", "-q")  # IN TYPE, as llama-quantize takes it
    assert (tmp_path / "ggml-model-IQ4_KS.gguf").is_file()
    assert "ggml-model-IQ4_KS.gguf" in r.output
    run("quantize", model, "IQ2_K", "--dry-run")
    assert not (tmp_path / "ggml-model-IQ2_K.gguf").exists()
    r = run("quantize", model, tmp_path / "out.gguf", expect=2)  # neither is a type
    assert "missing TYPE" in r.output
    assert cli.default_output(Path("a/b/m.gguf"), cli.Target.IQ3_K) == Path(
        "a/b/ggml-model-IQ3_K.gguf"
    )


# -- 6. progress in logs ---------------------------------------------------------------------


def test_plain_progress_lines_when_not_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K")  # CliRunner: not a terminal
    lines = [ln for ln in r.output.splitlines() if ln.startswith("[")]
    assert len(lines) == 43
    # The ETA itself depends on the machine's load.
    assert lines[0].startswith("[ 1/43] token_embd.weight") and "ETA 0:" in lines[0]
    assert "100% of 3.52 MiB" in lines[-1] and "MiB/s" in lines[-1]
    monkeypatch.setattr(cli, "PLAIN_PROGRESS_INTERVAL", 0.0)  # a line inside each tensor too
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K")
    assert "(in progress)" in r.output
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "-q")
    assert "ETA" not in r.output and "(in progress)" not in r.output
    # on a terminal: the live bar
    from rich.console import Console

    monkeypatch.setattr(cli, "err", Console(stderr=True, force_terminal=True))
    assert isinstance(cli._progress(False, False), cli._RichProgress)


# -- 7. info names the file type -------------------------------------------------------------


def test_info_names_the_file_type(tmp_path: Path) -> None:
    from iqk_rs.gguf.ftypes import ftype_name

    out = tmp_path / "q.gguf"
    run("quantize", TINY, out, "IQ4_KS", "-q")
    r = run("info", out, "--no-tensors")
    assert "file type IQ4_KS - 4.25 bpw" in r.output
    assert "145 (IQ4_KS - 4.25 bpw)" in r.output
    assert ftype_name(140) == "IQ4_K - 4.5 bpw"
    assert ftype_name(140 | 1024) == "IQ4_K - 4.5 bpw (guessed)"
    assert ftype_name(999) == "unknown, may not work"


def test_ftype_names_agree_with_the_type_registry() -> None:
    """Every type's llama ftype (from the Rust registry) is named after that type."""
    from iqk_rs.gguf.ftypes import LLAMA_FTYPE_NAMES

    for t in all_types():
        if t.llama_ftype is not None and t.llama_ftype > 1:
            assert LLAMA_FTYPE_NAMES[t.llama_ftype].upper().startswith(t.name.upper()), t


# -- 8. dequantize leaves unquantized tensors alone --------------------------------------------


def test_dequantize_keeps_unquantized_tensors(tmp_path: Path) -> None:
    q = tmp_path / "q.gguf"
    run("quantize", TINY, q, "IQ4_K", "-q")
    run("dequantize", q, tmp_path / "d.gguf", "-q")
    with GGUFReader(tmp_path / "d.gguf") as d:
        assert d.tensors["blk.0.ffn_gate_inp.weight"].type.name == "f32"  # the MoE router
        assert d.tensors["blk.0.attn_q.weight"].type.name == "f16"
    run("dequantize", q, tmp_path / "c.gguf", "-q", "--convert-float")
    with GGUFReader(tmp_path / "c.gguf") as c:
        assert c.tensors["blk.0.ffn_gate_inp.weight"].type.name == "f16"
        assert c.tensors["blk.0.attn_norm.weight"].type.name == "f32"  # 1-D always stays


# -- 9. compare --plot -----------------------------------------------------------------------


def test_plot_path_checked_before_the_comparison(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")

    def no_compare(*a, **kw):
        raise AssertionError("the comparison ran before the plot path was checked")

    monkeypatch.setattr(pl, "compare_models", no_compare)
    r = run("compare", TINY, TINY, "--plot", tmp_path, expect=1)
    assert "is a directory" in r.output
    r = run("compare", TINY, TINY, "--plot", tmp_path / "none" / "p.png", expect=1)
    assert "does not exist" in r.output
    r = run("compare", TINY, TINY, "--plot", tmp_path / "p.gguf", expect=1)
    assert "cannot draw a '.gguf' image" in r.output and ".png" in r.output
    model = tmp_path / "m.gguf"
    shutil.copy(TINY, model)
    r = run("compare", TINY, model, "--plot", model, expect=1)
    assert "overwrite the input" in r.output
    assert model.read_bytes() == TINY.read_bytes()


def test_plot_is_readable(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    q = tmp_path / "q.gguf"
    run("quantize", TINY, q, "IQ4_K", "-q", *iqk_only("IQ4_K"))
    diffs, _ = pl.compare_models(TINY, q)
    fig = cli._plot_figure(diffs, "q vs tiny")
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert "attn_q (iq4_k)" in labels and "output (iq4_k)" in labels
    # kinds with zero error (copied f16 ffn_down, f32 norms and routers) are not in it
    assert not [lb for lb in labels if "ffn_down" in lb or "norm" in lb or "gate_inp" in lb]
    assert "ffn_down_exps" in " ".join(t.get_text() for t in fig.texts)
    # the legend sits beside the curves, not on them
    assert not legend.get_window_extent().overlaps(ax.get_window_extent())
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks == [0, 1, 2, 3]
    png = tmp_path / "err"  # no suffix: PNG, at exactly that path
    run("compare", TINY, q, "--plot", png)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err", "q.gguf"]


# -- 10. interrupts --------------------------------------------------------------------------


def test_interrupt_outside_the_library_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.out, "print", interrupted)
    r = CliRunner().invoke(app, ["info", str(TINY)])
    assert r.exit_code == 130 and r.output.strip() == "error: interrupted"


def _console_script() -> str:
    """What pip's wrapper for the ``iqk`` entry point of pyproject.toml runs."""
    # (tomllib is not in Python 3.10)
    entry = re.search(r'^iqk = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert entry, "no iqk entry in [project.scripts]"
    module, func = entry.group(1).split(":")
    return f"import sys\nfrom {module} import {func}\nsys.exit({func}())\n"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_starting_is_one_line() -> None:
    """Ctrl-C at any moment of the start-up (imports take a few tenths of a second)."""
    env = dict(os.environ)  # the installed package, as the console script gets it
    interrupted = 0
    for delay in (0.05, 0.1, 0.15, 0.2, 0.3):
        p = subprocess.Popen(
            [sys.executable, "-c", _console_script(), "info", str(TINY)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        time.sleep(delay)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        text = err.decode()
        if p.returncode == 0:  # finished before the signal came
            continue
        if "Traceback" in text and not re.search(r"numpy|typer|rich|iqk_rs.cli", text):
            continue  # Python's own start-up, before the handler can exist (a few ms)
        interrupted += 1
        assert "Traceback" not in text, f"after {delay} s:\n{text}"
        # killed by SIGINT before Python's handler existed is also a clean Ctrl-C
        assert p.returncode in (130, -signal.SIGINT), (delay, p.returncode, text)
        assert len(text.strip().splitlines()) <= 1, text
    assert interrupted, "every run ended before its Ctrl-C"


def test_entry_point_imports_nothing_heavy() -> None:
    """The Ctrl-C handler must be in place before numpy/typer/rich load (see iqk_rs._entry)."""
    code = (
        "import sys, iqk_rs._entry\n"
        "heavy = sorted({'numpy', 'typer', 'rich'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
        "import iqk_rs\n"
        "assert iqk_rs.row_size('iq2_ks', 4096) == 1122 and iqk_rs.QuantType.IQ4_K == 139\n"
        "assert iqk_rs.api.quantize is iqk_rs.quantize\n"
    )
    env = dict(os.environ)  # the installed package, as the console script gets it
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
