"""Importance matrices (imatrix) as llama-quantize uses them.

Reads both formats and turns them into per-column weights E[x^2]:

- legacy ``.dat`` (ik_llama.cpp and mainline ``llama-imatrix``): int32 entry count;
  per entry name, ncall, nval and nval float32 values (stored pre-multiplied by
  ncall); an optional trailer with the chunk count and dataset name.
  Weight = value / ncall (ik ``load_imatrix``).
- GGUF imatrix (mainline since llama.cpp #9400): ``<name>.in_sum2`` raw sums with
  shape (n_expert, n_per_row) and ``<name>.counts`` per expert.
  Weight = sum / count, and 1 for an expert that never saw a token.

For a 3-D expert tensor the weights are expert-major: expert ``e`` uses
``weights[e*n_per_row:(e+1)*n_per_row]``.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import IqkError
from .gguf.constants import GGUFValueType
from .gguf.reader import KV, GGUFError, GGUFReader

MAX_NAME_LEN = 4096
MAX_ENTRIES = 1 << 20


class ImatrixError(IqkError, ValueError):
    """The imatrix file is unreadable, or does not fit the model; the message says why."""


@dataclass
class Imatrix:
    path: Path
    format: str  # "dat" or "gguf"
    weights: dict[str, np.ndarray]  # name -> float32 per-column weights
    ncall: dict[str, int] = field(default_factory=dict)  # legacy only
    dataset: str | None = None
    chunks: int = 0  # chunk count from the trailer / imatrix.chunk_count (0: unknown)

    def __len__(self) -> int:
        return len(self.weights)

    # -- selection (--include-weights / --exclude-weights, substring match as ik) --
    def filtered(
        self, include: list[str] | None = None, exclude: list[str] | None = None
    ) -> Imatrix:
        if include and exclude:
            raise ImatrixError("--include-weights and --exclude-weights cannot be used together")
        names = list(self.weights)
        if exclude:
            names = [n for n in names if not any(s in n for s in exclude)]
        if include:
            names = [n for n in names if any(s in n for s in include)]
        return replace(self, weights={n: self.weights[n] for n in names})

    def check_finite(self) -> None:
        for name, w in self.weights.items():
            bad = np.flatnonzero(~np.isfinite(w))
            if bad.size:
                raise ImatrixError(
                    f"{self.path}: entry {name!r} has {bad.size} non-finite value(s) "
                    f"(first at column {int(bad[0])}: {w[bad[0]]}); refusing to use it"
                )

    def check_values(self) -> None:
        """Every entry finite and non-negative (mean squares), checked before any work.

        The quantizers reject negative importances too, but only when they reach that
        tensor, which may be hours into a run.
        """
        self.check_finite()
        for name, w in self.weights.items():
            bad = np.flatnonzero(w < 0)
            if bad.size:
                raise ImatrixError(
                    f"{self.path}: entry {name!r} has {bad.size} negative value(s) "
                    f"(first at column {int(bad[0])}: {w[bad[0]]}); importances are mean "
                    "squares and cannot be negative - refusing to use it"
                )

    # -- lookup with ik_llama.cpp's name aliases ------------------------------------
    def lookup(self, name: str) -> tuple[str, np.ndarray] | None:
        """The entry for tensor ``name``, trying ik's aliases when the exact name is missing."""
        for cand in _candidates(name):
            w = self.weights.get(cand)
            if w is not None:
                return cand, w
        return None

    def for_tensor(self, name: str, ne0: int, n_mat: int = 1) -> np.ndarray | None:
        """Weights for a tensor with rows of ``ne0`` and ``n_mat`` experts, or None.

        A size mismatch is an error (it means a wrong imatrix), except for
        token_embd, which llama-quantize also lets through without weights.
        """
        hit = self.lookup(name)
        if hit is None:
            return None
        entry, w = hit
        if w.size != ne0 * n_mat:
            if name == "token_embd.weight":
                return None
            raise ImatrixError(
                f"{self.path}: entry {entry!r} has {w.size} values but tensor {name!r} needs "
                f"{ne0 * n_mat} ({ne0} columns x {n_mat} expert(s)); wrong imatrix for this model?"
            )
        return w

    def metadata(self, hide: bool = False) -> list[KV]:
        """The ``quantize.imatrix.*`` keys llama-quantize writes into its output."""
        secret = "top_secret"
        kvs = [
            KV("quantize.imatrix.file", GGUFValueType.STRING, secret if hide else str(self.path))
        ]
        if self.dataset:
            kvs.append(
                KV(
                    "quantize.imatrix.dataset",
                    GGUFValueType.STRING,
                    secret if hide else self.dataset,
                )
            )
        kvs.append(
            KV("quantize.imatrix.entries_count", GGUFValueType.INT32, 0 if hide else len(self))
        )
        if self.chunks > 0:
            kvs.append(
                KV("quantize.imatrix.chunks_count", GGUFValueType.INT32, 0 if hide else self.chunks)
            )
        return kvs


