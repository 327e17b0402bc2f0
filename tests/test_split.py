"""Split GGUF models in and out, and resuming a killed run (issue 19, items 1-3 and 7).

Split inputs are written here with the project's own writer, following ggml's gguf-split
convention as its source states it (ik_llama.cpp examples/gguf-split/gguf-split.cpp,
llama_split_path in src/llama.cpp): files PREFIX-%05d-of-%05d.gguf numbered from 1; every
file carries split.no (u16, from 0), split.count (u16), split.tensors.count (i32, tensors of
the whole model), appended after the metadata; only the first file has the model's metadata;
--split-max-size counts tensor data padded to 32 bytes, not the header.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from iqk_rs.cli import app
from iqk_rs.gguf import KV, GGUFReader, GGUFStreamWriter
from iqk_rs.gguf.constants import GGUFValueType
from iqk_rs.gguf.split import open_model
from typer.testing import CliRunner

TINY = Path(__file__).parent / "data" / "tiny-llama-f16.gguf"
# the tiny model's mix kept on the six IQK types (its 128-wide ffn_down rows stay f16)
IQK_ONLY = ["--custom-q", r"ffn_down=f16,output\.weight=IQ4_K,attn_v=IQ4_K"]
SPLIT_KEYS = [
    ("split.no", GGUFValueType.UINT16),
    ("split.count", GGUFValueType.UINT16),
    ("split.tensors.count", GGUFValueType.INT32),
]


def run(*args: object, expect: int = 0):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == expect, f"exit {r.exit_code}:\n{r.output}\n{r.exception!r}"
    return r


def split_keys(no: int, count: int, n_tensors: int) -> list[KV]:
    return [KV(k, t, v) for (k, t), v in zip(SPLIT_KEYS, (no, count, n_tensors), strict=True)]


def write_split(src: Path, prefix: Path, sizes: list[int], **tamper) -> list[Path]:
    """Split ``src`` into files of ``sizes`` tensors as gguf-split would.

    ``tamper``: count={part: wrong split.count}, tensors={part: wrong split.tensors.count},
    dup={part: a tensor name of part 0 to reuse}, kv={part: extra KV}.
    """
    paths = []
    with GGUFReader(src) as r:
        names = list(r.tensors)
        assert sum(sizes) == len(names)
        start = 0
        for i, k in enumerate(sizes):
            group = names[start : start + k]
            start += k
            count = tamper.get("count", {}).get(i, len(sizes))
            n_tensors = tamper.get("tensors", {}).get(i, len(names))
            kvs = (list(r.kv.values()) if i == 0 else []) + split_keys(i, count, n_tensors)
            kvs += tamper.get("kv", {}).get(i, [])
            out_names = list(group)
            if i in tamper.get("dup", {}):
                out_names[0] = tamper["dup"][i]
            pairs = list(zip(out_names, group, strict=True))
            infos = [(n, r.tensors[g].type, r.tensors[g].ne) for n, g in pairs]
            path = Path(f"{prefix}-{i + 1:05d}-of-{len(sizes):05d}.gguf")
            with GGUFStreamWriter(path, kvs, infos, r.alignment) as w:
                for n, g in pairs:
                    w.write_tensor(n, r.raw(g))
                w.commit()
            paths.append(path)
    return paths


def tensor_bytes(*paths: Path) -> dict[str, tuple[int, tuple, bytes]]:
    """Every tensor of the files (type id, ne, bytes), in file order."""
    got = {}
    for p in paths:
        with GGUFReader(p) as r:
            for name, t in r.tensors.items():
                assert name not in got
                got[name] = (t.type.id, t.ne, r.raw(name).tobytes())
    return got


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The tiny model quantized to one file: what every split output must hold."""
    out = tmp_path_factory.mktemp("single") / "q.gguf"
    run("quantize", TINY, out, "IQ4_K", "-q", *IQK_ONLY)
    return out


@pytest.fixture(scope="module")
def parts(tmp_path_factory) -> list[Path]:
    """The tiny model (43 tensors) in three parts of 20, 20 and 3, like the issue's example."""
    return write_split(TINY, tmp_path_factory.mktemp("in") / "tiny", [20, 20, 3])


# -- split input ---------------------------------------------------------------------------


@pytest.mark.parametrize("given", [0, 1, 2])
def test_any_part_reads_the_whole_model(parts: list[Path], given: int) -> None:
    with GGUFReader(TINY) as whole, open_model(parts[given]) as model:
        assert list(model.tensors) == list(whole.tensors)
        assert model.get("general.architecture") == whole.get("general.architecture")
        for name in whole.tensors:
            assert np.array_equal(model.raw(name), whole.raw(name)), name


