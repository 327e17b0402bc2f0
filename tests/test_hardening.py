"""Hostile inputs and hostile surroundings (issue 18): what a crafted model, imatrix, output path
or signal does to ``iqk``. Each test pins one finding: a clean one-line error (or a correct
report) instead of a traceback, a wrong report, a clobbered file or a leftover partial file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import iqk_rs
import numpy as np
import pytest
from iqk_rs.cli import app
from iqk_rs.gguf import GGUFReader
from iqk_rs.gguf import convert as cv
from iqk_rs.gguf.constants import GGUFValueType
from iqk_rs.gguf.reader import KV
from iqk_rs.gguf.writer import GGUFStreamWriter, GGUFWriteError
from typer.testing import CliRunner

TINY = Path(__file__).parent / "data" / "tiny-llama-f16.gguf"
PYTHON_DIR = Path(iqk_rs.__file__).parent.parent  # the package under test, for subprocesses
IQK_ONLY = ["--custom-q", r"ffn_down=f16,output\.weight=IQ4_K,attn_v=IQ4_K"]


def run(*args: object, expect: int = 0):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == expect, f"exit {r.exit_code}:\n{r.output}\n{r.exception!r}"
    return r


def rewrite(
    dst: Path,
    *,
    kvs: list[KV] = (),
    rename: dict[str, str] | None = None,
    edit: dict[str, Callable[[np.ndarray], None]] | None = None,
    src: Path = TINY,
) -> Path:
    """A copy of ``src`` with metadata entries set, tensors renamed, tensor bytes edited."""
    rename, edit = rename or {}, edit or {}
    with GGUFReader(src) as r:
        meta = dict(r.kv)
        for kv in kvs:
            meta[kv.key] = kv
        tensors = [(rename.get(n, n), t.type, t.ne) for n, t in r.tensors.items()]
        with GGUFStreamWriter(dst, meta.values(), tensors, r.alignment) as w:
            for n in r.tensors:
                data = np.array(r.raw(n))
                if n in edit:
                    edit[n](data)
                w.write_chunk(rename.get(n, n), data)
            w.commit()
    return dst


def set_f16(row: int, col: int, value: float) -> Callable[[np.ndarray], None]:
    def f(rows: np.ndarray) -> None:
        rows.view(np.float16)[row, col] = value

    return f


def run_iqk_subprocess(args: list[object], env: dict[str, str] | None = None, prelude: str = ""):
    """``iqk`` in a fresh interpreter (real streams and signals); ``prelude`` runs first."""
    code = f"import sys\n{prelude}\nfrom iqk_rs.cli import app\nsys.argv[0] = 'iqk'\napp()\n"
    full_env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR), **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=full_env,
        capture_output=True,
        timeout=120,
    )


# -- 4: compare reports NaN/Inf as the worst, and fails --------------------------------------


def test_compare_nan_in_b_is_the_worst_and_fails(tmp_path: Path) -> None:
    b = rewrite(tmp_path / "b.gguf", edit={"blk.2.attn_k.weight": set_f16(3, 5, np.nan)})
    r = run("compare", TINY, b, expect=1)
    assert "worst: blk.2.attn_k.weight" in r.output
    assert "0 NaN/Inf value(s) in A, 1 in B" in r.output
    assert "error: 1 tensor(s) hold NaN/Inf values: 'blk.2.attn_k.weight'" in r.output
    diffs, _ = cv.compare_models(TINY, b)
    bad = {d.name: d for d in diffs}["blk.2.attn_k.weight"]
    assert bad.rel_rmse == float("inf") and bad.nonfinite_b == 1 and not bad.finite
    inf = rewrite(tmp_path / "inf.gguf", edit={"blk.0.attn_q.weight": set_f16(0, 0, np.inf)})
    r = run("compare", TINY, inf, expect=1)
    assert "worst: blk.0.attn_q.weight" in r.output


# -- 5: errors name the tensor's own row (and expert), not the row within a chunk ---------------


def test_nan_row_is_the_tensors_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv, "MIN_CHUNK_VALUES", 256 * 16)  # 16-row chunks
    monkeypatch.setattr(cv, "CHUNK_VALUES_PER_THREAD", 16)
    dense = rewrite(tmp_path / "d.gguf", edit={"blk.1.attn_q.weight": set_f16(200, 7, np.nan)})
    r = run("quantize", dense, tmp_path / "o.gguf", "IQ4_K", *IQK_ONLY, "-q", expect=1)
    assert "tensor 'blk.1.attn_q.weight'" in r.output
    assert "row 200, column 7" in r.output, r.output
    # expert 1, row 100 of a 3-D tensor is row 228 of its 256 stored rows
    moe = rewrite(tmp_path / "m.gguf", edit={"blk.0.ffn_up_exps.weight": set_f16(228, 9, np.inf)})
    r = run("quantize", moe, tmp_path / "o.gguf", "IQ4_K", *IQK_ONLY, "-q", expect=1)
    assert "expert 1, row 100, column 9" in r.output, r.output
    assert not list(tmp_path.glob("o.gguf*")) and not list(tmp_path.glob(".o.gguf*"))


# -- 7: SIGTERM/SIGHUP like Ctrl-C; an input truncated during the run --------------------------

# Runs inside the child before ``iqk``: on the third chunk, do ACTION to ourselves.
_ON_THIRD_CHUNK = """
import os, signal, sys
from iqk_rs.gguf import convert as cv
real, calls = cv.encode_rows, []
def hooked(*a, **kw):
    calls.append(1)
    if len(calls) == 3:
        {action}
    return real(*a, **kw)
