"""imatrix readers: ik's legacy .dat (golden file from llama-imatrix) and the GGUF format."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter
from iqk_rs.imatrix import Imatrix, ImatrixError, load_imatrix

DATA = Path(__file__).parent / "data" / "imatrix"
DAT = DATA / "qwen2.5-1.5b.imatrix.dat"
EXPECTED = json.loads((DATA / "qwen2.5-1.5b.expected.json").read_text())


def write_dat(path: Path, entries: dict[str, tuple[int, np.ndarray]], trailer=None) -> Path:
    b = bytearray(struct.pack("<i", len(entries)))
    for name, (ncall, vals) in entries.items():
        raw = name.encode()
        b += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, len(vals))
        b += np.asarray(vals, "<f4").tobytes()
    if trailer is not None:
        chunks, dataset = trailer
        b += struct.pack("<ii", chunks, len(dataset)) + dataset.encode()
    path.write_bytes(bytes(b))
    return path


def write_gguf_imatrix(path: Path, sums: dict[str, np.ndarray], counts: dict[str, np.ndarray]):
    w = GGUFWriter(path, arch="")
    w.add_type("imatrix")
    w.add_array("imatrix.datasets", ["calib.txt"])
    w.add_uint32("imatrix.chunk_count", 7)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, s in sums.items():
        w.add_tensor(name + ".in_sum2", np.asarray(s, np.float32))
        w.add_tensor(name + ".counts", np.asarray(counts[name], np.float32).reshape(-1, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- the golden legacy file -------------------------------------------------------------


def test_golden_dat_header() -> None:
    im = load_imatrix(DAT)
    assert im.format == "dat"
    assert len(im) == EXPECTED["entries"] == 196
    assert im.chunks == EXPECTED["trailer"]["last_chunk"] == 24
    assert im.dataset == EXPECTED["trailer"]["dataset"]


def test_golden_dat_weights() -> None:
    im = load_imatrix(DAT)
    assert set(EXPECTED["tensors"]) <= set(im.weights)
    for name, e in EXPECTED["tensors"].items():
        w = im.weights[name]
        assert im.ncall[name] == e["ncall"], name
        assert w.dtype == np.float32 and w.size == e["nval"], name
        # value / ncall in float32, exactly as ik's loader computes it
        np.testing.assert_array_equal(w[:8], np.asarray(e["weights_first8"], np.float32), name)
        assert float(w.astype(np.float64).sum()) == pytest.approx(e["weights_sum"], rel=1e-9)


def test_golden_dat_metadata_keys() -> None:
    im = load_imatrix(DAT)
    kv = {k.key: k.value for k in im.metadata()}
    assert kv == {
        "quantize.imatrix.file": str(DAT),
        "quantize.imatrix.dataset": "wiki_calib.txt",
        "quantize.imatrix.entries_count": 196,
        "quantize.imatrix.chunks_count": 24,
    }
    hidden = {k.key: k.value for k in im.metadata(hide=True)}
    assert hidden["quantize.imatrix.file"] == "top_secret"
    assert hidden["quantize.imatrix.entries_count"] == 0


# -- legacy format edge cases ------------------------------------------------------------


def test_dat_without_trailer_and_zero_ncall(tmp_path: Path) -> None:
    p = write_dat(tmp_path / "a.dat", {"x.weight": (0, np.array([2.0, 4.0]))})
    im = load_imatrix(p)
    np.testing.assert_array_equal(im.weights["x.weight"], [2.0, 4.0])  # ncall 0: no division
    assert im.dataset is None and im.chunks == 0
    assert "quantize.imatrix.chunks_count" not in {k.key for k in im.metadata()}


@pytest.mark.parametrize("cut", [0, 2, 4, 7, 12, 20, 30, 41])
def test_dat_truncated(tmp_path: Path, cut: int) -> None:
    p = write_dat(tmp_path / "a.dat", {"blk.0.x.weight": (3, np.arange(8.0))}, (3, "d"))
    data = p.read_bytes()
    p.write_bytes(data[:cut])
    with pytest.raises(ImatrixError, match="a.dat"):
        load_imatrix(p)


def test_dat_bad_counts(tmp_path: Path) -> None:
    p = tmp_path / "bad.dat"
    p.write_bytes(struct.pack("<i", 0))
    with pytest.raises(ImatrixError, match="entry count 0"):
        load_imatrix(p)
    p.write_bytes(struct.pack("<ii", 1, -5))
    with pytest.raises(ImatrixError, match="invalid name length"):
        load_imatrix(p)
    p.write_bytes(struct.pack("<ii", 1, 1) + b"a" + struct.pack("<ii", 1, 0))
    with pytest.raises(ImatrixError, match="invalid value count 0"):
        load_imatrix(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImatrixError, match="no such imatrix file"):
        load_imatrix(tmp_path / "nope.dat")


def test_non_finite_refused(tmp_path: Path) -> None:
    p = write_dat(tmp_path / "nan.dat", {"a.weight": (1, np.array([1.0, np.nan, np.inf]))})
    im = load_imatrix(p)
    with pytest.raises(ImatrixError, match=r"'a.weight' has 2 non-finite value\(s\).*column 1"):
        im.check_finite()
    # excluding the bad entry makes the rest usable, as in llama-quantize
    im.filtered(exclude=["a.weight"]).check_finite()


# -- GGUF imatrix ------------------------------------------------------------------------


def test_gguf_imatrix(tmp_path: Path) -> None:
    sums = {
        "blk.0.ffn_up_exps.weight": np.array([[2.0, 4.0, 6.0], [1.0, 1.0, 1.0], [9.0, 9.0, 9.0]]),
        "blk.0.attn_q.weight": np.array([[3.0, 6.0, 9.0]]),
    }
    counts = {"blk.0.ffn_up_exps.weight": np.array([2.0, 0.0, 3.0]), "blk.0.attn_q.weight": [3.0]}
    p = write_gguf_imatrix(tmp_path / "im.gguf", sums, counts)
    im = load_imatrix(p)
    assert im.format == "gguf" and im.dataset == "calib.txt" and im.chunks == 7
    # per expert: sums / count, and 1 for an expert that saw no tokens
    np.testing.assert_array_equal(
        im.weights["blk.0.ffn_up_exps.weight"], [1, 2, 3, 1, 1, 1, 3, 3, 3]
    )
    np.testing.assert_array_equal(im.weights["blk.0.attn_q.weight"], [1, 2, 3])
    w = im.for_tensor("blk.0.ffn_up_exps.weight", 3, 3)
    assert w is not None and w.size == 9


def test_gguf_without_imatrix_tensors(tmp_path: Path) -> None:
    with pytest.raises(ImatrixError, match="not an imatrix"):
        load_imatrix(Path(__file__).parent / "data" / "tiny-llama-f16.gguf")


def test_gguf_imatrix_truncated(tmp_path: Path) -> None:
    p = write_gguf_imatrix(tmp_path / "im.gguf", {"a.weight": np.ones((1, 64))}, {"a.weight": [1]})
    p.write_bytes(p.read_bytes()[:-40])
    with pytest.raises(ImatrixError, match="truncated"):
        load_imatrix(p)


# -- lookup, aliases, sizes, filters ----------------------------------------------------


def test_aliases() -> None:
    v = np.ones(4, np.float32)
    im = Imatrix(
        Path("x.dat"),
        "dat",
        {
            "blk.0.ffn_up.weight": v,
            "blk.1.ffn_gate_up_exps.weight": v * 2,
            "blk.2.ffn_up_exps.weight": v * 3,
            "blk.3.attn_kv_b.weight": v * 4,
            "blk.4.attn_v_b.weight": v * 5,
        },
    )
    assert im.lookup("blk.0.ffn_gate.weight")[0] == "blk.0.ffn_up.weight"
    assert im.lookup("blk.1.ffn_gate_exps.weight")[0] == "blk.1.ffn_gate_up_exps.weight"
    assert im.lookup("blk.1.ffn_up_exps.weight")[0] == "blk.1.ffn_gate_up_exps.weight"
    assert im.lookup("blk.2.ffn_gate_exps.weight")[0] == "blk.2.ffn_up_exps.weight"
    assert im.lookup("blk.2.ffn_gate_up_exps.weight")[0] == "blk.2.ffn_up_exps.weight"
    assert im.lookup("blk.3.attn_v_b.weight")[0] == "blk.3.attn_kv_b.weight"
    assert im.lookup("blk.4.attn_kv_b.weight")[0] == "blk.4.attn_v_b.weight"
    assert im.lookup("blk.0.ffn_down.weight") is None


def test_size_check() -> None:
    im = Imatrix(
        Path("m.dat"),
        "dat",
        {"a.weight": np.ones(8, np.float32), "token_embd.weight": np.ones(3, np.float32)},
    )
    assert im.for_tensor("a.weight", 4, 2).size == 8  # 2 experts x 4 columns
    with pytest.raises(
        ImatrixError, match=r"'a.weight' has 8 values but tensor 'a.weight' needs 4"
    ):
        im.for_tensor("a.weight", 4)
    assert im.for_tensor("token_embd.weight", 4) is None  # tolerated, as in llama-quantize
    assert im.for_tensor("b.weight", 4) is None


def test_include_exclude() -> None:
    im = load_imatrix(DAT)
    only_v = im.filtered(include=["attn_v"])
    assert only_v.weights and all("attn_v" in n for n in only_v.weights)
    no_ffn = im.filtered(exclude=["ffn_", "attn_q"])
    assert no_ffn.weights and not any("ffn_" in n or "attn_q" in n for n in no_ffn.weights)
    assert len(im.filtered(include=["attn_v", "attn_k"])) == len(
        im.filtered(include=["attn_v"])
    ) + len(im.filtered(include=["attn_k"]))
    with pytest.raises(ImatrixError, match="cannot be used together"):
        im.filtered(include=["a"], exclude=["b"])