def test_quantize_split_input_equals_single_input(
    tmp_path: Path, parts: list[Path], single: Path
) -> None:
    out = tmp_path / "q.gguf"
    run("quantize", parts[1], out, "IQ4_K", "-q", *IQK_ONLY)
    assert out.read_bytes() == single.read_bytes()  # split keys dropped, as llama-quantize


def test_info_dequantize_compare_read_all_parts(tmp_path: Path, parts: list[Path]) -> None:
    r = run("info", parts[2], "--no-metadata")
    assert "3 parts" in r.output and "43 tensors" in r.output
    deq = tmp_path / "d.gguf"
    run("dequantize", parts[0], deq, "--type", "f32", "-q")
    assert list(tensor_bytes(deq)) == list(tensor_bytes(TINY))
    r = run("compare", TINY, parts[0])
    assert "43 tensors compared" in r.output and "not compared" not in r.output


@pytest.mark.parametrize(
    "case, tamper, sizes, message",
    [
        ("missing", {}, [20, 20, 3], "missing part 3 of 3"),
        ("count", {"count": {1: 4}}, [20, 20, 3], "split.count is 4"),
        ("other", {"tensors": {2: 44}}, [20, 20, 3], "part of another model"),
        (
            "other-kv",
            {"kv": {1: [KV("general.architecture", GGUFValueType.STRING, "qwen2")]}},
            [20, 20, 3],
            "part of another model (general.architecture",
        ),
        ("dup", {"dup": {2: "token_embd.weight"}}, [20, 20, 3], "'token_embd.weight' is also in"),
        ("short", {"tensors": {0: 44, 1: 44, 2: 44}}, [20, 20, 3], "hold 43 tensors"),
    ],
)
def test_broken_split_inputs(tmp_path: Path, case: str, tamper: dict, sizes, message) -> None:
    paths = write_split(TINY, tmp_path / "m", sizes, **tamper)
    bad = {"missing": 2, "count": 1, "other": 2, "other-kv": 1, "dup": 2, "short": 0}[case]
    if case == "missing":
        paths[2].unlink()
    out = tmp_path / "o.gguf"
    for cmd in (["quantize", paths[0], out, "IQ4_K"], ["info", paths[0]]):
        r = run(*cmd, expect=1)
        assert message in r.output and paths[bad].name in r.output, r.output
        assert "Traceback" not in r.output
    assert not out.exists()


def test_misnamed_part(tmp_path: Path, parts: list[Path]) -> None:
    renamed = tmp_path / "renamed.gguf"
    renamed.write_bytes(parts[0].read_bytes())
    r = run("info", renamed, expect=1)
    assert "renamed.gguf" in r.output and "must be named PREFIX-00001-of-00003.gguf" in r.output


# -- split output ----------------------------------------------------------------------------


def check_shards(paths: list[Path], single: Path, sizes: list[int]) -> None:
    """ggml's layout: keys, key order and types, metadata in the first file only, and the
    tensors of all files together byte-identical to the single-file output."""
    with GGUFReader(single) as one:
        single_kvs = [(kv.key, kv.vtype) for kv in one.kv.values()]
    for i, p in enumerate(paths):
        assert p.name == f"q-{i + 1:05d}-of-{len(paths):05d}.gguf"
        with GGUFReader(p) as r:
            kvs = [(kv.key, kv.vtype) for kv in r.kv.values()]
            assert kvs == (single_kvs if i == 0 else []) + SPLIT_KEYS
            assert [r.get(k) for k, _ in SPLIT_KEYS] == [i, len(paths), 43]
            assert len(r.tensors) == sizes[i]
    assert tensor_bytes(*paths) == tensor_bytes(single)


def shard_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("q-*-of-*.gguf"))


def test_split_max_tensors(tmp_path: Path, single: Path) -> None:
    r = run("quantize", TINY, tmp_path / "q.gguf", "IQ4_K", "-q", *IQK_ONLY,
            "--split-max-tensors", 20)  # fmt: skip
    paths = shard_files(tmp_path)
    check_shards(paths, single, [20, 20, 3])
    for p in paths:  # the final summary names every file with its tensors and size
        assert p.name in r.output
    assert "20 tensors" in r.output and "3 tensors" in r.output
    assert sorted(tmp_path.iterdir()) == paths  # no temporary files left


