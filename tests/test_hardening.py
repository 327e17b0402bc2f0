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
import warnings
from collections.abc import Callable
from pathlib import Path

import iqk_rs
import numpy as np
import pytest
from iqk_rs import pipeline as pl
from iqk_rs.cli import app
from iqk_rs.gguf import GGUFReader
from iqk_rs.gguf.constants import GGUFValueType
from iqk_rs.gguf.ggml_types import type_by_name
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
    diffs, _ = pl.compare_models(TINY, b)
    bad = {d.name: d for d in diffs}["blk.2.attn_k.weight"]
    assert bad.rel_rmse == float("inf") and bad.nonfinite_b == 1 and not bad.finite
    inf = rewrite(tmp_path / "inf.gguf", edit={"blk.0.attn_q.weight": set_f16(0, 0, np.inf)})
    r = run("compare", TINY, inf, expect=1)
    assert "worst: blk.0.attn_q.weight" in r.output


# -- 5: errors name the tensor's own row (and expert), not the row within a chunk ---------------


def test_nan_row_is_the_tensors_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pl.write, "MIN_CHUNK_VALUES", 256 * 16)  # 16-row chunks
    monkeypatch.setattr(pl.write, "CHUNK_VALUES_PER_THREAD", 16)
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
from iqk_rs import pipeline as pl
real, calls = pl.encode.encode_rows, []
def hooked(*a, **kw):
    calls.append(1)
    if len(calls) == 3:
        {action}
    return real(*a, **kw)
pl.encode.encode_rows = hooked
pl.write.MIN_CHUNK_VALUES = pl.write.CHUNK_VALUES_PER_THREAD = 256 * 16
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signals_remove_the_partial_file(tmp_path: Path, sig: signal.Signals) -> None:
    prelude = _ON_THIRD_CHUNK.format(action=f"os.kill(os.getpid(), {int(sig)})")
    p = run_iqk_subprocess(
        ["quantize", TINY, tmp_path / "o.gguf", "IQ4_K", *IQK_ONLY, "-q"], prelude=prelude
    )
    assert p.returncode == 128 + sig, (p.returncode, p.stderr)
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and "no partial file left behind" in lines[0], lines
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
    i8 = type_by_name("i8")
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


# -- 8: one line naming file, key and expectation; no numpy warnings ---------------------------


def test_hparam_that_is_not_a_count(tmp_path: Path) -> None:
    for vtype, value in [
        (GGUFValueType.FLOAT32, float("inf")),
        (GGUFValueType.FLOAT32, 2.5),
        (GGUFValueType.INT32, -1),
        (GGUFValueType.STRING, "four"),
    ]:
        model = rewrite(tmp_path / "m.gguf", kvs=[KV("llama.block_count", vtype, value)])
        r = run("quantize", model, tmp_path / "o.gguf", "IQ4_K", "--dry-run", expect=1)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1, r.output
        assert "m.gguf: metadata key llama.block_count: expected a non-negative integer" in lines[0]


def imatrix_with(path: Path, key: str, vtype: GGUFValueType, value, sub=None) -> Path:
    """A one-entry GGUF imatrix for blk.0.attn_q.weight with metadata ``key`` set so."""
    f32 = type_by_name("f32")
    kvs = [KV("general.type", GGUFValueType.STRING, "imatrix"), KV(key, vtype, value, sub)]
    sums = np.ones((1, 256), np.float32)
    counts = np.ones((1, 1), np.float32)
    tensors = [
        ("blk.0.attn_q.weight.in_sum2", f32, (256, 1)),
        ("blk.0.attn_q.weight.counts", f32, (1, 1)),
    ]
    with GGUFStreamWriter(path, kvs, tensors) as w:
        w.write_tensor(tensors[0][0], sums)
        w.write_tensor(tensors[1][0], counts)
        w.commit()
    return path