def _candidates(name: str) -> list[str]:
    """Exact name first, then ik's fallbacks (examples/quantize + llama-quantize.cpp)."""
    out = [name]
    for part in ("ffn_up_exps.weight", "ffn_gate_exps.weight"):
        if part in name:
            pre = name[: name.index(part)]
            return out + [pre + "ffn_gate_up_exps.weight", pre + "ffn_up_exps.weight"]
    if "ffn_gate_up_exps.weight" in name:
        return out + [name[: name.index("ffn_gate_up_exps.weight")] + "ffn_up_exps.weight"]
    if "ffn_gate.weight" in name:
        # gate and up see the same activations
        return out + [name[: name.index("ffn_gate.weight")] + "ffn_up.weight"]
    # MLA: attn_v_b sees the activations attn_kv_b saw with standard attention
    for a, b in (
        (".attn_v_b.weight", ".attn_kv_b.weight"),
        (".attn_kv_b.weight", ".attn_v_b.weight"),
    ):
        if a in name:
            return out + [name[: name.index(a)] + b]
    return out


# -- readers ---------------------------------------------------------------------------


def load_imatrix(path: str | os.PathLike[str]) -> Imatrix:
    """Read a legacy .dat or a GGUF imatrix (detected by content, not extension)."""
    p = Path(path)
    if not p.is_file():
        raise ImatrixError(f"{p}: no such imatrix file")
    with open(p, "rb") as f:
        magic = f.read(4)
    return _load_gguf(p) if magic == b"GGUF" else _load_dat(p)


def _load_dat(p: Path) -> Imatrix:
    data = p.read_bytes()
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(data):
            raise ImatrixError(f"{p}: truncated imatrix file while reading {what}")
        b = data[pos : pos + n]
        pos += n
        return b

    def i32(what: str) -> int:
        return struct.unpack("<i", take(4, what))[0]

    n_entries = i32("the entry count")
    if not 1 <= n_entries <= MAX_ENTRIES:
        raise ImatrixError(f"{p}: not an imatrix file (entry count {n_entries})")
    weights: dict[str, np.ndarray] = {}
    ncalls: dict[str, int] = {}
    for i in range(n_entries):
        n = i32(f"the name length of entry {i + 1}")
        if not 1 <= n <= MAX_NAME_LEN:
            raise ImatrixError(f"{p}: entry {i + 1} has an invalid name length {n}")
        name = take(n, f"the name of entry {i + 1}").decode("utf-8", errors="replace")
        ncall = i32(f"ncall of {name!r}")
        nval = i32(f"nval of {name!r}")
        if nval < 1:
            raise ImatrixError(f"{p}: entry {name!r} has an invalid value count {nval}")
        vals = np.frombuffer(take(4 * nval, f"the {nval} values of {name!r}"), dtype="<f4")
        w = vals.astype(np.float32)
        if ncall > 0:
            with np.errstate(all="ignore"):  # NaN/inf values are refused by check_finite
                w = w / np.float32(ncall)
        weights[name] = w
        ncalls[name] = ncall
    dataset, chunks = None, 0
    if pos < len(data):  # optional trailer: chunk count and dataset name
        chunks = i32("the trailer's chunk count")
        n = i32("the trailer's dataset name length")
        if not 0 <= n <= MAX_NAME_LEN * 16:
            raise ImatrixError(f"{p}: corrupt trailer (dataset name length {n})")
        dataset = take(n, "the dataset name").decode("utf-8", errors="replace")
    return Imatrix(p, "dat", weights, ncalls, dataset, max(chunks, 0))


