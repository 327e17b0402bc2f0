"""GGUF reader/writer: round trips, ik type sizes, interop with the PyPI gguf package, and
every corrupt-file path answered by a GGUFError that names the file."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGUFValueType
from iqk_rs.gguf import (
    KV,
    GGUFError,
    GGUFReader,
    GGUFStreamWriter,
    GGUFWriteError,
    StringArray,
    constants,
    ggml_types,
    type_by_id,
    type_by_name,
)
from iqk_rs.gguf.ggml_types import rows_to_f32
from iqk_rs.pipeline.encode import f32_to_bf16

TINY = Path(__file__).parent / "data" / "tiny-llama-f16.gguf"
F32, F16, BF16 = type_by_name("f32"), type_by_name("f16"), type_by_name("bf16")


def _write(path: Path, kvs, tensors: dict[str, tuple], alignment: int = 32) -> Path:
    """tensors: name -> (type, ne, bytes-like)"""
    with GGUFStreamWriter(
        path, kvs, [(n, t, ne) for n, (t, ne, _) in tensors.items()], alignment
    ) as w:
        for n, (_, _, data) in tensors.items():
            w.write_tensor(n, data)
        w.commit()
    return path


# -- the bundled model ------------------------------------------------------------------


def test_tiny_model_shape() -> None:
    with GGUFReader(TINY) as r:
        assert r.version == 3 and r.alignment == 32
        assert r.architecture == "llama"
        assert r.get("llama.block_count") == 4
        assert r.get("llama.expert_count") == 2
        assert len(r.get("tokenizer.ggml.tokens")) == 512
        assert "output.weight" in r.tensors
        names = list(r.tensors)
        assert names[0] == "token_embd.weight" and names[-1] == "output.weight"
        down = r.tensors["blk.0.ffn_down_exps.weight"]
        assert down.ne == (128, 256, 2) and down.type.name == "f16"
        assert down.ne[0] % 256  # a row length that needs a fallback type
        assert r.tensors["blk.0.attn_norm.weight"].type.name == "f32"
        assert r.tensors["blk.0.attn_norm.weight"].ggml_n_dims == 1
        assert TINY.stat().st_size < 4_000_000


def test_zero_copy_views() -> None:
    with GGUFReader(TINY) as r:
        a = r.array("blk.0.ffn_down_exps.weight")
        assert a.shape == (2, 256, 128) and a.dtype == np.float16
        assert not a.flags.writeable and not a.flags.owndata
        assert isinstance(a.base, np.ndarray)  # a view into the memory map, not a copy
        raw = r.raw("blk.0.ffn_down_exps.weight")
        assert raw.shape == (512, 256) and np.shares_memory(raw, a)
        f = r.to_f32("blk.0.ffn_down_exps.weight")
        np.testing.assert_array_equal(f, a.astype(np.float32))
        assert 0.01 < float(f.std()) < 0.2  # realistic weight scale


def test_tiny_model_is_reproducible(tmp_path: Path) -> None:
    """The committed file is what scripts/make_tiny_model.py generates."""
    import importlib.util

    script = Path(__file__).parent.parent / "scripts" / "make_tiny_model.py"
    spec = importlib.util.spec_from_file_location("make_tiny_model", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.build(tmp_path / "t.gguf")
    with GGUFReader(TINY) as a, GGUFReader(tmp_path / "t.gguf") as b:
        assert list(a.tensors) == list(b.tensors)
        for n in a.tensors:
            np.testing.assert_array_equal(a.raw(n), b.raw(n), n)
        assert list(a.kv) == list(b.kv)


# -- type sizes -------------------------------------------------------------------------


def test_ks_row_sizes() -> None:
    # from gguf_notes.md: IQ4_KS [512, 3] is 3 x (4 + 2*136) = 828 bytes, not 816
    assert type_by_name("IQ4_KS").nbytes((512, 3)) == 828
    assert type_by_name("iq2_ks").row_bytes(512) == 2 + 2 * 70
    assert type_by_name("IQ3_KS").row_bytes(512) == 2 + 2 * 102
    assert type_by_name("iq4_k").row_bytes(512) == 288
    assert type_by_id(139).name == "iq4_k"
    assert type_by_name("Q5_K").name == "q5_K" and type_by_name("13").name == "q5_K"
    with pytest.raises(ValueError, match="not a multiple"):
        type_by_name("iq4_k").row_bytes(576)
    with pytest.raises(ValueError, match="unknown"):
        type_by_name("q9_9")


def test_sizes_agree_with_core() -> None:
    iqk = pytest.importorskip("iqk_rs")
    if not hasattr(iqk, "type_table"):
        pytest.skip("core not built")
    for row in iqk.type_table():
        t = type_by_id(row["ggml_id"])
        assert t.in_core and t.row_meta_size == row["row_meta_size"]
        n = 512 if t.block_size == 256 else 64
        assert t.row_bytes(n) == iqk.row_size(row["name"], n), row["name"]


def test_own_constants_and_types_agree_with_the_gguf_package() -> None:
    """The format constants and the types looked up without the gguf package are the ones the
    full table (gguf's mainline sizes underneath) gives."""
    assert constants.GGUF_MAGIC == gguf.GGUF_MAGIC
    assert constants.GGUF_DEFAULT_ALIGNMENT == gguf.GGUF_DEFAULT_ALIGNMENT
    ours = {m.name: m.value for m in constants.GGUFValueType}
    assert ours == {m.name: m.value for m in gguf.GGUFValueType}
    for tid, (name, size, _) in ggml_types._PLAIN.items():
        qtype = gguf.GGMLQuantizationType(tid)
        assert (qtype.name.lower(), gguf.GGML_QUANT_SIZES[qtype]) == (name, (1, size))
    full = ggml_types._table()
    assert full.keys() >= {int(q) for q in gguf.GGML_QUANT_SIZES}
    names = [t.name.lower() for t in full.values()]
    assert len(set(names)) == len(names)  # what type_by_name's any-case match relies on
    for t in full.values():
        assert type_by_id(t.id) == t
        assert type_by_name(t.name) == t and type_by_name(t.name.upper()) == t


def test_quantizing_does_not_import_gguf(tmp_path: Path) -> None:
    """A quantization run never needs the gguf package (a 60-120 ms import)."""
    code = (
        "import sys, iqk_rs.cli\n"
        "from iqk_rs.pipeline import quantize_model, QuantizeOptions, Progress\n"
        f"quantize_model({str(TINY)!r}, {str(tmp_path / 'o.gguf')!r}, 'IQ4_KS',"
        " QuantizeOptions(), Progress())\n"
        "assert 'gguf' not in sys.modules, 'gguf was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bf16_conversion() -> None:
    x = np.array([1.0, -2.5, 1.00390625, 1.01171875, 3e38, np.inf, np.nan], np.float32)
    b = f32_to_bf16(x)
    y = rows_to_f32(b.reshape(1, -1), BF16, b.size)[0]
    assert y[0] == 1.0 and y[1] == -2.5
    assert y[2] == 1.0  # tie rounds to even
    assert y[3] == 1.015625  # tie rounds up to even
    assert np.isinf(y[5]) and np.isnan(y[6])


@pytest.mark.parametrize("threads", [1, None])
def test_half_widening_is_exact_for_every_bit_pattern(threads: int | None) -> None:
    """F16 and BF16 tensors widen (in Rust, SIMD and parallel) to exactly the f32 that numpy
    and the bf16 definition give, for all 65536 patterns (NaN payloads: NaN stays NaN)."""
    bits = np.arange(1 << 16, dtype=np.uint16).reshape(256, 256)
    for gtype, expected in [
        (F16, bits.view(np.float16).astype(np.float32)),
        (BF16, (bits.astype(np.uint32) << 16).view(np.float32)),
    ]:
        got = rows_to_f32(bits.view(np.uint8), gtype, 256, threads)
        assert got.dtype == np.float32 and got.shape == (256, 256)
        nan = np.isnan(expected)
        assert np.array_equal(np.isnan(got), nan)
        assert np.array_equal(got[~nan].view(np.uint32), expected[~nan].view(np.uint32))


# -- round trips --------------------------------------------------------------------------


def _all_value_kvs() -> list[KV]:
    V = GGUFValueType
    bad_utf8 = b"\xff\xfeok".decode("utf-8", "surrogateescape")
    return [
        KV("general.architecture", V.STRING, "llama"),
        KV("t.u8", V.UINT8, 200),
        KV("t.i8", V.INT8, -100),
        KV("t.u16", V.UINT16, 60000),
        KV("t.i16", V.INT16, -30000),
        KV("t.u32", V.UINT32, 4_000_000_000),
        KV("t.i32", V.INT32, -2_000_000_000),
        KV("t.f32", V.FLOAT32, 0.5),
        KV("t.bool", V.BOOL, True),
        KV("t.u64", V.UINT64, 2**63 + 5),
        KV("t.i64", V.INT64, -(2**62)),
        KV("t.f64", V.FLOAT64, 1e300),
        KV("t.str", V.STRING, "héllo \x00 world"),
        KV("t.badutf8", V.STRING, bad_utf8),
        KV("t.arr_i32", V.ARRAY, np.array([1, -2, 3], np.int32), V.INT32),
        KV("t.arr_f32", V.ARRAY, np.array([0.25, 8.0], np.float32), V.FLOAT32),
        KV("t.arr_bool", V.ARRAY, np.array([True, False]), V.BOOL),
        KV("t.arr_str", V.ARRAY, ["a", "", "ccc"], V.STRING),
        KV("t.arr_empty", V.ARRAY, [], V.STRING),
        KV(
            "t.arr_nested",
            V.ARRAY,
            [
                KV("", V.ARRAY, np.array([1, 2], np.uint16), V.UINT16),
                KV("", V.ARRAY, ["x"], V.STRING),
            ],
            V.ARRAY,
        ),
    ]


def test_roundtrip_metadata_and_tensors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    f32 = rng.standard_normal((3, 64)).astype(np.float32)
    f16 = rng.standard_normal((2, 4, 32)).astype(np.float16)
    bf16 = f32_to_bf16(rng.standard_normal((5, 8)))
    ks = type_by_name("iq4_ks")
    ks_rows = rng.integers(0, 256, (3, ks.row_bytes(512)), dtype=np.uint8)
    kvs = _all_value_kvs()
    p = _write(
        tmp_path / "rt.gguf",
        kvs,
        {
            "a": (F32, (64, 3), f32),
            "b": (F16, (32, 4, 2), f16),
            "c": (type_by_name("bf16"), (8, 5), bf16),
            "d": (ks, (512, 3), ks_rows),
            "e": (F32, (7,), np.arange(7, dtype=np.float32)),
        },
        alignment=64,
    )
    with GGUFReader(p) as r:
        assert r.alignment == 32  # no general.alignment key was written: default
        for kv in kvs:
            got = r.kv[kv.key]
            assert got.vtype == kv.vtype and got.sub_type == kv.sub_type, kv.key
            if kv.key == "t.arr_nested":
                assert [list(x.value) for x in got.value] == [[1, 2], ["x"]]
            elif isinstance(kv.value, np.ndarray):
                np.testing.assert_array_equal(got.value, kv.value)
            else:
                assert got.value == kv.value, kv.key
        np.testing.assert_array_equal(r.array("a"), f32)
        np.testing.assert_array_equal(r.array("b"), f16)
        np.testing.assert_array_equal(r.array("c"), bf16)
        np.testing.assert_array_equal(r.raw("d"), ks_rows)
        assert r.tensors["d"].nbytes == 828
        assert r.array("d").shape == (3, 276)
        assert all(t.offset % 64 == 0 for t in r.tensors.values())


def test_string_arrays_are_copied_byte_for_byte(tmp_path: Path) -> None:
    """Read string arrays stay encoded: rewriting them gives the same bytes, and their items
    decode on demand like a list of str."""
    items = ["a", "", "ü", b"\xff\xfeok".decode("utf-8", "surrogateescape")]
    arr = StringArray.of(items)
    assert len(arr) == 4 and arr == items and arr[2] == "ü" and arr[-1] == items[-1]
    assert list(arr[1:3]) == ["", "ü"] and arr != ["a"]
    assert arr.raw[:8] == (1).to_bytes(8, "little") and arr.raw[8:9] == b"a"
    kvs = [
        KV("general.architecture", GGUFValueType.STRING, "llama"),
        KV("x.vocab", GGUFValueType.ARRAY, items, GGUFValueType.STRING),
    ]
    first = _write(tmp_path / "a.gguf", kvs, {})
    with GGUFReader(first) as r:
        got = r.kv["x.vocab"].value
        assert isinstance(got, StringArray) and got.raw == arr.raw and got == items
        second = _write(tmp_path / "b.gguf", list(r.kv.values()), {})
    assert first.read_bytes() == second.read_bytes()


def test_alignment_key_honoured(tmp_path: Path) -> None:
    kvs = [KV("general.alignment", GGUFValueType.UINT32, 128)]
    x = np.ones((1, 3), np.float32)
    p = _write(tmp_path / "a.gguf", kvs, {"x": (F32, (3, 1), x), "y": (F32, (3, 1), x)}, 128)
    with GGUFReader(p) as r:
        assert r.alignment == 128 and r.data_offset % 128 == 0
        assert r.tensors["y"].offset == 128


def test_pypi_gguf_reads_our_files(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    h = np.arange(8, dtype=np.float16).reshape(2, 4)
    kvs = [KV("general.architecture", GGUFValueType.STRING, "llama")] + _all_value_kvs()[1:14]
    p = _write(tmp_path / "ours.gguf", kvs, {"x": (F32, (4, 3), x), "h": (F16, (4, 2), h)})
    g = gguf.GGUFReader(p)
    ts = {t.name: t for t in g.tensors}
    np.testing.assert_array_equal(ts["x"].data, x)
    np.testing.assert_array_equal(ts["h"].data, h)
    assert g.fields["t.str"].contents() == "héllo \x00 world"
    assert g.fields["t.u64"].contents() == 2**63 + 5


def test_we_read_pypi_gguf_files(tmp_path: Path) -> None:
    p = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(p, "llama")
    w.add_custom_alignment(64)
    w.add_uint32("llama.block_count", 2)
    w.add_array("a.strs", ["x", "yy"])
    w.add_tensor("t1", np.arange(6, dtype=np.float32).reshape(2, 3))
    q = np.zeros((2, 2 * 34), np.uint8)  # Q8_0 rows written as raw bytes
    w.add_tensor("t2", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with GGUFReader(p) as r:
        assert r.alignment == 64 and r.get("llama.block_count") == 2
        assert r.get("a.strs") == ["x", "yy"]
        np.testing.assert_array_equal(r.array("t1"), np.arange(6).reshape(2, 3))
        assert r.tensors["t2"].type.name == "q8_0" and r.tensors["t2"].ne == (64, 2)


# -- writer safety ---------------------------------------------------------------------------


def test_writer_leaves_nothing_on_error(tmp_path: Path) -> None:
    out = tmp_path / "o.gguf"
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(RuntimeError, match="boom"):
        with GGUFStreamWriter(out, [], [("a", F32, (4, 2)), ("b", F32, (4, 2))]) as w:
            w.write_tensor("a", x)
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyboardInterrupt):
        with GGUFStreamWriter(out, [], [("a", F32, (4, 2))]) as w:
            w.write_chunk("a", x[:1])
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_writer_checks(tmp_path: Path) -> None:
    out = tmp_path / "o.gguf"
    x = np.zeros((2, 4), np.float32)
    with GGUFStreamWriter(out, [], [("a", F32, (4, 2)), ("b", F32, (4, 2))]) as w:
        with pytest.raises(GGUFWriteError, match="expected data for tensor 'a'"):
            w.write_tensor("b", x)
        with pytest.raises(GGUFWriteError, match="more than"):
            w.write_tensor("a", np.zeros((3, 4), np.float32))
        w.write_tensor("a", x)
        with pytest.raises(GGUFWriteError, match="'b' was not written"):
            w.commit()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(GGUFWriteError, match="duplicate"):
        GGUFStreamWriter(out, [], [("a", F32, (4, 2)), ("a", F32, (4, 2))])
    out.write_bytes(b"old")
    _write(out, [], {"a": (F32, (4, 2), x)})  # replaces an existing output atomically
    assert GGUFReader(out).tensors["a"].ne == (4, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["o.gguf"]


# -- corrupt input ---------------------------------------------------------------------------


def _minimal(tmp_path: Path) -> bytes:
    kvs = [
        KV("general.architecture", GGUFValueType.STRING, "llama"),
        KV("x.arr", GGUFValueType.ARRAY, ["ab", "cd"], GGUFValueType.STRING),
    ]
    p = _write(tmp_path / "m.gguf", kvs, {"w": (F32, (8, 2), np.ones((2, 8), np.float32))})
    return p.read_bytes()


def test_every_truncation_is_a_clean_error(tmp_path: Path) -> None:
    data = _minimal(tmp_path)
    bad = tmp_path / "cut.gguf"
    for n in range(len(data) - 1):
        bad.write_bytes(data[:n])
        with pytest.raises(GGUFError, match="cut.gguf"):
            GGUFReader(bad)


def test_not_gguf(tmp_path: Path) -> None:
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(GGUFError, match="not a GGUF file"):
        GGUFReader(p)
    with pytest.raises(GGUFError, match="no such file"):
        GGUFReader(tmp_path / "missing.gguf")
    with pytest.raises(GGUFError, match="not a regular file"):
        GGUFReader(tmp_path)
    p.write_bytes(b"")
    with pytest.raises(GGUFError, match="too short"):
        GGUFReader(p)


def _patched(tmp_path: Path, data: bytes, at: int, fmt: str, value) -> Path:
    b = bytearray(data)
    struct.pack_into(fmt, b, at, value)
    p = tmp_path / "bad.gguf"
    p.write_bytes(bytes(b))
    return p


def test_header_fields(tmp_path: Path) -> None:
    data = _minimal(tmp_path)
    with pytest.raises(GGUFError, match="version 1"):
        GGUFReader(_patched(tmp_path, data, 4, "<I", 1))
    with pytest.raises(GGUFError, match="big-endian"):
        GGUFReader(_patched(tmp_path, data, 4, "<I", 3 << 24))
    with pytest.raises(GGUFError, match="unsupported GGUF version 7"):
        GGUFReader(_patched(tmp_path, data, 4, "<I", 7))
    with pytest.raises(GGUFError, match="tensor count"):
        GGUFReader(_patched(tmp_path, data, 8, "<Q", 2**40))
    with pytest.raises(GGUFError, match="metadata count"):
        GGUFReader(_patched(tmp_path, data, 16, "<Q", 2**40))
    # first key length: absurd
    with pytest.raises(GGUFError, match="longer|limit"):
        GGUFReader(_patched(tmp_path, data, 24, "<Q", 2**62))
    # value type of the first key
    key_end = 24 + 8 + len("general.architecture")
    with pytest.raises(GGUFError, match="unknown metadata value type 99"):
        GGUFReader(_patched(tmp_path, data, key_end, "<I", 99))


def _tensor_info_at(data: bytes) -> int:
    """Byte offset of tensor 'w''s n_dims field in _minimal's file."""
    return data.index(b"\x01\x00\x00\x00\x00\x00\x00\x00w") + 9


def test_tensor_info_fields(tmp_path: Path) -> None:
    data = _minimal(tmp_path)
    at = _tensor_info_at(data)
    with pytest.raises(GGUFError, match="5 dimensions"):
        GGUFReader(_patched(tmp_path, data, at, "<I", 5))
    with pytest.raises(GGUFError, match="empty dimension"):
        GGUFReader(_patched(tmp_path, data, at + 4, "<Q", 0))
    with pytest.raises(GGUFError, match="impossibly large|truncated"):
        GGUFReader(_patched(tmp_path, data, at + 4, "<Q", 2**60))
    with pytest.raises(GGUFError, match="unknown ggml type id 99"):
        GGUFReader(_patched(tmp_path, data, at + 20, "<I", 99))
    with pytest.raises(GGUFError, match="not a multiple"):
        GGUFReader(_patched(tmp_path, data, at + 20, "<I", 139))  # iq4_k with rows of 8
    with pytest.raises(GGUFError, match="alignment"):
        GGUFReader(_patched(tmp_path, data, at + 24, "<Q", 4))
    with pytest.raises(GGUFError, match="needs bytes"):
        GGUFReader(_patched(tmp_path, data, at + 24, "<Q", 1 << 20))


def test_duplicates_and_overlap(tmp_path: Path) -> None:
    x = np.ones((1, 8), np.float32)
    p = _write(tmp_path / "two.gguf", [], {"aa": (F32, (8, 1), x), "bb": (F32, (8, 1), x)})
    data = p.read_bytes()
    with pytest.raises(GGUFError, match="duplicate tensor name 'aa'"):
        GGUFReader(_patched(tmp_path, data, data.index(b"bb"), "<2s", b"aa"))
    second_offset = data.index(b"bb") + 2 + 4 + 16 + 4
    with pytest.raises(GGUFError, match="overlap"):
        GGUFReader(_patched(tmp_path, data, second_offset, "<Q", 0))
    kvs = [KV("k.a", GGUFValueType.UINT8, 1), KV("k.b", GGUFValueType.UINT8, 2)]
    data = _write(tmp_path / "kv.gguf", kvs, {}).read_bytes()
    with pytest.raises(GGUFError, match="duplicate metadata key 'k.a'"):
        GGUFReader(_patched(tmp_path, data, data.index(b"k.b"), "<3s", b"k.a"))


def test_bad_alignment_value(tmp_path: Path) -> None:
    kvs = [KV("general.alignment", GGUFValueType.UINT32, 48)]
    p = _write(tmp_path / "al.gguf", kvs, {})
    with pytest.raises(GGUFError, match="power-of-two"):
        GGUFReader(p)