cv.encode_rows = hooked
cv.MIN_CHUNK_VALUES = cv.CHUNK_VALUES_PER_THREAD = 256 * 16
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signals_remove_the_partial_file(tmp_path: Path, sig: signal.Signals) -> None:
    prelude = _ON_THIRD_CHUNK.format(action=f"os.kill(os.getpid(), {int(sig)})")
    p = run_iqk_subprocess(
        ["quantize", TINY, tmp_path / "o.gguf", "IQ4_K", *IQK_ONLY, "-q"], prelude=prelude
    )
    assert p.returncode == 128 + sig, (p.returncode, p.stderr)
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and "no output was written" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_input_truncated_during_the_run(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(TINY.read_bytes())
    action = f"os.truncate({str(model)!r}, {model.stat().st_size // 2})"
    p = run_iqk_subprocess(
        ["quantize", model, tmp_path / "o.gguf", "IQ4_K", *IQK_ONLY, "-q"],
        prelude=_ON_THIRD_CHUNK.format(action=action),
    )
    assert p.returncode == 1, (p.returncode, p.stderr)
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and "m.gguf: the file changed while it was being read" in lines[0]
    assert [f.name for f in tmp_path.iterdir()] == ["m.gguf"]


def test_reader_notices_a_rewritten_input(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(TINY.read_bytes())
    with GGUFReader(model) as r:
        r.read_rows("blk.0.attn_q.weight", 0, 4)
        os.utime(model, ns=(0, 0))  # same size, other bytes: mtime is what tells
        with pytest.raises(ValueError, match="changed while it was being read"):
            r.read_rows("blk.0.attn_q.weight", 0, 4)


# -- 9, 10: file text is escaped wherever it is printed, never taken as markup ---------------

HOSTILE_KEY = "evil.\x1b]0;pwned\x07key.\udcff"  # window title, bell, a byte that is not UTF-8
HOSTILE_VALUE = "clear\x1b[2Jscreen [bold red]markup[/bold red] \u202eevil"
HOSTILE_TENSOR = "blk.0.attn_q\x1b[1m[i]\udcfe.weight"  # bold, italic markup, not UTF-8


def hostile_model(tmp_path: Path) -> Path:
    return rewrite(
        tmp_path / "hostile.gguf",
        kvs=[
            KV(HOSTILE_KEY, GGUFValueType.STRING, HOSTILE_VALUE),
            KV("general.name", GGUFValueType.STRING, HOSTILE_VALUE),
        ],
        rename={"blk.0.attn_q.weight": HOSTILE_TENSOR},
    )


def assert_escaped(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, repr(text)
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text), repr(text)
    assert "\\x1b" in text  # shown as an escape, not dropped


def test_printable() -> None:
    from iqk_rs.display import printable

    assert printable("blk.0.attn_q.weight") == "blk.0.attn_q.weight"
    assert printable("ünïcødé 名字") == "ünïcødé 名字"
    assert printable("a\x1b[2Jb\tc\n\x7f\x9b") == "a\\x1b[2Jb\\tc\\n\\x7f\\x9b"
    assert printable(b"bad \xff\xfe utf8") == "bad \\xff\\xfe utf8"
    assert printable("rtl \u202e \U000e0041") == "rtl \\u202e \\U000e0041"


def test_info_escapes_file_text(tmp_path: Path) -> None:
    r = run("info", hostile_model(tmp_path))
    assert_escaped(r.output)
    assert "evil.\\x1b]0;pwned\\x07key.\\xff" in r.output
    assert "[bold red]markup[/bold red]" in r.output  # literally, not as markup
    assert "blk.0.attn_q\\x1b[1m[i]\\xfe.weight" in r.output


def test_compare_dry_run_verbose_escape_file_text(tmp_path: Path) -> None:
    model = hostile_model(tmp_path)
    shown = "blk.0.attn_q\\x1b[1m[i]\\xfe.weight"
    r = run("compare", model, model, "--all")
    assert_escaped(r.output)
    assert shown in r.output
    r = run("quantize", model, tmp_path / "o.gguf", "IQ4_K", *IQK_ONLY, "--dry-run")
    assert_escaped(r.output)
    assert shown in r.output
    r = run("quantize", model, tmp_path / "o.gguf", "IQ4_K", *IQK_ONLY, "-v")
    assert_escaped(r.output)
    assert shown in r.output
    r = run("info", tmp_path / "no\x1b[2Jsuch.gguf", expect=1)  # error messages too
    assert_escaped(r.output)


@pytest.mark.parametrize("encoding", ["utf-8:strict", "ascii:strict"])
def test_strict_output_encoding(tmp_path: Path, encoding: str) -> None:
    model = hostile_model(tmp_path)
    env = {"PYTHONIOENCODING": encoding}
    for args in (
        ["info", model],
        ["compare", model, model, "--all"],
        ["quantize", model, tmp_path / "o.gguf", "IQ4_K", *IQK_ONLY, "--dry-run"],
    ):
        p = run_iqk_subprocess(args, env)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        assert b"Traceback" not in p.stderr
        assert b"\\xfe.weight" in p.stdout


# -- 14: info on a file of many tensors stays fast ----------------------------------------------


def test_info_of_many_tensors_is_fast(tmp_path: Path) -> None:
    n = 20_000
    path = tmp_path / "many.gguf"
    i8 = cv.type_by_name("i8")
    kvs = [
        KV("general.architecture", GGUFValueType.STRING, "llama"),
        KV("general.alignment", GGUFValueType.UINT32, 1),
    ]
    with GGUFStreamWriter(path, kvs, [(f"t{i}", i8, (1,)) for i in range(n)], 1) as w:
        for i in range(n):
            w.write_chunk(f"t{i}", b"\x01")
        w.commit()
    t0 = time.perf_counter()
    r = run("info", path)
    seconds = time.perf_counter() - t0
    assert f"{n} tensors" in r.output and "t19999" in r.output
    # rich's Table took about 1.4 ms a row here (28 s); the plain listing about 0.05 s
    assert seconds < 8, f"info of {n} one-byte tensors took {seconds:.1f} s"


# -- 6: the output path: special files refused, symlinks followed, mode kept -------------------


def special_outputs(tmp_path: Path) -> list[Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock = tmp_path / "sock"
    import socket

    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock))
    s.close()
    paths = [fifo, sock]
    link = tmp_path / "link-to-fifo"
    link.symlink_to(fifo)
    paths.append(link)
    if os.geteuid() == 0:  # a copy of /dev/null (mknod needs root)
        import stat

        dev = tmp_path / "null"
        os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        paths.append(dev)
    return paths


def test_special_output_files_are_refused(tmp_path: Path) -> None:
    for out in special_outputs(tmp_path):
        kind = out.stat().st_mode
        r = run("quantize", TINY, out, "IQ4_K", *IQK_ONLY, "-q", expect=1)
        assert "not a regular file; refusing to replace it" in r.output, r.output
        r = run("dequantize", TINY, out, expect=1)
        assert "refusing to replace it" in r.output
        assert out.stat().st_mode == kind  # still the FIFO / socket / device
    with pytest.raises(GGUFWriteError, match="FIFO, not a regular file"):
        GGUFStreamWriter(tmp_path / "fifo", [], [])
    assert not list(tmp_path.glob(".*partial"))


def test_output_symlink_is_followed_and_mode_kept(tmp_path: Path) -> None:
    real_dir = tmp_path / "models"
    real_dir.mkdir()
    target = real_dir / "model.gguf"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "latest.gguf"
    link.symlink_to(target)
    run("quantize", TINY, link, "IQ4_K", *IQK_ONLY, "-q")
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.stat().st_mode & 0o777 == 0o640
    with GGUFReader(link) as r:
        assert r.tensors["blk.0.attn_q.weight"].type.name == "iq4_k"
    assert sorted(p.name for p in real_dir.iterdir()) == ["model.gguf"]
    # a dangling link: its target is created, with the usual mode
    (tmp_path / "new.gguf").symlink_to(real_dir / "new.gguf")
    run("dequantize", TINY, tmp_path / "new.gguf")
    assert (real_dir / "new.gguf").is_file() and (tmp_path / "new.gguf").is_symlink()
    # a link to the input is still the input
    (tmp_path / "in.gguf").symlink_to(TINY)
    r = run("quantize", TINY, tmp_path / "in.gguf", "IQ4_K", expect=1)
    assert "overwrite the input" in r.output