def _load_gguf(p: Path) -> Imatrix:
    try:
        r = GGUFReader(p)
    except GGUFError as e:
        raise ImatrixError(f"not a readable GGUF imatrix: {e}") from None
    with r:
        sums = {}
        for name in r.tensors:
            for suffix in (".in_sum2", ".sums"):
                if name.endswith(suffix):
                    sums[name[: -len(suffix)]] = name
        if not sums:
            raise ImatrixError(f"{p}: GGUF file has no '<tensor>.in_sum2' entries; not an imatrix")
        weights: dict[str, np.ndarray] = {}
        for base, sname in sums.items():
            cname = base + ".counts"
            if cname not in r.tensors:
                raise ImatrixError(f"{p}: {sname!r} has no matching {cname!r}")
            st, ct = r.tensors[sname], r.tensors[cname]
            if st.type.name != "f32" or ct.type.name != "f32":
                raise ImatrixError(f"{p}: {base!r}: imatrix tensors must be f32")
            s = r.to_f32(sname).reshape(-1, st.ne[0])
            c = r.to_f32(cname).reshape(-1)
            if c.size != s.shape[0]:
                raise ImatrixError(
                    f"{p}: {base!r}: {c.size} counts for {s.shape[0]} expert(s) of sums"
                )
            with np.errstate(all="ignore"):  # inf/NaN weights are refused by check_finite
                w = s / c[:, None].astype(np.float32)
            w[c == 0, :] = 1.0  # an expert that saw no tokens: neutral weight
            weights[base] = np.ascontiguousarray(w, dtype=np.float32).reshape(-1)
        dataset = _dataset_name(p, r.kv.get("imatrix.datasets"))
        chunks = _chunk_count(p, r.kv.get("imatrix.chunk_count"))
    return Imatrix(p, "gguf", weights, {}, dataset, chunks)


def _kv_type(kv: KV) -> str:
    sub = f" of {kv.sub_type.name.lower()}" if kv.sub_type is not None else ""
    return kv.vtype.name.lower() + sub


def _dataset_name(p: Path, kv: KV | None) -> str | None:
    """The first name in ``imatrix.datasets`` (mainline writes an array of strings)."""
    if kv is None:
        return None
    if kv.vtype == GGUFValueType.STRING:
        return kv.value
    if kv.vtype == GGUFValueType.ARRAY and kv.sub_type == GGUFValueType.STRING:
        return kv.value[0] if len(kv.value) else None
    raise ImatrixError(f"{p}: imatrix.datasets: expected an array of strings, got {_kv_type(kv)}")


_INTEGER_TYPES = {
    GGUFValueType.UINT8, GGUFValueType.INT8, GGUFValueType.UINT16, GGUFValueType.INT16,
    GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.UINT64, GGUFValueType.INT64,
}  # fmt: skip


def _chunk_count(p: Path, kv: KV | None) -> int:
    """``imatrix.chunk_count``; it goes into the output as an int32, as ik writes it."""
    if kv is None:
        return 0
    if kv.vtype not in _INTEGER_TYPES:
        raise ImatrixError(f"{p}: imatrix.chunk_count: expected an integer, got {_kv_type(kv)}")
    if not 0 <= kv.value < 2**31:
        raise ImatrixError(
            f"{p}: imatrix.chunk_count: expected 0 to 2^31-1 (an int32), got {kv.value}"
        )
    return int(kv.value)
