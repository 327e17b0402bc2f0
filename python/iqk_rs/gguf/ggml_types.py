"""ggml tensor types as GGUF files store them: ids, names and byte sizes.

Three sources, merged once (later ones win):
1. the PyPI ``gguf`` package's table (mainline ids below 97);
2. a short table of ik_llama.cpp-only ids that the Rust core does not implement
   (so ``iqk info`` can still size and list any ik model);
3. ``iqk_rs.type_table()`` (``api.type_table``): the single source of truth for every type the core
   implements, including the per-row prefix ("row meta") of the KS types that
   gguf-py's table cannot express.

The float and integer types and sources 2-3 are also kept apart (``_own_table``) and looked
up first: a quantization run then never imports the ``gguf`` package (60-120 ms), which is
loaded only for the first mainline quantized type a file or option names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import IqkNotImplementedError, IqkValueError


@dataclass(frozen=True)
class GGMLType:
    id: int
    name: str  # ggml's spelling, as llama-quantize prints it: "iq4_ks", "q5_K", "f16"
    block_size: int
    type_size: int
    row_meta_size: int = 0
    quantized: bool = True
    in_core: bool = False  # quantize/dequantize available from the Rust core
    llama_ftype: int | None = None  # general.file_type of a model "mostly" of this type

    def row_bytes(self, ne0: int) -> int:
        """Bytes of one row of ``ne0`` values (ik's ggml_row_size, with the row prefix)."""
        if ne0 % self.block_size:
            raise IqkValueError(
                f"row length {ne0} is not a multiple of {self.name}'s block size {self.block_size}"
            )
        return self.row_meta_size + (ne0 // self.block_size) * self.type_size

    def nbytes(self, ne: tuple[int, ...] | list[int]) -> int:
        nrows = 1
        for n in ne[1:]:
            nrows *= n
        return nrows * self.row_bytes(ne[0])


# ik_llama.cpp-only ids (ggml/include/ggml.h, gguf-py constants, ggml.c row_meta_size)
# that the core does not provide: (name, block, bytes per block, row meta).
_IK_ONLY: dict[int, tuple[str, int, int, int]] = {
    31: ("q4_0_4x4", 32, 18, 0),
    32: ("q4_0_4x8", 32, 18, 0),
    33: ("q4_0_8x8", 32, 18, 0),
    134: ("iq1_bn", 64, 13, 2),
    135: ("iq2_bn", 64, 16, 4),
    146: ("iq4_kss", 256, 128, 4),
    151: ("q8_KV", 32, 32, 8),
    153: ("iq2_kt", 256, 68, 4),
    154: ("iq3_kt", 256, 100, 4),
    155: ("iq4_kt", 256, 128, 4),
    157: ("iq2_kl", 256, 86, 2),
    158: ("iq1_kt", 256, 56, 4),
    202: ("q4_0_r8", 32, 18, 0),
    206: ("q5_0_r4", 32, 22, 0),
    208: ("q8_0_r8", 32, 34, 0),
    210: ("q2_k_r4", 256, 84, 0),
    211: ("q3_k_r4", 256, 110, 0),
    212: ("q4_k_r4", 256, 144, 0),
    213: ("q5_k_r4", 256, 176, 0),
    214: ("q6_k_r4", 256, 210, 0),
    216: ("iq2_xxs_r4", 256, 66, 0),
    217: ("iq2_xs_r4", 256, 74, 0),
    218: ("iq3_xxs_r4", 256, 98, 0),
    219: ("iq1_s_r4", 32, 6, 2),
    220: ("iq4_nl_r4", 32, 18, 0),
    221: ("iq3_s_r4", 256, 110, 0),
    222: ("iq2_s_r4", 256, 82, 0),
    223: ("iq4_xs_r8", 256, 136, 0),
    229: ("iq1_m_r4", 32, 7, 2),
    233: ("q6_0_r4", 32, 26, 0),
    335: ("iq2_bn_r4", 64, 16, 4),
    337: ("iq2_k_r4", 256, 76, 0),
    338: ("iq3_k_r4", 256, 110, 0),
    339: ("iq4_k_r4", 256, 144, 0),
    340: ("iq5_k_r4", 256, 176, 0),
    344: ("iq4_ks_r4", 256, 136, 4),
    352: ("iq5_ks_r4", 256, 168, 4),
    353: ("mxfp4_r8", 32, 17, 0),
    398: ("q8_KV_r8", 32, 32, 4),
    399: ("q8_k_r8", 256, 258, 0),
}
# The core's own types are not listed: their sizes come from its registry alone.
INT_TYPES = frozenset({24, 25, 26, 27})  # I8, I16, I32, I64
F32, F16, BF16 = 0, 1, 30
FLOAT_TYPES = frozenset({F32, F16, BF16})


def ggml_name(name: str) -> str:
    """Canonical ggml spelling: lower case except the K of k-quants ("q5_K", "q8_KV")."""
    n = name.lower()
    if n.startswith("q") and (n.endswith("_k") or n.endswith("_kv")):
        n = n[: n.rindex("_") + 1] + n[n.rindex("_") + 1 :].upper()
    return n


def _core_rows() -> list[dict]:
    try:
        from ..api import type_table

        return list(type_table())
    except (ImportError, AttributeError):
        return []


# The unquantized types, sized here so that they never need the gguf package: id -> (name,
# bytes per value, general.file_type of a model mostly of this type).
_PLAIN: dict[int, tuple[str, int, int | None]] = {
    0: ("f32", 4, 0),
    1: ("f16", 2, 1),
    24: ("i8", 1, None),
    25: ("i16", 2, None),
    26: ("i32", 4, None),
    27: ("i64", 8, None),
    28: ("f64", 8, None),
    30: ("bf16", 2, 32),
}


@functools.cache
def _own_table() -> dict[int, GGMLType]:
    """The plain types, the ik-only ids and the core's types: no gguf import."""
    table = {
        tid: GGMLType(tid, name, 1, size, 0, False, False, ftype)
        for tid, (name, size, ftype) in _PLAIN.items()
    }
    for tid, (name, block, size, meta) in _IK_ONLY.items():
        table[tid] = GGMLType(tid, name, block, size, meta, True)
    for row in _core_rows():
        tid = int(row["ggml_id"])
        name = ggml_name(str(row["name"]))
        table[tid] = GGMLType(
            tid,
            name,
            int(row["block_size"]),
            int(row["type_size"]),
            int(row.get("row_meta_size", 0)),
            True,
            True,
            int(row["llama_ftype"]) if row.get("llama_ftype") is not None else None,
        )
    return table


@functools.cache
def _table() -> dict[int, GGMLType]:
    """Every known type: gguf's mainline table, then ``_own_table`` over it."""
    from gguf import GGML_QUANT_SIZES

    table: dict[int, GGMLType] = {}
    for qtype, (block, size) in GGML_QUANT_SIZES.items():
        tid = int(qtype)
        if tid in _PLAIN or 31 <= tid <= 33:
            continue  # plain types are ours; on 31-33 ik and mainline disagree, ik wins
        table[tid] = GGMLType(tid, ggml_name(qtype.name), block, size)
    table.update(_own_table())
    return table


def type_by_id(tid: int) -> GGMLType:
    t = _own_table().get(int(tid)) or _table().get(int(tid))
    if t is None:
        raise IqkValueError(f"unknown ggml type id {tid}")
    return t


def type_by_name(name: str) -> GGMLType:
    """Look up a type by any spelling ("IQ4_KS", "iq4_ks", "Q5_K", "f16") or by number."""
    s = str(getattr(name, "name", name)).strip()
    if s.isdigit():
        return type_by_id(int(s))
    # Names are unique ignoring case (a test checks), and ik's own spellings mix cases
    # ("q8_KV_r8", "q2_k_r4"), so any case matches.
    key = s.lower()
    for table in (_own_table, _table):  # the gguf package only when needed
        for t in table().values():
            if t.name.lower() == key:
                return t
    raise IqkValueError(f"unknown tensor type {name!r}")


def producible_types() -> list[GGMLType]:
    """The types a tensor can be converted to by this build (the core's and the floats), by
    id; without importing the gguf package."""
    return sorted(
        (t for t in _own_table().values() if t.in_core or t.id in FLOAT_TYPES),
        key=lambda t: t.id,
    )


def all_types() -> list[GGMLType]:
    return sorted(_table().values(), key=lambda t: t.id)


# --- decoding a tensor's rows ----------------------------------------------------


def rows_to_f32(
    rows: np.ndarray, gtype: GGMLType, ne0: int, threads: int | None = None
) -> np.ndarray:
    """Decode a 2-D block of raw rows (uint8, or the float dtype itself) to float32 (nrows, ne0)."""
    if gtype.id == F32:
        return np.ascontiguousarray(rows).view(np.float32).reshape(-1, ne0)
    if gtype.id in (F16, BF16):
        from .. import _core

        bits = np.ascontiguousarray(rows).view(np.uint16).reshape(-1, ne0)
        return _core.widen_to_f32(bits, "f16" if gtype.id == F16 else "bf16", threads)
    raw = np.ascontiguousarray(rows).view(np.uint8).reshape(rows.shape[0], -1)
    if gtype.in_core:
        from ..api import dequantize

        try:
            return dequantize(raw, gtype.id, threads=threads)
        except NotImplementedError:
            pass
    if gtype.row_meta_size == 0:
        import gguf.quants
        from gguf import GGMLQuantizationType

        try:
            qt = GGMLQuantizationType(gtype.id)
            # A NaN/inf scale in a file gives NaN values (which the callers report) and, without
            # this, a numpy RuntimeWarning on the way (found by fuzz/fuzz_gguf.py).
            with np.errstate(all="ignore"):
                deq = gguf.quants.dequantize(raw, qt)
            return deq.reshape(-1, ne0).astype(np.float32, copy=False)
        except (ValueError, NotImplementedError):
            pass
    raise IqkNotImplementedError(f"cannot decode tensor type {gtype.name}")