def test_split_max_size(tmp_path: Path, single: Path) -> None:
    run("quantize", TINY, tmp_path / "q", "IQ4_K", "-q", *IQK_ONLY, "--split-max-size", "1M")
    paths = shard_files(tmp_path)
    assert len(paths) > 1
    padded = [[-(-len(b) // 32) * 32 for _, _, b in tensor_bytes(p).values()] for p in paths]
    check_shards(paths, single, [len(s) for s in padded])
    for i, sizes in enumerate(padded):  # gguf-split's rule: full, and the next would not fit
        assert sum(sizes) <= 10**6 or len(sizes) == 1
        if i + 1 < len(padded):
            assert sum(sizes) + padded[i + 1][0] > 10**6


@pytest.mark.parametrize("out_name", ["q.gguf", "q", "q-00001-of-00003.gguf"])
def test_keep_split(tmp_path: Path, parts: list[Path], single: Path, out_name: str) -> None:
    run("quantize", parts[0], tmp_path / out_name, "IQ4_K", "-q", *IQK_ONLY, "--keep-split")
    check_shards(shard_files(tmp_path), single, [20, 20, 3])


def test_keep_split_of_one_file(tmp_path: Path, single: Path) -> None:
    """llama-quantize --keep-split of a one-file model: OUT-00001-of-00001.gguf, no split keys."""
    run("quantize", TINY, tmp_path / "q.gguf", "IQ4_K", "-q", *IQK_ONLY, "--keep-split")
    assert [p.name for p in tmp_path.iterdir()] == ["q-00001-of-00001.gguf"]
    assert (tmp_path / "q-00001-of-00001.gguf").read_bytes() == single.read_bytes()


def test_dequantize_split_output(tmp_path: Path, parts: list[Path]) -> None:
    run("dequantize", parts[0], tmp_path / "d.gguf", "-q", "--keep-split")
    paths = sorted(tmp_path.glob("d-*.gguf"))
    assert [len(tensor_bytes(p)) for p in paths] == [20, 20, 3]
    with open_model(paths[0]) as model:
        assert len(model.tensors) == 43


@pytest.mark.parametrize(
    "args, message",
    [
        (["--keep-split", "--split-max-tensors", "3"], "exclude each other"),
        (["--split-max-size", "1M", "--split-max-tensors", "3"], "exclude each other"),
        (["--split-max-size", "1.5G"], "--split-max-size '1.5G'"),
        (["--split-max-size", "48GB"], "--split-max-size '48GB'"),
        (["--split-max-size", "0M"], "--split-max-size '0M'"),
        (["--split-max-tensors", "0"], "at least 1"),
    ],
)
def test_bad_split_options(tmp_path: Path, args: list[str], message: str) -> None:
    r = run("quantize", TINY, tmp_path / "q.gguf", "IQ4_K", *args, expect=1)
    assert message in r.output
    assert list(tmp_path.iterdir()) == []


def test_split_output_never_overwrites_input(tmp_path: Path) -> None:
    parts = write_split(TINY, tmp_path / "q", [20, 20, 3])
    before = [p.read_bytes() for p in parts]
    r = run("quantize", parts[0], tmp_path / "q", "IQ4_K", "--keep-split", expect=1)
    assert "overwrite the input" in r.output
    assert [p.read_bytes() for p in parts] == before


# -- resuming ----------------------------------------------------------------------------------


def test_partial_requant_keeps_matching_files_and_refuses_others(
    tmp_path: Path, single: Path
) -> None:
    args = ["quantize", TINY, tmp_path / "q.gguf", "IQ4_K", "-q", *IQK_ONLY]
    run(*args, "--split-max-tensors", 20)
    paths = shard_files(tmp_path)
    kept = paths[0].stat()
    paths[1].unlink()
    r = run(*args, "--split-max-tensors", 20, "--partial-requant")
    assert "kept, already there" in r.output
    assert paths[0].stat().st_ino == kept.st_ino
    assert paths[0].stat().st_mtime_ns == kept.st_mtime_ns
    check_shards(paths, single, [20, 20, 3])
    # the same file names from another run (other types): an error, not a mixed model
    r = run(*args[:3], "IQ2_K", *IQK_ONLY, "--split-max-tensors", 20, "--partial-requant",
            expect=1)  # fmt: skip
    assert paths[0].name in r.output and "delete it" in r.output
    # one-file output: kept when it matches, as llama-quantize --partial-requant
    one = tmp_path / "one.gguf"
    one.write_bytes(single.read_bytes())
    stamp = one.stat().st_mtime_ns
    run("quantize", TINY, one, "IQ4_K", "-q", *IQK_ONLY, "--partial-requant")
    assert one.stat().st_mtime_ns == stamp


KILLER = """
import os, sys, time
from iqk_rs.gguf import writer

marker, files = sys.argv[1], []
real_init, real_chunk = writer.GGUFStreamWriter.__init__, writer.GGUFStreamWriter.write_chunk

def init(self, *a, **kw):
    real_init(self, *a, **kw)
    files.append(self.path)

def chunk(self, name, data):
    real_chunk(self, name, data)
    if len(files) == 2 and self._next >= 5:  # midway through the second file: wait for the kill
        open(marker, "w").close()
        time.sleep(600)

writer.GGUFStreamWriter.__init__ = init
writer.GGUFStreamWriter.write_chunk = chunk
from iqk_rs.cli import app
sys.argv = ["iqk", *sys.argv[2:]]
app()
"""


def test_sigkill_then_resume(tmp_path: Path, single: Path) -> None:
    """A run killed (SIGKILL) while writing the second of three files leaves the first
    complete and nothing else but its temporary file; --partial-requant writes the second
    and third, keeps the first, and the result is byte-identical to an uninterrupted run."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    killed.mkdir()
    args = ["quantize", TINY, "q.gguf", "IQ4_K", "-q", *IQK_ONLY, "--split-max-tensors", "20"]
    script, marker = tmp_path / "killer.py", tmp_path / "midway"
    script.write_text(textwrap.dedent(KILLER))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    child = subprocess.Popen([sys.executable, script, marker, *map(str, args)], cwd=killed, env=env)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, "the run ended before it was killed"
            assert time.monotonic() < deadline, "the run never reached its second file"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    left = sorted(p.name for p in killed.iterdir())
    assert left[1:] == ["q-00001-of-00003.gguf"] and left[0].startswith(".q-00002-of-00003.gguf.")
    first = (killed / "q-00001-of-00003.gguf").stat()

    cwd = os.getcwd()
    try:
        os.chdir(killed)
        run(*args, "--partial-requant")
        os.chdir(whole)
        run(*args)
    finally:
        os.chdir(cwd)
    assert sorted(p.name for p in killed.iterdir()) == sorted(p.name for p in whole.iterdir())
    for p in whole.iterdir():
        assert (killed / p.name).read_bytes() == p.read_bytes(), p.name
    again = (killed / "q-00001-of-00003.gguf").stat()
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    check_shards(shard_files(killed), single, [20, 20, 3])


def test_commit_syncs_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced = []
    real = os.fsync

    def spy(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    with GGUFStreamWriter(tmp_path / "m.gguf", [], []) as w:
        w.commit()
    assert synced[-1] == str(tmp_path.resolve())
    assert any(".m.gguf." in s for s in synced)


def test_dry_run_lists_the_files(tmp_path: Path, parts: list[Path]) -> None:
    r = run("quantize", parts[0], tmp_path / "q.gguf", "IQ4_K", "--dry-run", "--keep-split")
    for i, k in enumerate([20, 20, 3], 1):
        assert f"would write {tmp_path}/q-{i:05d}-of-00003.gguf: {k} tensors" in r.output
    assert list(tmp_path.iterdir()) == []


# -- regressions found in review ---------------------------------------------------------------


def test_extra_output_tensor_on_a_split_input(tmp_path: Path, parts: list[Path]) -> None:
    """output_extra.weight is planned in its source tensor's part (was a KeyError traceback)."""
    args = ["quantize", parts[0], tmp_path / "q.gguf", "IQ4_K", "--extra-output-tensor", "q4_K"]
    r = run(*args, "--keep-split", "--dry-run")
    assert "output_extra.weight" in r.output
    run(*args, "-q")
    with GGUFReader(tmp_path / "q.gguf") as q:
        assert q.tensors["output_extra.weight"].type.name == "q4_K"


def test_dequantize_lists_its_output_files(tmp_path: Path, parts: list[Path]) -> None:
    r = run("dequantize", parts[0], tmp_path / "d.gguf", "-q", "--keep-split")
    assert r.output.count("(written)") == 3


@pytest.mark.parametrize("value", ["0", "-1"])
def test_dry_run_checks_split_options(tmp_path: Path, value: str) -> None:
    r = run("quantize", TINY, tmp_path / "q.gguf", "IQ4_K", "--dry-run",
            "--split-max-tensors", value, expect=1)  # fmt: skip
    assert "--split-max-tensors must be at least 1" in r.output


def test_dry_run_without_out_lists_the_default_files(tmp_path: Path, parts: list[Path]) -> None:
    r = run("quantize", parts[0], "IQ4_K", "--dry-run", "--keep-split")
    assert "would write" in r.output and "ggml-model-IQ4_K-00001-of-00003.gguf" in r.output


def test_partial_requant_refuses_a_file_with_other_metadata(tmp_path: Path) -> None:
    args = ["quantize", TINY, tmp_path / "q.gguf", "IQ4_K", "-q", *IQK_ONLY]
    run(*args, "--split-max-tensors", 20, "--override-kv", "general.name=str:first")
    shard_files(tmp_path)[1].unlink()
    r = run(*args, "--split-max-tensors", 20, "--override-kv", "general.name=str:second",
            "--partial-requant", expect=1)  # fmt: skip
    assert "metadata differs" in r.output