BAD_IMATRIX_KEYS = [
    ("imatrix.datasets", GGUFValueType.UINT32, 7, None, "expected an array of strings, got uint32"),
    ("imatrix.datasets", GGUFValueType.FLOAT32, 1.5, None, "expected an array of strings"),
    ("imatrix.datasets", GGUFValueType.BOOL, True, None, "expected an array of strings, got bool"),
    ("imatrix.datasets", GGUFValueType.ARRAY, np.array([1, 2], np.uint32), GGUFValueType.UINT32,
     "expected an array of strings, got array of uint32"),
    ("imatrix.chunk_count", GGUFValueType.FLOAT32, float("inf"), None,
     "expected an integer, got float32"),
    ("imatrix.chunk_count", GGUFValueType.ARRAY, np.array([3], np.uint32), GGUFValueType.UINT32,
     "expected an integer, got array of uint32"),
    ("imatrix.chunk_count", GGUFValueType.ARRAY, np.array([3, 4], np.uint32),
     GGUFValueType.UINT32, "expected an integer"),
    ("imatrix.chunk_count", GGUFValueType.STRING, "many", None, "expected an integer, got string"),
    ("imatrix.chunk_count", GGUFValueType.UINT64, 2**31, None, "expected 0 to 2^31-1"),
    ("imatrix.chunk_count", GGUFValueType.INT32, -5, None, "expected 0 to 2^31-1"),
]  # fmt: skip


@pytest.mark.parametrize("key,vtype,value,sub,expected", BAD_IMATRIX_KEYS)
def test_imatrix_metadata_of_the_wrong_type(tmp_path: Path, key, vtype, value, sub, expected):
    im = imatrix_with(tmp_path / "im.gguf", key, vtype, value, sub)
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", *IQK_ONLY, "--imatrix", im, expect=1)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    assert f"im.gguf: {key}: {expected}" in lines[0], lines[0]
    assert list(tmp_path.iterdir()) == [im]


def test_metadata_that_cannot_be_encoded_names_the_key(tmp_path: Path) -> None:
    kv = KV("quantize.imatrix.chunks_count", GGUFValueType.INT32, 2**31)
    with pytest.raises(GGUFWriteError, match="metadata key 'quantize.imatrix.chunks_count'"):
        GGUFStreamWriter(tmp_path / "o.gguf", [kv], [])


def test_no_numpy_warnings_reach_the_user(tmp_path: Path) -> None:
    # float64 weights beyond float32's range (the CLI reads no f64 weights)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="non-finite value inf in weights at row 0"):
            iqk_rs.quantize(np.full((1, 256), 1e300), "iq4_k")
    # an imatrix whose sum / count overflows
    im = imatrix_with(tmp_path / "im.gguf", "imatrix.chunk_count", GGUFValueType.UINT32, 1)
    with GGUFReader(im) as r:
        raw = bytearray(im.read_bytes())
        counts_at = r.data_offset + r.tensors["blk.0.attn_q.weight.counts"].offset
    raw[counts_at : counts_at + 4] = np.float32(1e-45).tobytes()  # ones / 1e-45 overflows
    im.write_bytes(bytes(raw))
    p = run_iqk_subprocess(["quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "-q", "--imatrix", im])
    err = p.stderr.decode()
    assert p.returncode == 1 and len(err.splitlines()) == 1, err
    assert "non-finite" in err and "Warning" not in err


def test_imatrix_text_is_escaped(tmp_path: Path) -> None:
    from iqk_rs.gguf.reader import StringArray

    names = StringArray.of(["calib\x1b]0;pwned\x07[b]x[/b].txt"])
    im = imatrix_with(
        tmp_path / "im.gguf", "imatrix.datasets", GGUFValueType.ARRAY, names, GGUFValueType.STRING
    )
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", *IQK_ONLY, "--imatrix", im, "-v",
            "--dry-run")  # fmt: skip
    assert_escaped(r.output)
    assert "of calib\\x1b]0;pwned\\x07[b]x[/b].txt" in r.output
