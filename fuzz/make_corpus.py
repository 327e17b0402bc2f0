#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, cut from the bundled model tests/data/tiny-llama-f16.gguf.

The micro model keeps one layer of the tiny model (every kind of tensor: f16 matrices, f32
norms and router, 3-D expert tensors, 128-wide rows) with a few rows each and a 16-token
vocabulary, about 40 KB: small enough for byte-level mutation to reach every field.

Usage: python fuzz/make_corpus.py OUTDIR   (writes OUTDIR/{gguf,imatrix,quantize}/)
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import numpy as np
from iqk_rs import pipeline as pl
from iqk_rs.gguf import GGUFReader, GGUFStreamWriter, type_by_name
from iqk_rs.gguf.constants import GGUFValueType
from iqk_rs.gguf.reader import KV, StringArray

TINY = Path(__file__).resolve().parent.parent / "tests" / "data" / "tiny-llama-f16.gguf"
N_TOKENS = 16
ROWS = 4  # rows kept per matrix (per expert for 3-D tensors)
TARGET_RULES = [r"ffn_down=f16,output\.weight=iq4_ks,attn_v=iq4_ks,token_embd=iq4_ks"]


def _is_layer_or_global(name: str) -> bool:
    return name.startswith("blk.0.") or not name.startswith("blk.")


def micro_model(path: Path) -> Path:
    with GGUFReader(TINY) as r:
        kvs = []
        for kv in r.kv.values():
            if kv.key == "llama.block_count":
                kv = KV(kv.key, kv.vtype, 1)
            elif kv.key == "llama.vocab_size":
                kv = KV(kv.key, kv.vtype, N_TOKENS)
            elif kv.vtype == GGUFValueType.ARRAY and len(kv.value) > N_TOKENS:
                items = list(kv.value)[:N_TOKENS]
                value = StringArray.of(items) if kv.sub_type == GGUFValueType.STRING else items
                kv = KV(kv.key, kv.vtype, np.asarray(value) if kv.sub_type != GGUFValueType.STRING
                        else value, kv.sub_type)  # fmt: skip
            kvs.append(kv)
        tensors, data = [], []
        for t in r.tensors.values():
            if not _is_layer_or_global(t.name):
                continue
            rows = r.raw(t.name)
            if t.ggml_n_dims == 1 or "gate_inp" in t.name:
                ne, keep = t.ne, rows
            elif len(t.ne) == 2:
                n = N_TOKENS if t.name in ("token_embd.weight", "output.weight") else ROWS
                ne, keep = (t.ne[0], n), rows[:n]
            else:  # experts: the first rows of each
                per = t.ne[1]
                keep = np.concatenate([rows[e * per : e * per + ROWS] for e in range(t.ne[2])])
                ne = (t.ne[0], ROWS, t.ne[2])
            tensors.append((t.name, t.type, ne))
            data.append(np.ascontiguousarray(keep))
        with GGUFStreamWriter(path, kvs, tensors, r.alignment) as w:
            for (name, _, _), d in zip(tensors, data, strict=True):
                w.write_tensor(name, d)
            w.commit()
    return path


def _imatrix_entries(model: Path) -> list[tuple[str, int, int]]:
    """(name, row length, experts) of every matrix an imatrix covers."""
    with GGUFReader(model) as r:
        return [
            (t.name, t.ne[0], t.ne[2] if len(t.ne) > 2 else 1)
            for t in r.tensors.values()
            if t.ggml_n_dims >= 2 and "gate_inp" not in t.name
        ]


def micro_imatrix_gguf(path: Path, model: Path | None = None) -> Path:
    model = model or micro_model(path.with_suffix(".model.gguf"))
    f32 = type_by_name("f32")
    rng = np.random.default_rng(7)
    kvs = [
        KV("general.type", GGUFValueType.STRING, "imatrix"),
        KV("imatrix.datasets", GGUFValueType.ARRAY, StringArray.of(["micro.txt"]),
           GGUFValueType.STRING),
        KV("imatrix.chunk_count", GGUFValueType.UINT32, 2),
        KV("imatrix.chunk_size", GGUFValueType.UINT32, 512),
    ]  # fmt: skip
    tensors, data = [], []
    for name, ne0, n_mat in _imatrix_entries(model):
        tensors += [(name + ".in_sum2", f32, (ne0, n_mat)), (name + ".counts", f32, (1, n_mat))]
        data += [rng.chisquare(2, (n_mat, ne0)).astype(np.float32) * 8,
                 np.full((n_mat, 1), 8.0, np.float32)]  # fmt: skip
    with GGUFStreamWriter(path, kvs, tensors) as w:
        for (name, _, _), d in zip(tensors, data, strict=True):
            w.write_tensor(name, d)
        w.commit()
    return path


def micro_imatrix_dat(path: Path, model: Path) -> Path:
    """ik's legacy format: count; per entry name, ncall, nval, values; chunk/dataset trailer."""
    rng = np.random.default_rng(8)
    entries = _imatrix_entries(model)
    out = [struct.pack("<i", len(entries))]
    for name, ne0, n_mat in entries:
        b = name.encode()
        values = rng.chisquare(2, ne0 * n_mat).astype("<f4") * 8 * 5
        out += [struct.pack("<i", len(b)), b, struct.pack("<ii", 5, values.size), values.tobytes()]
    dataset = b"micro.txt"
    out += [struct.pack("<ii", 2, len(dataset)), dataset]
    path.write_bytes(b"".join(out))
    return path


def main(outdir: Path) -> None:
    for sub in ("gguf", "imatrix", "quantize"):
        (outdir / sub).mkdir(parents=True, exist_ok=True)
    model = micro_model(outdir / "gguf" / "micro.gguf")
    quantized = []
    for t in ("IQ4_KS", "IQ2_K", "IQ3_K"):
        q = outdir / "gguf" / f"micro-{t.lower()}.gguf"
        rules = [r.replace("iq4_ks", t.lower()) for r in TARGET_RULES]
        pl.quantize_model(model, q, t, pl.QuantizeOptions(custom_q=rules))
        quantized.append(q)
    im_gguf = micro_imatrix_gguf(outdir / "imatrix" / "micro.imatrix.gguf", model)
    micro_imatrix_dat(outdir / "imatrix" / "micro.imatrix.dat", model)
    (outdir / "gguf" / "micro.imatrix.gguf").write_bytes(im_gguf.read_bytes())
    body = model.read_bytes()
    for selector in (0, 1, 2, 3, 4, 5, 0x80, 0x84):  # each type; imatrix (0x80)
        (outdir / "quantize" / f"micro-{selector:02x}").write_bytes(bytes([selector]) + body)
    for i, q in enumerate(quantized):  # requantize (0x40)
        (outdir / "quantize" / f"requant-{i}").write_bytes(bytes([0x40 | i]) + q.read_bytes())


if __name__ == "__main__":
    main(Path(sys.argv[1]))
